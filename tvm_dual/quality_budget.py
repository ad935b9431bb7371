"""Quality-budget calibration: per-layer insensitive ratios that skip the most bytes of W while a
user metric stays within a budget.

The objective is bytes saved per call against dense: a dual layer at ratio r skips r * N * K * 4
bytes of W but reads its little module, so it saves r * W - little bytes (negative at small r for
small layers). The search is greedy by marginal benefit: from the current per-layer ratios, every
layer that can still grow is tried one step higher (from exact, straight to its first step that
saves bytes at all); the step kept is the one with the most bytes saved per unit of quality lost
among those that still hold the budget. A layer whose next step breaks the budget is frozen. The
greedy walk runs twice, once from all-exact and once from the best single uniform ratio that holds
the budget (found first by trying each step on every layer at once), the walk that saves more
wins, so the per-layer result is never worse than uniform, and layers left saving nothing go back
to exact. Both results are reported.

Why not compile every candidate: a build takes seconds and the search evaluates tens of candidates.
Instead the metric sees the PyTorch model with a forward hook on each searched module that replaces
its output by what the dual kernel computes: for nn.Linear (+ activation) the numpy reference of
tvm_dual/reference.py (the kernel's little-module arithmetic, integer mode included, and its
sensitive mask); for nn.LSTMCell, nn.GRUCell, nn.LSTM and nn.GRU the gate reference of
tvm_dual/reference_gates.py and the cell update, step by step in numpy (fused or hoisted, as
planned). The little modules are the planner's, and the thresholds for each ratio come from the
planner's own functions (plan.thresholds_for_ratio, recurrent_calibrate.gate_thresholds), chosen
once on the exact model's layer inputs (the planner's first pass); the compiled module gets
exactly the thresholds the search evaluated, so what was measured is what runs (the tests check
that the compiled module scores what the search reported). An evaluation costs one PyTorch pass
over the metric's data, at any batch size.

Scope: nn.Linear modules used once, nn.LSTMCell, nn.GRUCell, and the layers of unidirectional
nn.LSTM (without projections) and nn.GRU. Other linear sites (F.linear on a bare parameter, a weight
used twice) and conv layers stay exact under a budget, with one warning: the hooks do not model
their dual computation, so their effect on the metric could not be measured. The numpy recurrent
layers are slow next to PyTorch's: give a recurrent model's metric a few thousand steps at a large
batch, not a whole corpus.
"""

from __future__ import annotations

import math
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from .compile_warning import DualCompileWarning
from .frontend import eval_mode, normalize_inputs
from .kernels.dual_dense import DualDenseShape, little_bytes
from .kernels.dual_gates import CELLS, gate_little_bytes
from .plan import DualLayerPlan, DualPlan, thresholds_for_ratio
from .reference import little_values, sensitive_mask
from .validation import real_number

DEFAULT_STEPS = tuple(round(0.1 * i, 1) for i in range(10))  # 0, 0.1, ..., 0.9
_MAX_THRESHOLD_ROWS = 50_000


@dataclass(frozen=True)
class QualityBudget:
    """`metric_fn(model) -> float` evaluates a callable with the PyTorch model's calling convention
    (torch tensors in and out, any batch size) on the user's held-out calibration data. The search
    keeps metric >= dense - max_drop (higher_is_better) or metric <= dense + max_drop (lower is
    better, e.g. perplexity; for "+1% perplexity" pass max_drop = 0.01 * dense perplexity).
    steps: the ratios each layer may take, ascending, starting at 0."""

    metric_fn: Callable[[Callable], float]
    max_drop: float
    higher_is_better: bool = True
    steps: tuple[float, ...] = DEFAULT_STEPS

    def __post_init__(self) -> None:
        if not callable(self.metric_fn):
            raise TypeError(f"metric_fn must be callable, got {type(self.metric_fn).__name__}")
        max_drop = real_number(self.max_drop)
        if max_drop is None or not math.isfinite(max_drop) or max_drop < 0:
            raise ValueError(f"max_drop must be a finite number >= 0, got {self.max_drop!r}")
        object.__setattr__(self, "max_drop", max_drop)
        steps = tuple(float(s) for s in self.steps)
        if len(steps) < 2 or steps[0] != 0.0 or any(b <= a for a, b in zip(steps, steps[1:])) or steps[-1] >= 1.0:
            raise ValueError(f"steps must ascend from 0 to below 1 with at least two values, got {self.steps!r}")
        object.__setattr__(self, "steps", steps)

    def holds(self, metric: float, dense: float) -> bool:
        if not math.isfinite(metric):
            return False
        # a relative epsilon so that a metric equal to the dense one up to float noise holds a 0 budget
        slack = self.max_drop + 1e-9 * max(1.0, abs(dense))
        return metric >= dense - slack if self.higher_is_better else metric <= dense + slack

    def lost(self, before: float, after: float) -> float:
        """Quality lost going from `before` to `after` (negative if it improved)."""
        return before - after if self.higher_is_better else after - before


def planning_ratios(
    budget: QualityBudget, model: torch.nn.Module, sites: list, names: dict[str, str], rec_sites: list, conv_names: list[str]
) -> dict[str, float]:
    """The insensitive_ratio plan_dual uses before the search: every searchable layer at the top
    step (so that its little module is fitted), every other layer exact, with one warning."""
    uses = Counter(site.digest for site in sites)
    candidates = {names[s.key]: uses[s.digest] == 1 and _module(model, names[s.key], torch.nn.Linear) for s in sites if s.dual_ok}
    candidates.update({s.name: _recurrent_layer_of(model, s.name) is not None for s in rec_sites if s.dual_ok})
    exact = [name for name, ok in candidates.items() if not ok] + list(conv_names)
    if exact:
        warnings.warn(
            f"a quality budget searches nn.Linear, nn.LSTM, nn.GRU, nn.LSTMCell and nn.GRUCell layers only; "
            f"{len(exact)} layer(s) stay exact: "
            f"{', '.join(exact)}",
            DualCompileWarning,
            stacklevel=4,
        )
    return {name: budget.steps[-1] for name, ok in candidates.items() if ok}


def _module(model: torch.nn.Module, name: str, kind: type | tuple[type, ...]) -> bool:
    try:
        return isinstance(model.get_submodule(name), kind)
    except AttributeError:
        return False


def _recurrent_layer_of(model: torch.nn.Module, name: str):
    """The nn.LSTMCell or nn.GRUCell named `name`, or (nn.LSTM or nn.GRU, layer index) for "path.lN"
    of a unidirectional layer without projections; None for anything else."""
    if _module(model, name, (torch.nn.LSTMCell, torch.nn.GRUCell)):
        return model.get_submodule(name)
    path, _, index = name.rpartition(".l")
    if path and index.isdigit() and _module(model, path, (torch.nn.LSTM, torch.nn.GRU)):
        rnn = model.get_submodule(path)
        if not rnn.bidirectional and not getattr(rnn, "proj_size", 0) and int(index) < rnn.num_layers:
            return rnn, int(index)
    return None



class _Layer:
    """One searched layer: its module, what it reads, its thresholds per step, and its dual output.

    record_group(args, layers) and dual_group(args, output, layers, steps) run as hooks of the
    module, for all searched layers of that module at once (several for a multi-layer nn.LSTM);
    choose_thresholds(ratios, held_out) fills `thresholds`; apply(step, ratio) writes the choice
    into the layer's plan.
    """

    name: str
    module: torch.nn.Module
    w_bytes: int  # weights a dense layer reads per call
    little_bytes: int  # the little module a dual layer reads per call on top of its sensitive rows
    thresholds: list  # per step

    def saved(self, ratio: float) -> float:
        """Bytes per call saved against dense at this ratio (negative when the little module costs more)."""
        return ratio * self.w_bytes - self.little_bytes if ratio > 0 else 0.0


class _LinearLayer(_Layer):
    """nn.Linear followed by its activation (DualLayerPlan); thresholds as _plan_layers chooses them."""

    def __init__(self, plan: DualLayerPlan, module: torch.nn.Linear, vector_bits: int) -> None:
        self.plan, self.name, self.module, self.vector_bits = plan, plan.name, module, vector_bits
        self.w_bytes = plan.n * plan.k * 4
        self.little_bytes = little_bytes(DualDenseShape(batch=1, n=plan.n, k=plan.k, rank=plan.little.rank, act=plan.act))
        self.rows: list[np.ndarray] = []

    def _little(self, x: np.ndarray) -> np.ndarray:
        m = self.plan.little
        return little_values(x, m.P, m.Ps, m.WL, m.WLs, m.bL, self.plan.kernel.little_compute, self.vector_bits)

    def record_group(self, args, _layers) -> None:
        self.rows.append(args[0].detach().reshape(-1, self.plan.k).numpy().copy())

    def choose_thresholds(self, ratios: tuple[float, ...], held_out: bool) -> None:
        from .api import threshold_rows  # the planner's held-out rows; api imports this module

        x = _sample(np.concatenate(self.rows))
        little = self._little(x if held_out else threshold_rows(x))
        self.thresholds = [thresholds_for_ratio(little, self.plan.act, r) for r in ratios]

    def dual_group(self, args, output, _layers, steps: list[int]):
        lo, hi, _ = self.thresholds[steps[0]]
        p = self.plan
        little = self._little(args[0].detach().reshape(-1, p.k).numpy())
        exact = output.detach().reshape(-1, p.n).numpy()
        mask = sensitive_mask(little, lo, hi)
        # an insensitive ReLU output is 0 in the kernel, whatever the little value: feed it 0
        merged = np.where(mask, exact, 0.0 if p.act == "relu" else little).astype(np.float32)
        return torch.from_numpy(merged).reshape(output.shape)

    def apply(self, step: int, ratio: float) -> None:
        lo, hi, observed = self.thresholds[step]
        self.plan.lo[:], self.plan.hi[:] = lo, hi
        self.plan.target_ratio, self.plan.calibration_ratio = ratio, observed


def _is_gru(module: torch.nn.Module) -> bool:
    return isinstance(module, (torch.nn.GRU, torch.nn.GRUCell))


def _gate_weights(module: torch.nn.Module, suffix: str = ""):
    from .reference_gates import GateWeights

    cell = "gru" if _is_gru(module) else "lstm"

    def array(name: str) -> np.ndarray:
        t = getattr(module, name + suffix, None)
        return np.zeros(CELLS[cell] * module.hidden_size, np.float32) if t is None else t.detach().numpy().astype(np.float32)

    return GateWeights(cell, array("weight_ih"), array("weight_hh"), array("bias_ih"), array("bias_hh"))


def _cell_step(weights, x: np.ndarray, h: np.ndarray, c: np.ndarray | None, plan=None, bounds=None):
    """One LSTM or GRU step in numpy, (h, c) -> (h', c') with c None for the GRU: exact, or with the
    gates the dual gate kernel computes (plan's little module and mode, per-gate bounds (lo, hi))."""
    from .reference_gates import cell_update, gates_reference

    with np.errstate(over="ignore", invalid="ignore"):
        if bounds is None:
            pre_x, pre_h = x @ weights.W_ih.T + weights.b_ih, h @ weights.W_hh.T + weights.b_hh
        elif plan.fused:  # the kernel's out_x holds only the GRU's x_n, out_h the rest
            little = plan.little_values(np.concatenate([x, h], axis=1))
            result = gates_reference(weights, True, h, x, None, bounds[0], bounds[1], little)
            pre_x, pre_h = result.out_x, result.out_h
        else:  # hoisted: the little module and the mask cover the h term; the x term is exact
            pre_x = x @ weights.W_ih.T + weights.b_ih
            little = plan.little_values(h)
            pre_h = gates_reference(weights, False, h, None, pre_x, bounds[0], bounds[1], little).out_h
        h_new, c_new = cell_update(weights.cell, pre_x, pre_h, h, c)
        return h_new.astype(np.float32), None if c_new is None else c_new.astype(np.float32)


class _GateLayer(_Layer):
    """One LSTM or GRU layer with dual gates (RecurrentLayerPlan): per-gate thresholds per step from
    recurrent_calibrate.gate_thresholds, the steps from reference_gates.gates_reference."""

    def __init__(self, plan, module: torch.nn.Module, weights) -> None:
        self.plan, self.name, self.module, self.weights = plan, plan.name, module, weights
        self.w_bytes = 4 * (weights.W_hh.size + (weights.W_ih.size if plan.fused else 0))
        self.little_bytes = gate_little_bytes(plan.shape())
        self.rows: list[tuple[np.ndarray, np.ndarray]] = []  # (x, h) of each step

    def choose_thresholds(self, ratios: tuple[float, ...], held_out: bool) -> None:
        from .recurrent_calibrate import gate_thresholds

        keep = _sample_index(sum(len(r[0]) for r in self.rows))
        x = np.concatenate([r[0] for r in self.rows])[keep]
        h = np.concatenate([r[1] for r in self.rows])[keep]
        self.thresholds = [
            gate_thresholds(self.weights, self.plan.fused, self.plan.little, x, h, r, self.plan.allocation,
                            self.plan.kernel.little_compute, self.plan.vector_bits) for r in ratios
        ]

    def step(self, x: np.ndarray, h: np.ndarray, c: np.ndarray | None, step: int):
        return _cell_step(self.weights, x, h, c, self.plan, self.thresholds[step][:2] if step else None)

    def apply(self, step: int, ratio: float) -> None:
        lo, hi, fractions = self.thresholds[step]
        self.plan.lo[:], self.plan.hi[:] = lo, hi
        self.plan.target_ratio, self.plan.gate_ratios = ratio, fractions
        self.plan.calibration_ratio = float(np.mean(list(fractions.values())))


class _CellLayer(_GateLayer):
    """nn.LSTMCell or nn.GRUCell: one step per call."""

    def __init__(self, plan, module: torch.nn.LSTMCell | torch.nn.GRUCell) -> None:
        super().__init__(plan, module, _gate_weights(module))
        self.gru = _is_gru(module)

    def _state(self, args) -> tuple[np.ndarray, np.ndarray | None]:
        """(h, c) of the call (c None for the GRU), zeros when it passes no state."""
        x = args[0].detach().reshape(-1, self.plan.input_size)
        state = args[1] if len(args) > 1 else None
        if state is None:
            zeros = np.zeros((len(x), self.plan.hidden), np.float32)
            return zeros, (None if self.gru else zeros)
        if self.gru:
            return state.detach().reshape(-1, self.plan.hidden).numpy(), None
        return tuple(t.detach().reshape(-1, self.plan.hidden).numpy() for t in state)

    def record_group(self, args, _layers) -> None:
        h, _ = self._state(args)
        self.rows.append((args[0].detach().reshape(-1, self.plan.input_size).numpy().copy(), h.copy()))

    def dual_group(self, args, output, _layers, steps: list[int]):
        h, c = self._state(args)
        x = args[0].detach().reshape(-1, self.plan.input_size).numpy()
        new_h, new_c = self.step(x, h, c, steps[0])
        if self.gru:
            return torch.from_numpy(new_h).reshape(output.shape)
        return tuple(torch.from_numpy(v).reshape(t.shape) for v, t in zip((new_h, new_c), output))


class _SequenceLayer(_GateLayer):
    """Layer `index` of an nn.LSTM (unidirectional, no projection) or nn.GRU (unidirectional). The
    hook of the module runs all its layers step by step in numpy, each exact or dual at its own step."""

    def __init__(self, plan, module: torch.nn.LSTM | torch.nn.GRU, index: int) -> None:
        super().__init__(plan, module, _gate_weights(module, f"_l{index}"))
        self.index = index

    @staticmethod
    def _run(module: torch.nn.LSTM | torch.nn.GRU, args, by_index: dict, steps: dict[int, int], record: bool):
        gru = _is_gru(module)
        x = args[0].detach()
        hx = args[1] if len(args) > 1 else None
        batched = x.dim() == 3
        if not batched:
            x = x.unsqueeze(1)
        elif module.batch_first:
            x = x.transpose(0, 1)
        L, H = module.num_layers, module.hidden_size
        if hx is None:
            h0 = np.zeros((L, x.shape[1], H), np.float32)
            c0 = [None] * L if gru else h0
        elif gru:
            h0, c0 = hx.detach().reshape(L, x.shape[1], H).numpy(), [None] * L
        else:
            h0, c0 = (t.detach().reshape(L, x.shape[1], H).numpy() for t in hx)
        seq = x.numpy().astype(np.float32)
        h_n, c_n = [], []
        for index in range(L):
            layer = by_index.get(index)
            weights = layer.weights if layer is not None else _gate_weights(module, f"_l{index}")
            step = steps.get(index, 0)
            h, c = h0[index], c0[index]
            outputs = []
            for x_t in seq:
                if record and layer is not None:
                    layer.rows.append((x_t.copy(), h.copy()))
                h, c = layer.step(x_t, h, c, step) if layer is not None else _cell_step(weights, x_t, h, c)
                outputs.append(h)
            seq = np.stack(outputs)
            h_n.append(h)
            c_n.append(c)
        out = torch.from_numpy(seq)
        if not batched:
            out = out.squeeze(1)
        elif module.batch_first:
            out = out.transpose(0, 1)
        state = [torch.from_numpy(np.stack(v)) for v in ((h_n,) if gru else (h_n, c_n))]
        if not batched:
            state = [t.squeeze(1) for t in state]
        return out, (state[0] if gru else tuple(state))

    def record_group(self, args, layers) -> None:
        self._run(self.module, args, {layer.index: layer for layer in layers}, {}, record=True)

    def dual_group(self, args, output, layers, steps: list[int]):
        return self._run(self.module, args, {layer.index: layer for layer in layers},
                         {layer.index: s for layer, s in zip(layers, steps)}, record=False)


def _sample_index(n: int) -> np.ndarray:
    if n <= _MAX_THRESHOLD_ROWS:
        return np.arange(n)
    return np.random.default_rng(0).choice(n, _MAX_THRESHOLD_ROWS, replace=False)


def _sample(x: np.ndarray) -> np.ndarray:
    return x[_sample_index(len(x))]


class _DualHooks:
    """Forward hooks turning searched layers' outputs into what their dual kernels compute."""

    def __init__(self, budget: QualityBudget, model: torch.nn.Module, layers: list[_Layer], progress) -> None:
        self.budget, self.model, self.layers, self.progress = budget, model, layers, progress
        self.steps = [0] * len(layers)
        self.count = 0  # evaluations, for the report

    def _hook(self, indices: list[int]):
        layers = [self.layers[i] for i in indices]

        def hook(_module, args, output):
            steps = [self.steps[i] for i in indices]
            return output if not any(steps) else layers[0].dual_group(args, output, layers, steps)

        return hook

    def evaluate(self, steps: list[int]) -> float:
        """The metric with each searched layer at its step (0: exact)."""
        self.steps = list(steps)
        handles = [module.register_forward_hook(self._hook(indices)) for module, indices in _by_module(self.layers)]
        try:
            with eval_mode(self.model), torch.no_grad():
                result = self.budget.metric_fn(_TorchCallable(self.model))
            value = real_number(result)
            if value is None:
                raise TypeError(f"QualityBudget's metric_fn must return a number, got {type(result).__name__}: {result!r:.80}")
        finally:
            for handle in handles:
                handle.remove()
        self.count += 1
        self.progress.update()
        return value


class _TorchCallable:
    """The model as the metric sees it: torch or numpy inputs, torch outputs, no autograd."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model

    def __call__(self, *inputs):
        with torch.no_grad():
            return self.model(*normalize_inputs(inputs))


def _by_module(layers: list[_Layer]) -> list[tuple[torch.nn.Module, list[int]]]:
    """The searched modules, each with the indices of its layers (several for a multi-layer nn.LSTM)."""
    groups: dict[int, tuple[torch.nn.Module, list[int]]] = {}
    for i, layer in enumerate(layers):
        groups.setdefault(id(layer.module), (layer.module, []))[1].append(i)
    return list(groups.values())


def _record_inputs(model: torch.nn.Module, layers: list[_Layer], batches: list) -> None:
    """Each searched layer's inputs on the exact model (forward pre-hooks)."""

    def recorder(group: list[_Layer]):
        return lambda _module, args: group[0].record_group(args, group)

    handles = [module.register_forward_pre_hook(recorder([layers[i] for i in indices])) for module, indices in _by_module(layers)]
    try:
        with eval_mode(model), torch.no_grad():
            for batch in batches:
                model(*normalize_inputs(batch))
    finally:
        for handle in handles:
            handle.remove()
    for layer in layers:
        if not layer.rows:
            raise RuntimeError(f"calibration never reached layer {layer.name!r}")


class _Search:
    def __init__(self, budget: QualityBudget, hooks: _DualHooks, layers: list[_Layer]) -> None:
        self.budget, self.hooks, self.layers, self.ratios = budget, hooks, layers, budget.steps
        self.dense = float("nan")
        # the first step at which a layer saves bytes at all (its little module costs less than the rows)
        self.first_step = [next((s for s, r in enumerate(self.ratios) if layer.saved(r) > 0), None) for layer in layers]

    def saved(self, steps: list[int]) -> float:
        return sum(layer.saved(self.ratios[s]) for layer, s in zip(self.layers, steps))

    def skipped(self, steps: list[int]) -> int:
        return int(sum(layer.w_bytes * self.ratios[s] for layer, s in zip(self.layers, steps)))

    def holds(self, value: float) -> bool:
        return self.budget.holds(value, self.dense)

    def next_step(self, i: int, step: int) -> int | None:
        if step == 0:
            return self.first_step[i]
        return step + 1 if step + 1 < len(self.ratios) else None

    def greedy(self, start: list[int], start_metric: float) -> tuple[list[int], float]:
        """From `start`, repeatedly take the one-layer step with the most bytes saved per quality lost
        that holds the budget; a layer whose next step breaks it is frozen."""
        steps, metric = list(start), start_metric
        frozen = {i for i, s in enumerate(steps) if self.next_step(i, s) is None}
        while len(frozen) < len(self.layers):
            best = None  # (score, layer, step, metric)
            for i in range(len(self.layers)):
                if i in frozen:
                    continue
                trial = list(steps)
                trial[i] = self.next_step(i, steps[i])
                value = self.hooks.evaluate(trial)
                if not self.holds(value):
                    frozen.add(i)
                    continue
                gained = self.saved(trial) - self.saved(steps)
                score = gained / max(self.budget.lost(metric, value), 1e-12)
                if best is None or score > best[0]:
                    best = (score, i, trial[i], value)
            if best is None:
                break
            _, i, steps[i], metric = best
            if self.next_step(i, steps[i]) is None:
                frozen.add(i)
            self.hooks.progress.set_postfix(saved=f"{self.saved(steps) / 2**20:.3f}MiB", metric=f"{metric:.4g}")
        return steps, metric

    def drop_losing_layers(self, steps: list[int], metric: float) -> tuple[list[int], float]:
        """Layers whose little module costs more than their skipped rows go back to exact, where the
        metric still holds without them."""
        for i, layer in enumerate(self.layers):
            if steps[i] and layer.saved(self.ratios[steps[i]]) <= 0:
                trial = list(steps)
                trial[i] = 0
                value = self.hooks.evaluate(trial)
                if self.holds(value):
                    steps, metric = trial, value
        return steps, metric


def search_quality_budget(
    budget: QualityBudget, model: torch.nn.Module, plan: DualPlan, rec_plan, calibration: list, validation: list | None
) -> dict:
    """Choose per-layer ratios for the layers in `plan` and the recurrent layers in `rec_plan` (all
    fitted at the top step), set their thresholds, drop the ones left at ratio 0 from the plans,
    and return the report for metadata."""
    ratios = budget.steps
    layers: list[_Layer] = [_LinearLayer(p, model.get_submodule(p.name), plan.vector_bits) for p in plan.layers.values()]
    for p in rec_plan.layers.values():
        module = _recurrent_layer_of(model, p.name)
        layers.append(_SequenceLayer(p, *module) if isinstance(module, tuple) else _CellLayer(p, module))
    _record_inputs(model, layers, validation if validation is not None else calibration)
    for layer in layers:
        layer.choose_thresholds(ratios, held_out=validation is not None)

    with tqdm(desc="quality budget", unit="eval", disable=None, leave=False) as progress:
        hooks = _DualHooks(budget, model, layers, progress)
        search = _Search(budget, hooks, layers)
        search.dense = hooks.evaluate([0] * len(layers))
        if not math.isfinite(search.dense):
            raise ValueError(f"the quality metric of the exact model is {search.dense}; it must be a finite number")
        uniform_step, uniform_metric = 0, search.dense
        for s in range(1, len(ratios) if layers else 1):  # every step: the metric need not be monotone in the ratio
            value = hooks.evaluate([s] * len(layers))
            if search.holds(value):
                uniform_step, uniform_metric = s, value
        walks = [search.greedy([0] * len(layers), search.dense)]
        if uniform_step:
            walks.append(search.greedy([uniform_step] * len(layers), uniform_metric))
        steps, metric = search.drop_losing_layers(*max(walks, key=lambda walk: search.saved(walk[0])))

    for layer, step in zip(layers, steps):
        if step:
            layer.apply(step, ratios[step])
        elif isinstance(layer, _LinearLayer):
            del plan.layers[layer.plan.key]  # exact, with no little-module overhead
        else:
            del rec_plan.layers[layer.plan.key]
    uniform = [uniform_step] * len(layers)
    return {
        "metric_dense": search.dense,
        "max_drop": budget.max_drop,
        "higher_is_better": budget.higher_is_better,
        "steps": list(ratios),
        "evaluations": hooks.count,
        "searched_w_bytes": sum(layer.w_bytes for layer in layers),
        "per_layer": {
            "ratios": {layer.name: ratios[s] for layer, s in zip(layers, steps)},
            "metric": metric,
            "w_bytes_skipped": search.skipped(steps),
            "bytes_saved": search.saved(steps),
        },
        "uniform": {
            "ratio": ratios[uniform_step],
            "metric": uniform_metric,
            "w_bytes_skipped": search.skipped(uniform),
            "bytes_saved": search.saved(uniform),
        },
    }
