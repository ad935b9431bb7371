"""Elementwise: vectorized loops for injective PrimFuncs on CPU.

What remains of a model after the GEMV, dual and gate kernels is mostly injective: slices, reshapes,
concatenations, the activations and the cell update of an LSTM or GRU step. dlight's CPU rules do
not match them, so TVM compiled them as scalar loops, one element at a time through the fast
sigmoid and tanh polynomials. This rule inlines what can be inlined (dlight's try_inline) and gives
every remaining block one fused loop over its outputs, split into vector-register chunks and
vectorized; only large outputs get a parallel loop, since a parallel region's fork and join costs
several microseconds and a batch-1 step's elementwise work is a few thousand elements.
"""

from __future__ import annotations

from tvm import s_tir, tirx
from tvm.s_tir.dlight.analysis import normalize_prim_func
from tvm.s_tir.dlight.base import get_extent, try_inline
from tvm.s_tir.dlight.cpu.base import CPUScheduleRule
from tvm.target import Target
from tvm.target.codegen import llvm_get_vector_width

PARALLEL_MIN_ELEMENTS = 1 << 18  # below this, one thread's vector loop beats a fork and join


class Elementwise(CPUScheduleRule):
    """Inline, fuse each remaining block's loops, vectorize by register width (float32 lanes)."""

    def apply(self, func: tirx.PrimFunc, target: Target, _: bool) -> s_tir.Schedule | None:
        if not isinstance(func, tirx.PrimFunc) or not self.is_target_available(target):
            return None
        sch = s_tir.Schedule(func)
        block_infos = normalize_prim_func(sch)
        if not block_infos or not all(info.is_injective() for info in block_infos):
            return None
        lanes = max(llvm_get_vector_width(target) // 32, 4)
        for info in try_inline(sch, block_infos):
            loops = sch.get_loops(info.block_rv)
            # a zero-extent loop (an empty slice such as y[:, :0]) has nothing to schedule, and fusing it
            # divides by zero inside TVM
            if not loops or any(get_extent(sch, loop) == 0 for loop in loops):
                continue
            fused = sch.fuse(*loops) if len(loops) > 1 else loops[0]
            extent = get_extent(sch, fused)
            if isinstance(extent, int) and extent < 2:
                continue
            if isinstance(extent, int) and extent >= PARALLEL_MIN_ELEMENTS:
                outer, fused = sch.split(fused, factors=[None, 4096])
                sch.parallel(outer)
            _, vector = sch.split(fused, factors=[None, lanes])
            sch.vectorize(vector)
        return sch
