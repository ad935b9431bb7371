"""A dual-kernel tuning workload: the shape, the insensitive ratio, and realistic inputs for it.

Measuring a data-dependent kernel on random integers would time an index list that never occurs
(and read out of bounds); here the kernel builds its own index lists from little-module outputs and
thresholds set so that the target fraction of rows is insensitive, as in a calibrated model.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import ClassVar

import numpy as np

from ..kernels.dual_dense import DualDenseShape, DualKernelConfig, make_dual_dense, pack_dual_constants
from ..kernels.row_dot import check_knob_types
from ..plan import default_kernel_config, thresholds_for_ratio
from ..reference import dual_reference, little_values
from ..validation import real_number
from .space import ShapeFeatures, config_space


@dataclass(frozen=True)
class DualWorkload:
    """A workload of the dense dual kernel (kernels/dual_dense.py). Workloads of every kernel family
    have the same interface (GateWorkload for the recurrent gate kernel): the tuner, the measurers,
    the records and the schedules use only that."""

    kernel: ClassVar[str] = "dual_dense"
    outputs: ClassVar[int] = 2  # trailing kernel arguments that are outputs
    batch: int
    n: int
    k: int
    rank: int
    act: str = "tanh"
    ratio: float = 0.5  # insensitive fraction the inputs are built for

    def __post_init__(self) -> None:
        check_workload(self)

    @property
    def shape(self) -> DualDenseShape:
        return DualDenseShape(batch=self.batch, n=self.n, k=self.k, rank=self.rank, act=self.act)

    @property
    def shape_key(self) -> str:
        """What a tuned schedule is looked up by: not the activation or the ratio (knobs tuned at 0.5 were
        within about 10% of the defaults at 0.25-0.9 on znver5, 2026-12-02, no further than the noise)."""
        return f"dual_dense/b{self.batch}_n{self.n}_k{self.k}_r{self.rank}"

    @property
    def key(self) -> str:
        return f"{self.shape_key}_{self.act}@{self.ratio:g}"

    @property
    def rows(self) -> int:
        return self.n

    def to_dict(self) -> dict:
        return asdict(self)

    @staticmethod
    def from_dict(d: dict) -> "DualWorkload":
        return DualWorkload(**d)

    def space(self) -> list[DualKernelConfig]:
        return config_space()

    def shape_features(self) -> ShapeFeatures:
        return ShapeFeatures(self.batch, self.n, self.k, self.rank, 1.0 - self.ratio)

    def primfunc(self, config: DualKernelConfig, vector_bits: int):
        return make_dual_dense(self.shape, config, vector_bits=vector_bits)

    def default_config(self, target) -> DualKernelConfig:
        """The knobs compile_dual uses when this shape was never tuned."""
        return default_kernel_config(target, self.n)

    def result(self, outputs: list[np.ndarray]) -> tuple[np.ndarray, int]:
        """(y, rows read) from the kernel's outputs."""
        return outputs[0], int(outputs[1][0])

    def little_parameters(self, seed: int = 0) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(seed)
        n, k, r = self.n, self.k, self.rank
        return dict(
            W=(rng.standard_normal((n, k)) / np.sqrt(k)).astype(np.float32),
            bias=(0.1 * rng.standard_normal(n)).astype(np.float32),
            P=rng.integers(-127, 128, (r, k)).astype(np.int8),
            Ps=np.full(r, 1.0 / (127 * np.sqrt(k)), np.float32),
            WL=rng.integers(-127, 128, (n, r)).astype(np.int8),
            WLs=np.full(n, 1.0 / (127 * np.sqrt(r)), np.float32),
            bL=(0.1 * rng.standard_normal(n)).astype(np.float32),
            x=rng.standard_normal((self.batch, k)).astype(np.float32),
        )

    def input_variants(self, config: DualKernelConfig, vector_bits: int, count: int, seed: int = 0) -> list[list[np.ndarray]]:
        """`count` more inputs for arguments(seed)'s kernel, drawn as its own: under its thresholds
        each selects its own rows, about the workload's ratio of them insensitive (measure.py
        rotates them through the timed calls)."""
        rng = np.random.default_rng([seed, 1])
        return [[rng.standard_normal((self.batch, self.k)).astype(np.float32)] for _ in range(count)]

    def arguments(self, config: DualKernelConfig, vector_bits: int, seed: int = 0) -> tuple[list[np.ndarray], dict]:
        """Kernel arguments (inputs, constants and zeroed outputs), and the numpy reference result."""
        p = self.little_parameters(seed)
        little = little_values(p["x"], p["P"], p["Ps"], p["WL"], p["WLs"], p["bL"], config.little_compute, vector_bits)
        lo, hi, _ = thresholds_for_ratio(little, "relu" if self.act == "relu" else "tanh", self.ratio)
        lo_v, hi_v = np.full(self.n, lo, np.float32), np.full(self.n, hi, np.float32)
        consts = pack_dual_constants(p["bias"], p["P"], p["Ps"], p["WL"], p["WLs"], p["bL"], lo_v, hi_v, config, vector_bits)
        outputs = [np.zeros((self.batch, self.n), np.float32), np.zeros(1, np.int32)]
        ref = dual_reference(
            p["x"], p["W"], p["bias"], p["P"], p["Ps"], p["WL"], p["WLs"], p["bL"], lo_v, hi_v, self.act,
            config.little_compute, vector_bits,
        )
        read = np.nonzero(ref.mask.any(axis=0))[0]  # the rows of W the kernel reads
        return [p["x"], p["W"], *consts, *outputs], {"y": ref.y, "rows": ref.rows_read, "read": read}


def check_workload(workload) -> None:
    """Field types, sizes (through the kernel shape's own checks) and ratio of a workload, which
    may come from a tuning log: a record with n = -5 or ratio 7 must not reach a schedule file."""
    check_knob_types(workload)
    ratio = real_number(workload.ratio)
    if ratio is None or not 0.0 <= ratio < 1.0:
        raise ValueError(f"workload ratio must be a number in [0, 1), got {workload.ratio!r}")
    object.__setattr__(workload, "ratio", ratio)
    workload.shape  # noqa: B018 - raises for impossible sizes


def workload_from_dict(d: dict, kernel: str = "dual_dense"):
    """The workload of kernel family `kernel` described by `d` (a record's workload_params)."""
    from .gate_workload import GateWorkload

    families = {"dual_dense": DualWorkload, "dual_gates": GateWorkload}
    if kernel not in families:
        raise ValueError(f"kernel {kernel!r} is not one of {sorted(families)}")
    return families[kernel].from_dict(d)


def check_outputs(y: np.ndarray, rows: int, expected: dict, n: int) -> str | None:
    """None if the kernel's outputs match the reference, else what is wrong."""
    if abs(rows - expected["rows"]) > max(2, 0.01 * n):  # threshold ties may flip a row or two
        return f"read {rows} rows, the reference reads {expected['rows']}"
    close = np.isclose(y, expected["y"], rtol=1e-3, atol=1e-3)
    if close.mean() < 0.99:
        return f"{100 * (1 - close.mean()):.1f}% of outputs differ from the reference"
    return None
