"""Per-gate ratio allocation (tvm_dual/gate_allocation.py): the layer's ratio is kept, and the
gates whose little values are wrong get fewer skipped outputs."""

from __future__ import annotations

import numpy as np
import pytest

from tvm_dual.gate_allocation import STEPS, allocate, gate_ratios
from tvm_dual.recurrent import RecurrentConfig
from tvm_dual.reference_gates import GateWeights


def _layer(cell: str, hidden: int = 24, inputs: int = 16, rows: int = 600, seed: int = 0):
    rng = np.random.default_rng(seed)
    gates = 4 if cell == "lstm" else 3
    weights = GateWeights(
        cell,
        (2.0 * rng.standard_normal((gates * hidden, inputs)) / np.sqrt(inputs)).astype(np.float32),
        (2.0 * rng.standard_normal((gates * hidden, hidden)) / np.sqrt(hidden)).astype(np.float32),
        (0.5 * rng.standard_normal(gates * hidden)).astype(np.float32),
        (0.5 * rng.standard_normal(gates * hidden)).astype(np.float32),
    )
    x = rng.standard_normal((rows, inputs)).astype(np.float32)
    h = np.tanh(rng.standard_normal((rows, hidden))).astype(np.float32)
    return weights, x, h


def _decisions(weights: GateWeights, x, h, noisy_gate: int, noise: float, seed: int = 1) -> np.ndarray:
    """Fused-mode little values: exact pre-activations, plus large noise on one gate's rows."""
    H = weights.hidden
    pre_x = x @ weights.W_ih.T + weights.b_ih
    pre_h = h @ weights.W_hh.T + weights.b_hh
    if weights.cell == "lstm":
        values = pre_x + pre_h
    else:  # r, z, then n's x and h parts
        values = np.concatenate([pre_x[:, : 2 * H] + pre_h[:, : 2 * H], pre_x[:, 2 * H :], pre_h[:, 2 * H :]], axis=1)
    values = values + 0.05 * np.random.default_rng(seed).standard_normal(values.shape)
    parts = [noisy_gate] if weights.cell == "lstm" or noisy_gate < 2 else [2, 3]
    for p in parts:
        values[:, p * H : (p + 1) * H] += noise * np.random.default_rng(seed + 1).standard_normal((len(x), H))
    return values.astype(np.float32)


@pytest.mark.parametrize("cell,noisy", [("gru", 2), ("gru", 1), ("lstm", 2), ("lstm", 0)])
@pytest.mark.parametrize("ratio", [0.3, 0.5])
def test_allocation_keeps_ratio_and_spares_the_bad_gate(cell: str, noisy: int, ratio: float) -> None:
    weights, x, h = _layer(cell)
    ratios = gate_ratios(weights, True, _decisions(weights, x, h, noisy, noise=3.0), x, h, ratio, "output_error")
    assert ratios.shape == (4 if cell == "lstm" else 3,)
    assert abs(ratios.mean() - ratio) <= 0.5 / STEPS
    assert np.all((ratios >= 0) & (ratios <= 1))
    others = np.delete(ratios, noisy)
    assert ratios[noisy] < others.min(), ratios


def test_hoisted_gru_allocation_uses_the_exact_x_term() -> None:
    """Hoisted mode: the little values cover h only, x's exact term joins the r and z decisions."""
    weights, x, h = _layer("gru")
    H = weights.hidden
    fused = _decisions(weights, x, h, 2, noise=3.0)
    hoisted = np.concatenate([fused[:, : 2 * H], fused[:, 3 * H :]], axis=1)
    ratios = gate_ratios(weights, False, hoisted, x, h, 0.5, "output_error")
    assert abs(ratios.mean() - 0.5) <= 0.5 / STEPS and ratios[2] < min(ratios[:2]), ratios


def test_equal_allocation_and_bad_names() -> None:
    weights, x, h = _layer("gru")
    values = _decisions(weights, x, h, 2, noise=3.0)
    assert np.array_equal(gate_ratios(weights, True, values, x, h, 0.4, "equal"), np.full(3, 0.4))
    with pytest.raises(ValueError, match="gate allocation must be one of.*'cheapest'"):
        gate_ratios(weights, True, values, x, h, 0.4, "cheapest")
    with pytest.raises(ValueError, match="allocation must be one of.*'cheapest'"):
        RecurrentConfig(allocation="cheapest")


def test_allocate_is_greedy_on_marginal_error() -> None:
    grid = np.linspace(0, 1, STEPS + 1)
    curves = np.array([grid**2, 10 * grid**2, np.zeros_like(grid)])  # free, cheap, dear
    ratios = allocate(curves, 0.5)
    assert ratios[2] == 1.0 and ratios[0] > ratios[1] > 0
    assert abs(ratios.sum() - 1.5) < 1e-9
    assert np.array_equal(allocate(curves, 0.0), np.zeros(3))
