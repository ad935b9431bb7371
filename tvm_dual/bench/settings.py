"""The settings of one benchmark run, shared by the orchestrator and its worker processes (as JSON)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from .timing import TimingPlan

CACHES = ("hot", "cold")
DEFAULT_RATIOS = (0.25, 0.5, 0.75)


@dataclass
class BenchSettings:
    workload: str = "linear"
    workload_params: dict[str, Any] = field(default_factory=dict)
    engines: list[str] | None = None  # None: every registered engine
    threads: list[int] = field(default_factory=lambda: [1, 2])
    caches: list[str] = field(default_factory=lambda: list(CACHES))
    ratios: list[float] = field(default_factory=lambda: list(DEFAULT_RATIOS))
    rounds: int = 3
    paired_ratio: float | None = 0.5  # dense TVM vs tvm-dual at this ratio (if among `ratios`), alternating in one process
    timing: TimingPlan = field(default_factory=TimingPlan)
    flush_bytes: int | None = None  # None: 4x the last-level cache, at least 64 MiB
    bandwidth_seconds: float = 0.3  # per buffer size and thread count
    ms_database: str | None = None  # MetaSchedule database folder for the tvm-ms engine
    worker_timeout_s: float = 900.0
    smoke: bool = False
    command: str = ""  # how the run was started, for the report

    def __post_init__(self) -> None:
        if isinstance(self.timing, dict):
            self.timing = TimingPlan(**self.timing)
        bad = [c for c in self.caches if c not in CACHES]
        if bad or not self.caches:
            raise ValueError(f"cache modes must be among {CACHES}, got {self.caches}")
        if not self.threads or any(t < 1 for t in self.threads):
            raise ValueError(f"thread counts must be positive integers, got {self.threads}")
        if any(not 0.0 < r < 1.0 for r in self.ratios):
            raise ValueError(f"insensitive ratios must be in (0, 1), got {self.ratios}")
        if self.rounds < 1:
            raise ValueError(f"rounds must be at least 1, got {self.rounds}")

    def to_dict(self) -> dict:
        return asdict(self)

    @staticmethod
    def from_dict(d: dict) -> "BenchSettings":
        return BenchSettings(**d)


def smoke_settings(**overrides: Any) -> BenchSettings:
    """A tiny workload and short timings: exercises every engine and every output in well under a minute."""
    settings = BenchSettings(
        workload="linear",
        workload_params={"k": 64, "n": 128, "calibration_rows": 1024, "timing_inputs": 8, "latent": 16},
        threads=[1],
        ratios=[0.5],
        rounds=1,
        timing=TimingPlan(warmup_s=0.02, budget_s=0.05, min_samples=10, max_samples=200),
        flush_bytes=8 << 20,
        bandwidth_seconds=0.02,
        smoke=True,
    )
    for key, value in overrides.items():
        setattr(settings, key, value)
    settings.__post_init__()
    return settings
