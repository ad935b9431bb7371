"""The little-module stages of the dual kernel, in two arithmetic modes.

"f32": int8 weights are widened to float32 and multiplied with float32 activations. Widening costs
two instructions per eight weights on AVX2 (vpmovsxbd + vcvtdq2ps) besides the FMA, so the little
module is bound by instruction throughput, not bytes, whenever W sits in cache.

"i16": activations are quantized at run time to 14-bit integers (one scale per sample), and the
int8 weights are multiplied with vpmaddwd (AVX2: 16 int16 products summed in pairs into 8 int32 per
instruction; AVX-512BW: twice that). Measured 1.7x faster than "f32" for the 4096 x 80 little
weights of a 1024 -> 4096 layer. Integer products are exact, so the only new error is the
activation quantization (relative 1e-4 of the largest activation), far below the int8 weights'.
A sample whose input or projection is NaN or infinite gets NaN little values, so that every row
takes the exact path, as in "f32" mode.

The accumulation bound: |w| <= 127 and |a| <= qmax, so a dot product of length n stays below
127 * qmax * n. qmax is chosen per length (at most 8191) so that this is below 2^31.
"""

from __future__ import annotations

from tvm.script import tirx as T

LITTLE_COMPUTE = ("f32", "i16")
# int32 lanes of one multiply-add-pairs instruction, and its LLVM intrinsic, by vector width
PMADD_WD = {128: ("llvm.x86.sse2.pmadd.wd", 4), 256: ("llvm.x86.avx2.pmadd.wd", 8), 512: ("llvm.x86.avx512.pmaddw.d.512", 16)}
QMAX = 8191


def pmadd_lanes(vector_bits: int) -> int:
    if vector_bits not in PMADD_WD:
        raise ValueError(f"no int16 multiply-add for {vector_bits}-bit vectors")
    return PMADD_WD[vector_bits][1]


def padded_k(k: int, vector_bits: int) -> int:
    """K rounded up to whole int16 vectors (the i16 projection reads P and x in 2*VL chunks)."""
    step = 2 * pmadd_lanes(vector_bits)
    return -(-k // step) * step


def qmax_for(length) -> "T.PrimExpr":
    """Largest activation level keeping 127 * qmax * length under 2^31 (a TIR expression)."""
    return T.min(T.int64(QMAX), T.int64(2**31 - 1) // (T.int64(127) * T.Cast("int64", length)))


def make_i16_stages(group: int, little_block: int, vector_bits: int, parallel_min: int):
    """Macros of the "i16" mode: project (quantize the input, project it G rows of P at a time,
    quantize z), and the int32 accumulators of a block of `little_block` little-weight columns
    (finish them with little_value). The projection runs in parallel over row groups from
    `parallel_min` multiply-adds (DualKernelConfig.parallel_projection_min)."""
    G, NB = group, little_block
    intrinsic, VL = PMADD_WD[vector_bits]
    i8v, i16v, i32v = f"int8x{2 * VL}", f"int16x{2 * VL}", f"int32x{VL}"

    def pmadd(a_i8, b_i16):
        return T.call_llvm_pure_intrin(i32v, intrinsic, T.Cast(i16v, a_i8), b_i16)

    @T.macro
    def quantize_rows(src, dst, scale, bad, b, n, n_padded):
        """dst[b, :n] = round(src[b, :n] / scale[b]) as int16, zero-padded; bad[b] = any non-finite."""
        amax = T.alloc_buffer((1,), "float32")
        nonfinite = T.alloc_buffer((1,), "int32")
        amax[0] = T.float32(0)
        nonfinite[0] = 0
        for i in range(n):
            amax[0] = T.max(amax[0], T.fabs(src[b, i]))
            nonfinite[0] = T.max(nonfinite[0], T.Cast("int32", T.Not(T.isfinite(src[b, i]))))
        s: T.let = T.if_then_else(amax[0] > T.float32(0), amax[0] / T.Cast("float32", qmax_for(n_padded)), T.float32(1))
        for i0 in range(n // 16):
            for v in T.vectorized(16):
                dst[b, i0 * 16 + v] = T.Cast("int16", T.nearbyint(src[b, i0 * 16 + v] / s))
        for i in range(n_padded - n // 16 * 16):
            dst[b, n // 16 * 16 + i] = T.if_then_else(
                n // 16 * 16 + i < n, T.Cast("int16", T.nearbyint(src[b, T.min(n // 16 * 16 + i, n - 1)] / s)), T.int16(0)
            )
        scale[b] = s
        bad[b] = T.max(bad[b], nonfinite[0])

    def make_project_rows(GR: int):
        @T.macro
        def project_rows(P, Ps, xq, xs, z, rg, b, KP):
            """z[b, rg*GR + g] = Ps * xs * (P[row] . xq[b]) for the GR rows of group rg."""
            acc = T.alloc_buffer((GR * VL,), "int32")
            for g in T.unroll(GR):
                for v in T.vectorized(VL):
                    acc[g * VL + v] = 0
            for kc in range(KP // (2 * VL)):
                for g in T.unroll(GR):
                    acc[T.ramp(g * VL, 1, VL)] = acc[T.ramp(g * VL, 1, VL)] + pmadd(
                        P.vload([rg * GR + g, kc * 2 * VL], i8v), xq.vload([b, kc * 2 * VL], i16v)
                    )
            total = T.alloc_buffer((1,), "int32")
            for g in T.unroll(GR):
                total[0] = 0
                for v in range(VL):
                    total[0] = total[0] + acc[g * VL + v]
                z[b, rg * GR + g] = T.Cast("float32", total[0]) * (Ps[rg * GR + g] * xs[b])

        return project_rows

    project_group, project_row = make_project_rows(G), make_project_rows(1)

    @T.macro
    def project(src, xq, xs, z, zq, zs, bad, P, Ps, B, K, KP, R, RH):
        """z = Ps * xs * (P xq) for every sample, xq = src quantized; then zq = z quantized."""
        for b in range(B):
            bad[b] = 0
            quantize_rows(src, xq, xs, bad, b, K, KP)
        if B * R * K >= parallel_min:
            for rg in T.parallel(R // G):
                for b in range(B):
                    project_group(P, Ps, xq, xs, z, rg, b, KP)
        else:
            for rg in range(R // G):
                for b in range(B):
                    project_group(P, Ps, xq, xs, z, rg, b, KP)
        for rt in range(R % G):
            for b in range(B):
                project_row(P, Ps, xq, xs, z, R // G * G + rt, b, KP)
        for b in range(B):
            quantize_rows(z, zq, zs, bad, b, R, 2 * RH)

    @T.macro
    def little_accumulate(WLB, zq, acc, nb, col0, b, RH):
        """acc[v] = sum_r WL[column col0 + v of block nb, r] zq[b, r] (int32) for NB columns,
        WLB[nb, p, v, j] = WL[column v, 2p + j]."""
        for v in T.vectorized(NB):
            acc[v] = 0
        for p in range(RH):
            pair: T.let = T.reinterpret(
                "int32",
                T.Cast("uint32", T.reinterpret("uint16", zq[b, 2 * p]))
                | (T.Cast("uint32", T.reinterpret("uint16", zq[b, 2 * p + 1])) << T.uint32(16)),
            )
            for c in T.unroll(NB // VL):
                acc[T.ramp(c * VL, 1, VL)] = acc[T.ramp(c * VL, 1, VL)] + pmadd(
                    WLB.vload([nb, p, col0 + c * VL, 0], i8v), T.reinterpret(i16v, T.broadcast(pair, VL))
                )

    return project, little_accumulate


def little_value(acc, zs, bad, WLs, bL):
    """A little pre-activation from its int32 accumulator: NaN for a sample with a non-finite input."""
    return T.if_then_else(bad != 0, T.float32("nan"), T.Cast("float32", acc) * (zs * WLs) + bL)
