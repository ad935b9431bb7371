"""tvm_dual's Relax passes, one per module, for use in any Relax pipeline (imported on first use).

    planned = tvm_dual.plan_dual(model, example_inputs, calibration=batches, insensitive_ratio=0.5)
    mod = tvm.transform.Sequential([tvm_dual.transform.DualModuleRewrite(planned.plan), ...])(mod)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

_EXPORTS = {
    "DualModuleRewrite": ".dual_module_rewrite",
    "RecurrentGateRewrite": ".recurrent_gate_rewrite",
    "DualConvRewrite": ".dual_conv_rewrite",
    "DenseGemvRewrite": ".dense_gemv_rewrite",
    "DenseConvRewrite": ".dense_conv_rewrite",
    "ExposeDualCounters": ".expose_dual_counters",
    "LegalizeFastActivations": ".legalize_fast_activations",
    "rewrite_passes": ".pipeline",
    "lowering_pipeline": ".pipeline",
    "compile_module": ".pipeline",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from .dense_conv_rewrite import DenseConvRewrite
    from .dense_gemv_rewrite import DenseGemvRewrite
    from .dual_conv_rewrite import DualConvRewrite
    from .dual_module_rewrite import DualModuleRewrite
    from .expose_dual_counters import ExposeDualCounters
    from .legalize_fast_activations import LegalizeFastActivations
    from .pipeline import compile_module, lowering_pipeline, rewrite_passes
    from .recurrent_gate_rewrite import RecurrentGateRewrite

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
