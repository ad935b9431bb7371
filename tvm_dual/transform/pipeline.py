"""The pass pipelines: graph-level rewrites, then lowering with schedules for everything left."""

from __future__ import annotations

import contextlib
import os
from typing import TYPE_CHECKING

import tvm
from tvm import relax
from tvm.relax.backend.cpu_generic import pipeline as cpu_pipeline
from tvm.s_tir import dlight

from ..plan import DualPlan
from ..schedule_rules import Elementwise
from .dense_conv_rewrite import DenseConvRewrite
from .dense_gemv_rewrite import DenseGemvRewrite
from .dual_conv_rewrite import DualConvRewrite
from .dual_module_rewrite import DualModuleRewrite
from .expose_dual_counters import ExposeDualCounters
from .legalize_fast_activations import fast_activation_legalizers
from .legalize_nan_propagating_clamps import nan_propagating_clamp_legalizers
from .split_to_strided_slice import SplitToStridedSlice

if TYPE_CHECKING:
    from ..conv_plan import ConvPlan


def rewrite_passes(
    plan: DualPlan | None, report_counters: bool, gemv_template: bool = True, conv_plan: ConvPlan | None = None
) -> list[tvm.transform.Pass]:
    """Graph rewrites that must run before LegalizeOps/FoldConstant (they match permute_dims(W)).
    gemv_template=False leaves dense linear layers to legalization (and MetaSchedule or dlight);
    conv_plan holds the dual convolution layers (the other convolutions get the dense conv kernel)."""
    passes: list[tvm.transform.Pass] = []
    if plan is not None and len(plan):
        passes.append(DualModuleRewrite(plan))
    if conv_plan is not None and len(conv_plan):
        passes.append(DualConvRewrite(conv_plan))
    if gemv_template:
        passes.append(DenseGemvRewrite(plan.vector_bits if plan is not None else 256))
    passes.append(DenseConvRewrite())
    if report_counters:
        passes.append(ExposeDualCounters())
    return passes


def legalization_passes(target: tvm.target.Target) -> list[tvm.transform.Pass]:
    """Splits to slices (so that they fuse with the ops after them), library dispatch and
    legalization (float32 tanh and sigmoid to vectorizable forms, and relu, clip, maximum and
    minimum to forms that keep NaN, first), then fusion: the PrimFuncs
    these produce are the MetaSchedule tasks a database must match, so tuning
    (tuning/dense_metaschedule.py) and lowering both use this list."""
    return (
        [SplitToStridedSlice()]
        + cpu_pipeline.library_dispatch_passes(target)
        # one LegalizeOps with both passes' maps: LegalizeOps legalizes every op, so a second would find none left
        + [relax.transform.LegalizeOps({**fast_activation_legalizers(), **nan_propagating_clamp_legalizers()})]
        + cpu_pipeline.legalize_passes(target)
    )


def lowering_pipeline(target: tvm.target.Target, database: str | os.PathLike | None = None) -> tvm.transform.Pass:
    """TVM's CPU pipeline: legalize (float32 tanh and sigmoid to vectorizable forms first) and fuse,
    apply a MetaSchedule database if given, then dlight CPU rules for whatever is still unscheduled
    (the order of TVM's meta_schedule compile_relax)."""

    @tvm.transform.module_pass(opt_level=0, name="TvmDualLowering")
    def _lower(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        # the pass reads the database in scope; given only a folder it opens one itself and logs a
        # C++ warning ("Creating JSONDatabase") on every compile of a host that has a database
        with target, (open_database(database) if database else contextlib.nullcontext()):
            tuned = [relax.transform.MetaScheduleApplyDatabase()] if database else []
            seq = tvm.transform.Sequential(
                legalization_passes(target)
                + tuned
                + [dlight.ApplyDefaultSchedule(dlight.cpu.GEMV(), dlight.cpu.Reduction(), Elementwise())]
                + cpu_pipeline.dataflow_lower_passes(target)
                + cpu_pipeline.finalize_passes(target)
            )
            return seq(mod)

    return _lower


def open_database(folder: str | os.PathLike):
    """The MetaSchedule JSON database in `folder` (tvm-dual tune --dense writes it there)."""
    from tvm.s_tir import meta_schedule as ms

    return ms.database.JSONDatabase(work_dir=str(folder), allow_missing=False)


def compile_module(
    mod: tvm.IRModule, target: tvm.target.Target, database: str | os.PathLike | None = None
) -> relax.VMExecutable:
    return tvm.compile(mod, target=target, relax_pipeline=lowering_pipeline(target, database))
