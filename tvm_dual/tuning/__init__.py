"""Autotuning: a knob tuner with an XGBoost cost model for the dual kernel, records, distilled
schedules, and MetaSchedule for the dense parts."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

# Public names and the modules that define them, imported on first use (as in tvm_dual/__init__):
# the benchmark report reads tuning/search_report.py, and every benchmark worker, numpy's and
# ONNX Runtime's included, imports the report; importing measure.py here made each of them import
# TVM (5.5 s on a Zen 3 VM).
_EXPORTS = {
    "LocalMeasurer": ".measure",
    "MeasureOptions": ".measure",
    "RPCMeasurer": ".measure",
    "Record": ".records",
    "TuningLogError": ".records",
    "TuningLogWarning": ".records",
    "read_records": ".records",
    "ScheduleError": ".schedules",
    "lookup": ".schedules",
    "TuningResult": ".tuner",
    "tune_dual_kernel": ".tuner",
    "DualWorkload": ".workload",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from .measure import LocalMeasurer, MeasureOptions, RPCMeasurer
    from .records import Record, TuningLogError, TuningLogWarning, read_records
    from .schedules import ScheduleError, lookup
    from .tuner import TuningResult, tune_dual_kernel
    from .workload import DualWorkload

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
