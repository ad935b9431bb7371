"""The fused dual kernel against the numpy reference, on random shapes, thresholds and inputs."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kernel_harness import check_against_reference, random_little
from tvm_dual.kernels.dual_dense import DualDenseShape, DualKernelConfig

CONFIGS = [
    DualKernelConfig(rows_per_group=4, lanes=16, little_block=64, tasks=3, parallel_projection_min=0),
    DualKernelConfig(rows_per_group=8, lanes=16, little_block=16, blocks_per_span=4, prefetch=True, little_compute="i16"),
    DualKernelConfig(rows_per_group=2, lanes=8, little_block=32, blocks_per_span=2, tasks=3, parallel_projection_min=0),
    DualKernelConfig(little_compute="i16"),
    DualKernelConfig(rows_per_group=2, lanes=8, little_block=32, tasks=2, parallel_projection_min=0, little_compute="i16"),
    DualKernelConfig(rows_per_group=4, lanes=16, little_block=64),
    DualKernelConfig(rows_per_group=1, lanes=8, little_block=16, prefetch=True),
    DualKernelConfig(rows_per_group=8, lanes=16, little_block=32, prefetch=True),
    DualKernelConfig(rows_per_group=2, lanes=64, little_block=128, tasks=1),
    DualKernelConfig(rows_per_group=4, lanes=16, little_block=32, blocks_per_span=4, row_order="far"),
    DualKernelConfig(rows_per_group=3, lanes=8, little_block=16, tasks=2, prefetch=True, row_order="far", little_compute="i16"),
]


def bounds(rng, act, n, scale):
    if act == "relu":
        lo = rng.normal(0, scale, n).astype(np.float32)
        return lo, np.full(n, np.inf, np.float32)
    t = np.abs(rng.normal(0, scale, n)).astype(np.float32)
    return -t, t


@settings(max_examples=30)
@given(
    batch=st.integers(1, 8),
    n=st.integers(1, 300),
    k=st.integers(1, 200),
    rank=st.integers(1, 40),
    act=st.sampled_from(["tanh", "sigmoid", "relu", "none"]),
    config=st.sampled_from(CONFIGS),
    seed=st.integers(0, 2**31 - 1),
    threshold_scale=st.sampled_from([0.0, 0.3, 1.0, 3.0, np.inf]),
    specials=st.sampled_from(["none", "nan", "inf", "mixed"]),
    aligned_rows=st.booleans(),
)
def test_kernel_matches_reference(batch, n, k, rank, act, config, seed, threshold_scale, specials, aligned_rows):
    rng = np.random.default_rng(seed)
    shape = DualDenseShape(batch=batch, n=n, k=k, rank=rank, act=act, aligned_rows=aligned_rows)
    p = random_little(rng, shape)
    x = rng.standard_normal((batch, k)).astype(np.float32)
    if specials != "none":
        positions = rng.random((batch, k)) < 0.05
        values = {"nan": [np.nan], "inf": [np.inf, -np.inf], "mixed": [np.nan, np.inf, -np.inf]}[specials]
        x[positions] = rng.choice(values, positions.sum())
    lo, hi = bounds(rng, "relu" if act == "relu" else "tanh", n, threshold_scale if np.isfinite(threshold_scale) else 1e30)
    check_against_reference(shape, config, x, p, lo, hi)


@pytest.mark.parametrize("act", ["tanh", "relu"])
def test_nan_little_value_is_computed_exactly(act):
    """A NaN that reaches the little module must take the exact path, never be dropped."""
    rng = np.random.default_rng(1)
    shape = DualDenseShape(batch=2, n=70, k=33, rank=5, act=act)
    p = random_little(rng, shape)
    p["P"][:, 3] = 0  # the little module ignores input 3 ...
    x = rng.standard_normal((2, 33)).astype(np.float32)
    p["bL"][[5, 9]] = np.nan  # ... but rows 5 and 9 have NaN little values
    lo, hi = (np.full(70, 1e30, np.float32), np.full(70, np.inf, np.float32)) if act == "relu" else (
        np.zeros(70, np.float32), np.zeros(70, np.float32))  # nothing finite is sensitive
    y, count, little, mask = check_against_reference(shape, CONFIGS[0], x, p, lo, hi)
    assert count == 2 and mask[:, [5, 9]].all()
    exact = x.astype(np.float64) @ p["W"][[5, 9]].T.astype(np.float64) + p["bias"][[5, 9]]
    expected = np.tanh(exact) if act == "tanh" else np.maximum(exact, 0)
    np.testing.assert_allclose(y[:, [5, 9]], expected, rtol=1e-5, atol=1e-6)


def test_batch_samples_keep_their_own_choice():
    """A row read for one sample does not change another sample's little value."""
    rng = np.random.default_rng(2)
    shape = DualDenseShape(batch=3, n=64, k=48, rank=8, act="tanh")
    p = random_little(rng, shape)
    x = rng.standard_normal((3, 48)).astype(np.float32)
    t = np.full(64, 0.7, np.float32)
    y, _, little, mask = check_against_reference(shape, CONFIGS[0], x, p, -t, t)
    union = mask.any(axis=0)
    assert (union & ~mask).any(), "the test needs a row read for one sample and not another"
    keep = union & ~mask
    np.testing.assert_allclose(y[keep], np.tanh(little[keep].astype(np.float64)), rtol=1e-5, atol=1e-6)
