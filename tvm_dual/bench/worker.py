"""Worker processes of a benchmark run: `python -m tvm_dual.bench.worker prepare|measure|paired|bandwidth JOB.json`.

The orchestrator (runner.py) starts each one fresh, with the thread-count environment variables
already set, so that no engine's thread pool shares a process with another's. Heavy modules are
imported only by the engines that need them.
"""

from __future__ import annotations

import json
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np

from .machine import last_level_cache_bytes, load_average
from .settings import BenchSettings
from .timing import CacheFlusher, measure, measure_paired

TIMING_INPUTS = "timing_inputs.npz"
REFERENCE_OUTPUTS = "reference_outputs.npz"
PREPARED = "prepared.json"


def _save_tuples(path: Path, tuples: list[tuple[np.ndarray, ...]]) -> None:
    np.savez(path, **{f"t{i}_{j}": a for i, arrays in enumerate(tuples) for j, a in enumerate(arrays)})


def load_tuples(path: Path) -> list[tuple[np.ndarray, ...]]:
    with np.load(path) as data:
        keys = sorted(data.files, key=lambda k: tuple(int(p) for p in k[1:].split("_")))
        out: dict[int, list[np.ndarray]] = {}
        for key in keys:
            i = int(key[1:].split("_")[0])
            out.setdefault(i, []).append(np.ascontiguousarray(data[key]))
    return [tuple(out[i]) for i in sorted(out)]


def flush_bytes(settings: BenchSettings) -> int:
    return settings.flush_bytes or max(4 * last_level_cache_bytes(), 64 << 20)


# ---- prepare ---------------------------------------------------------------------------------


def prepare(job: dict[str, Any]) -> None:
    """Build the workload once: timing inputs, PyTorch reference outputs, and every engine's artifacts."""
    import torch

    from .engines import ENGINES, EngineSkipped, PrepareContext
    from .engines.base import to_numpy_leaves
    from .workloads import build_workload, model_fingerprint

    settings = BenchSettings.from_dict(job["settings"])
    workdir = Path(job["workdir"])
    torch.manual_seed(0)
    workload = build_workload(settings.workload, settings.workload_params)
    model = workload.model.eval()
    _save_tuples(workdir / TIMING_INPUTS, workload.timing_inputs)
    with torch.inference_mode():
        references = [to_numpy_leaves(model(*(torch.from_numpy(a) for a in x))) for x in workload.timing_inputs]
    _save_tuples(workdir / REFERENCE_OUTPUTS, references)

    param_bytes = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    io = {
        "inputs": [{"shape": list(a.shape), "dtype": str(a.dtype)} for a in workload.timing_inputs[0]],
        "outputs": [{"shape": list(a.shape), "dtype": str(a.dtype)} for a in references[0]],
    }
    io_bytes = sum(a.nbytes for a in workload.timing_inputs[0]) + sum(a.nbytes for a in references[0])
    prepared: dict[str, Any] = {
        "workload": {
            "name": workload.name,
            "params": workload.params,
            "description": workload.description,
            "fingerprint": model_fingerprint(model),
            "quality_name": workload.quality_name,
            "has_quality": workload.quality is not None,
            "quality_higher_is_better": workload.quality_higher_is_better,
            "notes": workload.notes,
            "timing_inputs": len(workload.timing_inputs),
        },
        "io": io,
        "param_bytes": int(param_bytes),
        "footprint_bytes": int(param_bytes + io_bytes),
        "engines": {},
    }
    context = PrepareContext(workload=workload, settings=settings, workdir=workdir)
    for name in settings.engines or list(ENGINES):
        engine = ENGINES[name]
        entry: dict[str, Any] = {"label": engine.label, "approximate": engine.approximate}
        reason = engine.unavailable()
        if reason:
            entry.update(status="skipped", reason=reason)
        else:
            try:
                variants = engine.prepare(context)
                entry.update(status="ok", variants=[v.to_dict() for v in variants])
                # an engine that found out while preparing that it runs below fp32 (OpenVINO's bf16)
                entry["approximate"] = engine.approximate or any(v.info.get("approximate") for v in variants)
            except EngineSkipped as skip:
                entry.update(status="skipped", reason=str(skip))
            except Exception as err:  # one engine failing must not take the run down
                traceback.print_exc()
                entry.update(status="failed", reason=f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}")
        print(f"prepared {name}: {entry.get('status')} {entry.get('reason', '')}", file=sys.stderr, flush=True)
        prepared["engines"][name] = entry
    (workdir / PREPARED).write_text(json.dumps(prepared, indent=1))


# ---- measure ---------------------------------------------------------------------------------


def _output_errors(runner, inputs, references) -> dict[str, float]:
    num = den = 0.0
    worst = 0.0
    for x, ref in zip(inputs, references):
        outs = runner.predict(*x)
        if len(outs) != len(ref):
            raise RuntimeError(f"engine returned {len(outs)} outputs, PyTorch {len(ref)}")
        for out, expected in zip(outs, ref):
            out = np.asarray(out, dtype=np.float64)
            if out.size != expected.size:
                raise RuntimeError(f"engine returned an output of shape {out.shape}, PyTorch {expected.shape}")
            out = out.reshape(expected.shape)
            diff = out - expected
            num += float((diff**2).sum())
            den += float((expected.astype(np.float64) ** 2).sum())
            worst = max(worst, float(np.abs(diff).max()) if diff.size else 0.0)
    return {"output_rel_error": (num / den) ** 0.5 if den > 0 else num**0.5, "output_max_abs_error": worst}


def _load_job(job: dict[str, Any]):
    """What a timing worker needs from its job: settings, the prepared run, a LoadContext, the inputs."""
    from .engines import LoadContext

    settings = BenchSettings.from_dict(job["settings"])
    workdir = Path(job["workdir"])
    prepared = json.loads((workdir / PREPARED).read_text())
    context = LoadContext(settings=settings, workdir=workdir, prepared=prepared)
    return settings, prepared, context, load_tuples(workdir / TIMING_INPUTS)


def run_measure(job: dict[str, Any]) -> None:
    from .engines import Variant, get_engine

    settings, prepared, context, inputs = _load_job(job)
    engine = get_engine(job["engine"])
    threads, round_index = int(job["threads"]), int(job["round"])
    flusher = CacheFlusher(flush_bytes(settings), threads) if "cold" in settings.caches else None
    records, checks = [], []
    try:
        for variant_dict in prepared["engines"][engine.name]["variants"]:
            variant = Variant(**variant_dict)
            runner = engine.load(context, variant, threads)
            native = [runner.native(x) for x in inputs]
            if round_index == 0:
                check = {"engine": engine.name, "variant": variant.name, "threads": threads}
                check.update(_output_errors(runner, inputs, load_tuples(context.workdir / REFERENCE_OUTPUTS)))
                workload_info = prepared["workload"]
                if workload_info["has_quality"] and (prepared["engines"][engine.name]["approximate"] or engine.name == "torch"):
                    start = time.perf_counter()
                    check["quality"] = float(context.workload().quality(runner.predict))
                    check["quality_s"] = round(time.perf_counter() - start, 2)
                checks.append(check)
            for cache in settings.caches:
                runner.reset()
                load_before = load_average()
                stats = measure(runner.call, native, settings.timing, flush=flusher if cache == "cold" else None)
                record = {
                    "engine": engine.name,
                    "variant": variant.name,
                    "threads": threads,
                    "cache": cache,
                    "round": round_index,
                    **stats.__dict__,
                    "bytes": float(prepared["footprint_bytes"]),
                    "load_before": load_before,
                    "load_after": load_average(),
                }
                if "insensitive_ratio" in variant.params:
                    record["target_ratio"] = variant.params["insensitive_ratio"]
                record.update(runner.report())
                records.append(record)
    finally:
        if flusher is not None:
            flusher.close()
    Path(job["output"]).write_text(json.dumps({"records": records, "checks": checks}))


def paired_variant(prepared: dict[str, Any], engine: str, ratio: float | None) -> dict[str, Any] | None:
    """The engine's variant at insensitive ratio `ratio`, or its only variant when `ratio` is None."""
    entry = prepared["engines"].get(engine, {})
    variants = entry.get("variants", []) if entry.get("status") == "ok" else []
    if ratio is None:
        return variants[0] if len(variants) == 1 else None
    return next((v for v in variants if abs(v["params"].get("insensitive_ratio", -1.0) - ratio) < 1e-9), None)


def run_paired(job: dict[str, Any]) -> None:
    """A baseline and a contender loaded in one process, their calls alternating (timing.measure_paired)."""
    from .engines import Variant, get_engine

    settings, prepared, context, inputs = _load_job(job)
    threads, round_index = int(job["threads"]), int(job["round"])
    baseline_name, contender_name = job["pair"]
    runners = []
    for name, ratio in ((baseline_name, None), (contender_name, settings.paired_ratio)):
        variant = paired_variant(prepared, name, ratio)
        if variant is None:
            raise RuntimeError(f"engine {name!r} has no prepared variant at ratio {ratio}")
        runners.append(get_engine(name).load(context, Variant(**variant), threads))
    contender = runners[1]
    timed = [(runner.call, [runner.native(x) for x in inputs]) for runner in runners]
    flusher = CacheFlusher(flush_bytes(settings), threads) if "cold" in settings.caches else None
    records = []
    try:
        for cache in settings.caches:
            for runner in runners:
                runner.reset()
            stats = measure_paired(*timed, settings.timing, flush=flusher if cache == "cold" else None)
            records.append(
                {
                    "level": job["level"], "baseline": baseline_name, "contender": contender_name,
                    "target_ratio": settings.paired_ratio, "threads": threads, "cache": cache, "round": round_index,
                    **stats.__dict__, **{k: v for k, v in contender.report().items() if k == "observed_ratio"},
                }
            )
    finally:
        if flusher is not None:
            flusher.close()
    Path(job["output"]).write_text(json.dumps({"paired": records}))


def run_bandwidth(job: dict[str, Any]) -> None:
    from .bandwidth import read_bandwidth

    settings = BenchSettings.from_dict(job["settings"])
    threads = int(job["threads"])
    flusher = CacheFlusher(flush_bytes(settings), threads) if any(cold for _, _, cold in job["sizes"]) else None
    records = []
    try:
        for label, nbytes, cold in job["sizes"]:
            result = read_bandwidth(
                int(nbytes), threads, seconds=settings.bandwidth_seconds, min_passes=20 if cold else 5,
                flush=flusher if cold else None,
            )
            records.append({"label": label, "round": int(job["round"]), "cold": bool(cold), **result})
    finally:
        if flusher is not None:
            flusher.close()
    Path(job["output"]).write_text(json.dumps({"bandwidth": records}))


COMMANDS = {"prepare": prepare, "measure": run_measure, "paired": run_paired, "bandwidth": run_bandwidth}


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in COMMANDS:
        print(f"usage: python -m tvm_dual.bench.worker {{{'|'.join(COMMANDS)}}} JOB.json", file=sys.stderr)
        return 2
    start = time.perf_counter()
    try:
        COMMANDS[argv[0]](json.loads(Path(argv[1]).read_text()))
    except Exception as err:
        traceback.print_exc()
        print(f"error: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    print(f"{argv[0]} done in {time.perf_counter() - start:.1f} s; modules loaded: "
          f"{', '.join(m for m in ('torch', 'tvm', 'onnxruntime', 'openvino') if m in sys.modules) or 'none heavy'}",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
