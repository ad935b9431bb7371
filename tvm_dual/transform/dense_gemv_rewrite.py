"""DenseGemvRewrite: remaining linear layers -> call_tir(our small-batch GEMV kernel).

The default Relax CPU pipeline leaves matmuls unscheduled, and dlight's CPU GEMV rule keeps scalar
libm activations, so the layers that stay exact get the same row-group kernel as the dual layers.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.relax.dpl import rewrite_call

from ..kernels.gemv import GemvShape, default_gemv_config, make_gemv
from ..sites import DUAL_ACTIVATIONS, RowPaddedWeights, WeightKeys, activation_pattern, constant_array, linear_pattern, static_shape

# Beyond this many rows of x, W is better streamed by a blocked GEMM than row by row.
MAX_GEMV_BATCH = 64


@tvm.transform.module_pass(opt_level=0, name="DenseGemvRewrite")
class DenseGemvRewrite:
    """Replace act(matmul(x, W^T) + b) and matmul(x, W^T) + b with constant W by the GEMV kernel;
    its rows keep one vector register of accumulators each (vector_bits: the target's SIMD width)."""

    def __init__(self, vector_bits: int = 256) -> None:
        self.config = default_gemv_config(vector_bits)

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        builder = relax.BlockBuilder(mod)
        kernels: dict[str, relax.GlobalVar] = {}
        pat = linear_pattern()
        keys = WeightKeys()
        padded = RowPaddedWeights(keys)

        def emit(matches, act: str) -> relax.Expr | None:
            x = matches[pat.x]
            x_shape = static_shape(x)
            weight, _ = keys.lookup(matches[pat.weight])
            if x_shape is None or weight.ndim != 2 or weight.dtype != np.float32 or x.ty.dtype != "float32":
                return None
            n, k = weight.shape
            batch = int(np.prod(x_shape[:-1]))
            has_bias = pat.bias in matches
            if batch > MAX_GEMV_BATCH or (has_bias and constant_array(matches[pat.bias]).size != n):
                return None
            shape = GemvShape(batch=batch, n=n, k=k, act=act, has_bias=has_bias)
            if shape.name not in kernels:
                kernels[shape.name] = builder.add_func(make_gemv(shape, self.config), shape.name)
            args = [x if len(x_shape) == 2 else relax.op.reshape(x, (batch, k)), padded.get(matches[pat.weight], shape.row_stride)]
            if has_bias:
                bias = matches[pat.bias]
                args.append(bias if static_shape(bias) == (n,) else relax.op.reshape(bias, (n,)))
            y = relax.call_tir(kernels[shape.name], args, out_ty=relax.TensorType((batch, n), "float32"))
            return y if len(x_shape) == 2 else relax.op.reshape(y, (*x_shape[:-1], n))

        def with_activation(expr, matches):
            new = emit(matches, DUAL_ACTIVATIONS[expr.op.name])
            return expr if new is None else new

        def plain(expr, matches):
            new = emit(matches, "none")
            return expr if new is None else new

        # Largest pattern first, dead bindings dropped in between: bindings are visited in order,
        # so a smaller pattern would otherwise claim the matmul inside a larger match.
        patterns = [
            (activation_pattern(DUAL_ACTIVATIONS, pat.linear), with_activation),
            (pat.biased, plain),
            (pat.linear, plain),
        ]
        for gvar, func in list(mod.functions_items()):
            if isinstance(func, relax.Function):
                for pattern, rewriter in patterns:
                    func = relax.analysis.remove_all_unused(rewrite_call(pattern, rewriter, func))
                builder.update_func(gvar, func)
        return builder.get()
