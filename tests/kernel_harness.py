"""Builds, runs and checks the dual kernel against the numpy reference (shared by kernel tests)."""

from __future__ import annotations

import functools

import numpy as np
import tvm

from tvm_dual.kernels.dual_dense import DualDenseShape, DualKernelConfig, make_dual_dense, pack_dual_constants
from tvm_dual.kernels.row_dot import pad_rows
from tvm_dual.reference import dual_reference, sensitive_mask
from tvm_dual.target import host_target, vector_bits


VECTOR_BITS = vector_bits(host_target())


@functools.lru_cache(maxsize=64)
def build_dual(shape: DualDenseShape, config: DualKernelConfig, debug: bool = True):
    func = make_dual_dense(shape, config, debug=debug, vector_bits=VECTOR_BITS)
    return tvm.compile(tvm.IRModule({"main": func}), target=host_target())["main"]


def random_little(rng, shape: DualDenseShape):
    N, K, R = shape.n, shape.k, shape.rank
    return dict(
        W=(rng.standard_normal((N, K)) / np.sqrt(K)).astype(np.float32),
        bias=rng.standard_normal(N).astype(np.float32),
        P=rng.integers(-127, 128, (R, K)).astype(np.int8),
        Ps=(rng.random(R) / 127 / np.sqrt(K)).astype(np.float32),
        WL=rng.integers(-127, 128, (N, R)).astype(np.int8),
        WLs=(rng.random(N) / 127 / np.sqrt(R)).astype(np.float32),
        bL=rng.standard_normal(N).astype(np.float32),
    )


def run_dual(shape: DualDenseShape, config: DualKernelConfig, x, p, lo, hi):
    """Run the debug kernel; returns (y, rows read, little values, mask)."""
    B, N = shape.batch, shape.n
    outs = [np.zeros((B, N), np.float32), np.zeros(1, np.int32), np.zeros((B, N), np.float32), np.zeros((B, N), np.int8)]
    consts = pack_dual_constants(p["bias"], p["P"], p["Ps"], p["WL"], p["WLs"], p["bL"], lo, hi, config, VECTOR_BITS)
    arrays = [x, pad_rows(p["W"], shape.row_stride), *consts, *outs]
    args = [tvm.runtime.tensor(np.ascontiguousarray(a)) for a in arrays]
    build_dual(shape, config)(*args)
    y, count, little, mask = (a.numpy() for a in args[-4:])
    return y, int(count[0]), little, mask.astype(bool)


def check_against_reference(shape, config, x, p, lo, hi, atol=1e-5):
    y, count, little, mask = run_dual(shape, config, x, p, lo, hi)
    ref = dual_reference(
        x, p["W"], p["bias"], p["P"], p["Ps"], p["WL"], p["WLs"], p["bL"], lo, hi, shape.act,
        config.little_compute, VECTOR_BITS,
    )
    finite = np.isfinite(ref.little)
    # little values: float32 kernel vs float64 reference (in "i16" mode, a float32 rounding of an
    # activation can move its integer level by one step: allow that step)
    step = 0 if config.little_compute == "f32" else 2e-4 * np.abs(ref.little[finite]).max(initial=0)
    np.testing.assert_allclose(little[finite], ref.little[finite], rtol=1e-5, atol=atol + step)
    assert np.array_equal(np.isnan(little), np.isnan(ref.little))
    # the mask is exactly the predicate applied to the kernel's little values ...
    assert np.array_equal(mask, sensitive_mask(little, lo, hi))
    # ... and the reference's mask, except where a little value lies within rounding of a bound
    scale = atol + 1e-5 * np.abs(ref.little)
    with np.errstate(invalid="ignore"):
        tie = finite & ((np.abs(ref.little - lo) <= scale) | (np.abs(ref.little - hi) <= scale))
    assert np.array_equal(mask[~tie], ref.mask[~tie])
    # a NaN or infinite little value always takes the exact path
    assert mask[~np.isfinite(little)].all()
    assert count == int(mask.any(axis=0).sum())
    # values: merge the kernel's own mask with exact/little reference values
    ref_y = _merged(x, p, little, mask, shape.act)
    np.testing.assert_allclose(y, ref_y, rtol=1e-5, atol=atol, equal_nan=True)
    return y, count, little, mask


def _merged(x, p, little, mask, act):
    from tvm_dual.reference import activation

    with np.errstate(over="ignore", invalid="ignore"):
        exact = x.astype(np.float64) @ p["W"].astype(np.float64).T + p["bias"]
        y = activation(np.where(mask, exact, little.astype(np.float64)), act)
    if act == "relu":
        y = np.where(mask, y, 0.0)
    return y
