"""Recurrent layers (LSTM, GRU) in a Relax function: the gate sites of every time step.

torch.export decomposes nn.LSTM / nn.GRU / LSTMCell / GRUCell into per-step Relax ops. Every step
combines two linear terms, one on the layer input x (for nn.LSTM/nn.GRU hoisted: one matmul over
all time steps, sliced per step) and one on the hidden state h:

    LSTM  split(x_term + h_term, 4) -> sigmoid, sigmoid, tanh, sigmoid -> cell update
    GRU   split(x_term, 3), split(h_term, 3) -> r = sigmoid(x_r + h_r), z = sigmoid(x_z + h_z),
          n = tanh(x_n + h_n * r) -> hidden update

A step is found from that structure (looking through reshape/squeeze/expand_dims), not from
variable names; its layer is identified by the digests of its weights, so that all steps of a
layer share one plan, one little module and one kernel. A linear term is
`matmul(u, permute_dims(W)) [+ b]` with constant W and b.

Vanilla RNN steps (act(x_term + h_term)) are recognized so that they can be reported as staying
dense.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import tvm
from tvm import relax

from .gate_allocation import ALLOCATIONS
from .kernels.dual_dense import MAX_BATCH, DualKernelConfig
from .kernels.dual_gates import CELLS, GATES, GateShape, gate_little_bytes
from .little import LittleModule
from .plan import check_ratio
from .sites import WeightKeys, constant_array, static_shape

_CONST = tvm.ir.GenericConst  # relax.Constant in TVM 0.27
SHAPE_OPS = ("relax.reshape", "relax.squeeze", "relax.expand_dims")


def _op_name(value) -> str | None:
    if isinstance(value, relax.Call) and hasattr(value.op, "name"):
        return value.op.name
    return None


class BindingGraph:
    """Definitions, positions and users of the variables of a function's dataflow block."""

    def __init__(self, func: relax.Function) -> None:
        self.blocks = list(func.body.blocks)
        self.value: dict[relax.Var, relax.Expr] = {}
        self.pos: dict[relax.Var, tuple[int, int]] = {}
        self.users: dict[relax.Var, list[relax.Var]] = defaultdict(list)
        for bi, block in enumerate(self.blocks):
            for i, binding in enumerate(block.bindings):
                if not isinstance(binding, relax.VarBinding):
                    continue
                self.value[binding.var] = binding.value
                self.pos[binding.var] = (bi, i)
                for used in _used_vars(binding.value):
                    self.users[used].append(binding.var)

    def call(self, expr, op: str):
        """The Call defining `expr` if it is a call of `op` (through a variable), else None."""
        value = self.value.get(expr, expr) if isinstance(expr, relax.Var) else expr
        return value if _op_name(value) == op else None

    def strip(self, expr: relax.Expr) -> relax.Expr:
        """Follow shape-only ops back to the variable whose values they reshape."""
        while isinstance(expr, relax.Var) and _op_name(self.value.get(expr)) in SHAPE_OPS:
            expr = self.value[expr].args[0]
        return expr

    def users_with(self, var: relax.Var, op: str) -> list[relax.Var]:
        return [u for u in self.users.get(var, []) if _op_name(self.value[u]) == op]

    def tuple_items(self, var: relax.Var) -> dict[int, relax.Var]:
        items = {}
        for u in self.users.get(var, []):
            value = self.value[u]
            if isinstance(value, relax.TupleGetItem):
                items[int(value.index)] = u
        return items


def _used_vars(expr) -> list[relax.Var]:
    if isinstance(expr, relax.Var):
        return [expr]
    if isinstance(expr, relax.Call):
        return [v for a in expr.args for v in _used_vars(a)]
    if isinstance(expr, relax.Tuple):
        return [v for f in expr.fields for v in _used_vars(f)]
    if isinstance(expr, relax.TupleGetItem):
        return _used_vars(expr.tuple_value)
    return []


@dataclass
class LinearTerm:
    """matmul(u, W^T) [+ b] with constant W (N, K); for a hoisted term, u covers all time steps
    (T*B rows, time-major) and the step uses rows [step*B, (step+1)*B) of the result."""

    u: relax.Expr
    weight: relax.Expr  # a constant
    bias: relax.Expr | None
    matmul_var: relax.Var  # the binding of the matmul (where calibration probes u)
    out: relax.Var  # the term's value (the add if biased, else the matmul)
    hoisted_step: int | None = None
    steps: int = 1  # T of a hoisted term


def _linear_term(graph: BindingGraph, var) -> LinearTerm | None:
    if not isinstance(var, relax.Var):
        return None
    value = graph.value.get(var)
    bias = None
    mm_var = var
    if _op_name(value) == "relax.add":
        a, b = value.args
        if isinstance(a, _CONST) and isinstance(b, relax.Var):
            bias, mm_var = a, b
        elif isinstance(b, _CONST) and isinstance(a, relax.Var):
            bias, mm_var = b, a
        else:
            return None
    mm = graph.call(mm_var, "relax.matmul")
    if mm is None:
        return None
    u, wt = mm.args
    # a matmul over all time steps may come as a batched matmul with the weight broadcast over T
    weight_bcast = graph.call(wt, "relax.broadcast_to")
    if weight_bcast is not None:
        wt = weight_bcast.args[0]
    u_bcast = graph.call(u, "relax.broadcast_to")
    if u_bcast is not None and static_shape(u_bcast.args[0]) == static_shape(u):
        u = u_bcast.args[0]
    perm = graph.call(wt, "relax.permute_dims")
    if perm is None or not isinstance(perm.args[0], _CONST):
        return None
    weight = perm.args[0]
    if len(weight.value.shape) != 2:
        return None
    return LinearTerm(u=u, weight=weight, bias=bias, matmul_var=mm_var, out=var)


def _term(graph: BindingGraph, var) -> LinearTerm | None:
    """A per-step linear term, or the slice [step] of a linear term hoisted over time steps."""
    var = graph.strip(var)
    direct = _linear_term(graph, var)
    if direct is not None:
        return direct
    sl = graph.call(var, "relax.strided_slice")
    if sl is None:
        return None
    axes, begin, end = (tuple(int(v.value) for v in arg.fields) for arg in sl.args[1:4])
    if axes != (0,) or end[0] != begin[0] + 1 or (len(sl.args) > 4 and any(int(v.value) != 1 for v in sl.args[4].fields)):
        return None
    source = sl.args[0]
    shape = static_shape(source)
    step = begin[0]
    flip = graph.call(graph.strip(source), "relax.flip")  # a reverse direction walks the steps backwards
    if flip is not None and shape is not None and int(flip.attrs.axis) == 0:
        source, step = flip.args[0], shape[0] - 1 - step
    hoisted = _linear_term(graph, graph.strip(source))
    if hoisted is None or shape is None or len(shape) != 3:
        return None
    hoisted.hoisted_step = step
    hoisted.steps = shape[0]
    return hoisted


@dataclass
class StepSite:
    """One time step of a recurrent layer."""

    x: LinearTerm
    h: LinearTerm
    x_use: relax.Var  # the variables the cell's own ops consume (after shape ops)
    h_use: relax.Var
    consumers: list[relax.Var]  # bindings that consume x_use / h_use: LSTM the add, GRU the two splits


@dataclass
class RecurrentSite:
    """A recurrent layer: every step with the same weights."""

    key: str
    cell: str
    name: str
    hidden: int
    input_size: int
    batch: int
    steps_hoisted: int  # T when the x term is hoisted over T steps, 0 when it is per step
    weights: tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]  # W_ih, W_hh, b_ih, b_hh
    steps: list[StepSite] = field(default_factory=list)
    dual_ok: bool = True
    reason: str = ""


def _gate_acts(graph: BindingGraph, split_var: relax.Var) -> list[str | None]:
    items = graph.tuple_items(split_var)
    acts = []
    for i in range(len(items)):
        users = [_op_name(graph.value[u]) for u in graph.users.get(items.get(i), [])]
        acts.append(next((op.split(".")[-1] for op in users if op in ("relax.sigmoid", "relax.tanh")), None))
    return acts


def _split_sections(graph: BindingGraph, var: relax.Var) -> int:
    attrs = graph.value[var].attrs
    sections = attrs.indices_or_sections
    count = len(sections) + 1 if hasattr(sections, "__len__") else int(sections)
    return count


def _match_lstm(graph: BindingGraph, split_var: relax.Var):
    if _split_sections(graph, split_var) != 4 or _gate_acts(graph, split_var) != ["sigmoid", "sigmoid", "tanh", "sigmoid"]:
        return None
    add_var = graph.strip(graph.value[split_var].args[0])
    add = graph.call(add_var, "relax.add")
    if add is None:
        return None
    a, b = add.args
    ta, tb = _term(graph, a), _term(graph, b)
    if ta is None or tb is None:
        return None
    # the hoisted term, if any, is the input term (for a cell find_recurrent_sites decides by the
    # parameter names; the LSTM's gates are symmetric in the two terms anyway)
    if tb.hoisted_step is not None and ta.hoisted_step is None:
        ta, tb, a, b = tb, ta, b, a
    return "lstm", StepSite(x=ta, h=tb, x_use=a, h_use=b, consumers=[add_var])


def _match_gru(graph: BindingGraph, split_h: relax.Var):
    if _split_sections(graph, split_h) != 3:
        return None
    h_items = graph.tuple_items(split_h)
    if len(h_items) != 3:
        return None

    def partner(item, other_index):
        """(the add using `item`, the other operand's split var) if the other operand is item
        `other_index` of another 3-way split."""
        for add_var in graph.users_with(item, "relax.add"):
            for arg in graph.value[add_var].args:
                if arg.same_as(item) or not isinstance(arg, relax.Var):
                    continue
                tgi = graph.value.get(arg)
                if isinstance(tgi, relax.TupleGetItem) and int(tgi.index) == other_index:
                    return add_var, tgi.tuple_value
        return None, None

    add_r, split_x = partner(h_items[0], 0)
    add_z, split_x2 = partner(h_items[1], 1)
    if add_r is None or add_z is None or not split_x.same_as(split_x2) or _split_sections(graph, split_x) != 3:
        return None
    r = graph.users_with(add_r, "relax.sigmoid")
    z = graph.users_with(add_z, "relax.sigmoid")
    if not r or not z:
        return None
    x_items = graph.tuple_items(split_x)
    # n = tanh(x_n + h_n * r)
    for mul in graph.users_with(h_items[2], "relax.multiply"):
        if not any(arg.same_as(r[0]) for arg in graph.value[mul].args):
            continue
        for add_n in graph.users_with(mul, "relax.add"):
            if any(arg.same_as(x_items.get(2)) for arg in graph.value[add_n].args) and graph.users_with(add_n, "relax.tanh"):
                x_use, h_use = graph.value[split_x].args[0], graph.value[split_h].args[0]
                tx, th = _term(graph, x_use), _term(graph, h_use)
                if tx is None or th is None:
                    return None
                return "gru", StepSite(x=tx, h=th, x_use=x_use, h_use=h_use, consumers=[split_x, split_h])
    return None


def _match_vanilla_rnn(graph: BindingGraph, act_var: relax.Var) -> bool:
    add = graph.call(graph.value[act_var].args[0], "relax.add")
    return add is not None and all(_term(graph, a) is not None for a in add.args)


def layer_name(weight_hh_path: str | None, index: int) -> str:
    """'rnn.weight_hh_l1' -> 'rnn.l1', 'cell.weight_hh' -> 'cell', '...weight_hh_l0_reverse' -> '...l0_reverse'."""
    if not weight_hh_path:
        return f"recurrent{index}"
    name = re.sub(r"\.?weight_hh(_l(\d+))?", lambda m: f".l{m.group(2)}" if m.group(2) else "", weight_hh_path)
    return name.strip(".") or f"recurrent{index}"


def find_recurrent_sites(func: relax.Function, names_by_digest: dict[str, str]) -> tuple[list[RecurrentSite], list[str]]:
    """LSTM/GRU layers of `func` (with each of their steps) and names of vanilla RNN layers found."""
    graph = BindingGraph(func)
    keys = WeightKeys()
    sites: dict[str, RecurrentSite] = {}
    matched_terms: set = set()
    for var, value in graph.value.items():
        if _op_name(value) != "relax.split":
            continue
        match = _match_lstm(graph, var) or _match_gru(graph, var)
        if match is None:
            continue
        cell, step = match
        if cell == "lstm" and step.x.hoisted_step is None:
            # two per-step terms (a cell): the recurrent one has W (4H, H); if both do, the LSTM's
            # gates are symmetric in them and the add's order decides (the same in every pass)
            n = keys.lookup(step.h.weight)[0].shape[0]
            if keys.lookup(step.h.weight)[0].shape[1] != n // 4 and keys.lookup(step.x.weight)[0].shape[1] == n // 4:
                step = StepSite(x=step.h, h=step.x, x_use=step.h_use, h_use=step.x_use, consumers=step.consumers)
        W_ih, d_ih = keys.lookup(step.x.weight)
        W_hh, d_hh = keys.lookup(step.h.weight)
        b_ih = constant_array(step.x.bias).reshape(-1) if step.x.bias is not None else None
        b_hh = constant_array(step.h.bias).reshape(-1) if step.h.bias is not None else None
        bias_digests = "-".join(keys.lookup(b)[1] if b is not None else "nobias" for b in (step.x.bias, step.h.bias))
        key = f"{cell}:{d_ih}:{d_hh}:{bias_digests}"
        if key not in sites:
            hidden = W_hh.shape[0] // CELLS[cell]
            h_shape = static_shape(step.h.u)
            batch = int(np.prod(h_shape[:-1])) if h_shape else 0
            site = RecurrentSite(
                key=key, cell=cell, name=layer_name(_hh_path(names_by_digest, d_ih, d_hh), len(sites)), hidden=hidden,
                input_size=W_ih.shape[1], batch=batch, steps_hoisted=step.x.steps if step.x.hoisted_step is not None else 0,
                weights=(W_ih, W_hh, b_ih, b_hh),
            )
            site.reason = _unsupported_reason(site, W_ih, W_hh, step)
            site.dual_ok = not site.reason
            sites[key] = site
        sites[key].steps.append(step)
        matched_terms.add(step.h.out)
    vanilla = []
    for var, value in graph.value.items():
        if _op_name(value) in ("relax.tanh", "relax.nn.relu") and _match_vanilla_rnn(graph, var):
            add = graph.call(value.args[0], "relax.add")
            terms = [_term(graph, a) for a in add.args]
            if not any(t.out in matched_terms for t in terms):
                paths = [names_by_digest.get(keys.lookup(t.weight)[1], "") for t in terms]
                vanilla.append(layer_name(next((p for p in paths if "weight_hh" in p), paths[-1]), len(vanilla)))
    return list(sites.values()), sorted(set(vanilla))


def _hh_path(names_by_digest: dict[str, str], d_ih: str, d_hh: str) -> str | None:
    paths = [names_by_digest.get(d_hh), names_by_digest.get(d_ih)]
    return next((p for p in paths if p and "weight_hh" in p), paths[0])


def _unsupported_reason(site: RecurrentSite, W_ih: np.ndarray, W_hh: np.ndarray, step: StepSite) -> str:
    ng = CELLS[site.cell]
    if W_ih.dtype != np.float32 or W_hh.dtype != np.float32:
        return f"dtype {W_hh.dtype} is not float32"
    if W_hh.shape[0] != ng * site.hidden or W_ih.shape[0] != ng * site.hidden:
        return f"weights {W_ih.shape} / {W_hh.shape} are not {ng} gates of {site.hidden} units"
    if W_hh.shape[1] != site.hidden:  # nn.LSTM(proj_size > 0): h is a projection of the cell's output
        return f"its recurrent state has {W_hh.shape[1]} units, not the {site.hidden} of its gates (proj_size)"
    if not 1 <= site.batch <= MAX_BATCH:
        return f"batch {site.batch} is outside the gate kernel's 1..{MAX_BATCH}"
    for term in (step.x, step.h):
        if term.bias is not None and constant_array(term.bias).size != ng * site.hidden:
            return "bias is not a vector over the gates"
    return ""


# ---- plans ------------------------------------------------------------------------------------
RECURRENT_MODES = ("auto", "fused", "hoisted")


@dataclass(frozen=True)
class RecurrentConfig:
    """How recurrent layers are compiled.

    mode: "fused" skips rows of W_ih and W_hh together (the little module sees [x; h]); "hoisted"
    keeps the translator's projection of the inputs over all time steps (one dense matmul per
    sequence) and skips rows of W_hh only; "auto" hoists when a layer runs more than one time
    step per call and fuses otherwise (a one-step model's "hoisted" projection is a GEMV, as
    memory-bound as W_hh itself; scripts/bench_rnn_layer.py --steps 35 --modes fused hoisted
    measures the choice).
    kernel: knobs of the gate kernel (little_block at most 32).
    allocation: how a layer's insensitive ratio is split over its gates: "output_error" gives the
    gates the ratios that change the layer's output h' least (gate_allocation.py; the tanh gates
    g and n usually get far less than the others), "equal" gives every gate the layer's ratio.
    """

    mode: str = "auto"
    kernel: DualKernelConfig | None = None
    allocation: str = "output_error"

    def __post_init__(self) -> None:
        if self.mode not in RECURRENT_MODES:
            raise ValueError(f"recurrent mode must be one of {RECURRENT_MODES}, got {self.mode!r}")
        if self.allocation not in ALLOCATIONS:
            raise ValueError(f"recurrent gate allocation must be one of {ALLOCATIONS}, got {self.allocation!r}")

    def fused_for(self, site: RecurrentSite) -> bool:
        if self.mode == "auto":
            return site.steps_hoisted <= 1
        return self.mode == "fused" or site.steps_hoisted == 0  # a per-step x term cannot be hoisted


@dataclass
class RecurrentLayerPlan:
    name: str
    key: str
    cell: str
    fused: bool
    hidden: int
    input_size: int
    batch: int
    little: LittleModule
    lo: np.ndarray  # (NG*H,) per gate row: sensitive iff lo <= decision value <= hi
    hi: np.ndarray
    target_ratio: float
    calibration_ratio: float  # insensitive fraction on the threshold data
    gate_ratios: dict[str, float]  # insensitive fraction per gate on the threshold data
    kernel: DualKernelConfig
    schedule_source: str = "default"  # where the kernel knobs came from (tuning/schedules.lookup)
    allocation: str = "output_error"  # how target_ratio was split over the gates (RecurrentConfig)
    vector_bits: int = 256  # SIMD width of the target (target.vector_bits), for the "i16" little module

    def shape(self) -> GateShape:
        return GateShape(cell=self.cell, batch=self.batch, hidden=self.hidden, input_size=self.input_size,
                         rank=self.little.rank, fused=self.fused)

    def little_values(self, u: np.ndarray) -> np.ndarray:
        """The little module's values for little-module inputs u, as this layer's kernel computes them."""
        return self.little.predict(u, self.kernel.little_compute, self.vector_bits)

    def metadata(self) -> dict:
        """The layer entry of DualModule metadata (what stats() reads: n rows of k floats)."""
        shape = self.shape()
        gates = GATES[self.cell]
        return {
            "name": self.name,
            "act": self.cell,
            "n": shape.gates * self.hidden,
            "k": shape.projected,
            "rank": self.little.rank,
            "bits": self.little.bits,
            "projection": self.little.projection,
            "fit_r2": self.little.fit_r2,
            "target_ratio": self.target_ratio,
            "calibration_ratio": self.calibration_ratio,
            "gate_ratios": self.gate_ratios,
            "gate_allocation": self.allocation,
            "threshold": {g: float(self.hi[i * self.hidden]) for i, g in enumerate(gates)},
            "mode": "fused" if self.fused else "hoisted",
            "little_bytes": gate_little_bytes(shape),
            "kernel": self.kernel.to_dict(),
            "schedule_source": self.schedule_source,
        }


@dataclass
class RecurrentPlan:
    layers: dict[str, RecurrentLayerPlan] = field(default_factory=dict)  # by site key

    def get(self, key: str) -> RecurrentLayerPlan | None:
        return self.layers.get(key)

    def __len__(self) -> int:
        return len(self.layers)


def split_recurrent_ratios(insensitive_ratio, sites: list[RecurrentSite], vanilla: list[str]):
    """Separate the recurrent layers' ratios from compile_dual's insensitive_ratio argument.

    Returns (what is left for the other layers, site key -> ratio for dual-capable recurrent
    layers). A float applies to every layer; a mapping names layers (recurrent names as in
    stats(): "rnn.l0", "cell").
    """
    if not isinstance(insensitive_ratio, Mapping):
        return insensitive_ratio, {s.key: insensitive_ratio for s in sites if s.dual_ok}
    by_name = {s.name: s for s in sites}
    rest = {name: v for name, v in insensitive_ratio.items() if name not in by_name and name not in vanilla}
    ratios = {}
    for name, value in insensitive_ratio.items():
        if name not in by_name and name not in vanilla:
            continue
        check_ratio(value, f"layer {name!r}")
        site = by_name.get(name)
        if float(value) > 0 and (site is None or not site.dual_ok):
            reason = site.reason if site is not None else "a vanilla RNN cell has no gate kernel"
            raise ValueError(f"layer {name!r} cannot be compiled as a dual module: {reason}")
        if site is not None:
            ratios[site.key] = float(value)
    return rest, ratios
