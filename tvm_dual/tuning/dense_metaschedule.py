"""MetaSchedule (XGBoost cost model) for the dense parts: the PrimFuncs our templates do not cover.

MetaSchedule cannot tune the data-dependent dual kernel (docs/TVM027.md), so it tunes what LegalizeOps
produces for everything else: elementwise and reduction ops, convolutions, and, when a module is
built without our GEMV template (`gemv_template=False`), the dense matmuls themselves, which is
how `tvm-dual tune --dense` produces the "MetaSchedule-tuned dense" baseline.

The database is MetaSchedule's JSON database (database_workload.json, database_tuning_record.json)
in tuning_logs/metaschedule/<cpu>/; compile_dual applies it after legalization and before the
dlight fallback rules, in the order TVM's own compile_relax uses.
"""

from __future__ import annotations

import os
from pathlib import Path

import tvm
import tvm.s_tir.meta_schedule as ms

from ..plan import DualPlan
from ..transform.pipeline import legalization_passes, rewrite_passes
from .schedules import target_key

DEFAULT_ROOT = Path(__file__).resolve().parents[2] / "tuning_logs" / "metaschedule"


def database_dir(target: tvm.target.Target, root: str | os.PathLike | None = None) -> Path:
    return Path(root or DEFAULT_ROOT) / target_key(target)


def has_database(directory: str | os.PathLike) -> bool:
    d = Path(directory)
    return (d / "database_workload.json").exists() and (d / "database_tuning_record.json").exists()


def ms_tuning_module(mod: tvm.IRModule, target: tvm.target.Target) -> tvm.IRModule:
    """A module as MetaSchedule sees it when tvm_dual's lowering pipeline applies a database (the same
    legalization passes, transform.pipeline.legalization_passes). Its tasks (extract_tasks) are what a
    database must hold records for; tune_relax needs this legalized form too (on an imported module
    it finds no tasks). Until 2026-12-02 this list lacked LegalizeFastActivations, so the tuned
    PrimFunc (with TVM's tanh) never matched the one compiled (with the rational tanh)."""
    with target:
        return tvm.transform.Sequential(legalization_passes(target))(mod)


def dense_tuning_module(
    mod: tvm.IRModule, target: tvm.target.Target, plan: DualPlan | None = None, gemv_template: bool = True
) -> tvm.IRModule:
    """What tune_dense_parts hands to MetaSchedule: the imported module after our rewrites, legalized."""
    passes = rewrite_passes(plan, report_counters=False, gemv_template=gemv_template)
    return ms_tuning_module(tvm.transform.Sequential(passes)(mod), target)


def tune_dense_parts(
    mod: tvm.IRModule,
    target: tvm.target.Target,
    work_dir: str | os.PathLike,
    trials: int,
    plan: DualPlan | None = None,
    gemv_template: bool = True,
    number: int = 20,
    repeat: int = 3,
    min_repeat_ms: int = 50,
) -> int:
    """Tune the dense PrimFuncs of an imported model (after our rewrites) with MetaSchedule.

    Returns the number of tuning records in the database afterwards. Measurement runs in
    MetaSchedule's LocalRunner (separate processes), with repeats and a minimum repeat time.
    Builds get 120 s instead of MetaSchedule's 30: on a busy 2-core machine a build worker took
    longer than 30 s to start and compile (both trials of a 2-trial run lost that way).
    """
    rewritten = dense_tuning_module(mod, target, plan, gemv_template)
    os.makedirs(work_dir, exist_ok=True)
    runner = ms.runner.LocalRunner(
        evaluator_config=ms.runner.EvaluatorConfig(number=number, repeat=repeat, min_repeat_ms=min_repeat_ms)
    )
    with target:
        database = ms.relax_integration.tune_relax(
            rewritten, params={}, target=target, work_dir=str(work_dir), max_trials_global=trials,
            num_trials_per_iter=min(32, trials), builder=ms.builder.LocalBuilder(timeout_sec=120), runner=runner,
            cost_model="xgb",
        )
    return len(database.get_all_tuning_records())
