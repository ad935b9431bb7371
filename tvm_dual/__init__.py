"""tvm-dual: dual-module inference (Liu et al., ICML 2020) compiled with Apache TVM for x86 CPUs."""

from .api import DualCompileWarning, compile_dual
from .kernels.dual_dense import DualKernelConfig
from .little import LittleConfig
from .recurrent import RecurrentConfig
from .runtime import DualModule, DualStats, LayerStats, LibraryError, load
from .target import TargetError, resolve_target

__version__ = "0.1.0"

__all__ = [
    "DualCompileWarning",
    "DualKernelConfig",
    "DualModule",
    "DualStats",
    "LayerStats",
    "LibraryError",
    "LittleConfig",
    "RecurrentConfig",
    "TargetError",
    "compile_dual",
    "load",
    "resolve_target",
]
