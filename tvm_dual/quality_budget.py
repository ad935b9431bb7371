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
sensitive mask); for nn.LSTMCell the gate reference of tvm_dual/reference_gates.py followed by the
cell update. The little modules are the planner's, and the thresholds for each ratio come from the
planner's own functions (plan.thresholds_for_ratio, recurrent_calibrate.gate_thresholds), chosen
once on the exact model's layer inputs (the planner's first pass); the compiled module gets
exactly the thresholds the search evaluated, so what was measured is what runs (the tests check
that the compiled module scores what the search reported). An evaluation costs one PyTorch pass
over the metric's data, at any batch size.

Scope: nn.Linear modules used once and nn.LSTMCell step functions (fused gates). Other linear
sites (F.linear on a bare parameter, a weight used twice), nn.LSTM/nn.GRU/GRUCell and conv layers
stay exact under a budget, with one warning: the hooks do not model their dual computation, so
their effect on the metric could not be measured.
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

from .frontend import eval_mode, normalize_inputs
from .kernels.dual_dense import DualDenseShape, little_bytes
from .kernels.dual_gates import gate_little_bytes
from .plan import DualLayerPlan, DualPlan, thresholds_for_ratio
from .reference import activation, little_values, sensitive_mask

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
        if isinstance(self.max_drop, bool) or not isinstance(self.max_drop, (int, float)) or not math.isfinite(self.max_drop) or self.max_drop < 0:
            raise ValueError(f"max_drop must be a finite number >= 0, got {self.max_drop!r}")
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
    candidates.update({s.name: s.cell == "lstm" and _module(model, s.name, torch.nn.LSTMCell) for s in rec_sites if s.dual_ok})
    exact = [name for name, ok in candidates.items() if not ok] + list(conv_names)
    if exact:
        warnings.warn(
            f"a quality budget searches nn.Linear and nn.LSTMCell layers only; {len(exact)} layer(s) stay exact: "
            f"{', '.join(exact)}",
            _warning_class(),
            stacklevel=4,
        )
    return {name: budget.steps[-1] for name, ok in candidates.items() if ok}


def _module(model: torch.nn.Module, name: str, kind: type) -> bool:
    try:
        return isinstance(model.get_submodule(name), kind)
    except AttributeError:
        return False


def _warning_class():
    from .api import DualCompileWarning  # api imports this module

    return DualCompileWarning


class _Layer:
    """One searched layer: its module, what it reads, its thresholds per step, and its dual output."""

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

    def record(self, args) -> None:
        self.rows.append(args[0].detach().reshape(-1, self.plan.k).numpy().copy())

    def choose_thresholds(self, ratios: tuple[float, ...], held_out: bool) -> None:
        from .api import threshold_rows  # the planner's held-out rows; api imports this module

        x = _sample(np.concatenate(self.rows))
        little = self._little(x if held_out else threshold_rows(x))
        self.thresholds = [thresholds_for_ratio(little, self.plan.act, r) for r in ratios]

    def dual_output(self, args, output, step: int):
        lo, hi, _ = self.thresholds[step]
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


class _LSTMCellLayer(_Layer):
    """nn.LSTMCell with its gates fused into one dual gate kernel (RecurrentLayerPlan, fused mode);
    per-gate thresholds from recurrent_calibrate.gate_thresholds, the outputs from
    reference_gates.gates_reference and the cell update."""

    def __init__(self, plan, module: torch.nn.LSTMCell) -> None:
        from .reference_gates import GateWeights

        def array(t: torch.Tensor | None) -> np.ndarray:
            return np.zeros(4 * module.hidden_size, np.float32) if t is None else t.detach().numpy().astype(np.float32)

        self.plan, self.name, self.module = plan, plan.name, module
        self.weights = GateWeights("lstm", array(module.weight_ih), array(module.weight_hh), array(module.bias_ih), array(module.bias_hh))
        weights = self.weights
        self.w_bytes = 4 * (weights.W_ih.size + weights.W_hh.size)
        self.little_bytes = gate_little_bytes(plan.shape())
        self.rows: list[tuple[np.ndarray, np.ndarray]] = []

    def _state(self, args) -> tuple[torch.Tensor, torch.Tensor]:
        x = args[0]
        if len(args) > 1 and args[1] is not None:
            return args[1]
        zeros = torch.zeros(*x.shape[:-1], self.plan.hidden, dtype=x.dtype)
        return zeros, zeros

    def record(self, args) -> None:
        h, _ = self._state(args)
        self.rows.append((args[0].detach().reshape(-1, self.plan.input_size).numpy().copy(),
                          h.detach().reshape(-1, self.plan.hidden).numpy().copy()))

    def choose_thresholds(self, ratios: tuple[float, ...], held_out: bool) -> None:
        from .recurrent_calibrate import gate_thresholds

        x = np.concatenate([r[0] for r in self.rows])
        h = np.concatenate([r[1] for r in self.rows])
        keep = _sample_index(len(x))
        x, h = x[keep], h[keep]
        self.thresholds = [gate_thresholds(self.weights, True, self.plan.little, x, h, r) for r in ratios]

    def dual_output(self, args, output, step: int):
        from .reference_gates import gates_reference

        lo, hi, _ = self.thresholds[step]
        h_t, c_t = self._state(args)
        x = args[0].detach().reshape(-1, self.plan.input_size).numpy()
        h = h_t.detach().reshape(-1, self.plan.hidden).numpy()
        c = c_t.detach().reshape(-1, self.plan.hidden).numpy().astype(np.float64)
        little = self.plan.little.predict(np.concatenate([x, h], axis=1))
        gates = gates_reference(self.weights, True, h, x, None, lo, hi, little).out_h
        i, f, g, o = np.split(gates, 4, axis=1)
        sigmoid = lambda v: activation(v, "sigmoid")  # noqa: E731
        c_new = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
        h_new = sigmoid(o) * np.tanh(c_new)
        return tuple(torch.from_numpy(v.astype(np.float32)).reshape(t.shape) for v, t in zip((h_new, c_new), output))

    def apply(self, step: int, ratio: float) -> None:
        lo, hi, fractions = self.thresholds[step]
        self.plan.lo[:], self.plan.hi[:] = lo, hi
        self.plan.target_ratio, self.plan.gate_ratios = ratio, fractions
        self.plan.calibration_ratio = float(np.mean(list(fractions.values())))


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

    def _hook(self, index: int):
        layer = self.layers[index]

        def hook(_module, args, output):
            step = self.steps[index]
            return output if step == 0 else layer.dual_output(args, output, step)

        return hook

    def evaluate(self, steps: list[int]) -> float:
        """The metric with each searched layer at its step (0: exact)."""
        self.steps = list(steps)
        handles = [layer.module.register_forward_hook(self._hook(i)) for i, layer in enumerate(self.layers)]
        try:
            with eval_mode(self.model), torch.no_grad():
                value = float(self.budget.metric_fn(_TorchCallable(self.model)))
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


def _record_inputs(model: torch.nn.Module, layers: list[_Layer], batches: list) -> None:
    """Each searched layer's inputs on the exact model (forward pre-hooks)."""

    def recorder(layer):
        return lambda _module, args: layer.record(args)

    handles = [layer.module.register_forward_pre_hook(recorder(layer)) for layer in layers]
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
    """Choose per-layer ratios for the layers in `plan` and the LSTMCell layers in `rec_plan` (all
    fitted at the top step), set their thresholds, drop the ones left at ratio 0 from the plans,
    and return the report for metadata."""
    ratios = budget.steps
    layers: list[_Layer] = [_LinearLayer(p, model.get_submodule(p.name), plan.vector_bits) for p in plan.layers.values()]
    for key, p in list(rec_plan.layers.items()):
        if not p.fused:  # the hooks model the one-step cell with its gates fused
            warnings.warn(f"a quality budget needs {p.name!r} fused (RecurrentConfig); it stays exact",
                          _warning_class(), stacklevel=4)
            del rec_plan.layers[key]
            continue
        layers.append(_LSTMCellLayer(p, model.get_submodule(p.name)))
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
