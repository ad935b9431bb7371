"""`tvm-dual tune` / scripts/autotune.py: tune dual kernels for a model or for named shapes.

Examples:
    tvm-dual tune --shapes mlp --trials 64                      # the demo MLP's layers, this host
    tvm-dual tune --shapes ptb750 --trials 48                   # the PTB LSTM-750 / GRU-750 gate kernels
    tvm-dual tune --target "llvm -mcpu=skylake-avx512" --shapes ptb750 --minutes 20 \\
        --rpc-tracker 10.0.0.2:9190 --rpc-key skx --parallel 4  # measured on a fleet
    tvm-dual tune --model mypkg.models:make --ratio 0.5         # factory -> (model, inputs[, calibration])
    tvm-dual tune --workload 1,4096,1024,81 --strategy both     # XGBoost vs random search, same run
    tvm-dual tune --gate-workload lstm,750,750,100              # one gate kernel: CELL,H,I,R[,hoisted]
    tvm-dual tune --dense --shapes ptb750 --trials 64           # MetaSchedule: the dense PTB layer steps
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shlex
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from ..kernels.dual_gates import little_groups
from ..little import LittleConfig, choose_rank
from ..target import resolve_target, target_to_string
from .measure import LocalMeasurer, MeasureOptions, RPCMeasurer
from .records import read_records
from .schedules import distill, schedule_path, write_schedule_file
from .search_report import trials_to_reach
from .tuner import tune_dual_kernel
from .gate_workload import GateWorkload
from .workload import DualWorkload

REPO = Path(__file__).resolve().parents[2]

# (batch, N, K) of the dense dual layers of the shipped models; ranks follow the default LittleConfig
NAMED_SHAPES = {
    "mlp": [(1, 512, 784), (1, 256, 512)],  # scripts/demo.py FashionMLP(512, 256)
    "linear": [(1, 4096, 1024)],  # the benchmark layer
}
# (cell, hidden, input size) of the PTB language models' recurrent layers: the one-token step's
# fused gate kernel (kernels/dual_gates.py), rank as compile_dual's default LittleConfig fits it
NAMED_GATES = {
    "ptb750": [("lstm", 750, 750), ("gru", 750, 750)],
    "ptb1500": [("lstm", 1500, 1500), ("gru", 1500, 1500)],
}


def gate_workload(cell: str, hidden: int, input_size: int, ratio: float, rank: int | None = None, fused: bool = True):
    rows = little_groups(cell, fused) * hidden
    rank = rank or choose_rank(LittleConfig(), rows, input_size + hidden if fused else hidden)
    return GateWorkload(cell, 1, hidden, input_size, rank, fused, ratio)


def named_workloads(names: list[str], ratio: float, act: str = "tanh") -> list:
    out = []
    for name in names:
        if name not in NAMED_SHAPES and name not in NAMED_GATES:
            raise SystemExit(f"unknown shape set {name!r}; known: {', '.join([*NAMED_SHAPES, *NAMED_GATES])}")
        for b, n, k in NAMED_SHAPES.get(name, []):
            out.append(DualWorkload(b, n, k, choose_rank(LittleConfig(), n, k), act, ratio))
        out += [gate_workload(cell, h, i, ratio) for cell, h, i in NAMED_GATES.get(name, [])]
    return out


def load_factory(spec: str) -> tuple:
    """(model, example inputs or None, calibration or None) from a `module:factory` spec."""
    module, _, attr = spec.partition(":")
    if not attr:
        raise SystemExit(f"--model expects module:factory, got {spec!r}")
    made = getattr(importlib.import_module(module), attr)()
    return (made + (None, None))[:3] if isinstance(made, tuple) else (made, None, None)


def model_workloads(spec: str, ratio: float, target) -> list[DualWorkload]:
    """Dual layers of a model from `module:factory`, planned as compile_dual would plan them."""
    from ..api import plan_dual

    model, inputs, calibration = load_factory(spec)
    planned = plan_dual(model, inputs, target=target, calibration=calibration, insensitive_ratio=ratio)
    return [
        DualWorkload(s.batch, s.n, s.k, planned.plan.get(s.key).little.rank, s.act, ratio)
        for s in planned.sites
        if planned.plan.get(s.key) is not None
    ]


def parse_workload(text: str, ratio: float) -> DualWorkload:
    parts = text.split(",")
    try:
        b, n, k, r = (int(v) for v in parts[:4])
    except ValueError:
        raise SystemExit(f"--workload expects B,N,K,R[,act], got {text!r}") from None
    return DualWorkload(b, n, k, r, parts[4] if len(parts) > 4 else "tanh", ratio)


def parse_gate_workload(text: str, ratio: float) -> GateWorkload:
    parts = text.split(",")
    try:
        cell, (h, i, r) = parts[0], (int(v) for v in parts[1:4])
        fused = {"fused": True, "hoisted": False}[parts[4] if len(parts) > 4 else "fused"]
        return gate_workload(cell, h, i, ratio, r, fused)
    except (ValueError, KeyError):
        raise SystemExit(f"--gate-workload expects CELL,H,I,R[,fused|hoisted] (CELL lstm or gru), got {text!r}") from None


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(prog="tvm-dual tune", description=__doc__.splitlines()[0])
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = __doc__.split("\n", 2)[2]
    what = parser.add_argument_group("what to tune")
    what.add_argument("--shapes", nargs="+", metavar="SET", help=f"named shape sets: {', '.join(NAMED_SHAPES)}")
    what.add_argument("--workload", action="append", default=[], metavar="B,N,K,R[,act]", help="a dense dual kernel")
    what.add_argument("--gate-workload", action="append", default=[], metavar="CELL,H,I,R[,fused|hoisted]",
                      help="a recurrent gate kernel at batch 1")
    what.add_argument("--model", metavar="MODULE:FACTORY", help="tune the dual layers of this model")
    what.add_argument("--ratio", type=float, default=0.5, help="insensitive ratio the inputs are built for")
    what.add_argument(
        "--dense", action="store_true",
        help="tune the dense models of these shapes with MetaSchedule instead, no GEMV template (Linear + tanh; "
        "a gate workload: the PTB layer step; --model: that model), for the benchmark's tvm-ms engine",
    )
    how = parser.add_argument_group("budget and search")
    how.add_argument("--target", default=None, help='e.g. "llvm -mcpu=skylake-avx512" (default: this host)')
    how.add_argument("--trials", type=int, default=64, help="new measurements per workload")
    how.add_argument("--minutes", type=float, default=None, help="wall-time budget per workload")
    how.add_argument("--strategy", choices=["xgb", "random", "both"], default="xgb")
    how.add_argument("--batch-size", type=int, default=8)
    how.add_argument("--threads", type=int, default=None,
                     help="TVM_NUM_THREADS for local measurement (default: TVM_NUM_THREADS, else every core)")
    how.add_argument("--seed", type=int, default=0)
    how.add_argument("--verify-pairs", type=int, default=32,
                     help="pairs in which a finalist is timed against the defaults before it may replace them (0: off)")
    how.add_argument("--verify-threads", type=int, nargs="*", default=None, metavar="N",
                     help="local measurement: other thread counts at which each finalist is also timed in pairs "
                     "(default: 1 when tuning at more; none: --verify-threads with no value)")
    where = parser.add_argument_group("records and measurement")
    where.add_argument("--log", default=str(REPO / "tuning_logs" / "dual_dense.jsonl"), help="records (JSON lines), resumed")
    where.add_argument("--schedules", default=str(REPO / "schedules"), help="directory for the distilled schedules")
    where.add_argument("--metaschedule-dir", default=None, help="MetaSchedule database root (default tuning_logs/metaschedule)")
    where.add_argument("--report", default=None, help="write the per-trial history of each workload here (JSON)")
    where.add_argument("--rpc-tracker", default=None, metavar="HOST:PORT", help="measure through a TVM RPC tracker")
    where.add_argument("--rpc-key", default=None)
    where.add_argument("--parallel", type=int, default=1, help="RPC sessions measuring at once")
    return parser


def run(args: argparse.Namespace, command: str | None = None) -> int:
    """`command`: the command line, recorded in the --report file."""
    started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    if args.report:  # before the tuning, not after it: a report that cannot be written loses the run
        os.makedirs(os.path.dirname(os.path.abspath(args.report)), exist_ok=True)
    target = resolve_target(args.target)
    workloads = [parse_workload(w, args.ratio) for w in args.workload]
    workloads += [parse_gate_workload(w, args.ratio) for w in args.gate_workload]
    if args.shapes:
        workloads += named_workloads(args.shapes, args.ratio)
    if args.dense:  # the dense models of these shapes, as the benchmark's tvm-ms engine compiles them
        return _tune_dense(workloads, args.model, target, args)
    if args.model:
        workloads += model_workloads(args.model, args.ratio, target)
    if not workloads:
        raise SystemExit("nothing to tune: give --shapes, --workload, --gate-workload or --model")
    options = MeasureOptions()
    if args.rpc_tracker:
        host, _, port = args.rpc_tracker.rpartition(":")
        if not host or not port.isdigit() or not args.rpc_key:
            raise SystemExit("--rpc-tracker expects HOST:PORT, and --rpc-key is required with it")
        measurer = RPCMeasurer(target, host, int(port), args.rpc_key, args.parallel, options)
    else:
        measurer = LocalMeasurer(target, options, threads=args.threads)
    verify_threads = ([] if args.rpc_tracker else [1]) if args.verify_threads is None else args.verify_threads
    if args.rpc_tracker and verify_threads:
        raise SystemExit("--verify-threads measures locally; it cannot be combined with --rpc-tracker")
    verify_measurers = [LocalMeasurer(target, options, threads=n) for n in dict.fromkeys(verify_threads)
                        if n != measurer.threads]
    strategies = ["xgb", "random"] if args.strategy == "both" else [args.strategy]
    report = []
    for workload in workloads:
        default = workload.default_config(target)
        for strategy in strategies:
            # a comparison starts both strategies from nothing, and keeps their records apart
            comparing = len(strategies) == 2
            log = f"{os.path.splitext(args.log)[0]}.{strategy}.jsonl" if comparing else args.log
            started = time.time()
            result = tune_dual_kernel(
                workload, measurer, trials=args.trials, minutes=args.minutes, strategy=strategy,
                batch_size=args.batch_size, log_path=log, seed=args.seed, resume=not comparing,
                verify_pairs=args.verify_pairs, verify_measurers=verify_measurers,
            )
            best = "none" if result.best_time_s is None else f"{1e6 * result.best_time_s:.1f} us"
            shipped = {result.best_config: "the best", default: "the defaults"}.get(
                result.schedule, str(result.schedule))
            print(f"{workload.key} [{strategy}]: best {best} with {result.best_config} "
                  f"({len(result.history)} new trials, {result.resumed} resumed, {time.time() - started:.0f} s); "
                  f"schedule: {shipped}")
            report.append({"workload": workload.key, "strategy": strategy, "history": result.history,
                           "best_time_s": result.best_time_s, "resumed": result.resumed,
                           "default_time_s": result.default_time_s, "verification": result.verification,
                           "schedule": "tuned" if result.schedule not in (None, default) else "defaults"})
    if len(strategies) == 2:
        _compare(report)
    records = read_records(args.log) if os.path.exists(args.log) else []
    if len(strategies) == 2:
        records += [r for s in strategies for r in read_records(f"{os.path.splitext(args.log)[0]}.{s}.jsonl")]
    entries = distill(records, target_to_string(target))
    if entries:
        path = schedule_path(target, args.schedules)
        write_schedule_file(path, target_to_string(target), entries)
        print(f"schedules: {len(entries)} shapes in {path}")
    if args.report:
        from ..bench.machine import machine_info

        machine = {k: v for k, v in machine_info().items() if k in ("cpu_model", "llvm_cpu", "cpus", "hypervisor")}
        with open(args.report, "w") as f:
            json.dump({"target": target_to_string(target), "command": command, "started": started_at,
                       "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": machine,
                       "runs": report}, f, indent=1)
    return 0


def dense_models(workloads: list, model_spec: str | None) -> list[tuple[str, object, tuple]]:
    """(name, torch model, example inputs) of the dense models that --dense tunes: Linear(K -> N) +
    tanh for a dense dual workload, the PTB layer step (ptb.LayerStep) for a gate workload, and the
    model of --model as it is."""
    import torch

    from .. import ptb

    models = {}  # by name: workloads that differ only in rank or ratio have one dense model
    for w in workloads:
        if isinstance(w, DualWorkload):
            name = f"dense b{w.batch} n{w.n} k{w.k}"
            if name not in models:
                model = torch.nn.Sequential(torch.nn.Linear(w.k, w.n), torch.nn.Tanh()).eval()
                models[name] = (model, (torch.randn(w.batch, w.k),))
        elif w.input_size != w.hidden:  # the PTB models' layers; a step of other sizes has no model here
            raise SystemExit(f"--dense tunes PTB layer steps (input size = hidden), got {w.cell} hidden {w.hidden} "
                             f"input {w.input_size}; use --model for other recurrent models")
        elif f"{w.cell}-{w.hidden} layer step" not in models:
            config = ptb.LMConfig(cell=w.cell, hidden=w.hidden)
            models[f"{w.cell}-{w.hidden} layer step"] = (ptb.LayerStep(ptb.WordLM(config)), ptb.step_inputs(config, layer=True))
    if model_spec:
        model, inputs, _ = load_factory(model_spec)
        if inputs is None:
            raise SystemExit(f"--dense --model needs example inputs: {model_spec} returned only a model")
        models[model_spec] = (model, inputs)
    return [(name, model, inputs) for name, (model, inputs) in models.items()]


def _tune_dense(workloads: list, model_spec: str | None, target, args: argparse.Namespace) -> int:
    """MetaSchedule-tune the dense models of the workloads (dense_models), without our GEMV template.
    The tasks' PrimFuncs take the weights as arguments, so a model with random weights tunes the
    same tasks as a trained one of its shapes."""
    from ..frontend import import_model
    from .dense_metaschedule import database_dir, tune_dense_parts

    models = dense_models(workloads, model_spec)
    if not models:
        raise SystemExit("nothing to tune: give --shapes, --workload, --gate-workload or --model")
    work_dir = database_dir(target, args.metaschedule_dir)
    for name, model, inputs in models:
        imported = import_model(model, inputs)
        started = time.time()
        records = tune_dense_parts(imported.mod, target, work_dir, args.trials, gemv_template=False)
        print(f"{name}: {args.trials} MetaSchedule trials in {time.time() - started:.0f} s; {records} records in {work_dir}")
    return 0


def _compare(report: list[dict]) -> None:
    """Trials each strategy needed to reach 95% of the best speed either found, per workload."""
    for key in dict.fromkeys(r["workload"] for r in report):
        runs = {r["strategy"]: r for r in report if r["workload"] == key}
        best = min(r["best_time_s"] for r in runs.values() if r["best_time_s"])
        cells = []
        for strategy, run in runs.items():
            hit = trials_to_reach(run["history"], best)
            cells.append(f"{strategy}: {hit} trials" if hit else f"{strategy}: not within {len(run['history'])} trials")
        print(f"{key}: trials to 95% of the best ({1e6 * best:.1f} us): " + ", ".join(cells))


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    return run(build_parser().parse_args(argv), "python scripts/autotune.py " + shlex.join(argv))
