"""`tvm-dual compile`: a PyTorch model from a factory -> a dual-module shared library."""

from __future__ import annotations

import argparse
import time

from .common import FACTORY_HELP, load_workload, parse_ratio

DESCRIPTION = "Compile a PyTorch model with dual-module inference into a shared library (.so)."

EPILOG = """examples:
  tvm-dual compile mypkg.models:make_model -o model.so                   ratio 0.5 for every dual layer
  tvm-dual compile mypkg.models:make_model -o model.so --ratio 0.7
  tvm-dual compile mypkg.models:make_model -o model.so --ratio fc1=0.7 --ratio fc2=0.3   others exact
  tvm-dual compile mypkg.models:make_model -o model.so --metric mypkg.models:accuracy --max-drop 0.005
  tvm-dual compile mypkg.models:make_model -o model.so --target "llvm -mcpu=skylake-avx512"

The factory returns (model, example_inputs[, calibration]); example_inputs fix the compiled shapes
(batch 1 to 8 for dual layers), calibration is an iterable of input tuples used to fit the little
modules and thresholds (without it, the example alone: enough for a smoke test only). With --metric,
FUNCTION(model) -> float evaluates a callable model (torch tensors in and out) on held-out data, and
per-layer ratios are searched to skip the most bytes while the metric drops at most --max-drop
(tvm_dual.QualityBudget). Then: tvm-dual eval, tvm-dual report.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODULE:FUNCTION", help=FACTORY_HELP)
    parser.add_argument("-o", "--output", required=True, help="the shared library to write (.so)")
    parser.add_argument("--target", help='TVM target, e.g. "llvm -mcpu=znver3" (default: this machine)')
    parser.add_argument("--ratio", action="append", metavar="R | NAME=R",
                        help="insensitive ratio in [0, 1) for every dual layer, or per layer (repeatable; default 0.5)")
    budget = parser.add_argument_group("quality budget (instead of --ratio)")
    budget.add_argument("--metric", metavar="MODULE:FUNCTION", help="FUNCTION(model) -> float on held-out data")
    budget.add_argument("--max-drop", type=float, help="largest allowed drop of the metric (required with --metric)")
    budget.add_argument("--lower-is-better", action="store_true", help="the metric is a loss (e.g. perplexity)")
    parser.add_argument("--no-schedules", action="store_true", help="untuned kernel defaults instead of the shipped tuned knobs")


def run(args: argparse.Namespace, _command: str) -> int:
    import tvm_dual
    from ..bench.workloads import load_factory

    if args.metric and args.ratio:
        raise ValueError("give --ratio or --metric/--max-drop, not both")
    if (args.metric is None) != (args.max_drop is None):
        raise ValueError("--metric and --max-drop go together")
    if not args.output.endswith(".so"):
        raise ValueError(f"the output must be a .so file, got {args.output!r}")
    ratio = parse_ratio(args.ratio)
    workload = load_workload(args.model)
    budget = None
    if args.metric:
        budget = tvm_dual.QualityBudget(load_factory(args.metric), args.max_drop, higher_is_better=not args.lower_is_better)
    started = time.perf_counter()
    print(f"compiling {workload.description} ...", flush=True)
    module = tvm_dual.compile_dual(
        workload.model, workload.example_inputs, target=args.target, calibration=workload.calibration,
        insensitive_ratio=ratio, schedules=None if args.no_schedules else "default", quality_budget=budget,
    )
    module.export_library(args.output)
    from .report import describe_budget, layer_rows

    print(f"wrote {args.output} for {module.target} in {time.perf_counter() - started:.1f} s")
    for line in layer_rows(module.metadata) + describe_budget(module.metadata):
        print(line)
    return 0
