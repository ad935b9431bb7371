"""Train a word-level PTB language model (the paper's setup) with a wall-clock budget.

    nice -n 10 .venv/bin/python scripts/train_ptb.py --cell lstm --hidden 750 --minutes 75 --dropout 0.25

(the published models in docs/RESULTS.md used --dropout 0.25; the default is 0.5). One thread (the
machine is shared), resumable: run it again with the same model to continue. Checkpoints and the log
go to $TVM_DUAL_CACHE/ptb/ (default ~/.cache/tvm_dual/ptb/); the pid to /tmp/tvm_dual_jobs/ so that
a benchmark can pause it (kill -STOP) and resume it (kill -CONT). SIGTERM stops it cleanly (the
last checkpoint stays; exit code 143).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import signal
import sys
from pathlib import Path

import torch

from tvm_dual import ptb

JOBS = Path("/tmp/tvm_dual_jobs")


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, ptb.LMConfig, ptb.TrainConfig]:
    """The command line, checked in full before anything is written."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cell", choices=ptb.CELLS, default="lstm")
    parser.add_argument("--hidden", type=int, default=750)
    parser.add_argument("--minutes", type=float, default=75.0, help="training time budget (total, across resumes)")
    parser.add_argument("--dropout", type=float, default=0.5)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    if not math.isfinite(args.minutes) or args.minutes <= 0:
        parser.error(f"--minutes must be a positive number, got {args.minutes}")
    if args.threads < 1:
        parser.error(f"--threads must be at least 1, got {args.threads}")
    try:
        model_cfg = ptb.LMConfig(cell=args.cell, hidden=args.hidden, dropout=args.dropout)
        train_cfg = dataclasses.replace(ptb.TrainConfig(), budget_s=60 * args.minutes, lr=args.lr)
    except ValueError as err:
        parser.error(str(err))
    return args, model_cfg, train_cfg


def main(argv: list[str] | None = None) -> int:
    args, model_cfg, train_cfg = parse_args(argv)
    # sys.exit runs the finally below, which a default SIGTERM would skip, leaving the pid file behind
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    torch.set_num_threads(args.threads)
    checkpoint = ptb.checkpoint_path(model_cfg)
    JOBS.mkdir(parents=True, exist_ok=True)
    pid_file = JOBS / f"train_ptb_{model_cfg.name}.pid"
    pid_file.write_text(f"{os.getpid()}\n")
    try:
        checkpoint.parent.mkdir(parents=True, exist_ok=True)
        with open(checkpoint.with_suffix(".log"), "a", buffering=1) as log_file:

            def log(line: str) -> None:
                print(line, flush=True)
                log_file.write(line + "\n")

            log(f"training {model_cfg} with {train_cfg}; checkpoint {checkpoint}")
            corpus = ptb.load_corpus()
            try:
                _, record = ptb.train_lm(model_cfg, corpus, train_cfg, checkpoint=checkpoint, log=log)
            except ptb.CheckpointError as err:
                print(f"error: {err}", file=sys.stderr)
                return 2
            log(f"done: best validation perplexity {record['best_valid_ppl']:.2f}")
    finally:
        pid_file.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
