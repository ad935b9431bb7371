"""The dual-kernel tuner: propose a batch, measure it, log it, retrain, repeat.

strategy "xgb": the first batch is random; afterwards the XGBoost model ranks every unmeasured
candidate and the batch is its best (1 - epsilon) share plus an epsilon share drawn at random, so
that a wrong model cannot lock the search into one corner. strategy "random": uniform sampling
without replacement, the baseline the model is judged against. Tuning resumes from the records
already in the log for the same workload and target.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import numpy as np
from tqdm.auto import tqdm

from ..kernels.dual_dense import DualKernelConfig
from ..target import target_to_string
from .cost_model import XGBCostModel
from .records import Record, append_records, read_records
from .space import ShapeFeatures, config_space, features
from .workload import DualWorkload


@dataclass
class TuningResult:
    workload: DualWorkload
    target: str
    best_config: DualKernelConfig | None
    best_time_s: float | None
    history: list[float | None] = field(default_factory=list)  # time of each trial, in order (None: failed)
    resumed: int = 0  # records taken over from the log

    def trials_to_fraction(self, fraction: float = 0.95, reference_s: float | None = None) -> int | None:
        """Trials until a candidate within `fraction` of the reference speed (default: this run's best)."""
        reference_s = reference_s or self.best_time_s
        if reference_s is None:
            return None
        for i, t in enumerate(self.history, 1):
            if t is not None and reference_s / t >= fraction:
                return i
        return None


def tune_dual_kernel(
    workload: DualWorkload,
    measurer,
    trials: int = 64,
    minutes: float | None = None,
    strategy: str = "xgb",
    batch_size: int = 8,
    epsilon: float = 0.2,
    log_path: str | os.PathLike | None = None,
    space: list[DualKernelConfig] | None = None,
    seed: int = 0,
    progress: bool = True,
    resume: bool = True,
) -> TuningResult:
    """Tune one workload; `trials` new measurements at most (and `minutes` of wall time, if given).
    With resume, records of the same workload and target already in the log count as measured."""
    if strategy not in ("xgb", "random"):
        raise ValueError(f"strategy must be 'xgb' or 'random', got {strategy!r}")
    target = target_to_string(measurer.target)
    space = space if space is not None else config_space()
    shape = ShapeFeatures(workload.batch, workload.n, workload.k, workload.rank, 1.0 - workload.ratio)
    feats = np.stack([features(c, shape) for c in space])
    index = {c: i for i, c in enumerate(space)}
    rng = np.random.default_rng(seed)

    previous = [r for r in read_records(log_path) if r.workload == workload and r.target == target] if log_path and resume else []
    measured: dict[DualKernelConfig, float | None] = {r.config: r.time_s for r in previous}
    result = TuningResult(workload, target, None, None, resumed=len(previous))
    model = XGBCostModel(seed=seed)
    deadline = time.monotonic() + 60 * minutes if minutes else None

    bar = tqdm(total=trials, desc=f"tuning {workload.key}", unit="trial", disable=not progress)
    _update_best(result, measured)
    while len(result.history) < trials and (deadline is None or time.monotonic() < deadline):
        candidates = [c for c in space if c not in measured]
        if not candidates:
            break
        want = min(batch_size, trials - len(result.history), len(candidates))
        batch = _propose(strategy, model, candidates, feats, index, measured, want, epsilon, rng)
        measurements = measurer.measure(workload, batch)
        records = [Record(workload, target, m.config, m.time_s, m.error, measurer.name) for m in measurements]
        if log_path:
            append_records(log_path, records)
        for m in measurements:
            measured[m.config] = m.time_s
            result.history.append(m.time_s)
        _update_best(result, measured)
        bar.update(len(measurements))
        if result.best_time_s is not None:
            bar.set_postfix(best_us=f"{1e6 * result.best_time_s:.1f}")
    bar.close()
    return result


def _update_best(result: TuningResult, measured: dict) -> None:
    ok = {c: t for c, t in measured.items() if t is not None}
    if ok:
        result.best_config = min(ok, key=ok.get)
        result.best_time_s = ok[result.best_config]


def _propose(strategy, model, candidates, feats, index, measured, want, epsilon, rng) -> list[DualKernelConfig]:
    ok = [(c, t) for c, t in measured.items() if t is not None]
    if strategy == "random" or len(ok) < 8:
        picks = rng.choice(len(candidates), size=want, replace=False)
        return [candidates[i] for i in picks]
    model.fit(feats[[index[c] for c, _ in ok]], np.array([t for _, t in ok]))
    predicted = model.predict(feats[[index[c] for c in candidates]])
    n_explore = int(round(epsilon * want))
    order = list(np.argsort(predicted))
    chosen = order[: want - n_explore]
    rest = [i for i in range(len(candidates)) if i not in set(chosen)]
    if n_explore and rest:
        chosen += list(rng.choice(rest, size=min(n_explore, len(rest)), replace=False))
    return [candidates[i] for i in chosen]
