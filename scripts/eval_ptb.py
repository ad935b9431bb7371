"""Test-set perplexity of a trained PTB model compiled with tvm_dual, at batch 1, token by token.

    .venv/bin/python scripts/eval_ptb.py --model lstm-750 --jobs 2 --out docs/ptb_lstm-750.json

Little modules are fitted on the first --calibration-tokens of the training text and thresholds
chosen on the first --validation-tokens of the validation text; --test-tokens limits the test text
(default: all of it).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from multiprocessing import get_context
from pathlib import Path

import torch

from tvm_dual import ptb
from tvm_dual.gate_allocation import ALLOCATIONS
from tvm_dual.little import PROJECTIONS, LittleConfig
from tvm_dual.recurrent import RecurrentConfig


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line, checked in full before a model is loaded (a bad ratio or --out found after
    an hour of evaluation lost the hour's results)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="lstm-750", help="trained model name (see scripts/train_ptb.py) or .best.pt path")
    parser.add_argument("--ratios", type=float, nargs="+", default=[0.0, 0.1, 0.3, 0.5, 0.7, 0.9])
    parser.add_argument("--test-tokens", type=int, default=None)
    parser.add_argument("--calibration-tokens", type=int, default=20_000)
    parser.add_argument("--validation-tokens", type=int, default=5_000)
    parser.add_argument("--allocation", choices=ALLOCATIONS, default="output_error",
                        help="how the layer's ratio is split over its gates (RecurrentConfig.allocation)")
    parser.add_argument("--rank", type=int, default=None,
                        help="little module rank (default: compile_dual's, capped at 10%% of the layer's multiply-adds)")
    parser.add_argument("--projection", choices=PROJECTIONS, default=LittleConfig.projection,
                        help="little module projection (default: compile_dual's)")
    parser.add_argument("--out", type=Path, default=None, help="write the report as JSON here")
    parser.add_argument("--jobs", type=int, default=1,
                        help="ratios evaluated in this many processes at once (one thread each; perplexity does not depend on it)")
    args = parser.parse_args(argv)
    try:
        args.ratios = ptb.check_evaluation_options(args.ratios, args.test_tokens, args.calibration_tokens,
                                                   args.validation_tokens)
        LittleConfig(rank=args.rank, projection=args.projection)
    except (TypeError, ValueError) as err:
        parser.error(str(err))
    if args.jobs < 1:
        parser.error(f"--jobs must be at least 1, got {args.jobs}")
    if args.out is not None:
        if args.out.is_dir():
            parser.error(f"--out {args.out} is a directory; name the JSON file to write")
        if not args.out.parent.is_dir():
            parser.error(f"--out {args.out}: the folder {args.out.parent} does not exist")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        report = _evaluate_all(args)
    except (FileNotFoundError, ptb.CheckpointError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    report["allocation"] = args.allocation
    report["rank"] = args.rank
    report["projection"] = args.projection
    if args.out:
        tmp = args.out.with_name(args.out.name + ".tmp")
        tmp.write_text(json.dumps(report, indent=1))
        os.replace(tmp, args.out)
        print(f"wrote {args.out}")
    return 0


def _evaluate_all(args: argparse.Namespace) -> dict:
    if args.jobs == 1 or len(args.ratios) == 1:
        return _evaluate(args, args.ratios)
    jobs = min(args.jobs, len(args.ratios))
    with ProcessPoolExecutor(jobs, mp_context=get_context("spawn")) as pool:
        parts = list(pool.map(partial(_evaluate, args), [args.ratios[i::jobs] for i in range(jobs)]))
    rows = sorted((row for part in parts for row in part["rows"]), key=lambda row: args.ratios.index(row["ratio"]))
    report = dict(parts[0], rows=rows)
    if any(part["git"] != report["git"] for part in parts):  # the checkout changed while the jobs started
        report["git"] = [part["git"] for part in parts]
    return report


def _evaluate(args: argparse.Namespace, ratios: list[float]) -> dict:
    torch.backends.mkldnn.enabled = False
    torch.set_num_threads(1)
    return ptb.evaluate_compiled(args.model, ratios, args.test_tokens, args.calibration_tokens, args.validation_tokens,
                                 recurrent=RecurrentConfig(allocation=args.allocation),
                                 little=LittleConfig(rank=args.rank, projection=args.projection))


if __name__ == "__main__":
    sys.exit(main())
