"""The recurrent gate kernel against the numpy reference, on random shapes, thresholds and inputs."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gate_harness import check_gates, random_layer, run_gates
from tvm_dual.kernels.dual_dense import DualKernelConfig
from tvm_dual.kernels.dual_gates import GateShape

CONFIGS = [
    DualKernelConfig(rows_per_group=4, lanes=16, little_block=16),
    DualKernelConfig(rows_per_group=2, lanes=8, little_block=32, tasks=3, parallel_projection_min=0, prefetch=True),
    DualKernelConfig(rows_per_group=8, lanes=8, little_block=32, little_compute="i16", row_order="far"),
    DualKernelConfig(rows_per_group=4, lanes=16, little_block=16, parallel_projection_min=0, little_compute="i16"),
]
SPAN_CONFIGS = [
    DualKernelConfig(rows_per_group=4, lanes=16, little_block=16, blocks_per_span=4, little_compute="i16"),
    DualKernelConfig(rows_per_group=2, lanes=8, little_block=16, blocks_per_span=2, tasks=2, prefetch=True, row_order="far"),
    # the AVX-512 default's group: 15 rows, an odd group size with a remainder in most spans
    DualKernelConfig(rows_per_group=15, lanes=16, little_block=32, blocks_per_span=2, little_compute="i16"),
]
CONFIGS += SPAN_CONFIGS


def _inputs(rng, shape, specials):
    B, H, I = shape.batch, shape.hidden, shape.input_size
    h = rng.standard_normal((B, H)).astype(np.float32)
    x = rng.standard_normal((B, I)).astype(np.float32)
    addend = (2 * rng.standard_normal((B, shape.gates * H))).astype(np.float32)
    if specials:
        h[rng.random((B, H)) < 0.03] = np.nan
    return h, x, addend


@settings(max_examples=16)
@given(
    cell=st.sampled_from(["lstm", "gru"]),
    fused=st.booleans(),
    batch=st.integers(1, 4),
    hidden=st.integers(1, 80),
    input_size=st.integers(1, 70),
    rank=st.integers(1, 20),
    config=st.sampled_from(CONFIGS),
    seed=st.integers(0, 2**31 - 1),
    threshold_scale=st.sampled_from([0.0, 0.5, 2.0, np.inf]),
    specials=st.booleans(),
    aligned_rows=st.booleans(),
)
def test_gate_kernel_matches_reference(cell, fused, batch, hidden, input_size, rank, config, seed, threshold_scale, specials,
                                       aligned_rows):
    rng = np.random.default_rng(seed)
    shape = GateShape(cell=cell, batch=batch, hidden=hidden, input_size=input_size, rank=rank, fused=fused,
                      aligned_rows=aligned_rows)
    weights, little = random_layer(rng, shape)
    h, x, addend = _inputs(rng, shape, specials)
    scale = threshold_scale if np.isfinite(threshold_scale) else 1e30
    t = np.abs(rng.normal(0, scale, shape.gates * hidden)).astype(np.float32)
    check_gates(shape, config, weights, little, h, x, addend, -t, t)


@pytest.mark.parametrize("config", SPAN_CONFIGS)
@pytest.mark.parametrize("cell,fused", [("lstm", True), ("gru", True), ("gru", False)])
def test_spans_of_blocks_match_reference(cell, fused, config):
    """Several blocks per span, a ragged last span and last block: one compaction per span, and the
    GRU n decisions after all of the span's r rows."""
    rng = np.random.default_rng(7)
    shape = GateShape(cell=cell, batch=2, hidden=75, input_size=29, rank=7, fused=fused)
    weights, little = random_layer(rng, shape)
    h, x, addend = _inputs(rng, shape, True)
    t = np.abs(rng.normal(0, 0.5, shape.gates * 75)).astype(np.float32)
    check_gates(shape, config, weights, little, h, x, addend, -t, t)


@pytest.mark.parametrize("fused", [True, False])
def test_gru_skipped_n_unit_reads_neither_half(fused):
    """An insensitive n unit costs no row at all; a sensitive one is one row (W_in and W_hn)."""
    rng = np.random.default_rng(3)
    shape = GateShape(cell="gru", batch=1, hidden=40, input_size=24, rank=6, fused=fused)
    weights, little = random_layer(rng, shape)
    h, x, addend = _inputs(rng, shape, False)
    big = np.full(3 * 40, 1e30, np.float32)
    lo, hi = -big, big
    lo[:80], hi[:80] = 0, 0  # r and z: nothing finite is sensitive
    _, _, count_all_n, _, mask = run_gates(shape, CONFIGS[0], weights, little, h, x, addend, lo, hi)
    assert count_all_n == 40 and mask[:, 80:].all() and not mask[:, :80].any()
    lo[80:], hi[80:] = 0, 0
    _, _, count_none, _, _ = run_gates(shape, CONFIGS[0], weights, little, h, x, addend, lo, hi)
    assert count_none == 0


def test_gru_n_row_halves_do_not_mix_non_finite_weights():
    """The fused GRU reads a row [W_in | W_hn] once as two dot products; an infinite weight in one
    half (here in the 16-float chunk that straddles the halves) must not reach the other's sum."""
    rng = np.random.default_rng(4)
    H, I = 40, 24
    shape = GateShape(cell="gru", batch=1, hidden=H, input_size=I, rank=6, fused=True)
    weights, little = random_layer(rng, shape)
    weights.W_hh[2 * H + 5, 0] = np.inf  # W_hn of unit 5, first column of the h half
    weights.W_ih[2 * H + 7, I - 1] = np.inf  # W_in of unit 7, last column of the x half
    h, x, _ = _inputs(rng, shape, False)
    h, x = np.abs(h) + 0.1, np.abs(x) + 0.1  # so that the infinite terms are +inf, not NaN
    big = np.full(3 * H, np.inf, np.float32)
    out_h, out_x, count, _, _ = run_gates(shape, CONFIGS[0], weights, little, h, x, None, -big, big)
    assert count == 3 * H
    x_n = x @ weights.W_ih[2 * H :].T + weights.b_ih[2 * H :]
    h_n = h @ weights.W_hh[2 * H :].T + weights.b_hh[2 * H :]
    np.testing.assert_allclose(out_x[:, 2 * H :][:, np.isfinite(x_n[0])], x_n[:, np.isfinite(x_n[0])], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out_h[:, 2 * H :][:, np.isfinite(h_n[0])], h_n[:, np.isfinite(h_n[0])], rtol=1e-5, atol=1e-5)
    assert np.isposinf(out_h[0, 2 * H + 5]) and np.isfinite(out_x[0, 2 * H + 5])
    assert np.isposinf(out_x[0, 2 * H + 7]) and np.isfinite(out_h[0, 2 * H + 7])
