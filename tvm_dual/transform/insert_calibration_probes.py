"""InsertCalibrationProbes: route the input of chosen linear layers through a Python callback.

act(matmul(x, W^T) + b) becomes act(matmul(probe(x, i), W^T) + b) where probe is the packed function
PROBE_FUNC, which records x for layer slot i and returns a copy of it. Calibration then runs the
model as compiled, so every way a layer can be reached (functional forms, shared layers, unrolled
recurrences) is captured exactly as it executes.
"""

from __future__ import annotations

import tvm
from tvm import relax
from tvm.relax.dpl import rewrite_call

from ..sites import DUAL_ACTIVATIONS, WeightKeys, activation_pattern, linear_pattern, match_key

PROBE_FUNC = "tvm_dual.calibration_probe"


def _is_probe(expr: relax.Expr) -> bool:
    return (
        isinstance(expr, relax.Call)
        and isinstance(expr.op, tvm.ir.Op)
        and expr.op.name == "relax.call_pure_packed"
        and isinstance(expr.args[0], relax.ExternFunc)
        and expr.args[0].global_symbol == PROBE_FUNC
    )


@tvm.transform.module_pass(opt_level=0, name="InsertCalibrationProbes")
class InsertCalibrationProbes:
    """Probe the inputs of the layers whose keys are listed; slot i is keys[i]."""

    def __init__(self, keys: list[str]) -> None:
        self.slots = {key: i for i, key in enumerate(keys)}

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        pat = linear_pattern()
        weight_keys = WeightKeys()

        def rewriter(expr, matches):
            slot = self.slots.get(match_key(matches, pat, weight_keys, DUAL_ACTIVATIONS[expr.op.name]))
            if slot is None:
                return expr
            x = matches[pat.x]
            if _is_probe(x):  # rewrite_call runs to a fixed point; the probed layer matches again
                return expr
            probed = relax.call_pure_packed(PROBE_FUNC, x, relax.prim_value(slot), ty_args=x.ty)
            linear = relax.op.matmul(probed, relax.op.permute_dims(matches[pat.weight]))
            if pat.bias in matches:
                linear = relax.op.add(linear, matches[pat.bias])
            return relax.Call(expr.op, [linear])

        updated = tvm.IRModule(dict(mod.functions_items()), attrs=mod.attrs)
        for gvar, func in mod.functions_items():
            if isinstance(func, relax.Function):
                updated[gvar] = rewrite_call(activation_pattern(DUAL_ACTIVATIONS, pat.linear), rewriter, func)
        return updated
