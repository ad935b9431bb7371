"""DualModuleRewrite: act(matmul(x, W^T) + b) -> call_tir(fused dual kernel) for planned layers."""

from __future__ import annotations

import re
import warnings

import numpy as np
import tvm
from tvm import relax
from tvm.relax.dpl import rewrite_call

from ..compile_warning import DualCompileWarning
from ..kernels.dual_dense import DualDenseShape, make_dual_dense, pack_dual_constants
from ..plan import DualLayerPlan, DualPlan
from ..sites import (
    DUAL_ACTIVATIONS,
    RowPaddedWeights,
    WeightKeys,
    activation_pattern,
    constant_array,
    linear_pattern,
    match_key,
    static_shape,
)

LAYER_ATTR = "tvm_dual.layer"  # PrimFunc attribute naming the layer a dual kernel belongs to


def kernel_symbol(layer_name: str, shape: DualDenseShape) -> str:
    safe = re.sub(r"[^0-9a-zA-Z_]", "_", layer_name)
    return f"tvm_dual_{safe}_b{shape.batch}"


@tvm.transform.module_pass(opt_level=0, name="DualModuleRewrite")
class DualModuleRewrite:
    """Replace each planned linear + activation layer by the fused dual-module kernel.

    Weights must be Relax constants (torch import with keep_params_as_input=False, or BindParams).
    Layers not in the plan are left as they are. A planned layer the pass does not find (other
    weights, or an input of dynamic shape) stays as it is too, with a DualCompileWarning naming it:
    in a pipeline of one's own, a plan made for another import of the model would otherwise go
    unused in silence. The kernel returns (y, rows read); the counter is dropped here and surfaced
    by ExposeDualCounters when wanted.

    Use outside compile_dual: planned = tvm_dual.plan_dual(model, inputs, calibration=...), then
    DualModuleRewrite(planned.plan) on a Relax module imported from the same model with its weights
    as constants, before legalization (see tests/test_transform_api.py).
    """

    def __init__(self, plan: DualPlan) -> None:
        self.plan = plan

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        if not len(self.plan):
            return mod
        builder = relax.BlockBuilder(mod)
        rewriter = _LayerRewriter(self.plan, builder)
        for gvar, func in list(mod.functions_items()):
            if isinstance(func, relax.Function):
                builder.update_func(gvar, relax.analysis.remove_all_unused(rewriter.rewrite(func)))
        missed = [
            f"{layer.name!r} ({rewriter.dynamic.get(key, 'no matmul with its weights and activation')})"
            for key, layer in self.plan.layers.items()
            if key not in rewriter.rewritten
        ]
        if missed:
            warnings.warn(
                f"DualModuleRewrite: {len(missed)} planned layer(s) not found, left as they are: {'; '.join(missed)}",
                DualCompileWarning,
                stacklevel=2,
            )
        return builder.get()


class _LayerRewriter:
    def __init__(self, plan: DualPlan, builder: relax.BlockBuilder) -> None:
        self.plan = plan
        self.builder = builder
        self.keys = WeightKeys()
        self.padded = RowPaddedWeights(self.keys)
        self.kernels: dict[str, relax.GlobalVar] = {}
        self.constants: dict[str, list[relax.Constant]] = {}
        self.rewritten: set[str] = set()  # keys of the planned layers replaced
        self.dynamic: dict[str, str] = {}  # keys of planned layers matched but left: why

    def rewrite(self, func: relax.Function) -> relax.Function:
        pat = linear_pattern()

        def rewriter(expr, matches):
            layer = self.plan.get(match_key(matches, pat, self.keys, DUAL_ACTIVATIONS[expr.op.name]))
            if layer is None:
                return expr
            x_shape = static_shape(matches[pat.x])
            if x_shape is None:
                self.dynamic[layer.key] = "its input has no static shape"
                return expr
            self.rewritten.add(layer.key)
            batch = int(np.prod(x_shape[:-1]))
            bias = matches[pat.bias] if pat.bias in matches else None
            return self._emit(layer, matches[pat.x], matches[pat.weight], bias, x_shape, batch)

        return rewrite_call(activation_pattern(DUAL_ACTIVATIONS, pat.linear), rewriter, func)

    def _emit(self, layer: DualLayerPlan, x, weight, bias, x_shape, batch) -> relax.Expr:
        shape = DualDenseShape(batch=batch, n=layer.n, k=layer.k, rank=layer.little.rank, act=layer.act)
        kernel = self._kernel(layer, shape)
        consts = self._constants(layer, bias)
        x2d = x if len(x_shape) == 2 else relax.op.reshape(x, (batch, layer.k))
        call = relax.call_tir(
            kernel,
            [x2d, self.padded.get(weight, shape.row_stride), *consts],
            out_ty=[relax.TensorType((batch, layer.n), "float32"), relax.TensorType((1,), "int32")],
        )
        y = relax.TupleGetItem(call, 0)
        if len(x_shape) != 2:
            y = relax.op.reshape(y, (*x_shape[:-1], layer.n))
        return y

    def _kernel(self, layer: DualLayerPlan, shape: DualDenseShape) -> relax.GlobalVar:
        symbol = kernel_symbol(layer.name, shape)
        if symbol not in self.kernels:
            func = make_dual_dense(shape, layer.kernel, vector_bits=self.plan.vector_bits)
            func = func.with_attr("global_symbol", symbol)
            func = func.with_attr(LAYER_ATTR, layer.name)
            self.kernels[symbol] = self.builder.add_func(func, symbol)
        return self.kernels[symbol]

    def _constants(self, layer: DualLayerPlan, bias_expr) -> list[relax.Constant]:
        # One set of constant objects per layer: an unrolled recurrence calls the layer at every step.
        if layer.key not in self.constants:
            little = layer.little
            bias = np.zeros(layer.n, np.float32) if bias_expr is None else constant_array(bias_expr).reshape(layer.n)
            arrays = pack_dual_constants(
                bias, little.P, little.Ps, little.WL, little.WLs, little.bL, layer.lo, layer.hi, layer.kernel,
                self.plan.vector_bits,
            )
            self.constants[layer.key] = [relax.const(a) for a in arrays]
        return self.constants[layer.key]
