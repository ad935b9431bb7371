"""Schedule rules for TVM's dlight framework (`dlight.ApplyDefaultSchedule`), for the PrimFuncs that
TVM 0.27's own CPU rules (GEMV, Reduction) leave unscheduled."""

from .elementwise import Elementwise

__all__ = ["Elementwise"]
