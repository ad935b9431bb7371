"""TVM engines: the default Relax pipeline (untuned), tvm_dual's dense GEMV, a MetaSchedule-tuned build
from a tuning database, and tvm-dual at several insensitive ratios; the GEMV and tvm-dual builds also
with their kernels called directly (kernel_replay.py). All compile for this host."""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from .base import Engine, EngineSkipped, LoadContext, PrepareContext, Runner, Variant, to_numpy_leaves
from .kernel_replay import KernelReplay, NotReplayable


def aligned_copy(array: np.ndarray, alignment: int = 64) -> np.ndarray:
    """A C-contiguous copy at an aligned address, so DualModule takes it without a staging copy."""
    raw = np.empty(array.nbytes + alignment, dtype=np.uint8)
    offset = (-raw.ctypes.data) % alignment
    out = raw[offset : offset + array.nbytes].view(array.dtype).reshape(array.shape)
    out[...] = array
    return out


def _vm_outputs(result: Any) -> list[np.ndarray]:
    import tvm

    if isinstance(result, tvm.runtime.Tensor):
        return [result.numpy()]
    return [leaf for item in result for leaf in _vm_outputs(item)]


def _vm_runner(path: Path) -> Runner:
    """A Relax VM executable exported as a shared library, called with TVM tensors. Its large
    constants go on 2 MiB pages before the first call, as DualModule puts those of the GEMV and
    tvm-dual builds, so that the TVM builds are timed on the same pages (the MetaSchedule-tuned
    Linear 1024->4096, cold, one thread: 687 us on 4 KiB pages, 437 us on 2 MiB pages; scratch
    script, Zen 5, 2026-12-03)."""
    import tvm
    from tvm import relax

    from ...huge_pages import constants_on_huge_pages

    executable = tvm.runtime.load_module(str(path))
    main = relax.VirtualMachine(executable, tvm.cpu())["main"]
    huge: dict[str, int] = {}

    def native(inputs: tuple[np.ndarray, ...]) -> tuple:
        if not huge:
            huge["bytes"] = constants_on_huge_pages(executable, list(inputs))
        return tuple(tvm.runtime.tensor(a) for a in inputs)

    return Runner(
        call=lambda inputs: main(*inputs),
        native=native,
        outputs=_vm_outputs,
        report=lambda: {"huge_page_bytes": huge.get("bytes", 0)},
    )


def _dual_runner(path: Path, prepared: dict[str, Any]) -> Runner:
    """A tvm_dual library, called as users call it (numpy in, numpy out), with its row counters."""
    import tvm_dual

    module = tvm_dual.load(path)
    return Runner(
        call=lambda inputs: module(*inputs),
        native=lambda inputs: tuple(aligned_copy(a) for a in inputs),
        outputs=to_numpy_leaves,
        reset=module.reset_stats,
        report=lambda: {**dual_report(module, prepared["footprint_bytes"]), "huge_page_bytes": module.huge_page_bytes},
    )


def _replay_runner(context: LoadContext, path: Path) -> Runner:
    """The library's kernels without the VM and DualModule; bytes and observed ratio come from
    DualModule's counters on the timing inputs, run untimed after each timed series."""
    import tvm_dual

    from ..worker import TIMING_INPUTS, load_tuples

    inputs = load_tuples(context.workdir / TIMING_INPUTS)
    module = tvm_dual.load(path)
    replay = KernelReplay(path, inputs[0], _outputs_index(module))

    def report() -> dict[str, Any]:
        module.reset_stats()
        for x in inputs:
            module(*(aligned_copy(a) for a in x))
        return {**dual_report(module, context.prepared["footprint_bytes"]), "huge_page_bytes": replay.huge_page_bytes}

    return Runner(
        call=replay.run,
        native=replay.bind,
        outputs=lambda result: [t.numpy() for t in result],
        report=report,
    )


def _outputs_index(module) -> int | None:
    return 0 if module.metadata.get("counter_layers") else None  # main returns (outputs, counters)


def _check_replayable(path: Path, context: PrepareContext) -> None:
    """EngineSkipped unless the library's kernels can be replayed (kernel_replay.py)."""
    import tvm_dual

    try:
        KernelReplay(path, context.workload.timing_inputs[0], _outputs_index(tvm_dual.load(path)))
    except NotReplayable as err:
        raise EngineSkipped(f"kernels cannot be called without the VM: {err}") from None


def dual_report(module, footprint_bytes: int) -> dict[str, Any]:
    """Observed insensitive ratio and bytes per call, from the kernels' own row counters.

    Bytes per call: the model's footprint (parameters once, inputs, outputs) with each dual linear or
    recurrent layer's weight replaced by what its kernel read: the rows it computed times K x 4 plus
    the little module. A convolution reads its whole (small) weight either way, so it keeps its
    footprint; its skipped work shows in the observed ratio, not in bytes.
    """
    layers = module.stats()
    if not layers or layers[0].calls == 0:
        return {}
    convolutions = {layer["name"] for layer in module.metadata["layers"] if layer.get("kind") == "conv2d"}
    sites = {name: module.metadata["counter_layers"].count(name) for name in (s.name for s in layers)}
    rows_read = sum(s.rows_read for s in layers)
    rows_total = sum(s.calls * s.shape[0] for s in layers)
    nbytes = footprint_bytes + sum(
        sites[s.name] * s.dual_bytes - s.dense_bytes for s in layers if s.name not in convolutions
    )
    return {
        "observed_ratio": 1.0 - rows_read / rows_total,
        "bytes": float(nbytes),
        "layers": [
            {k: d[k] for k in ("name", "target_ratio", "calibration_ratio", "observed_ratio", "bytes_fraction")}
            for d in layers.to_dicts()
        ],
    }


def _compile_seconds(start: float) -> float:
    return round(time.perf_counter() - start, 2)


class TvmUntunedEngine(Engine):
    """TVM's default Relax pipeline, no schedules: what a user gets from tvm.compile out of the box."""

    name = "tvm-untuned"
    label = "TVM dense, default pipeline (untuned)"
    modules = ("tvm",)

    def prepare(self, context: PrepareContext) -> list[Variant]:
        import tvm

        from ...frontend import import_model
        from ...target import host_target

        start = time.perf_counter()
        imported = import_model(context.workload.model, context.workload.example_inputs)
        executable = tvm.compile(imported.mod, target=host_target())
        executable.export_library(str(context.artifact(self.name, "model.so")))
        return [Variant(artifact="model.so", info={"compile_s": _compile_seconds(start)})]

    def load(self, context: LoadContext, variant: Variant, threads: int) -> Runner:
        return _vm_runner(context.artifact(self.name, variant.artifact))


class TvmDenseEngine(Engine):
    """tvm_dual.compile_dual at insensitive ratio 0: every layer exact, through our GEMV kernel."""

    name = "tvm-dense"
    label = "TVM dense, tvm_dual GEMV (ratio 0)"
    modules = ("tvm",)

    def prepare(self, context: PrepareContext) -> list[Variant]:
        import tvm_dual

        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", tvm_dual.DualCompileWarning)
            module = tvm_dual.compile_dual(context.workload.model, context.workload.example_inputs, insensitive_ratio=0.0)
        module.export_library(context.artifact(self.name, "model.so"))
        self.check_library(context.artifact(self.name, "model.so"), context)
        return [Variant(artifact="model.so", info={"compile_s": _compile_seconds(start)})]

    def check_library(self, path: Path, context: PrepareContext) -> None:
        """Raise EngineSkipped if this engine cannot run the library just built."""

    def load(self, context: LoadContext, variant: Variant, threads: int) -> Runner:
        return _dual_runner(context.artifact(self.name, variant.artifact), context.prepared)


class TvmMetaScheduleEngine(Engine):
    """TVM's CPU pipeline without our GEMV template, with the schedules of a MetaSchedule database
    (tvm_dual.transform.pipeline.compile_module: legalize, apply the database, dlight for the rest).

    The database is --ms-database or tuning_logs/metaschedule/<cpu>/, where `tvm-dual tune --dense`
    writes. The engine runs if it holds a record for at least one of the model's tasks (tuned and
    total counts are reported) and is skipped with a note otherwise.
    """

    name = "tvm-ms"
    label = "TVM dense, MetaSchedule-tuned"
    modules = ("tvm",)

    def prepare(self, context: PrepareContext) -> list[Variant]:
        from tvm.s_tir import meta_schedule as ms

        from ...frontend import import_model
        from ...target import host_target
        from ...transform.pipeline import compile_module, open_database
        from ...tuning.dense_metaschedule import database_dir, has_database, ms_tuning_module

        target = host_target()
        folder = Path(context.settings.ms_database) if context.settings.ms_database else database_dir(target)
        if not has_database(folder):
            raise EngineSkipped(f"no MetaSchedule tuning database at {folder} (tvm-dual tune --dense, or --ms-database)")
        start = time.perf_counter()
        database = open_database(folder)
        imported = import_model(context.workload.model, context.workload.example_inputs)
        tasks = ms.relax_integration.extract_tasks(ms_tuning_module(imported.mod, target), target)
        tuned = [t.task_name for t in tasks if database.query_tuning_record(t.dispatched[0], target, t.task_name) is not None]
        if not tuned:
            raise EngineSkipped(
                f"the database at {folder} has no successful tuning record for any of this workload's {len(tasks)} task(s)"
            )
        executable = compile_module(imported.mod, target, str(folder))
        executable.export_library(str(context.artifact(self.name, "model.so")))
        info = {"database": str(folder), "tuned_tasks": tuned, "tasks": len(tasks), "compile_s": _compile_seconds(start)}
        return [Variant(artifact="model.so", info=info)]

    def load(self, context: LoadContext, variant: Variant, threads: int) -> Runner:
        return _vm_runner(context.artifact(self.name, variant.artifact))


class TvmDualEngine(Engine):
    """tvm_dual.compile_dual at each insensitive ratio of the run, calibrated on the workload's data."""

    name = "tvm-dual"
    label = "tvm-dual"
    modules = ("tvm",)
    approximate = True
    schedules: str | None = "default"  # compile_dual's schedules: the shipped tuned knobs where tuned

    def prepare(self, context: PrepareContext) -> list[Variant]:
        import tvm_dual

        workload = context.workload
        variants = []
        for ratio in context.settings.ratios:
            start = time.perf_counter()
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", tvm_dual.DualCompileWarning)
                module = tvm_dual.compile_dual(
                    workload.model, workload.example_inputs, calibration=workload.calibration,
                    validation=workload.validation, insensitive_ratio=ratio, schedules=self.schedules,
                )
            layers = module.metadata["layers"]
            if not layers:
                reasons = "; ".join(f"{d['name']}: {d['reason']}" for d in module.metadata["dense_layers"])
                raise EngineSkipped(f"no layer of this model can be compiled as a dual module ({reasons})")
            name = f"r{ratio:.2f}"
            module.export_library(context.artifact(self.name, f"{name}.so"))
            self.check_library(context.artifact(self.name, f"{name}.so"), context)  # before compiling more ratios
            info = {
                "compile_s": _compile_seconds(start),
                "layers": [
                    {k: layer.get(k) for k in ("name", "n", "k", "rank", "bits", "projection", "fit_r2", "calibration_ratio",
                                               "little_bytes", "kernel", "schedule_source")}
                    for layer in layers
                ],
                "warnings": sorted({str(w.message) for w in caught if issubclass(w.category, tvm_dual.DualCompileWarning)}),
            }
            variants.append(Variant(name=name, params={"insensitive_ratio": ratio}, artifact=f"{name}.so", info=info))
        return variants

    def check_library(self, path: Path, context: PrepareContext) -> None:
        """Raise EngineSkipped if this engine cannot run the library just built."""

    def load(self, context: LoadContext, variant: Variant, threads: int) -> Runner:
        return _dual_runner(context.artifact(self.name, variant.artifact), context.prepared)


class TvmDualDefaultKnobsEngine(TvmDualEngine):
    """tvm-dual with the untuned default kernel knobs: next to tvm-dual, what tuning bought."""

    name = "tvm-dual-default"
    label = "tvm-dual, default knobs"
    schedules = None


class _KernelsOnly:
    """Mixin: the engine's libraries timed with their kernels called directly (kernel_replay.py)."""

    def check_library(self, path: Path, context: PrepareContext) -> None:
        _check_replayable(path, context)

    def load(self, context: LoadContext, variant: Variant, threads: int) -> Runner:
        return _replay_runner(context, context.artifact(self.name, variant.artifact))


class TvmDenseKernelEngine(_KernelsOnly, TvmDenseEngine):
    """tvm-dense's GEMV kernels called directly: what the kernels cost without the VM and DualModule."""

    name = "tvm-dense-kernel"
    label = "TVM dense, tvm_dual GEMV, kernels only"


class TvmDualKernelEngine(_KernelsOnly, TvmDualEngine):
    """tvm-dual's kernels called directly, as the prototype timed its dual kernel."""

    name = "tvm-dual-kernel"
    label = "tvm-dual, kernels only"
