"""Autotuning: a knob tuner with an XGBoost cost model for the dual kernel, records, distilled
schedules, and MetaSchedule for the dense parts."""

from .measure import LocalMeasurer, MeasureOptions, RPCMeasurer
from .records import Record, TuningLogError, TuningLogWarning, read_records
from .schedules import ScheduleError, lookup
from .tuner import TuningResult, tune_dual_kernel
from .workload import DualWorkload

__all__ = [
    "DualWorkload",
    "LocalMeasurer",
    "MeasureOptions",
    "RPCMeasurer",
    "Record",
    "ScheduleError",
    "TuningLogError",
    "TuningLogWarning",
    "TuningResult",
    "lookup",
    "read_records",
    "tune_dual_kernel",
]
