"""tvm-dual: dual-module inference (Liu et al., ICML 2020) compiled with Apache TVM for x86 CPUs."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._lazy import lazy_exports
from ._version import __version__

# Public names and the modules that define them. They are imported on first use, so that light
# entry points (the `tvm-dual` command's --help, benchmark workers for numpy or ONNX Runtime) do not
# pay for importing torch and tvm.
_EXPORTS = {
    "DualCompileWarning": ".compile_warning",
    "compile_dual": ".api",
    "plan_dual": ".api",
    "build_dual": ".api",
    "PlannedModel": ".api",
    "DualKernelConfig": ".kernels.dual_dense",
    "LittleConfig": ".little",
    "RecurrentConfig": ".recurrent",
    "DualModule": ".runtime",
    "DualStats": ".runtime",
    "LayerStats": ".runtime",
    "LibraryError": ".runtime",
    "ModelImportError": ".frontend",
    "QualityBudget": ".quality_budget",
    "load": ".runtime",
    "TargetError": ".target",
    "resolve_target": ".target",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from .api import PlannedModel, build_dual, compile_dual, plan_dual
    from .compile_warning import DualCompileWarning
    from .frontend import ModelImportError
    from .kernels.dual_dense import DualKernelConfig
    from .little import LittleConfig
    from .quality_budget import QualityBudget
    from .recurrent import RecurrentConfig
    from .runtime import DualModule, DualStats, LayerStats, LibraryError, load
    from .target import TargetError, resolve_target

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
