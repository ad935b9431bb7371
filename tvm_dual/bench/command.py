"""`tvm-dual bench`: arguments and the command (the CLI in tvm_dual/cli.py only wires it in)."""

from __future__ import annotations

import argparse
from pathlib import Path

DESCRIPTION = "Benchmark tvm-dual against numpy, PyTorch, ONNX Runtime, OpenVINO and TVM, side by side."

EPILOG = """examples:
  tvm-dual bench                                    Linear 1024->4096 + tanh, all engines, 1 and 2 threads
  tvm-dual bench --smoke                            tiny layer, every output, under a minute
  tvm-dual bench --param n=6000 --param k=1500 --ratios 0.3 0.5 0.7
  tvm-dual bench --model mypkg.models:make_model    a PyTorch model; the function returns
                                                    (model, example_inputs[, calibration])
  tvm-dual bench --engines torch,tvm-dense,tvm-dual --threads 2 --cache cold
  tvm-dual bench --docs                             rerun docs/BENCHMARKS.md (same as: make benchmarks)
  tvm-dual bench --render docs/benchmarks/linear.json --doc docs/BENCHMARKS.md
  tvm-dual bench --list                             workloads, their parameters, engines and availability

Outputs (in --out): results.json (one record per measurement), results.md, results_speedup.png,
results_quality.png, logs/ (one log per worker process). Optional engines: pip install -e '.[bench]'.
"""

CHECKOUT = Path(__file__).resolve().parents[2]  # the source tree, for an editable install
DOCS_DIR = CHECKOUT / "docs" / "benchmarks"
SEARCH_DIR = CHECKOUT / "docs" / "tuning"
DOCS_FILE = CHECKOUT / "docs" / "BENCHMARKS.md"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    what = parser.add_argument_group("what to run")
    what.add_argument("--workload", default=None, help="registered workload (default: linear; see --list)")
    what.add_argument("--param", action="append", default=[], metavar="KEY=VALUE", help="workload parameter, repeatable")
    what.add_argument("--model", metavar="MODULE:FUNCTION", help="benchmark a user model (workload 'model')")
    what.add_argument("--engines", help="comma-separated engines (default: all; see --list)")
    what.add_argument("--threads", type=int, nargs="+", help="thread counts (default: 1 2)")
    what.add_argument("--cache", nargs="+", choices=("hot", "cold"), help="cache modes (default: hot cold)")
    what.add_argument("--ratios", type=float, nargs="+", help="tvm-dual insensitive ratios (default: 0.25 0.5 0.75)")
    what.add_argument("--ms-database", metavar="DIR", help="MetaSchedule database for tvm-ms (default: tuning_logs/metaschedule/CPU)")
    how = parser.add_argument_group("how")
    how.add_argument("--rounds", type=int, help="rounds of all engines, interleaved (default: 3)")
    how.add_argument("--warmup", type=float, help="warm-up seconds per measurement (default: 0.5)")
    how.add_argument("--budget", type=float, help="timed seconds per measurement (default: 1.5)")
    how.add_argument("--smoke", action="store_true", help="tiny workload and short timings: checks the plumbing")
    out = parser.add_argument_group("output")
    out.add_argument("--out", type=Path, help="output folder (default: bench_out/WORKLOAD)")
    out.add_argument("--note", help="a note printed at the top of the report (e.g. about machine load)")
    out.add_argument("--keep-artifacts", action="store_true", help="keep compiled libraries in OUT/artifacts")
    out.add_argument("--docs", action="store_true", help="write into docs/benchmarks/ and regenerate docs/BENCHMARKS.md")
    out.add_argument("--docs-run", action="append", metavar="NAME",
                     help="with --docs: only this run of docs/BENCHMARKS.md (repeatable; --list names them)")
    out.add_argument("--render", type=Path, nargs="+", metavar="JSON", help="only render stored results (no run)")
    out.add_argument("--doc", type=Path, default=DOCS_FILE, help="document --render writes (default: docs/BENCHMARKS.md)")
    out.add_argument("--list", action="store_true", help="list workloads and engines, then exit")


def _params(items: list[str]) -> dict[str, str]:
    params = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--param must look like KEY=VALUE, got {item!r}")
        params[key.strip()] = value.strip()
    return params


def _settings(args: argparse.Namespace, command: str, workload: str, params: dict, overrides: dict):
    from . import BenchSettings, TimingPlan, smoke_settings

    settings = smoke_settings() if args.smoke else BenchSettings()
    settings.workload, settings.command = workload, command
    if params or not args.smoke:
        settings.workload_params = params
    for key, value in overrides.items():
        setattr(settings, key, value)
    if args.engines:
        from .engines import get_engine

        settings.engines = [get_engine(name.strip()).name for name in args.engines.split(",") if name.strip()]
    for attr, value in (("threads", args.threads), ("caches", args.cache), ("ratios", args.ratios),
                        ("rounds", args.rounds), ("ms_database", args.ms_database)):
        if value is not None:
            setattr(settings, attr, value)
    timing = settings.timing
    settings.timing = TimingPlan(
        warmup_s=args.warmup if args.warmup is not None else timing.warmup_s,
        budget_s=args.budget if args.budget is not None else timing.budget_s,
        min_samples=timing.min_samples,
        max_samples=timing.max_samples,
    )
    settings.__post_init__()
    return settings


def _list() -> int:
    from . import DOCS_RUNS
    from .engines import ENGINES
    from .workloads import WORKLOADS, workload_parameters

    print("workloads:")
    for name in WORKLOADS:
        params = ", ".join(f"{k}={v!r}" for k, v in workload_parameters(name).items())
        print(f"  {name:<12} {params}")
    print("docs runs (--docs --docs-run NAME):")
    for name, workload, params, _ in DOCS_RUNS:
        print(f"  {name:<16} {workload} {params}")
    print("engines:")
    for name, engine in ENGINES.items():
        reason = engine.unavailable()
        print(f"  {name:<14} {engine.label:<40} {'available' if reason is None else 'skipped: ' + reason}")
    return 0


def run(args: argparse.Namespace, command: str) -> int:
    from . import DOCS_RUNS, render_document, run_benchmark, write_outputs
    from .workloads import WorkloadError, build_workload, workload_parameters

    if args.list:
        return _list()
    if args.render:
        missing = [str(p) for p in args.render if not p.is_file()]
        if missing:
            raise FileNotFoundError(f"no results file {', '.join(missing)}")
        args.doc.parent.mkdir(parents=True, exist_ok=True)
        args.doc.write_text(render_document(args.render, args.doc))
        print(f"wrote {args.doc}")
        return 0
    if args.model and args.workload not in (None, "model"):
        raise ValueError("--model benchmarks workload 'model'; do not combine it with --workload")
    params = _params(args.param)
    if args.model:
        params["factory"] = args.model
    workload = "model" if args.model else (args.workload or "linear")
    workload_parameters(workload)  # a clear error for an unknown workload, before anything runs
    if args.docs and args.smoke:
        raise ValueError("--docs records full runs; it cannot be combined with --smoke")
    if args.docs and not (CHECKOUT / "pyproject.toml").is_file():
        raise ValueError(f"--docs writes into a tvm-dual source checkout, and {CHECKOUT} is not one (pip install -e .)")
    if args.docs_run and not args.docs:
        raise ValueError("--docs-run selects runs of --docs; give --docs too")
    if args.docs and not args.workload and not args.model:
        known = [run[0] for run in DOCS_RUNS]
        unknown = [name for name in args.docs_run or [] if name not in known]
        if unknown:
            raise ValueError(f"no docs run named {', '.join(unknown)}; the runs are {', '.join(known)}")
        runs = [run for run in DOCS_RUNS if not args.docs_run or run[0] in args.docs_run]
    else:
        runs = [(workload, workload, params, {})]
    for name, run_workload, run_params, overrides in runs:
        settings = _settings(args, command, run_workload, {**run_params, **params} if args.docs else run_params, overrides)
        out = args.out or Path("bench_out") / name  # logs (and artifacts) stay here, out of docs/
        if args.docs and len(runs) > 1:
            try:  # a docs run whose trained model is missing is skipped; the others still run
                build_workload(run_workload, {**run_params, **params})
            except WorkloadError as err:
                print(f"skipping docs run {name}: {err}")
                continue
        results = run_benchmark(settings, out, keep_artifacts=args.keep_artifacts)
        if args.note:
            results["run"]["note"] = args.note
        if args.docs:  # docs/BENCHMARKS.md is the report
            paths = write_outputs(results, DOCS_DIR, stem=name, markdown=False)
        else:
            paths = write_outputs(results, out)
            print(paths["markdown"].read_text())
        print("wrote " + ", ".join(str(p) for p in paths.values()))
    if args.docs:
        order = [DOCS_DIR / f"{run[0]}.json" for run in DOCS_RUNS]
        stored = [p for p in order if p.is_file()] + sorted(p for p in DOCS_DIR.glob("*.json") if p not in order)
        stored += sorted(SEARCH_DIR.glob("*.json"))  # knob-search reports (tvm-dual tune --strategy both --report)
        DOCS_FILE.write_text(render_document(stored, DOCS_FILE))
        print(f"wrote {DOCS_FILE}")
    return 0
