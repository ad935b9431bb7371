"""The dense and dual convolution kernels against numpy references, on random shapes and thresholds."""

import functools

import numpy as np
import tvm
from hypothesis import given, settings
from hypothesis import strategies as st

from tvm_dual.conv_reference import conv2d_nhwc, dual_conv_reference
from tvm_dual.conv_sites import ConvGeometry
from tvm_dual.kernels.conv2d import ConvConfig, ConvKernelShape, hwio, make_conv2d
from tvm_dual.kernels.dual_conv2d import DualConvConfig, DualConvShape, exact_weight, make_dual_conv2d, pack_dual_conv_constants
from tvm_dual.little import quantize_rows
from tvm_dual.reference import sensitive_mask
from tvm_dual.target import host_target

DUAL_CONFIGS = [
    DualConvConfig(),
    DualConvConfig(rows_per_group=1, lanes=4, channel_block=4),
    DualConvConfig(rows_per_group=3, lanes=16, channel_block=16, little_dtype="float32"),
]
DENSE_CONFIGS = [ConvConfig(), ConvConfig(pixels=3, channels=8), ConvConfig(pixels=1, channels=4)]


@st.composite
def geometries(draw):
    kernel_h, kernel_w = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    pads = [draw(st.integers(0, 2)) for _ in range(4)]
    height = draw(st.integers(max(1, kernel_h - pads[0] - pads[2]), 9))
    width = draw(st.integers(max(1, kernel_w - pads[1] - pads[3]), 9))
    return ConvGeometry(
        batch=draw(st.integers(1, 2)), height=height, width=width, c_in=draw(st.integers(1, 12)), c_out=draw(st.integers(1, 20)),
        kernel_h=kernel_h, kernel_w=kernel_w, stride_h=draw(st.integers(1, 2)), stride_w=draw(st.integers(1, 2)),
        pad_top=pads[0], pad_left=pads[1], pad_bottom=pads[2], pad_right=pads[3],
    )


@functools.lru_cache(maxsize=32)
def _build(func):
    return tvm.compile(tvm.IRModule({"main": func}), target=host_target())["main"]


def _run(func, arrays):
    args = [tvm.runtime.tensor(np.ascontiguousarray(a)) for a in arrays]
    _build(func)(*args)
    return [a.numpy() for a in args]


@settings(max_examples=10)
@given(g=geometries(), act=st.sampled_from(["relu", "none"]), has_bias=st.booleans(), has_residual=st.booleans(),
       config=st.sampled_from(DENSE_CONFIGS), seed=st.integers(0, 2**31 - 1))
def test_dense_conv_matches_reference(g, act, has_bias, has_residual, config, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(g.input_shape).astype(np.float32)
    w = rng.standard_normal((g.c_out, g.kernel_h, g.kernel_w, g.c_in)).astype(np.float32)
    b = rng.standard_normal(g.c_out).astype(np.float32)
    r = rng.standard_normal(g.output_shape).astype(np.float32)
    func = make_conv2d(ConvKernelShape(g, act, has_bias, has_residual), config)
    arrays = [x, hwio(w)] + ([b] if has_bias else []) + ([r] if has_residual else []) + [np.zeros(g.output_shape, np.float32)]
    y = _run(func, arrays)[-1]
    expected = conv2d_nhwc(x, w, g, b if has_bias else None) + (r if has_residual else 0)
    if act == "relu":
        expected = np.maximum(expected, 0)
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-4)


@settings(max_examples=12)
@given(g=geometries(), has_residual=st.booleans(), rank=st.integers(1, 6), config=st.sampled_from(DUAL_CONFIGS),
       seed=st.integers(0, 2**31 - 1), threshold_scale=st.sampled_from([0.0, 0.5, 2.0, np.inf]), nan_input=st.booleans())
def test_dual_conv_matches_reference(g, has_residual, rank, config, seed, threshold_scale, nan_input):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(g.input_shape).astype(np.float32)
    if nan_input:
        x.flat[rng.integers(0, x.size)] = np.nan
    w = rng.standard_normal((g.c_out, g.kernel_h, g.kernel_w, g.c_in)).astype(np.float32)
    b = rng.standard_normal(g.c_out).astype(np.float32)
    r = rng.standard_normal(g.output_shape).astype(np.float32) if has_residual else None
    P, Ps = quantize_rows(rng.standard_normal((rank, g.patch)), 8)
    WL, WLs = quantize_rows(rng.standard_normal((g.c_out, rank)), 8)
    bL = rng.standard_normal(g.c_out).astype(np.float32)
    scale = threshold_scale if np.isfinite(threshold_scale) else 1e30  # everything insensitive
    lo = rng.normal(0, scale, g.c_out).astype(np.float32)
    hi = np.full(g.c_out, np.inf, np.float32)
    consts = pack_dual_conv_constants(P, Ps, WL, WLs, bL, lo, hi, g, config)
    outs = [np.zeros(g.output_shape, np.float32), np.zeros(1, np.int32), np.zeros(g.output_shape, np.float32), np.zeros(g.output_shape, np.int8)]
    func = make_dual_conv2d(DualConvShape(g, rank, has_residual), config, debug=True)
    arrays = [x, exact_weight(w), b] + ([r] if has_residual else []) + consts + outs
    y, count, little, mask = _run(func, arrays)[-4:]
    mask = mask.astype(bool)
    ref = dual_conv_reference(x, w, b, r, P, Ps, WL, WLs, bL, lo, hi, g)
    finite = np.isfinite(ref.little)
    np.testing.assert_allclose(little[finite], ref.little[finite], rtol=1e-5, atol=1e-4)
    # the mask is the predicate on the kernel's little values, and the reference's away from ties
    assert np.array_equal(mask, sensitive_mask(little, lo, hi))
    tie = finite & (np.abs(ref.little - lo) <= 1e-4 + 1e-5 * np.abs(ref.little))
    assert np.array_equal(mask[~tie], ref.mask[~tie])
    assert mask[~np.isfinite(little)].all()  # NaN takes the exact path
    assert int(count[0]) == int(mask.sum())
    # values: the kernel's own mask over exact reference values
    exact = conv2d_nhwc(x, w, g, b) + (0 if r is None else r)
    expected = np.where(mask, np.where(np.isnan(exact), exact, np.maximum(exact, 0)), 0.0)
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-4, equal_nan=True)
