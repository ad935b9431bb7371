"""The plan: what calibration decided for each dual layer, consumed by DualModuleRewrite."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
from tvm.target import Target

from .kernels.dual_dense import DualKernelConfig, default_blocks_per_span
from .kernels.row_dot import register_lanes
from .little import LittleModule
from .target import default_little_compute, vector_bits
from .validation import real_number


def default_kernel_config(target: Target, n: int | None = None) -> DualKernelConfig:
    """Untuned defaults: eight gathered rows with one vector register of accumulators each (as the
    gate kernel and the dense GEMV; four rows with two registers were 3-8% slower on 4096 x 1024 at
    half the rows, Zen 3, 1 and 2 threads, hot and cold), the integer little module wherever x86
    has a multiply-add of int16 pairs, and for a layer of n outputs the longest spans of blocks that
    still leave MIN_SPANS parallel tasks (dual_dense.default_blocks_per_span).

    The projection runs serially below dual_dense.PARALLEL_PROJECTION_MIN (2**18) multiply-adds,
    up from 65,536: its parallel region cost more than it saved on 4096 x 1024 at rank 81 and 100
    (the Linear benchmark's layer; Zen 3, half the rows, serial / parallel time paired in one
    process with tuning.measure's pairs, both orders, 32 pairs each, 2026-12-03): 0.98 / 0.97 cold
    and 0.95 / 0.92-1.00 hot at 1 / 2 threads, and 68 vs 79 us cold with no row exact. The gate
    kernels take these defaults too: the 750-unit layers' projections (150,000 multiply-adds) now
    run serially, which their pairs showed made no difference (LSTM-750 and GRU-750 serial /
    parallel 0.98-1.01, cold, one and two threads); the 1500-unit layers' (600,000) stay parallel.

    Rows in "far" order (row_dot.ROW_ORDERS: a span's selected rows read as G long streams, as the
    dense GEMV reads W since the same change), far / adjacent time paired in one process
    (tuning.measure's pairs, 32, random half of the rows, Zen 3, 2026-12-03): 4096 x 1024 rank 100
    0.96 / 0.92 cold and 0.96 / 0.99 hot at 1 / 2 threads; LSTM-750 gates 0.90 / 0.88 cold,
    GRU-750 0.96 / 0.94. On Zen 5 (2026-12-03 04:40, kernels alone) it had made no difference at
    one thread and gained about 5% cold at two.

    With 512-bit vectors, ten gathered rows: on Zen 4 (znver4, 2026-12-04; half the rows, paired in
    one process with eight, 200 cold pairs after a 128 MiB read and 150 hot pairs of 5 calls;
    scratch script) ten / eight rows took 0.85-0.88 cold and 1.00 hot at one thread on 4096 x 1024
    (0.90-0.95 and 0.99-1.04 at two), and 0.96-1.05 cold, 0.96-1.02 hot on the demo MLP's 512 x 784
    and 256 x 512. Twelve rows gained as much cold but took up to 1.15x hot; six gained hot and not
    cold (docs/RESULTS.md, Zen 4 spot checks)."""
    lanes = register_lanes(vector_bits(target))
    config = DualKernelConfig(
        rows_per_group=10 if lanes >= 16 else 8,
        lanes=lanes,
        little_compute=default_little_compute(target),
        row_order="far",
    )
    if n is None:
        return config
    return replace(config, blocks_per_span=default_blocks_per_span(n, config.little_block))


@dataclass
class DualLayerPlan:
    name: str  # user-facing layer name, e.g. "fc1" from the module path
    key: str  # sites.layer_key: activation + weight digest
    act: str
    n: int
    k: int
    little: LittleModule
    lo: np.ndarray  # (N,) float32: sensitive iff lo <= little value <= hi (or not finite)
    hi: np.ndarray
    target_ratio: float
    calibration_ratio: float  # insensitive fraction on the calibration data
    kernel: DualKernelConfig = field(default_factory=DualKernelConfig)
    schedule_source: str = "default"  # where the kernel knobs came from

    @property
    def threshold(self) -> float:
        """The scalar t of the layer: |z| > t (tanh/sigmoid) or z < t (ReLU) is insensitive."""
        return float(self.lo[0]) if self.act == "relu" else float(self.hi[0])


@dataclass
class DualPlan:
    layers: dict[str, DualLayerPlan] = field(default_factory=dict)  # by key
    vector_bits: int = 256  # SIMD width of the target (target.vector_bits)

    def add(self, layer: DualLayerPlan) -> None:
        self.layers[layer.key] = layer

    def get(self, key: str) -> DualLayerPlan | None:
        return self.layers.get(key)

    def __len__(self) -> int:
        return len(self.layers)


def check_ratio(value, what: str) -> float:
    """A validated insensitive ratio: a number in [0, 1) (1 would skip every row: no layer left)."""
    number = real_number(value)
    if number is None or not 0.0 <= number < 1.0:
        raise ValueError(f"insensitive ratio for {what} must be a number in [0, 1), got {value!r}")
    return number


def thresholds_for_ratio(little_values: np.ndarray, act: str, ratio: float) -> tuple[float, float, float]:
    """(lo, hi, observed insensitive fraction) so that `ratio` of the little values are insensitive.

    tanh and sigmoid saturate on both sides: the insensitive region is |z| > t. ReLU is
    insensitive below t (the output is 0 there).
    """
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"insensitive ratio must be in [0, 1), got {ratio}")
    values = np.asarray(little_values, dtype=np.float64).ravel()
    values = values[np.isfinite(values)]
    if values.size == 0:
        raise ValueError("no finite little-module values to choose a threshold from")
    if act in ("tanh", "sigmoid"):
        t = float(np.quantile(np.abs(values), 1.0 - ratio)) if ratio > 0 else np.inf
        lo, hi = -t, t
        observed = float(np.mean(np.abs(values) > t))
    elif act == "relu":
        t = float(np.quantile(values, ratio)) if ratio > 0 else -np.inf
        lo, hi = t, np.inf
        observed = float(np.mean(values < t))
    else:
        raise ValueError(f"no insensitive region for activation {act!r}")
    return np.float32(lo), np.float32(hi), observed
