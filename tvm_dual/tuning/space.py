"""The dual kernel's search space: every valid DualKernelConfig, and the features a cost model sees."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, fields

import numpy as np

from ..kernels.dual_dense import BLOCKS_PER_SPAN, PARALLEL_PROJECTION_MIN, DualKernelConfig
from ..kernels.row_dot import MAX_ACCUMULATOR_FLOATS

KNOB_VALUES: dict[str, tuple] = {
    # 10, 12 and 15: AVX-512 register counts (32 vector registers); 10 is the dense kernel's default there
    "rows_per_group": (1, 2, 4, 8, 10, 12, 15),
    "lanes": (8, 16, 32, 64),
    "little_block": (16, 32, 64, 128),
    "prefetch": (False, True),
    # all of them: the defaults' rule (default_blocks_per_span) picks 2 or 8 for some shapes
    "blocks_per_span": BLOCKS_PER_SPAN,
    "tasks": (0, 2, 4, 8),
    "parallel_projection_min": (0, PARALLEL_PROJECTION_MIN, 2**31 - 1),  # always / when large / never in parallel
    "little_compute": ("f32", "i16"),
    "row_order": ("adjacent", "far"),
}


def config_space(knobs: dict[str, tuple] = KNOB_VALUES, little_compute: tuple[str, ...] | None = None) -> list[DualKernelConfig]:
    """All valid configurations (32,640 with the default knob values)."""
    names = list(knobs)
    out = []
    for values in itertools.product(*(knobs[n] for n in names)):
        params = dict(zip(names, values))
        if params["rows_per_group"] * params["lanes"] > MAX_ACCUMULATOR_FLOATS:
            continue
        if little_compute is not None and params["little_compute"] not in little_compute:
            continue
        out.append(DualKernelConfig(**params))
    return out


def config_from_dict(d: dict) -> DualKernelConfig:
    """Rebuild a config from a record; unknown keys are an error (a record from another version)."""
    known = {f.name for f in fields(DualKernelConfig)}
    unknown = set(d) - known
    if unknown:
        raise ValueError(f"unknown kernel knobs {sorted(unknown)}")
    return DualKernelConfig(**d)


@dataclass(frozen=True)
class ShapeFeatures:
    batch: int
    n: int
    k: int
    rank: int
    sensitive_fraction: float


def features(config: DualKernelConfig, shape: ShapeFeatures) -> np.ndarray:
    """Knob and shape features for the cost model (log-scaled sizes, derived quantities)."""
    nb = config.little_block
    blocks = math.ceil(shape.n / nb)
    rows = shape.sensitive_fraction * shape.n
    return np.array(
        [
            math.log2(config.rows_per_group),
            math.log2(config.lanes),
            math.log2(nb),
            float(config.prefetch),
            float(config.tasks),
            float(config.tasks == 0),
            math.log2(config.blocks_per_span),
            math.ceil(blocks / config.blocks_per_span),  # spans: the parallel tasks
            float(shape.batch * shape.rank * shape.k >= config.parallel_projection_min),
            float(config.little_compute == "i16"),
            float(config.row_order == "far"),
            config.rows_per_group * config.lanes,
            (shape.k % config.lanes) / config.lanes,
            (shape.n % nb) / nb,
            math.log2(blocks),
            rows / blocks / config.rows_per_group,  # exact row groups per block
            math.log2(shape.batch),
            math.log2(shape.n),
            math.log2(shape.k),
            math.log2(shape.rank),
            shape.sensitive_fraction,
            math.log2(1 + rows * shape.k * 4),  # exact bytes
            math.log2(1 + shape.rank * (shape.n + shape.k)),  # little multiply-adds
        ],
        dtype=np.float64,
    )
