"""InsertConvCalibrationProbes: route the input (and shortcut) of chosen convolution layers through
the calibration callback.

relu(conv2d(x, W) + b + r) becomes relu(conv2d(probe(x, 2i), W) + b + probe(r, 2i + 1)) for the
layer in slot i, with the same probe function as the linear layers' InsertCalibrationProbes; the
callback records each array as (rows, channels), which the planner reshapes back to NHWC maps.
"""

from __future__ import annotations

import tvm
from tvm import relax

from ..conv_sites import CONV_ACTIVATIONS, is_op, match_conv
from .insert_calibration_probes import PROBE_FUNC


@relax.expr_functor.mutator
class _Prober(relax.PyExprMutator):
    def __init__(self, mod: tvm.IRModule, slots: dict, var2val: dict) -> None:
        super().__init__(mod)
        self.slots, self.var2val = slots, var2val

    def _probe(self, expr: relax.Expr, slot: int) -> relax.Expr:
        value = self.visit_expr(expr)
        return self.builder_.emit(relax.call_pure_packed(PROBE_FUNC, value, relax.prim_value(slot), ty_args=value.ty), "probe")

    def visit_var_binding_(self, binding: relax.VarBinding) -> None:
        value = binding.value
        match = match_conv(value.args[0], self.var2val, CONV_ACTIVATIONS[value.op.name]) if is_op(value, "relax.nn.relu") else None
        slot = self.slots.get(match.key) if match is not None else None
        if slot is None:
            super().visit_var_binding_(binding)
            return
        z = relax.Call(match.call.op, [self._probe(match.x, 2 * slot), relax.const(match.weight)], match.call.attrs)
        if match.bias is not None:
            z = relax.op.add(self.builder_.emit(z), relax.const(match.bias.reshape(1, 1, 1, -1)))
        if match.residual is not None:
            z = relax.op.add(self.builder_.emit(z), self._probe(match.residual, 2 * slot + 1))
        new_value = relax.Call(value.op, [self.builder_.emit(z)], value.attrs)
        self.builder_.emit_normalized(relax.VarBinding(binding.var, self.builder_.normalize(new_value)))


@tvm.transform.module_pass(opt_level=0, name="InsertConvCalibrationProbes")
class InsertConvCalibrationProbes:
    """Probe the inputs of the convolution layers whose keys are listed; layer i uses slots 2i, 2i+1."""

    def __init__(self, keys: list[str]) -> None:
        self.slots = {key: i for i, key in enumerate(keys)}

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        for gvar, func in list(mod.functions_items()):
            if isinstance(func, relax.Function):
                prober = _Prober(mod, self.slots, relax.analysis.get_var2val(func))
                new_func = relax.analysis.remove_all_unused(prober.visit_expr(func))
                # update_func copies the module on write; `mod[gvar] = ...` would change the caller's
                prober.builder_.update_func(gvar, new_func)
                mod = prober.builder_.get()
        return mod
