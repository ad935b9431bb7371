"""LegalizeFastActivations: float32 tanh and sigmoid outside the dual kernels as vectorizable TIR.

TVM legalizes R.tanh / R.sigmoid to `T.tanh` / `T.sigmoid`, which the llvm target lowers to one
scalar libm call per element (about 8 ns here): the LSTM cell update after the gate kernel (three
sigmoids and two tanh over the hidden units) cost 40 us per step at hidden 750, more than the
little module. This pass legalizes them first, with the rational approximation the dual kernels
use (kernels/activations.py: error below 3e-7 against float64, NaN propagated), which LLVM
vectorizes inside the fused elementwise functions. Other dtypes are left to TVM's legalization.
"""

from __future__ import annotations

import tvm
from tvm import relax, te

from ..kernels.activations import fast_sigmoid, fast_tanh

_FAST = {"relax.tanh": ("fast_tanh", fast_tanh), "relax.sigmoid": ("fast_sigmoid", fast_sigmoid)}


def _legalize(name: str, fn):
    def legalize(bb: relax.BlockBuilder, call: relax.Call) -> relax.Expr:
        arg = call.args[0]
        if not isinstance(arg.ty, relax.TensorType) or arg.ty.dtype != "float32":
            return call  # TVM's own legalization handles it later in the pipeline
        return bb.call_te(lambda x: te.compute(x.shape, lambda *i: fn(x(*i)), name=name), arg, primfunc_name_hint=name)

    return legalize


def fast_activation_legalizers() -> dict:
    """LegalizeOps' custom map for this pass (LegalizeOps legalizes every op, so passes that each
    override some ops are combined into one map: transform/pipeline.py)."""
    return {op: _legalize(name, fn) for op, (name, fn) in _FAST.items()}


def LegalizeFastActivations() -> tvm.transform.Pass:  # noqa: N802 (named like TVM's pass constructors)
    """Legalize float32 relax.tanh and relax.sigmoid to the vectorizable rational forms (and every
    other op as TVM does)."""
    return relax.transform.LegalizeOps(fast_activation_legalizers())
