"""ClipToMinRelu: clip(x, 0, m) -> minimum(relu(x), m) for m > 0 (ReLU6 is m = 6).

Relax's ConvertLayout has no layout rule for clip, so a ReLU6 between NHWC convolutions would be
wrapped in transposes back to NCHW; relu and minimum are layout-agnostic. It also exposes the ReLU
to the dual-convolution rewrite: a ReLU6 layer is a dual ReLU layer followed by min(., 6), which is
exact (the minimum applies to exact values and to the zeros of insensitive outputs alike).
"""

from __future__ import annotations

import tvm
from tvm import relax
from tvm.relax.dpl import is_op, rewrite_call, wildcard


def _bound(value) -> float | None:
    # Relax 0.27 passes clip bounds as FloatImm/IntImm expressions
    if isinstance(value, (tvm.tirx.FloatImm, tvm.tirx.IntImm)):
        return float(value.value)
    return None


@tvm.transform.module_pass(opt_level=0, name="ClipToMinRelu")
class ClipToMinRelu:
    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        x = wildcard()
        pattern = is_op("relax.clip")(x, wildcard(), wildcard())

        def rewriter(expr, matches):
            lo, hi = _bound(expr.args[1]), _bound(expr.args[2])
            dtype = str(expr.args[0].ty.dtype)
            if lo != 0.0 or hi is None or hi <= 0 or not dtype.startswith("float"):
                return expr
            return relax.op.minimum(relax.op.nn.relu(matches[x]), relax.const(hi, dtype))

        updated = tvm.IRModule(dict(mod.functions_items()), attrs=mod.attrs)
        for gvar, func in mod.functions_items():
            if isinstance(func, relax.Function):
                updated[gvar] = rewrite_call(pattern, rewriter, func)
        return updated
