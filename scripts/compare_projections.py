"""Little-module projections compared on real data: a Fashion-MNIST MLP (784-256-128-10, ReLU and
tanh hidden layers) trained here for a fixed number of epochs, compiled at each insensitive ratio
with each projection; test accuracy at batch 1, each layer's rank and fit R², and the observed ratios.

    .venv/bin/python scripts/compare_projections.py --epochs 3 --ratios 0.5 0.7 0.8 0.9 --projections pca rrr

Training is seeded and runs a fixed number of epochs on one thread, so every projection sees the
same model. The little modules are fitted on 4,096 held-out training images.
"""

from __future__ import annotations

import argparse
import warnings

import torch

import tvm_dual
from tvm_dual.datasets import load_fashion_mnist
from tvm_dual.little import PROJECTIONS
from tvm_dual.models import FashionMLP, accuracy, train_classifier

TRAIN_IMAGES = 50_000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--ratios", type=float, nargs="+", default=[0.5, 0.7, 0.8, 0.9])
    parser.add_argument("--projections", nargs="+", choices=PROJECTIONS, default=["pca", "rrr"])
    parser.add_argument("--test-images", type=int, default=4000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)

    train, test = load_fashion_mnist("train"), load_fashion_mnist("test")
    model = train_classifier(FashionMLP(256, 128), train.images[:TRAIN_IMAGES], train.labels[:TRAIN_IMAGES],
                             seconds=1e9, epochs=args.epochs)
    calibration = [train.images[i : i + 256] for i in range(TRAIN_IMAGES, TRAIN_IMAGES + 4096, 256)]
    images, labels = test.images[: args.test_images], test.labels[: args.test_images]
    example = (test.images[:1],)
    dense = accuracy(tvm_dual.compile_dual(model, example, insensitive_ratio=0.0), images, labels)
    print(f"FashionMLP, {args.epochs} epochs; first {len(images)} test images at batch 1; dense {100 * dense:.2f}%")
    print(f"{'projection':>10} {'ratio':>5} {'accuracy':>9} {'vs dense':>9}  layers (rank, fit R², observed ratio)")
    for projection in args.projections:
        for ratio in args.ratios:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", tvm_dual.DualCompileWarning)
                module = tvm_dual.compile_dual(model, example, calibration=calibration, insensitive_ratio=ratio,
                                               little=tvm_dual.LittleConfig(projection=projection))
            acc = accuracy(module, images, labels)
            observed = {s.name: s.observed_ratio for s in module.stats()}
            layers = ", ".join(f"{l['name']} ({l['rank']}, {l['fit_r2']:.3f}, {observed[l['name']]:.3f})"
                               for l in module.metadata["layers"])
            print(f"{projection:>10} {ratio:>5.2f} {100 * acc:>8.2f}% {100 * (acc - dense):>+8.2f}  {layers}", flush=True)


if __name__ == "__main__":
    main()
