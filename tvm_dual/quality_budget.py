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
Instead the metric sees the PyTorch model with a forward hook on each searched nn.Linear that
replaces its output by the dual computation of tvm_dual/reference.py (the kernel's little-module
arithmetic, integer mode included, and its sensitive mask), with the planner's fitted little
modules and thresholds from plan.thresholds_for_ratio. An evaluation then costs one PyTorch pass
over the metric's data, at any batch size. Thresholds for each ratio are chosen once, on the exact
model's layer inputs (the planner's first pass); the compiled module gets exactly the thresholds
the search evaluated, so what was measured is what runs.

Scope: linear layers that are nn.Linear modules used once. Other linear sites (F.linear on a bare
parameter, a weight used twice) stay exact under a budget, and so do LSTM/GRU and conv layers:
their dual computation is not modelled by the hooks, so their effect on the metric could not be
measured.
"""

from __future__ import annotations

import math
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from .frontend import eval_mode, normalize_inputs
from .kernels.dual_dense import DualDenseShape, little_bytes
from .plan import DualLayerPlan, DualPlan, thresholds_for_ratio
from .reference import little_values, sensitive_mask

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


def planning_ratios(budget: QualityBudget, model: torch.nn.Module, sites: list, names: dict[str, str], other_layers: list[str]) -> dict[str, float]:
    """The insensitive_ratio plan_dual uses before the search: every searchable linear layer at the
    top step (so that its little module is fitted), every other layer exact, with one warning."""
    uses = Counter(site.digest for site in sites)
    candidates = {names[s.key]: uses[s.digest] == 1 and searchable(model, names[s.key]) for s in sites if s.dual_ok}
    exact = [name for name, ok in candidates.items() if not ok] + list(other_layers)
    if exact:
        warnings.warn(
            f"a quality budget searches nn.Linear layers only; {len(exact)} layer(s) stay exact: {', '.join(exact)}",
            _warning_class(),
            stacklevel=4,
        )
    return {name: budget.steps[-1] for name, ok in candidates.items() if ok}


def searchable(model: torch.nn.Module, name: str) -> bool:
    """Whether the hooks can model this layer: an nn.Linear module of that name."""
    try:
        return isinstance(model.get_submodule(name), torch.nn.Linear)
    except AttributeError:
        return False


def _warning_class():
    from .api import DualCompileWarning  # api imports this module

    return DualCompileWarning


@dataclass
class _Layer:
    plan: DualLayerPlan
    module: torch.nn.Linear
    w_bytes: int  # W, which a dense layer reads per call
    little_bytes: int  # the little module a dual layer reads per call on top of its sensitive rows
    thresholds: list[tuple[np.float32, np.float32, float]] = field(default_factory=list)  # per step: lo, hi, observed

    def saved(self, ratio: float) -> float:
        """Bytes per call saved against dense at this ratio (negative when the little module costs more)."""
        return ratio * self.w_bytes - self.little_bytes if ratio > 0 else 0.0


class _DualHooks:
    """Forward hooks turning searched nn.Linear outputs into dual-module pre-activations."""

    def __init__(self, budget: QualityBudget, model: torch.nn.Module, layers: list[_Layer], vector_bits: int, progress) -> None:
        self.budget, self.model, self.layers, self.vector_bits, self.progress = budget, model, layers, vector_bits, progress
        self.steps = [0] * len(layers)
        self.count = 0  # evaluations, for the report

    def _hook(self, index: int):
        layer = self.layers[index]

        def hook(_module, args, output):
            step = self.steps[index]
            if step == 0:
                return output
            lo, hi, _ = layer.thresholds[step]
            m, p = layer.plan.little, layer.plan
            x = args[0].detach().reshape(-1, p.k).numpy()
            little = little_values(x, m.P, m.Ps, m.WL, m.WLs, m.bL, p.kernel.little_compute, self.vector_bits)
            exact = output.detach().reshape(-1, p.n).numpy()
            mask = sensitive_mask(little, lo, hi)
            # an insensitive ReLU output is 0 in the kernel, whatever the little value: feed it 0
            merged = np.where(mask, exact, 0.0 if p.act == "relu" else little).astype(np.float32)
            return torch.from_numpy(merged).reshape(output.shape)

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


def _threshold_inputs(model: torch.nn.Module, layers: list[_Layer], batches: list) -> list[np.ndarray]:
    """Each searched layer's inputs on the exact model (forward pre-hooks)."""
    rows: list[list[np.ndarray]] = [[] for _ in layers]

    def recorder(i):
        def hook(_module, args):
            rows[i].append(args[0].detach().reshape(-1, layers[i].plan.k).numpy().copy())

        return hook

    handles = [layer.module.register_forward_pre_hook(recorder(i)) for i, layer in enumerate(layers)]
    try:
        with eval_mode(model), torch.no_grad():
            for batch in batches:
                model(*normalize_inputs(batch))
    finally:
        for handle in handles:
            handle.remove()
    out = []
    for layer, parts in zip(layers, rows):
        if not parts:
            raise RuntimeError(f"calibration never reached layer {layer.plan.name!r}")
        x = np.concatenate(parts)
        if len(x) > _MAX_THRESHOLD_ROWS:
            x = x[np.random.default_rng(0).choice(len(x), _MAX_THRESHOLD_ROWS, replace=False)]
        out.append(x)
    return out


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


def search_quality_budget(budget: QualityBudget, model: torch.nn.Module, plan: DualPlan, calibration: list, validation: list | None) -> dict:
    """Choose per-layer ratios for the layers in `plan` (all fitted at the top step), set their
    thresholds, drop the ones left at ratio 0 from the plan, and return the report for metadata."""
    from .api import threshold_rows  # the planner's held-out rows; api imports this module

    ratios = budget.steps
    layers = []
    for layer in plan.layers.values():
        shape = DualDenseShape(batch=1, n=layer.n, k=layer.k, rank=layer.little.rank, act=layer.act)
        layers.append(_Layer(layer, model.get_submodule(layer.name), layer.n * layer.k * 4, little_bytes(shape)))
    data = validation if validation is not None else calibration
    for layer, x in zip(layers, _threshold_inputs(model, layers, data)):
        rows = x if validation is not None else threshold_rows(x)
        m = layer.plan.little
        little = little_values(rows, m.P, m.Ps, m.WL, m.WLs, m.bL, layer.plan.kernel.little_compute, plan.vector_bits)
        layer.thresholds = [thresholds_for_ratio(little, layer.plan.act, r) for r in ratios]

    with tqdm(desc="quality budget", unit="eval", disable=None, leave=False) as progress:
        hooks = _DualHooks(budget, model, layers, plan.vector_bits, progress)
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
        if step == 0:
            del plan.layers[layer.plan.key]  # exact, with no little-module overhead
            continue
        lo, hi, observed = layer.thresholds[step]
        layer.plan.lo[:], layer.plan.hi[:] = lo, hi
        layer.plan.target_ratio, layer.plan.calibration_ratio = ratios[step], observed
    uniform = [uniform_step] * len(layers)
    return {
        "metric_dense": search.dense,
        "max_drop": budget.max_drop,
        "higher_is_better": budget.higher_is_better,
        "steps": list(ratios),
        "evaluations": hooks.count,
        "searched_w_bytes": sum(layer.w_bytes for layer in layers),
        "per_layer": {
            "ratios": {layer.plan.name: ratios[s] for layer, s in zip(layers, steps)},
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
