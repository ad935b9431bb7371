"""Dense 2-D convolution, NHWC, fused with bias, residual add and ReLU: the exact conv layers of a
model, and the dense baseline the dual convolution is measured against.

    y[b, oh, ow, co] = act( sum_{kh, kw, ci} xp[b, oh*SH + kh, ow*SW + kw, ci] * w[kh, kw, ci, co]
                            + bias[co] + res[b, oh, ow, co] )

A direct convolution vectorized over output channels: a block of Q output pixels (along the row)
by V output channels keeps Q*V/8 vector accumulators in registers; every input value is broadcast
once per block and every weight vector is loaded once per block, so the inner loop is FMA-bound
rather than load-bound. Weights are stored HWIO (output channels innermost). xp is the input
zero-padded once per call into a workspace buffer (no bounds checks in the inner loop).

Rows of output pixels (b, oh) are the parallel tasks: one parallel region per layer. Ragged edges
(OW % Q pixels, CO % V channels) take a scalar path, which is correct for any shape but slow;
channel counts that are multiples of V and the block widths of the models we run avoid it.

Like the other kernels, it is a template over symbolic shapes, parsed once per set of static
parameters (kernel size, stride, padding, activation, fused inputs, knobs) and specialized per
layer with row_dot.specialize.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass

import numpy as np
from tvm import tirx
from tvm.script import tirx as T

from ..conv_sites import ConvGeometry
from .activations import apply_activation
from .row_dot import MAX_ACCUMULATOR_FLOATS, specialize

CONV_ACTS = ("relu", "none")


@dataclass(frozen=True)
class ConvConfig:
    """Schedule knobs of the dense convolution."""

    pixels: int = 4  # Q: output pixels per register block
    channels: int = 16  # V: output channels per register block (vector lanes, 8 per AVX2 register)

    def __post_init__(self) -> None:
        if self.pixels < 1 or self.channels < 1 or self.channels & (self.channels - 1):
            raise ValueError(f"pixels must be >= 1 and channels a power of two, got {self}")
        if self.pixels * self.channels > MAX_ACCUMULATOR_FLOATS:
            raise ValueError(f"pixels x channels = {self.pixels * self.channels} exceeds the stack accumulator limit")

    def to_dict(self) -> dict:
        return asdict(self)


def default_conv_config(geometry: ConvGeometry) -> ConvConfig:
    """Knobs by output-channel count, picked by timing (pixels, channels) pairs on the ResNet-20
    layers by hand (not yet a knob-tuner space): 2 x 32 for 32 channels or more, 4 x 16 for 16,
    4 x 8 below."""
    if geometry.c_out >= 32:
        return ConvConfig(pixels=2, channels=32)
    if geometry.c_out >= 16:
        return ConvConfig(pixels=4, channels=16)
    return ConvConfig(pixels=4, channels=8)


@dataclass(frozen=True)
class ConvKernelShape:
    geometry: ConvGeometry
    act: str = "none"
    has_bias: bool = True
    has_residual: bool = False

    def __post_init__(self) -> None:
        if self.act not in CONV_ACTS:
            raise ValueError(f"unknown activation {self.act!r}; expected one of {CONV_ACTS}")

    @property
    def name(self) -> str:
        fused = ("_bias" if self.has_bias else "") + ("_res" if self.has_residual else "")
        return f"conv2d_{self.act}{fused}_{self.geometry.tag}"


def _static(g: ConvGeometry) -> tuple:
    return (g.kernel_h, g.kernel_w, g.stride_h, g.stride_w, g.pad_top, g.pad_left, g.pad_bottom, g.pad_right)


@T.macro
def pad_input(x, xp, B, H, W, CI, PT, PL, PB, PR):
    """xp (B, H+PT+PB, (W+PL+PR)*CI) = x (B, H, W*CI) zero-padded, rows as flat runs (vectorizable
    copies); every element is written once (the workspace is not zeroed)."""
    WP: T.let = W + PL + PR
    for b, hh in T.grid(B, H + PT + PB):
        if hh < PT or hh >= H + PT:
            for i in range(WP * CI):
                xp[b, hh, i] = T.float32(0)
        else:
            for i in range(PL * CI):
                xp[b, hh, i] = T.float32(0)
            for i in range(W * CI):
                xp[b, hh, PL * CI + i] = x[b, hh - PT, i]
            for i in range(PR * CI):
                xp[b, hh, (PL + W) * CI + i] = T.float32(0)


@functools.lru_cache(maxsize=None)
def conv2d_template(static: tuple, act: str, has_bias: bool, has_residual: bool, config: ConvConfig) -> tirx.PrimFunc:
    """The kernel over symbolic B, H, W, CI, CO, OH, OW; make_conv2d specializes it."""
    KH, KW, SH, SW, PT, PL, PB, PR = static
    Q, V = config.pixels, config.channels
    padded = PT + PL + PB + PR > 0

    def finish(acc_value, bias, res, b, oh, ow, co):
        v = acc_value
        if has_bias:
            v = v + bias[co]
        if has_residual:
            v = v + res[b, oh, ow, co]
        return apply_activation(v, act)

    @T.macro
    def block(xp, w, bias, res, y, acc, b, oh, ow0, co0, NQ, NV, CI):
        # NQ pixels x NV channels (both static), accumulated in registers
        for i in T.unroll(NQ):
            for v in T.vectorized(NV):
                acc[i * NV + v] = T.float32(0)
        for kh in T.unroll(KH):
            for kw in T.unroll(KW):
                for ci in range(CI):
                    for i in T.unroll(NQ):
                        for v in T.vectorized(NV):
                            acc[i * NV + v] = acc[i * NV + v] + xp[b, oh * SH + kh, ((ow0 + i) * SW + kw) * CI + ci] * w[kh, kw, ci, co0 + v]
        for i in T.unroll(NQ):
            for v in T.vectorized(NV):
                y[b, oh, ow0 + i, co0 + v] = finish(acc[i * NV + v], bias, res, b, oh, ow0 + i, co0 + v)

    @T.macro
    def row(xp, w, bias, res, y, b, oh, CI, CO, OW):
        acc = T.alloc_buffer((Q * V,), "float32")
        for ob in range(OW // Q):
            for cb in range(CO // V):
                block(xp, w, bias, res, y, acc, b, oh, ob * Q, cb * V, Q, V, CI)
        for t in range(OW % Q):
            for cb in range(CO // V):
                block(xp, w, bias, res, y, acc, b, oh, OW // Q * Q + t, cb * V, 1, V, CI)
        for ow in range(OW):
            for ct in range(CO % V):
                block(xp, w, bias, res, y, acc, b, oh, ow, CO // V * V + ct, 1, 1, CI)

    @T.macro
    def body(x, w, bias, res, y, B, H, W, CI, CO, OH, OW):
        xf = T.decl_buffer((B, H, W * CI), "float32", data=x.data)  # rows as flat runs
        if padded:
            xp = T.alloc_buffer((B, H + PT + PB, (W + PL + PR) * CI), "float32")
            pad_input(xf, xp, B, H, W, CI, PT, PL, PB, PR)
            for boh in T.parallel(B * OH):
                row(xp, w, bias, res, y, boh // OH, boh % OH, CI, CO, OW)
        else:
            for boh in T.parallel(B * OH):
                row(xf, w, bias, res, y, boh // OH, boh % OH, CI, CO, OW)

    # One signature per combination of fused inputs: unused inputs are not parameters.
    if has_bias and has_residual:

        @T.prim_func
        def conv2d(x_h: T.handle, w_h: T.handle, bias_h: T.handle, res_h: T.handle, y_h: T.handle):
            T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True})
            B, H, W, CI, CO, OH, OW = T.int32(), T.int32(), T.int32(), T.int32(), T.int32(), T.int32(), T.int32()
            x = T.match_buffer(x_h, (B, H, W, CI), "float32")
            w = T.match_buffer(w_h, (KH, KW, CI, CO), "float32")
            bias = T.match_buffer(bias_h, (CO,), "float32")
            res = T.match_buffer(res_h, (B, OH, OW, CO), "float32")
            y = T.match_buffer(y_h, (B, OH, OW, CO), "float32")
            body(x, w, bias, res, y, B, H, W, CI, CO, OH, OW)

    elif has_bias:

        @T.prim_func
        def conv2d(x_h: T.handle, w_h: T.handle, bias_h: T.handle, y_h: T.handle):
            T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True})
            B, H, W, CI, CO, OH, OW = T.int32(), T.int32(), T.int32(), T.int32(), T.int32(), T.int32(), T.int32()
            x = T.match_buffer(x_h, (B, H, W, CI), "float32")
            w = T.match_buffer(w_h, (KH, KW, CI, CO), "float32")
            bias = T.match_buffer(bias_h, (CO,), "float32")
            y = T.match_buffer(y_h, (B, OH, OW, CO), "float32")
            body(x, w, bias, y, y, B, H, W, CI, CO, OH, OW)

    elif has_residual:

        @T.prim_func
        def conv2d(x_h: T.handle, w_h: T.handle, res_h: T.handle, y_h: T.handle):
            T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True})
            B, H, W, CI, CO, OH, OW = T.int32(), T.int32(), T.int32(), T.int32(), T.int32(), T.int32(), T.int32()
            x = T.match_buffer(x_h, (B, H, W, CI), "float32")
            w = T.match_buffer(w_h, (KH, KW, CI, CO), "float32")
            res = T.match_buffer(res_h, (B, OH, OW, CO), "float32")
            y = T.match_buffer(y_h, (B, OH, OW, CO), "float32")
            body(x, w, w, res, y, B, H, W, CI, CO, OH, OW)

    else:

        @T.prim_func
        def conv2d(x_h: T.handle, w_h: T.handle, y_h: T.handle):
            T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True})
            B, H, W, CI, CO, OH, OW = T.int32(), T.int32(), T.int32(), T.int32(), T.int32(), T.int32(), T.int32()
            x = T.match_buffer(x_h, (B, H, W, CI), "float32")
            w = T.match_buffer(w_h, (KH, KW, CI, CO), "float32")
            y = T.match_buffer(y_h, (B, OH, OW, CO), "float32")
            body(x, w, w, y, y, B, H, W, CI, CO, OH, OW)

    return conv2d


def make_conv2d(shape: ConvKernelShape, config: ConvConfig = ConvConfig()) -> tirx.PrimFunc:
    """Arguments: x (B,H,W,CI), w (KH,KW,CI,CO) [HWIO], bias (CO,) if has_bias, residual
    (B,OH,OW,CO) if has_residual; output y (B,OH,OW,CO). All float32."""
    g = shape.geometry
    f32 = "float32"
    shapes = [(g.input_shape, f32), ((g.kernel_h, g.kernel_w, g.c_in, g.c_out), f32)]
    if shape.has_bias:
        shapes.append(((g.c_out,), f32))
    if shape.has_residual:
        shapes.append((g.output_shape, f32))
    shapes.append((g.output_shape, f32))
    template = conv2d_template(_static(g), shape.act, shape.has_bias, shape.has_residual, config)
    return specialize(template, shapes, shape.name)


def hwio(weight_ohwi: np.ndarray) -> np.ndarray:
    """OHWI (the graph's layout after conv preparation) -> HWIO (this kernel's layout)."""
    return np.ascontiguousarray(np.transpose(weight_ohwi, (1, 2, 3, 0)))
