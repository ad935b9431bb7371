"""Train ResNet-20 on Fashion-MNIST (55k images; the last 5k are held out for calibration).

    nice -n 10 .venv/bin/python scripts/train_cnn.py [--epochs 6] [--threads 1]

Resumable: a checkpoint is written after every epoch under ~/.cache/tvm_dual/ and a rerun continues
from it. The pid is written to /tmp/tvm_dual_jobs/train_cnn.pid so that the job can be paused
(SIGSTOP) during benchmarks.
"""

from __future__ import annotations

import argparse
import contextlib
import os

import torch

from tvm_dual.cnn_models import HELD_OUT, TrainConfig, checkpoint_path, evaluate, train_resnet
from tvm_dual.datasets import load_fashion_mnist

PID_FILE = "/tmp/tvm_dual_jobs/train_cnn.pid"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=TrainConfig.epochs)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the machine is shared)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--activation-l1", type=float, default=TrainConfig.activation_l1,
                        help="L1 penalty on the blocks' ReLU outputs, for a sparser network (TrainConfig.activation_l1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.makedirs(os.path.dirname(PID_FILE), exist_ok=True)
    with open(PID_FILE, "w") as f:
        f.write(str(os.getpid()))
    try:
        train, test = load_fashion_mnist("train"), load_fashion_mnist("test")
        config = TrainConfig(epochs=args.epochs, seed=args.seed, activation_l1=args.activation_l1)
        model = train_resnet(config, train.images[:-HELD_OUT], train.labels[:-HELD_OUT], log=lambda m: print(m, flush=True))
        print(f"test accuracy {evaluate(model, test.images, test.labels):.4f}; checkpoint {checkpoint_path(config)}")
    finally:
        with contextlib.suppress(FileNotFoundError):  # another training run may have removed it
            os.remove(PID_FILE)


if __name__ == "__main__":
    main()
