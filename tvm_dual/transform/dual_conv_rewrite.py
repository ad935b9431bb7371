"""DualConvRewrite: relu(conv2d(x, W) [+ b] [+ r]) -> call_tir(fused dual convolution) for planned layers.

Runs after conv preparation and before DenseConvRewrite (which takes the layers left). The kernel
returns (y, outputs computed exactly); the counter is dropped here and surfaced by
ExposeDualCounters (the kernel carries the same LAYER_ATTR as the dense dual kernels).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import numpy as np
import tvm
from tvm import relax

from ..conv_sites import CONV_ACTIVATIONS, ConvMatch, is_op, match_conv
from ..kernels.dual_conv2d import DualConvShape, exact_weight, make_dual_conv2d, pack_dual_conv_constants
from .dual_module_rewrite import LAYER_ATTR

if TYPE_CHECKING:  # conv_plan imports the pass pipeline, which imports this module
    from ..conv_plan import ConvLayerPlan, ConvPlan


def conv_kernel_symbol(layer_name: str) -> str:
    return "tvm_dual_conv_" + re.sub(r"[^0-9a-zA-Z_]", "_", layer_name)


@relax.expr_functor.mutator
class _DualConvEmitter(relax.PyExprMutator):
    def __init__(self, mod: tvm.IRModule, plan: ConvPlan, var2val: dict, kernels: dict, constants: dict) -> None:
        super().__init__(mod)
        self.plan, self.var2val, self.kernels, self.constants = plan, var2val, kernels, constants

    def visit_var_binding_(self, binding: relax.VarBinding) -> None:
        value = binding.value
        match = None
        if is_op(value, "relax.nn.relu"):
            match = match_conv(value.args[0], self.var2val, CONV_ACTIVATIONS[value.op.name])
        layer = self.plan.get(match.key) if match is not None and not match.reason else None
        if layer is None:
            super().visit_var_binding_(binding)
            return
        self.builder_.emit_normalized(relax.VarBinding(binding.var, self.builder_.normalize(self._emit(layer, match))))

    def _emit(self, layer: ConvLayerPlan, match: ConvMatch) -> relax.Expr:
        shape = DualConvShape(match.geometry, layer.little.rank, match.residual is not None)
        symbol = conv_kernel_symbol(layer.name)
        if symbol not in self.kernels:
            func = make_dual_conv2d(shape, layer.kernel).with_attr("global_symbol", symbol).with_attr(LAYER_ATTR, layer.name)
            self.kernels[symbol] = self.builder_.add_func(func, symbol)
        if layer.key not in self.constants:
            little = layer.little
            bias = match.bias if match.bias is not None else np.zeros(match.geometry.c_out, np.float32)
            packed = pack_dual_conv_constants(
                little.P, little.Ps, little.WL, little.WLs, little.bL, layer.lo, layer.hi, match.geometry, layer.kernel
            )
            self.constants[layer.key] = (relax.const(exact_weight(match.weight)), relax.const(bias), [relax.const(a) for a in packed])
        weight, bias, packed = self.constants[layer.key]
        args = [self.visit_expr(match.x), weight, bias]
        if match.residual is not None:
            args.append(self.visit_expr(match.residual))
        out = relax.TensorType(match.geometry.output_shape, "float32")
        call = relax.call_tir(self.kernels[symbol], [*args, *packed], out_ty=[out, relax.TensorType((1,), "int32")])
        # bound on its own, so that ExposeDualCounters finds the call and its counter
        return relax.TupleGetItem(self.builder_.emit(call, "dual_conv"), 0)


@tvm.transform.module_pass(opt_level=0, name="DualConvRewrite")
class DualConvRewrite:
    """Replace each planned convolution + ReLU layer by the fused dual convolution kernel."""

    def __init__(self, plan: ConvPlan) -> None:
        self.plan = plan

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        if not len(self.plan):
            return mod
        kernels: dict = {}
        constants: dict = {}
        for gvar, func in list(mod.functions_items()):
            if not isinstance(func, relax.Function):
                continue
            emitter = _DualConvEmitter(mod, self.plan, relax.analysis.get_var2val(func), kernels, constants)
            new_func = relax.analysis.remove_all_unused(emitter.visit_expr(func))
            # update_func copies the module on write; `mod[gvar] = ...` would change the caller's
            emitter.builder_.update_func(gvar, new_func)
            mod = emitter.builder_.get()
        return mod
