"""LegalizeNanPropagatingClamps: floating-point relu, clip, maximum and minimum that keep NaN, as PyTorch does.

TOPI computes relu(x) as max(x, 0) and clip as min(max(x, lo), hi), and LLVM lowers a float max or
min to compare-and-select, which returns the other operand when one is NaN: a NaN came out as 0 (or
as a clip bound), where PyTorch's relu, relu6, hardtanh, clamp, maximum and minimum give NaN. The
dual and GEMV kernels keep NaN already (kernels/activations.keep_nan); this pass covers what TVM
legalizes itself: a ReLU on a model input, after a convolution left dense, the min(., 6) of a ReLU6
(transform/clip_to_min_relu.py), a clamp anywhere.
"""

from __future__ import annotations

import tvm
from tvm import relax, te, topi

from ..kernels.activations import keep_nan


def _floating(expr: relax.Expr) -> bool:
    return isinstance(expr.ty, relax.TensorType) and str(expr.ty.dtype).startswith(("float", "bfloat"))


def _bound(value) -> float | None:
    # Relax 0.27 passes clip bounds as FloatImm/IntImm expressions
    if isinstance(value, (tvm.tirx.FloatImm, tvm.tirx.IntImm)):
        return float(value.value)
    return None


def _relu(bb: relax.BlockBuilder, call: relax.Call) -> relax.Expr:
    x = call.args[0]
    if not _floating(x):
        return call  # TVM's own legalization handles it later in the pipeline

    def compute(t):
        zero = tvm.tirx.const(0, t.dtype)
        return te.compute(t.shape, lambda *i: keep_nan(t(*i), tvm.tirx.max(t(*i), zero)), name="relu")

    return bb.call_te(compute, x, primfunc_name_hint="relu")


def _clip(bb: relax.BlockBuilder, call: relax.Call) -> relax.Expr:
    x, lo, hi = call.args[0], _bound(call.args[1]), _bound(call.args[2])
    if not _floating(x) or lo is None or hi is None:
        return call

    def compute(t):
        low, high = tvm.tirx.const(lo, t.dtype), tvm.tirx.const(hi, t.dtype)
        return te.compute(t.shape, lambda *i: keep_nan(t(*i), tvm.tirx.min(tvm.tirx.max(t(*i), low), high)), name="clip")

    return bb.call_te(compute, x, primfunc_name_hint="clip")


def _binary(name: str, op):
    def legalize(bb: relax.BlockBuilder, call: relax.Call) -> relax.Expr:
        a, b = call.args
        if not (_floating(a) and _floating(b)):
            return call

        def compute(x, y):  # either operand NaN -> NaN, broadcasting as the op does
            return topi.where(topi.isnan(x), x, topi.where(topi.isnan(y), y, op(x, y)))

        return bb.call_te(compute, a, b, primfunc_name_hint=name)

    return legalize


def nan_propagating_clamp_legalizers() -> dict:
    """LegalizeOps' custom map for this pass (see legalize_fast_activations.fast_activation_legalizers)."""
    return {
        "relax.nn.relu": _relu,
        "relax.clip": _clip,
        "relax.maximum": _binary("maximum", topi.maximum),
        "relax.minimum": _binary("minimum", topi.minimum),
    }


def LegalizeNanPropagatingClamps() -> tvm.transform.Pass:  # noqa: N802 (named like TVM's pass constructors)
    """Legalize floating-point relax.nn.relu, relax.clip, relax.maximum and relax.minimum to forms
    that keep NaN (and every other op as TVM does)."""
    return relax.transform.LegalizeOps(nan_propagating_clamp_legalizers())
