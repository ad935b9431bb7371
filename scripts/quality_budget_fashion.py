"""Quality budget on the Fashion-MNIST MLP: per-layer ratios chosen by tvm_dual.QualityBudget next
to the best uniform ratio under the same budget, with held-out accuracy, bytes saved and kernel time.

    .venv/bin/python scripts/quality_budget_fashion.py [--seconds 20] [--max-drop 0.005]

Splits of the 60k training images: [0, 45k) trains, [45k, 50k) calibrates the little modules,
[50k, 60k) is the search's metric data; the 10k test images are held out. Times are medians of
the compiled kernels per call (DualModule.profile) in this one process, one module after another:
compare them with each other only.
"""

from __future__ import annotations

import argparse

import torch

import tvm_dual
from tvm_dual.commands.report import kernel_times
from tvm_dual.datasets import load_fashion_mnist
from tvm_dual.models import FashionMLP, accuracy, train_classifier


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="training time budget")
    parser.add_argument("--max-drop", type=float, default=0.005, help="accuracy budget (0.005 = half a point)")
    args = parser.parse_args()
    torch.manual_seed(0)
    train, test = load_fashion_mnist("train"), load_fashion_mnist("test")
    model = train_classifier(FashionMLP(512, 256), train.images[:45000], train.labels[:45000], seconds=args.seconds, epochs=3)
    calibration = [train.images[i : i + 500] for i in range(45000, 50000, 500)]
    search_x, search_y = torch.from_numpy(train.images[50000:]), train.labels[50000:]

    def search_accuracy(m) -> float:
        return float((m(search_x).argmax(1).numpy() == search_y).mean())

    example = test.images[:1]
    timing_images = [(test.images[i : i + 1],) for i in range(64)]  # a dual kernel's time depends on its input's rows
    budget = tvm_dual.QualityBudget(search_accuracy, args.max_drop)
    per_layer = tvm_dual.compile_dual(model, (example,), calibration=calibration, quality_budget=budget)
    report = per_layer.metadata["quality_budget"]
    uniform_ratio = report["uniform"]["ratio"]
    modules = {
        "dense": tvm_dual.compile_dual(model, (example,), insensitive_ratio=0.0),
        f"uniform {uniform_ratio:g}": tvm_dual.compile_dual(model, (example,), calibration=calibration, insensitive_ratio=uniform_ratio),
        "per layer " + ", ".join(f"{k}={v:g}" for k, v in report["per_layer"]["ratios"].items()): per_layer,
    }
    print(f"search: exact accuracy {report['metric_dense']:.4f}; budget -{args.max_drop}; {report['evaluations']} evaluations")
    for choice in ("per_layer", "uniform"):
        c = report[choice]
        print(f"  {choice}: search accuracy {c['metric']:.4f}, bytes saved per call {c['bytes_saved'] / 1024:.1f} KiB "
              f"of {report['searched_w_bytes'] / 1024:.1f} KiB of W")
    print(f"\n{'module':<32} {'held-out acc':>12} {'drop':>7} {'KiB read/call':>13} {'kernels us':>10}  per layer us")
    dense_acc = None
    for name, module in modules.items():
        acc = accuracy(module, test.images, test.labels)
        dense_acc = acc if dense_acc is None else dense_acc
        stats = module.stats()
        read = sum(s.dual_bytes for s in stats) + sum(
            4 * getattr(model, d["name"]).weight.numel() for d in module.metadata["dense_layers"]
        )
        profile = module.profile(rotate=timing_images, repeat=2048)
        layers = kernel_times(profile, [s.name for s in stats])
        cells = " ".join(f"{k}={1e6 * v:.1f}" for k, v in layers.items())
        print(f"{name:<32} {acc:>12.4f} {dense_acc - acc:>7.4f} {read / 1024:>13.1f} {1e6 * sum(profile.values()):>10.1f}  {cells}")
    print("(KiB read: W rows + little modules of fc1 and fc2, averaged over the 10,000 test calls; the head is dense in all)")


if __name__ == "__main__":
    main()
