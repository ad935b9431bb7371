"""A recurrent gate-kernel tuning workload (kernels/dual_gates.py): one LSTM or GRU step.

As for the dense dual kernel, the kernel builds its own row lists: thresholds come from the same
per-gate calibration compile_dual uses (recurrent_calibrate.gate_thresholds) on random states,
so that the target fraction of gate rows is insensitive on the timed input.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import ClassVar

import numpy as np

from ..kernels.dual_dense import DualKernelConfig
from ..kernels.dual_gates import (
    CELLS,
    GateShape,
    gate_kernel_bias,
    gate_kernel_weights,
    little_groups,
    make_dual_gates,
    pack_gate_constants,
)
from ..little import LittleModule
from ..reference import little_values
from ..reference_gates import GateWeights, gates_reference
from .space import KNOB_VALUES, ShapeFeatures, config_space
from .workload import check_workload

# The gate kernel keeps little_groups x little_block accumulators (little_block <= 32).
GATE_KNOB_VALUES = {**KNOB_VALUES, "little_block": (16, 32)}


@dataclass(frozen=True)
class GateWorkload:
    kernel: ClassVar[str] = "dual_gates"
    cell: str
    batch: int
    hidden: int
    input_size: int
    rank: int
    fused: bool = True
    ratio: float = 0.5

    def __post_init__(self) -> None:
        check_workload(self)

    @property
    def shape(self) -> GateShape:
        return GateShape(self.cell, self.batch, self.hidden, self.input_size, self.rank, self.fused)

    @property
    def shape_key(self) -> str:
        return f"{self.kernel}/{self.shape.name.removeprefix('dual_')}"

    @property
    def key(self) -> str:
        return f"{self.shape_key}@{self.ratio:g}"

    @property
    def rows(self) -> int:
        return CELLS[self.cell] * self.hidden

    def to_dict(self) -> dict:
        return asdict(self)

    @staticmethod
    def from_dict(d: dict) -> "GateWorkload":
        return GateWorkload(**d)

    def space(self) -> list[DualKernelConfig]:
        return config_space(GATE_KNOB_VALUES)

    def shape_features(self) -> ShapeFeatures:
        return ShapeFeatures(self.batch, self.rows, self.shape.projected, self.rank, 1.0 - self.ratio)

    def primfunc(self, config: DualKernelConfig, vector_bits: int):
        return make_dual_gates(self.shape, config, vector_bits=vector_bits)

    def default_config(self, target) -> DualKernelConfig:
        """The knobs compile_dual uses when this shape was never tuned."""
        from ..recurrent_calibrate import default_gate_kernel_config

        return default_gate_kernel_config(target, self.hidden)

    def _problem(self, seed: int, config: DualKernelConfig, vector_bits: int):
        from ..recurrent_calibrate import gate_thresholds  # imports the compiler; keep worker start-up light

        rng = np.random.default_rng(seed)
        H, I, R, B = self.hidden, self.input_size, self.rank, self.batch
        ng, nl, f32 = CELLS[self.cell], little_groups(self.cell, self.fused), np.float32
        weights = GateWeights(
            self.cell,
            W_ih=(rng.standard_normal((ng * H, I)) / np.sqrt(I)).astype(f32),
            W_hh=(rng.standard_normal((ng * H, H)) / np.sqrt(H)).astype(f32),
            b_ih=(0.1 * rng.standard_normal(ng * H)).astype(f32),
            b_hh=(0.1 * rng.standard_normal(ng * H)).astype(f32),
        )
        K = self.shape.projected
        little = LittleModule(
            P=rng.integers(-127, 128, (R, K)).astype(np.int8),
            Ps=np.full(R, 1.0 / (127 * np.sqrt(K)), f32),
            WL=rng.integers(-127, 128, (nl * H, R)).astype(np.int8),
            WLs=np.full(nl * H, 1.0 / (127 * np.sqrt(R)), f32),
            bL=(0.1 * rng.standard_normal(nl * H)).astype(f32),
            bits=8,
            projection="random",
        )
        states = np.tanh(rng.standard_normal((64 + B, H))).astype(f32)
        inputs = rng.standard_normal((64 + B, I)).astype(f32)
        lo, hi, _ = gate_thresholds(weights, self.fused, little, inputs[:64], states[:64], self.ratio,
                                    little_compute=config.little_compute, vector_bits=vector_bits)
        return weights, little, inputs[64:], states[64:], lo, hi

    def input_variants(self, config: DualKernelConfig, vector_bits: int, count: int, seed: int = 0) -> list[list[np.ndarray]]:
        """`count` more leading inputs for arguments(seed)'s kernel ([x, h] fused, [h, x W_ih^T + b_ih]
        hoisted), drawn as its own: each selects its own gate rows under its thresholds."""
        rng = np.random.default_rng([seed, 1])
        B, H, I, f32 = self.batch, self.hidden, self.input_size, np.float32
        weights = None if self.fused else self._problem(seed, config, vector_bits)[0]
        out = []
        for _ in range(count):
            x, h = rng.standard_normal((B, I)).astype(f32), np.tanh(rng.standard_normal((B, H))).astype(f32)
            out.append([x, h] if self.fused else [h, (x @ weights.W_ih.T + weights.b_ih).astype(f32)])
        return out

    def arguments(self, config: DualKernelConfig, vector_bits: int, seed: int = 0) -> tuple[list[np.ndarray], dict]:
        """Kernel arguments (inputs, weights, constants and zeroed outputs) and the reference result."""
        weights, little, x, h, lo, hi = self._problem(seed, config, vector_bits)
        H, B, f32 = self.hidden, self.batch, np.float32
        ng = CELLS[self.cell]
        addend = None if self.fused else (x @ weights.W_ih.T + weights.b_ih).astype(f32)
        inputs = [x, h] if self.fused else [h, addend]
        kernel_weights = gate_kernel_weights(self.shape, weights.W_ih, weights.W_hh)
        bias = gate_kernel_bias(self.shape, weights.b_ih, weights.b_hh)
        consts = pack_gate_constants(bias, little.P, little.Ps, little.WL, little.WLs, little.bL, lo, hi, H, config, vector_bits)
        outputs = [np.zeros((B, ng * H), f32), np.zeros(1, np.int32)] + ([np.zeros((B, ng * H), f32)] if self.fused else [])
        u = np.concatenate([x, h], axis=1) if self.fused else h
        lit = little_values(u, little.P, little.Ps, little.WL, little.WLs, little.bL, config.little_compute, vector_bits)
        ref = gates_reference(weights, self.fused, h, x, addend, lo, hi, lit)
        expected = {"y": ref.out_h + ref.out_x, "rows": ref.rows_read}
        return [*inputs, *kernel_weights, *consts, *outputs], expected

    @property
    def outputs(self) -> int:
        return 3 if self.fused else 2

    def result(self, outputs: list[np.ndarray]) -> tuple[np.ndarray, int]:
        """(pre-activations, rows read) from the kernel's outputs, comparable with expected["y"]."""
        y = outputs[0] + (outputs[2] if self.fused else 0)
        return y, int(outputs[1][0])
