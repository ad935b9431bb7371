"""Train a word-level PTB language model (the paper's setup) with a wall-clock budget.

    nice -n 10 .venv/bin/python scripts/train_ptb.py --cell lstm --hidden 750 --minutes 75

One thread (the machine is shared), resumable: run it again with the same model to continue.
Checkpoints and the log go to ~/.cache/tvm_dual/ptb/; the pid to /tmp/tvm_dual_jobs/ so that a
benchmark can pause it (kill -STOP) and resume it (kill -CONT).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path

import torch

from tvm_dual import ptb


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cell", choices=ptb.CELLS, default="lstm")
    parser.add_argument("--hidden", type=int, default=750)
    parser.add_argument("--minutes", type=float, default=75.0, help="training time budget (total, across resumes)")
    parser.add_argument("--dropout", type=float, default=0.5)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    model_cfg = ptb.LMConfig(cell=args.cell, hidden=args.hidden, dropout=args.dropout)
    train_cfg = dataclasses.replace(ptb.TrainConfig(), budget_s=60 * args.minutes, lr=args.lr)
    checkpoint = ptb.checkpoint_path(model_cfg)
    jobs = Path("/tmp/tvm_dual_jobs")
    jobs.mkdir(parents=True, exist_ok=True)
    pid_file = jobs / f"train_ptb_{model_cfg.name}.pid"
    pid_file.write_text(f"{os.getpid()}\n")
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    log_file = open(checkpoint.with_suffix(".log"), "a", buffering=1)

    def log(line: str) -> None:
        print(line, flush=True)
        log_file.write(line + "\n")

    log(f"training {model_cfg} with {train_cfg}; checkpoint {checkpoint}")
    try:
        corpus = ptb.load_corpus()
        _, record = ptb.train_lm(model_cfg, corpus, train_cfg, checkpoint=checkpoint, log=log)
        log(f"done: best validation perplexity {record['best_valid_ppl']:.2f}")
    finally:
        pid_file.unlink(missing_ok=True)


if __name__ == "__main__":
    sys.exit(main())
