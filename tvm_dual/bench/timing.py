"""Timing: time-based warm-up, many timed calls, hot or cold cache, robust statistics.

Cold cache: before every timed call, a buffer several times larger than the last-level cache is
read (not written: dirty lines would be written back during the next call and bill it for it),
outside the timed region, by as many threads as the engine uses, so that the second core is awake
and its private L2 is flushed too. Hot cache: calls follow each other with the same weights.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TimingPlan:
    warmup_s: float = 0.5  # the second vCPU needs about 0.1 s to wake up; warm up by time
    budget_s: float = 1.5  # timed calls stop after this much wall time (flushes included)...
    min_samples: int = 30  # ...once at least this many were taken
    max_samples: int = 2000

    def __post_init__(self) -> None:
        if not (self.warmup_s >= 0 and self.budget_s >= 0):  # also false for NaN
            raise ValueError(f"warm-up and budget must be seconds >= 0, got {self.warmup_s} and {self.budget_s}")
        if not 1 <= self.min_samples <= self.max_samples:
            raise ValueError(f"samples must satisfy 1 <= min ({self.min_samples}) <= max ({self.max_samples})")


@dataclass
class TimingStats:
    median_us: float
    p10_us: float
    p90_us: float
    mean_us: float
    min_us: float
    samples: int

    @staticmethod
    def of(seconds: Sequence[float]) -> "TimingStats":
        us = np.asarray(seconds, dtype=np.float64) * 1e6
        p10, median, p90 = np.percentile(us, [10, 50, 90])
        return TimingStats(float(median), float(p10), float(p90), float(us.mean()), float(us.min()), int(us.size))


class CacheFlusher:
    """Evicts caches by reading `nbytes` of memory with `threads` threads (numpy releases the GIL)."""

    def __init__(self, nbytes: int, threads: int) -> None:
        self.buffer = np.ones(max(nbytes // 4, 1024), dtype=np.float32)
        self.parts = np.array_split(self.buffer, max(threads, 1))
        self.pool = ThreadPoolExecutor(max_workers=len(self.parts)) if len(self.parts) > 1 else None

    def __call__(self) -> None:
        if self.pool is None:
            self.parts[0].sum()
        else:
            list(self.pool.map(np.sum, self.parts))

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()


def measure(
    call: Callable[[object], object],
    inputs: Sequence[object],
    plan: TimingPlan,
    flush: Callable[[], None] | None = None,
) -> TimingStats:
    """Time `call(inputs[i % len(inputs)])`; with `flush`, caches are flushed before each timed call."""
    n = len(inputs)
    deadline = time.perf_counter() + plan.warmup_s
    i = 0
    while i < 3 or time.perf_counter() < deadline:
        if flush is not None and i % 8 == 0:  # warm-up in the cold regime too, without paying a flush per call
            flush()
        call(inputs[i % n])
        i += 1
    samples: list[float] = []
    stop = time.perf_counter() + plan.budget_s
    perf = time.perf_counter
    while len(samples) < plan.max_samples and (len(samples) < plan.min_samples or perf() < stop):
        if flush is not None:
            flush()
        x = inputs[i % n]
        start = perf()
        call(x)
        samples.append(perf() - start)
        i += 1
    return TimingStats.of(samples)


@dataclass
class PairedStats:
    """Calls of a baseline and a contender alternating in one process: each pair is two neighbouring
    calls, so drift of the machine's speed over seconds (other tenants, frequency) cancels in the
    pair's ratio. `ratios` are baseline time / contender time, one per pair (the contender's speedup)."""

    ratios: list[float]
    baseline_median_us: float
    contender_median_us: float

    @staticmethod
    def of(pairs: Sequence[tuple[float, float]]) -> "PairedStats":
        a = np.asarray(pairs, dtype=np.float64).reshape(-1, 2)
        return PairedStats(
            [round(float(r), 4) for r in a[:, 0] / a[:, 1]], float(np.median(a[:, 0]) * 1e6), float(np.median(a[:, 1]) * 1e6)
        )


def measure_paired(
    baseline: tuple[Callable[[object], object], Sequence[object]],
    contender: tuple[Callable[[object], object], Sequence[object]],
    plan: TimingPlan,
    flush: Callable[[], None] | None = None,
) -> PairedStats:
    """Time (call, inputs) pairs alternately, which one goes first swapping every pair. Cold: caches
    are flushed before every timed call. Hot: each timed call follows an untimed call of the same
    engine, because the other engine's call just evicted part of its weights; that call takes another
    input, so that a dual layer does not find exactly its rows of the timed call in cache."""
    engines = (baseline, contender)
    perf = time.perf_counter
    deadline = perf() + plan.warmup_s
    i = 0
    while i < 3 or perf() < deadline:
        for call, inputs in engines:
            call(inputs[i % len(inputs)])
        i += 1
    pairs: list[tuple[float, float]] = []
    stop = perf() + plan.budget_s
    while len(pairs) < plan.max_samples and (len(pairs) < plan.min_samples or perf() < stop):
        times = [0.0, 0.0]
        for slot in ((0, 1) if len(pairs) % 2 == 0 else (1, 0)):
            call, inputs = engines[slot]
            if flush is not None:
                flush()
            else:
                call(inputs[(i + 1) % len(inputs)])
            x = inputs[i % len(inputs)]
            start = perf()
            call(x)
            times[slot] = perf() - start
        pairs.append((times[0], times[1]))
        i += 1
    return PairedStats.of(pairs)
