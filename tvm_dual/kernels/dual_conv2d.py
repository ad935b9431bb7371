"""The fused dual-module convolution: y = relu(conv2d(x, W) + b [+ r]), NHWC, computing exactly only
the outputs a little module predicts positive.

Decision granularity: one output element (b, oh, ow, co). Per output pixel, in one parallel task per
output row:
  1. little projection   u[r] = Ps[r] * <P[r], patch>                   rank R over the im2col patch
  2. little values       zl[co] = WLs[co] * sum_r WL[co, r] u[r] + bL[co] [+ r[co]]   (vector over co)
  3. mask, compaction    idx = the channels with lo[co] <= zl[co] <= hi[co] (or zl not finite)
  4. exact dot products  y[co] = relu(<W[co], patch> + b[co] [+ r[co]])   for co in idx, G at a time
  5. everything else     y[co] = 0
The patch of an output pixel is, in NHWC, KH contiguous runs of KW*CI floats of the zero-padded
input, so a dot product with a weight row (OHWI) streams KH runs with no im2col copy. Dot products
are vectorized along the patch (L lanes, a tree reduction at the end) and G sensitive channels are
computed together so that each patch vector is loaded once per G weight rows.

Why this granularity: the exact work skipped is exactly the insensitive outputs, with no wasted
vector lanes, because vectors run along the reduction (the patch), not along outputs. A kernel
vectorized along output channels or pixels (the dense direct convolution, kernels/conv2d.py) must
compute a whole vector of outputs if any lane is sensitive, which gives back much of the skipped
work when sensitive outputs are scattered. The price is a horizontal reduction per output and a
load-bound inner loop (G + 1 loads per G FMAs) instead of the dense kernel's FMA-bound one.

The little module is the `little.py` module of the layer seen as a matmul over im2col patches:
P (R, KH*KW*CI) and WL (CO, R), both int8 with per-row scales. The kernel returns y and the number
of outputs computed exactly. A template over symbolic shapes, specialized per layer.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass

import numpy as np
from tvm import tirx
from tvm.script import tirx as T

from ..conv_sites import ConvGeometry
from .activations import apply_activation
from .conv2d import pad_input
from .dual_dense import ceil_div, sensitive
from .row_dot import check_group, make_lane_sum, specialize

LITTLE_DTYPES = ("int8", "float32")


@dataclass(frozen=True)
class DualConvConfig:
    """Schedule knobs of the dual convolution. Every combination that validates is a correct kernel."""

    rows_per_group: int = 4  # G: sensitive channels whose dot products run together
    lanes: int = 8  # L: float32 lanes per dot-product accumulator (8 = one AVX2 register)
    channel_block: int = 8  # CB: vector width of the little values / mask loop over channels
    little_dtype: str = "int8"  # storage of P and WL: int8 (widened in the loop) or the same int8 levels as float32

    def __post_init__(self) -> None:
        check_group(self.rows_per_group, self.lanes)
        if self.channel_block not in (4, 8, 16, 32):
            raise ValueError(f"channel_block must be 4, 8, 16 or 32, got {self.channel_block}")
        if self.little_dtype not in LITTLE_DTYPES:
            raise ValueError(f"little_dtype must be one of {LITTLE_DTYPES}, got {self.little_dtype!r}")

    def to_dict(self) -> dict:
        return asdict(self)


def default_dual_conv_config(geometry: ConvGeometry) -> DualConvConfig:
    """16 lanes (two accumulator registers per dot product) where a patch run allows it: with a
    single 8-lane accumulator, a lone dot product is a chain of dependent FMAs, latency-bound."""
    run = geometry.kernel_w * geometry.c_in
    return DualConvConfig(rows_per_group=4, lanes=16 if run % 16 == 0 else 8)


@dataclass(frozen=True)
class DualConvShape:
    geometry: ConvGeometry
    rank: int
    has_residual: bool = False

    def __post_init__(self) -> None:
        if self.rank < 1:
            raise ValueError(f"little rank must be positive, got {self.rank}")

    @property
    def name(self) -> str:
        return f"dual_conv2d_relu{'_res' if self.has_residual else ''}_r{self.rank}_{self.geometry.tag}"


def make_patch_dot(group: int, lanes: int, gathered: bool, KH: int, KW: int):
    """A T.macro `dot(acc, A, idx, base, xp, b, oh * SH, ow * SW, CI)`: acc[g * L] = <A[row_g], patch> for
    g < G, where A is (rows, KH, KW*CI), row_g = idx[base + g] if gathered else base + g, and the
    patch is the KH runs xp[b, ih + kh, iw0*CI : (iw0+KW)*CI] of the padded input (B, HP, WP*CI)."""
    check_group(group, lanes)
    G, L = group, lanes
    lane_sum = make_lane_sum(G, L)

    def row(idx, i):
        return idx[i] if gathered else i

    @T.macro
    def dot(acc, A, idx, base, xp, b, ih, iw0, CI):
        # no local scalars here: in TVM 0.27 a scalar assigned in a macro becomes a mutable
        # variable, i.e. a workspace allocation in every parallel iteration
        for g in T.unroll(G):
            for v in T.vectorized(L):
                acc[g * L + v] = T.float32(0)
        for kh in T.unroll(KH):
            for kc in range(KW * CI // L):
                for g in T.unroll(G):
                    for v in T.vectorized(L):
                        acc[g * L + v] = acc[g * L + v] + T.Cast("float32", A[row(idx, base + g), kh, kc * L + v]) * xp[b, ih + kh, iw0 * CI + kc * L + v]
        lane_sum(acc)
        for g in T.unroll(G):
            for kh in T.unroll(KH):
                for kt in range(KW * CI % L):
                    acc[g * L] = acc[g * L] + T.Cast("float32", A[row(idx, base + g), kh, KW * CI // L * L + kt]) * xp[b, ih + kh, iw0 * CI + KW * CI // L * L + kt]

    return dot


def make_pixel_dot(group: int, lanes: int, KH: int, KW: int, SW: int):
    """A T.macro `dot(acc, A, idx, base, row, xp, b, ih, CI)`: acc[g * L] = <A[row], patch(ow_g)> for
    g < G, where ow_g = idx[base + g] are output columns of one output row: G pixels share each
    vector of the weight row, which stays in L1 across the row's sensitive pixels."""
    check_group(group, lanes)
    G, L = group, lanes
    lane_sum = make_lane_sum(G, L)

    @T.macro
    def dot(acc, A, idx, base, row, xp, b, ih, CI):
        for g in T.unroll(G):
            for v in T.vectorized(L):
                acc[g * L + v] = T.float32(0)
        for kh in T.unroll(KH):
            for kc in range(KW * CI // L):
                for g in T.unroll(G):
                    for v in T.vectorized(L):
                        acc[g * L + v] = acc[g * L + v] + A[row, kh, kc * L + v] * xp[b, ih + kh, idx[base + g] * SW * CI + kc * L + v]
        lane_sum(acc)
        for g in T.unroll(G):
            for kh in T.unroll(KH):
                for kt in range(KW * CI % L):
                    acc[g * L] = acc[g * L] + A[row, kh, KW * CI // L * L + kt] * xp[b, ih + kh, idx[base + g] * SW * CI + KW * CI // L * L + kt]

    return dot


@functools.lru_cache(maxsize=None)
def dual_conv2d_template(static: tuple, has_residual: bool, config: DualConvConfig, debug: bool) -> tirx.PrimFunc:
    """The kernel over symbolic shapes; make_dual_conv2d specializes it."""
    KH, KW, SH, SW, PT, PL, PB, PR = static
    G, L, CB = config.rows_per_group, config.lanes, config.channel_block
    ldt = config.little_dtype
    padded = PT + PL + PB + PR > 0
    exact_dot = make_pixel_dot(G, L, KH, KW, SW)
    exact_dot1 = make_pixel_dot(1, L, KH, KW, SW)
    proj_dot = make_patch_dot(G, L, False, KH, KW)
    proj_dot1 = make_patch_dot(1, L, False, KH, KW)

    def relu(v):
        return apply_activation(v, "relu")  # keeps NaN, as PyTorch does

    @T.macro
    def little_pixel(xp, P, Ps, WLT, WLs, bL, res, y, b, oh, ow, CI, CO, R, NCB):
        """y[b, oh, ow, :] = little values of the pixel, shortcut included (scratch until step 3)."""
        acc = T.alloc_buffer((G * L,), "float32")
        u = T.alloc_buffer((R,), "float32")
        zl = T.alloc_buffer((NCB * CB,), "float32")
        for rg in range(R // G):
            proj_dot(acc, P, 0, rg * G, xp, b, oh * SH, ow * SW, CI)
            for g in T.unroll(G):
                u[rg * G + g] = acc[g * L] * Ps[rg * G + g]
        for rt in range(R % G):
            proj_dot1(acc, P, 0, R // G * G + rt, xp, b, oh * SH, ow * SW, CI)
            u[R // G * G + rt] = acc[0] * Ps[R // G * G + rt]
        for cb in range(NCB):
            for v in T.vectorized(CB):
                zl[cb * CB + v] = T.float32(0)
            for r in range(R):
                for v in T.vectorized(CB):
                    zl[cb * CB + v] = zl[cb * CB + v] + T.Cast("float32", WLT[r, cb * CB + v]) * u[r]
            for v in T.vectorized(CB):
                zl[cb * CB + v] = zl[cb * CB + v] * WLs[cb * CB + v] + bL[cb * CB + v]
        for co in range(CO):
            if has_residual:
                y[b, oh, ow, co] = zl[co] + res[b, oh, ow, co]
            else:
                y[b, oh, ow, co] = zl[co]

    @T.macro
    def exact_out(y, bias, res, b, oh, ow, co, v):
        if has_residual:
            y[b, oh, ow, co] = relu(v + bias[co] + res[b, oh, ow, co])
        else:
            y[b, oh, ow, co] = relu(v + bias[co])

    @T.macro
    def row(xp, W, bias, res, P, Ps, WLT, WLs, bL, lo, hi, y, little_out, sens_out, b, oh, CI, CO, R, NCB, OW, cnt_row):
        # 1.-2. little values of the whole output row, written into the output row as scratch
        for ow in range(OW):
            little_pixel(xp, P, Ps, WLT, WLs, bL, res, y, b, oh, ow, CI, CO, R, NCB)
        acc = T.alloc_buffer((G * L,), "float32")
        idx = T.alloc_buffer((OW,), "int32")
        cnt = T.alloc_buffer((1,), "int32")  # a stack slot (a scalar variable would be a workspace)
        for co in range(CO):
            # 3. this channel's sensitive pixels of the row (branch-free compaction); zeros elsewhere
            cnt[0] = 0
            for ow in range(OW):
                if debug:
                    little_out[b, oh, ow, co] = y[b, oh, ow, co]
                    sens_out[b, oh, ow, co] = T.Cast("int8", sensitive(y[b, oh, ow, co], lo[co], hi[co]))
                idx[cnt[0]] = ow
                cnt[0] = cnt[0] + T.Cast("int32", sensitive(y[b, oh, ow, co], lo[co], hi[co]))
                y[b, oh, ow, co] = T.float32(0)
            # 4. exact outputs, G pixels at a time sharing each weight vector of the channel
            for j in range(cnt[0] // G):
                exact_dot(acc, W, idx, j * G, co, xp, b, oh * SH, CI)
                for g in T.unroll(G):
                    exact_out(y, bias, res, b, oh, idx[j * G + g], co, acc[g * L])
            for jt in range(cnt[0] % G):
                exact_dot1(acc, W, idx, cnt[0] // G * G + jt, co, xp, b, oh * SH, CI)
                exact_out(y, bias, res, b, oh, idx[cnt[0] // G * G + jt], co, acc[0])
            cnt_row[0] = cnt_row[0] + cnt[0]

    @T.macro
    def rows(xp, W, bias, res, P, Ps, WLT, WLs, bL, lo, hi, y, count, little_out, sens_out, B, CI, CO, R, NCB, OH, OW):
        row_count = T.alloc_buffer((B * OH,), "int32")
        for boh in T.parallel(B * OH):
            cnt_row = T.alloc_buffer((1,), "int32")
            cnt_row[0] = 0
            row(xp, W, bias, res, P, Ps, WLT, WLs, bL, lo, hi, y, little_out, sens_out, boh // OH, boh % OH, CI, CO, R, NCB, OW, cnt_row)
            row_count[boh] = cnt_row[0]
        total = T.alloc_buffer((1,), "int32")
        total[0] = 0
        for i in range(B * OH):
            total[0] = total[0] + row_count[i]
        count[0] = total[0]

    @T.macro
    def body(x, W, bias, res, P, Ps, WLT, WLs, bL, lo, hi, y, count, little_out, sens_out, B, H, Wd, CI, CO, R, NCB, OH, OW):
        xf = T.decl_buffer((B, H, Wd * CI), "float32", data=x.data)  # rows as flat runs
        if padded:
            xp = T.alloc_buffer((B, H + PT + PB, (Wd + PL + PR) * CI), "float32")
            pad_input(xf, xp, B, H, Wd, CI, PT, PL, PB, PR)
            rows(xp, W, bias, res, P, Ps, WLT, WLs, bL, lo, hi, y, count, little_out, sens_out, B, CI, CO, R, NCB, OH, OW)
        else:
            rows(xf, W, bias, res, P, Ps, WLT, WLs, bL, lo, hi, y, count, little_out, sens_out, B, CI, CO, R, NCB, OH, OW)

    # One signature per variant: the residual and the debug outputs (little values, mask) are
    # parameters only where used.
    if has_residual and debug:

        @T.prim_func
        def dual_conv2d(
            x_h: T.handle, W_h: T.handle, bias_h: T.handle, res_h: T.handle, P_h: T.handle, Ps_h: T.handle,
            WLT_h: T.handle, WLs_h: T.handle, bL_h: T.handle, lo_h: T.handle, hi_h: T.handle, y_h: T.handle,
            count_h: T.handle, little_h: T.handle, sens_h: T.handle,
        ):
            T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True})
            B = T.int32()
            H = T.int32()
            Wd = T.int32()
            CI = T.int32()
            CO = T.int32()
            OH = T.int32()
            OW = T.int32()
            R = T.int32()
            S = T.int32()  # KW * CI, one run of a patch
            CP = T.int32()  # channels padded to whole blocks of CB
            x = T.match_buffer(x_h, (B, H, Wd, CI), "float32")
            W = T.match_buffer(W_h, (CO, KH, S), "float32")
            bias = T.match_buffer(bias_h, (CO,), "float32")
            P = T.match_buffer(P_h, (R, KH, S), ldt)
            Ps = T.match_buffer(Ps_h, (R,), "float32")
            WLT = T.match_buffer(WLT_h, (R, CP), ldt)
            WLs = T.match_buffer(WLs_h, (CP,), "float32")
            bL = T.match_buffer(bL_h, (CP,), "float32")
            lo = T.match_buffer(lo_h, (CP,), "float32")
            hi = T.match_buffer(hi_h, (CP,), "float32")
            y = T.match_buffer(y_h, (B, OH, OW, CO), "float32")
            count = T.match_buffer(count_h, (1,), "int32")
            res = T.match_buffer(res_h, (B, OH, OW, CO), "float32")
            little_out = T.match_buffer(little_h, (B, OH, OW, CO), "float32")
            sens_out = T.match_buffer(sens_h, (B, OH, OW, CO), "int8")
            body(x, W, bias, res, P, Ps, WLT, WLs, bL, lo, hi, y, count, little_out, sens_out, B, H, Wd, CI, CO, R, CP // CB, OH, OW)

    elif has_residual:

        @T.prim_func
        def dual_conv2d(
            x_h: T.handle, W_h: T.handle, bias_h: T.handle, res_h: T.handle, P_h: T.handle, Ps_h: T.handle,
            WLT_h: T.handle, WLs_h: T.handle, bL_h: T.handle, lo_h: T.handle, hi_h: T.handle, y_h: T.handle,
            count_h: T.handle,
        ):
            T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True})
            B = T.int32()
            H = T.int32()
            Wd = T.int32()
            CI = T.int32()
            CO = T.int32()
            OH = T.int32()
            OW = T.int32()
            R = T.int32()
            S = T.int32()  # KW * CI, one run of a patch
            CP = T.int32()  # channels padded to whole blocks of CB
            x = T.match_buffer(x_h, (B, H, Wd, CI), "float32")
            W = T.match_buffer(W_h, (CO, KH, S), "float32")
            bias = T.match_buffer(bias_h, (CO,), "float32")
            P = T.match_buffer(P_h, (R, KH, S), ldt)
            Ps = T.match_buffer(Ps_h, (R,), "float32")
            WLT = T.match_buffer(WLT_h, (R, CP), ldt)
            WLs = T.match_buffer(WLs_h, (CP,), "float32")
            bL = T.match_buffer(bL_h, (CP,), "float32")
            lo = T.match_buffer(lo_h, (CP,), "float32")
            hi = T.match_buffer(hi_h, (CP,), "float32")
            y = T.match_buffer(y_h, (B, OH, OW, CO), "float32")
            count = T.match_buffer(count_h, (1,), "int32")
            res = T.match_buffer(res_h, (B, OH, OW, CO), "float32")
            body(x, W, bias, res, P, Ps, WLT, WLs, bL, lo, hi, y, count, y, y, B, H, Wd, CI, CO, R, CP // CB, OH, OW)

    elif debug:

        @T.prim_func
        def dual_conv2d(
            x_h: T.handle, W_h: T.handle, bias_h: T.handle, P_h: T.handle, Ps_h: T.handle, WLT_h: T.handle,
            WLs_h: T.handle, bL_h: T.handle, lo_h: T.handle, hi_h: T.handle, y_h: T.handle, count_h: T.handle,
            little_h: T.handle, sens_h: T.handle,
        ):
            T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True})
            B = T.int32()
            H = T.int32()
            Wd = T.int32()
            CI = T.int32()
            CO = T.int32()
            OH = T.int32()
            OW = T.int32()
            R = T.int32()
            S = T.int32()  # KW * CI, one run of a patch
            CP = T.int32()  # channels padded to whole blocks of CB
            x = T.match_buffer(x_h, (B, H, Wd, CI), "float32")
            W = T.match_buffer(W_h, (CO, KH, S), "float32")
            bias = T.match_buffer(bias_h, (CO,), "float32")
            P = T.match_buffer(P_h, (R, KH, S), ldt)
            Ps = T.match_buffer(Ps_h, (R,), "float32")
            WLT = T.match_buffer(WLT_h, (R, CP), ldt)
            WLs = T.match_buffer(WLs_h, (CP,), "float32")
            bL = T.match_buffer(bL_h, (CP,), "float32")
            lo = T.match_buffer(lo_h, (CP,), "float32")
            hi = T.match_buffer(hi_h, (CP,), "float32")
            y = T.match_buffer(y_h, (B, OH, OW, CO), "float32")
            count = T.match_buffer(count_h, (1,), "int32")
            little_out = T.match_buffer(little_h, (B, OH, OW, CO), "float32")
            sens_out = T.match_buffer(sens_h, (B, OH, OW, CO), "int8")
            body(x, W, bias, y, P, Ps, WLT, WLs, bL, lo, hi, y, count, little_out, sens_out, B, H, Wd, CI, CO, R, CP // CB, OH, OW)

    else:

        @T.prim_func
        def dual_conv2d(
            x_h: T.handle, W_h: T.handle, bias_h: T.handle, P_h: T.handle, Ps_h: T.handle, WLT_h: T.handle,
            WLs_h: T.handle, bL_h: T.handle, lo_h: T.handle, hi_h: T.handle, y_h: T.handle, count_h: T.handle,
        ):
            T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True})
            B = T.int32()
            H = T.int32()
            Wd = T.int32()
            CI = T.int32()
            CO = T.int32()
            OH = T.int32()
            OW = T.int32()
            R = T.int32()
            S = T.int32()  # KW * CI, one run of a patch
            CP = T.int32()  # channels padded to whole blocks of CB
            x = T.match_buffer(x_h, (B, H, Wd, CI), "float32")
            W = T.match_buffer(W_h, (CO, KH, S), "float32")
            bias = T.match_buffer(bias_h, (CO,), "float32")
            P = T.match_buffer(P_h, (R, KH, S), ldt)
            Ps = T.match_buffer(Ps_h, (R,), "float32")
            WLT = T.match_buffer(WLT_h, (R, CP), ldt)
            WLs = T.match_buffer(WLs_h, (CP,), "float32")
            bL = T.match_buffer(bL_h, (CP,), "float32")
            lo = T.match_buffer(lo_h, (CP,), "float32")
            hi = T.match_buffer(hi_h, (CP,), "float32")
            y = T.match_buffer(y_h, (B, OH, OW, CO), "float32")
            count = T.match_buffer(count_h, (1,), "int32")
            body(x, W, bias, y, P, Ps, WLT, WLs, bL, lo, hi, y, count, y, y, B, H, Wd, CI, CO, R, CP // CB, OH, OW)

    return dual_conv2d


def make_dual_conv2d(shape: DualConvShape, config: DualConvConfig = DualConvConfig(), debug: bool = False) -> tirx.PrimFunc:
    """The fused kernel for one layer.

    Arguments, in order: x (B,H,W,CI) f32, W (CO,KH,KW*CI) f32, bias (CO,) f32, [residual
    (B,OH,OW,CO) f32], then the little constants of pack_dual_conv_constants (P, Ps, WLT, WLs, bL,
    lo, hi); outputs y (B,OH,OW,CO) f32 and count (1,) int32, the number of outputs computed
    exactly. With `debug`, two more outputs: little values (B,OH,OW,CO) f32 and the mask int8.
    """
    g, R, ldt = shape.geometry, shape.rank, config.little_dtype
    CB = config.channel_block
    ncb = ceil_div(g.c_out, CB)
    f32 = "float32"
    S = g.kernel_w * g.c_in
    shapes = [(g.input_shape, f32), ((g.c_out, g.kernel_h, S), f32), ((g.c_out,), f32)]
    if shape.has_residual:
        shapes.append((g.output_shape, f32))
    shapes += [((R, g.kernel_h, S), ldt), ((R,), f32), ((R, ncb * CB), ldt)] + [((ncb * CB,), f32)] * 4
    shapes += [(g.output_shape, f32), ((1,), "int32")]
    if debug:
        shapes += [(g.output_shape, f32), (g.output_shape, "int8")]
    static = (g.kernel_h, g.kernel_w, g.stride_h, g.stride_w, g.pad_top, g.pad_left, g.pad_bottom, g.pad_right)
    template = dual_conv2d_template(static, shape.has_residual, config, debug)
    return specialize(template, shapes, shape.name + ("_debug" if debug else ""))


def pack_dual_conv_constants(
    P: np.ndarray, Ps: np.ndarray, WL: np.ndarray, WLs: np.ndarray, bL: np.ndarray, lo: np.ndarray, hi: np.ndarray,
    geometry: ConvGeometry, config: DualConvConfig,
) -> list[np.ndarray]:
    """The little constants in the kernel's order and layout: P (R, KH*KW*CI) -> (R, KH, KW*CI);
    WL (CO, R) transposed to (R, CO) and per-channel vectors padded to whole channel blocks (padded
    channels get an empty sensitive range)."""
    g, CB = geometry, config.channel_block
    co, r = WL.shape
    padded = ceil_div(co, CB) * CB

    def pad(v: np.ndarray, fill: float) -> np.ndarray:
        out = np.full(padded, fill, dtype=np.float32)
        out[:co] = v
        return out

    dtype = np.int8 if config.little_dtype == "int8" else np.float32
    wlt = np.zeros((r, padded), dtype=dtype)
    wlt[:, :co] = WL.T
    arrays = [P.reshape(r, g.kernel_h, g.kernel_w * g.c_in).astype(dtype), Ps, wlt, pad(WLs, 0), pad(bL, 0), pad(lo, np.inf), pad(hi, -np.inf)]
    return [np.ascontiguousarray(a) for a in arrays]


def exact_weight(weight_ohwi: np.ndarray) -> np.ndarray:
    """OHWI -> (CO, KH, KW*CI): the rows the kernel dots with patch runs."""
    co, kh, kw, ci = weight_ohwi.shape
    return np.ascontiguousarray(weight_ohwi.reshape(co, kh, kw * ci), dtype=np.float32)
