"""The orchestrator: prepare once, then rounds of fresh worker processes, interleaving engines.

Every engine at every thread count runs in its own process, started with TVM_NUM_THREADS,
OMP_NUM_THREADS, MKL_NUM_THREADS and OPENBLAS_NUM_THREADS set, so that thread pools never share a
process and are sized before any library starts them. A round runs every job once (the bandwidth
measurements are jobs too); later rounds shuffle the order, so that drift on a shared machine
spreads over all engines instead of biasing one, and the report takes medians over rounds.

Besides, each round runs dense TVM and tvm-dual together in one process (PAIRS), their calls
alternating: the machine's speed drifts by tens of percent between processes here, and a ratio of
neighbouring calls is far steadier than a ratio of medians taken minutes apart.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from statistics import median
from typing import Any, Callable

from .bandwidth import COLD_READ
from .machine import git_revision, last_level_cache_bytes, load_average, machine_info, package_versions
from .settings import BenchSettings
from .worker import PREPARED, flush_bytes, paired_variant

RESULTS_FORMAT = "tvm-dual-bench/1"
# (level, baseline, contender) measured alternating in one process besides the isolated runs: both
# are TVM builds, so they share one thread pool without oversubscribing the cores
PAIRS = (
    ("whole call", "tvm-dense", "tvm-dual"),
    ("whole call", "tvm-ms", "tvm-dual"),
    ("kernels only", "tvm-dense-kernel", "tvm-dual-kernel"),
)
THREAD_VARIABLES = ("TVM_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


class BenchError(RuntimeError):
    """The benchmark could not run at all (as opposed to one engine failing, which is recorded)."""


def worker_environment(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    for variable in THREAD_VARIABLES:
        env[variable] = str(threads)
    # the workers import model factories given relative to where the benchmark was started
    env["PYTHONPATH"] = os.pathsep.join(p for p in (os.getcwd(), env.get("PYTHONPATH", "")) if p)
    env["TQDM_DISABLE"] = "1"
    return env


def _last_error_line(log: Path) -> str:
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    for line in reversed(lines):
        if line.startswith("error: "):
            return line[len("error: ") :]
    return lines[-1] if lines else "no output"


def run_worker(command: str, job: dict[str, Any], threads: int, log: Path, timeout: float) -> dict[str, Any] | str:
    """Run one worker process; its parsed output, or the reason it failed."""
    job_path = log.with_suffix(".job.json")
    job_path.write_text(json.dumps(job))
    with open(log, "w") as out:
        try:
            done = subprocess.run(
                [sys.executable, "-m", "tvm_dual.bench.worker", command, str(job_path)],
                env=worker_environment(threads), stdout=out, stderr=subprocess.STDOUT, timeout=timeout,
            )
        except subprocess.TimeoutExpired:
            return f"timed out after {timeout:.0f} s (log: {log})"
    if done.returncode != 0:
        return f"{_last_error_line(log)} (log: {log})"
    output = job.get("output")
    return json.loads(Path(output).read_text()) if output else {}


def bandwidth_sizes(settings: BenchSettings, footprint: int) -> list[tuple[str, int, bool]]:
    """(label, bytes, cold) buffers to stream: in cache, the workload's own footprint (its hot limit),
    DRAM, and the footprint read once per cache flush (the cold limit)."""
    llc = last_level_cache_bytes()
    if settings.smoke:
        working = max(footprint, 64 << 10)
        sizes = [("working set", working, False), ("DRAM", 16 << 20, False)]
    else:
        working = footprint
        sizes = [("L3", min(llc // 4, 8 << 20), False), ("working set", working, False), ("DRAM", max(8 * llc, 256 << 20), False)]
    if "cold" in settings.caches:
        sizes.append((COLD_READ, working, True))
    return sizes


def run_benchmark(
    settings: BenchSettings,
    out_dir: Path,
    keep_artifacts: bool = False,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the whole benchmark; returns the results (also written to out_dir/results.json)."""
    out_dir = Path(out_dir)
    logs = out_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    workdir = out_dir / "artifacts" if keep_artifacts else Path(tempfile.mkdtemp(prefix="tvm_dual_bench_"))
    workdir.mkdir(parents=True, exist_ok=True)
    started = datetime.now(timezone.utc)
    cpus = os.cpu_count() or 1
    base_job = {"settings": settings.to_dict(), "workdir": str(workdir)}
    try:
        log(f"preparing workload {settings.workload} and engine artifacts (log: {logs / 'prepare.log'}) ...")
        t0 = time.perf_counter()
        outcome = run_worker("prepare", base_job, cpus, logs / "prepare.log", settings.worker_timeout_s)
        if isinstance(outcome, str):
            raise BenchError(f"preparing the benchmark failed: {outcome}")
        prepared = json.loads((workdir / PREPARED).read_text())
        log(f"prepared in {time.perf_counter() - t0:.0f} s")
        for name, entry in prepared["engines"].items():
            if entry["status"] != "ok":
                log(f"  {name}: {entry['status']}: {entry['reason']}")
        engines = [name for name, entry in prepared["engines"].items() if entry["status"] == "ok"]
        sizes = bandwidth_sizes(settings, prepared["footprint_bytes"])
        jobs = [("bandwidth", None, t) for t in settings.threads] + [("measure", e, t) for e in engines for t in settings.threads]
        pairs = {
            f"{base}+{contender}": (level, base, contender)
            for level, base, contender in PAIRS
            if settings.paired_ratio is not None
            and paired_variant(prepared, base, None) and paired_variant(prepared, contender, settings.paired_ratio)
        }
        jobs += [("paired", name, t) for name in pairs for t in settings.threads]
        records: list[dict] = []
        checks: list[dict] = []
        bandwidth: list[dict] = []
        paired: list[dict] = []
        errors: list[dict] = []
        for round_index in range(settings.rounds):
            order = list(jobs)
            if round_index:
                random.Random(round_index).shuffle(order)
            for command, engine, threads in order:
                name = engine or "bandwidth"
                stem = f"r{round_index}_{name}_t{threads}"
                job = dict(base_job, engine=engine, threads=threads, round=round_index, output=str(logs / f"{stem}.out.json"))
                if command == "bandwidth":
                    job["sizes"] = sizes
                if command == "paired":
                    job["level"], *job["pair"] = pairs[engine]
                outcome = run_worker(command, job, threads, logs / f"{stem}.log", settings.worker_timeout_s)
                if isinstance(outcome, str):
                    errors.append({"engine": name, "threads": threads, "round": round_index, "error": outcome})
                    log(f"[round {round_index + 1}/{settings.rounds}] {name} t={threads}: FAILED: {outcome}")
                    continue
                records += outcome.get("records", [])
                checks += outcome.get("checks", [])
                bandwidth += outcome.get("bandwidth", [])
                paired += outcome.get("paired", [])
                log(f"[round {round_index + 1}/{settings.rounds}] {name} t={threads}: " + _progress(outcome))
    finally:
        if not keep_artifacts:
            shutil.rmtree(workdir, ignore_errors=True)
    finished = datetime.now(timezone.utc)
    results = {
        "format": RESULTS_FORMAT,
        "run": {
            "started": started.isoformat(timespec="seconds"),
            "finished": finished.isoformat(timespec="seconds"),
            "duration_s": round((finished - started).total_seconds(), 1),
            "command": settings.command,
            "settings": settings.to_dict(),
            "flush_bytes": flush_bytes(settings),
            "git": git_revision(),
            "load_average_end": load_average(),
        },
        "machine": machine_info(),
        "versions": package_versions(),
        "workload": dict(
            prepared["workload"], io=prepared["io"], param_bytes=prepared["param_bytes"],
            footprint_bytes=prepared["footprint_bytes"],
        ),
        "engines": prepared["engines"],
        "bandwidth": bandwidth,
        "records": records,
        "paired": paired,
        "checks": checks,
        "errors": errors,
    }
    return results


def _progress(outcome: dict[str, Any]) -> str:
    if "bandwidth" in outcome:
        return ", ".join(f"{r['label']} {r['gbps']:.1f} GB/s" for r in outcome["bandwidth"])
    parts = [
        f"{r['cache']} {r['contender']} {median(r['ratios']):.2f}x faster (median of {len(r['ratios'])} pairs)"
        for r in outcome.get("paired", [])
    ]
    for r in outcome.get("records", []):
        label = f"{r['variant']} " if r["variant"] else ""
        ratio = f" (ratio {r['observed_ratio']:.2f})" if "observed_ratio" in r else ""
        parts.append(f"{label}{r['cache']} {r['median_us']:.1f} us{ratio}")
    return ", ".join(parts)
