"""CNN results: test accuracy and multiply-adds vs insensitive ratio on the Fashion-MNIST ResNet-20,
and batch-1 wall-clock of the chosen setting against the dense TVM build, PyTorch, ONNX Runtime and
OpenVINO (each timed in its own process).

    .venv/bin/python scripts/cnn_results.py [--checkpoint PATH] [--ratios 0.5 0.6 0.7 0.8] [--margins 0.1 0.2]
        [--rank 4] [--time LABEL ...] [--threads 1 2] [--out results.json]

Settings: dense (ratio 0), one uniform insensitive ratio for every conv layer (--ratios), and
per-layer ratios of natural sparsity + margin (--margins; conv_plan.natural_sparsity).

Writes a JSON file (default ~/.cache/tvm_dual/cnn_results.json) and prints markdown tables.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import warnings

import numpy as np

import tvm_dual
from tvm_dual.bench.machine import git_revision
from tvm_dual.cnn import default_checkpoint, ideal_reduction, operations, workload
from tvm_dual.cnn_bench import export_onnx, run_isolated
from tvm_dual.cnn_models import CACHE_DIR
from tvm_dual.conv_plan import natural_sparsity


def markdown(results: dict) -> str:
    """The tables of docs/RESULTS.md from a results JSON."""
    settings = results["settings"]
    dense = next(r for r in settings if r["label"] == "dense")
    lines = [
        "| setting | test accuracy | vs dense | MACs / image | fewer MACs | of which little |",
        "|---|---|---|---|---|---|",
    ]
    for r in settings:
        lines.append(
            f"| {r['label']} | {100 * r['accuracy']:.2f}% | {100 * (r['accuracy'] - dense['accuracy']):+.2f} | "
            f"{r['macs'] / 1e6:.2f} M | {r['reduction']:.2f}x | {r['little_macs'] / 1e6:.2f} M |"
        )
    if "ideal_reduction" in results:
        lines += ["", f"An ideal predictor (exactly the outputs each ReLU keeps, at no cost): {results['ideal_reduction']:.2f}x fewer MACs."]
    timing = results.get("timing", {})
    threads = sorted({int(k.rsplit("/ ", 1)[1].rstrip("t")) for k in timing})
    engines = list(dict.fromkeys(k.rsplit(" / ", 1)[0] for k in timing))
    lines += ["", "| engine | " + " | ".join(f"{t} thread{'s' if t > 1 else ''}" for t in threads) + " |", "|---|" + "---|" * len(threads)]
    for engine in engines:
        cells = []
        for t in threads:
            m = timing.get(f"{engine} / {t}t", {})
            cells.append(f"{m['median_s'] * 1e3:.3f} ms" if "median_s" in m else m.get("error", "-"))
        lines.append(f"| {engine} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--ratios", type=float, nargs="*", default=[0.5, 0.6, 0.7, 0.8])
    parser.add_argument("--margins", type=float, nargs="*", default=[0.1, 0.2])
    parser.add_argument("--max-ratio", type=float, default=0.95)
    parser.add_argument("--rank", type=int, default=None, help="little-module rank (default: LittleConfig's)")
    parser.add_argument("--projection", default="rrr", help="little-module projection (rrr is compile_dual's default for convolutions)")
    parser.add_argument("--max-cost", type=float, default=0.15, help="LittleConfig.max_cost_fraction")
    parser.add_argument("--test-images", type=int, default=10000)
    parser.add_argument("--time", nargs="*", default=None, help="labels of the settings to time (default: all)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--out", default=os.path.join(CACHE_DIR, "cnn_results.json"))
    parser.add_argument("--markdown", metavar="JSON", help="only print the tables of an earlier run")
    args = parser.parse_args()
    if args.markdown:
        with open(args.markdown) as f:
            print(markdown(json.load(f)))
        return
    warnings.filterwarnings("ignore", category=tvm_dual.DualCompileWarning)
    checkpoint = args.checkpoint or default_checkpoint()
    w = workload(checkpoint)
    little = tvm_dual.LittleConfig(projection=args.projection, rank=args.rank, max_cost_fraction=args.max_cost)
    results: dict = {"checkpoint": checkpoint, "model_macs": w.model_macs, "little": vars(little) | {},
                     "git": git_revision(), "settings": []}
    tmp = tempfile.mkdtemp(prefix="tvm_dual_cnn_")
    artifacts: dict[str, str] = {}
    sparsity = natural_sparsity(w.model, w.example_inputs, w.calibration)
    results["natural_sparsity"] = sparsity
    print("natural sparsity:", {k: round(v, 3) for k, v in sparsity.items()}, flush=True)

    def evaluate(label: str, ratio) -> dict:
        started = time.monotonic()
        mod = tvm_dual.compile_dual(w.model, w.example_inputs, calibration=w.calibration, insensitive_ratio=ratio, little=little)
        compile_s = time.monotonic() - started
        acc = w.accuracy(mod, limit=args.test_images)
        ops = operations(mod, w.model_macs)
        path = os.path.join(tmp, f"{label}.so")
        mod.export_library(path)
        artifacts[label] = path
        layers = [
            {"name": s.name, "observed": s.observed_ratio, "calibration": s.calibration_ratio, "rank": s.rank}
            for s in mod.stats()
        ]
        row = {
            "label": label, "ratio": ratio if isinstance(ratio, float) else dict(ratio), "accuracy": acc, "macs": ops.dual_macs, "little_macs": ops.little_macs,
            "reduction": ops.reduction, "compile_s": compile_s, "layers": layers,
        }
        print(f"{label}: accuracy {acc:.4f}  MACs {ops.dual_macs / 1e6:.2f}M ({ops.reduction:.2f}x fewer)  compile {compile_s:.0f} s", flush=True)
        if label != "dense" and "ideal_reduction" not in results:
            results["ideal_reduction"] = ideal_reduction(mod, w.model_macs, sparsity)
            print(f"an ideal predictor (exactly the outputs each ReLU keeps, at no cost): {results['ideal_reduction']:.2f}x fewer MACs", flush=True)
        return row

    results["settings"].append(evaluate("dense", 0.0))
    for ratio in args.ratios:
        results["settings"].append(evaluate(f"dual{ratio:g}", ratio))
    if args.margins:
        for margin in args.margins:
            ratios = {name: min(s + margin, args.max_ratio) for name, s in sparsity.items()}
            results["settings"].append(evaluate(f"natural+{margin:g}", ratios))

    # timing, process-isolated
    inputs_path = os.path.join(tmp, "inputs.npy")
    np.save(inputs_path, np.concatenate([x[0] for x in w.timing_inputs]).reshape(len(w.timing_inputs), 1, 1, 28, 28))
    onnx_path = export_onnx(w.model, w.example_inputs, os.path.join(tmp, "resnet20.onnx"))
    engines = [("torch", checkpoint), ("ort", onnx_path), ("openvino", onnx_path), ("tvm dense", artifacts["dense"])]
    timed = args.time if args.time is not None else [label for label in artifacts if label != "dense"]
    engines += [(f"tvm {label}", artifacts[label]) for label in timed]
    results["timing"] = {}
    for threads in args.threads:
        for label, artifact in engines:
            engine = "tvm" if label.startswith("tvm") else label
            measured = run_isolated(engine, artifact, threads, inputs_path)
            results["timing"][f"{label} / {threads}t"] = measured
            shown = f"{measured['median_s'] * 1e3:.3f} ms" if "median_s" in measured else measured["error"]
            print(f"{label:>14} {threads} thread(s): {shown}", flush=True)
    with open(args.out, "w") as f:
        json.dump(results, f, indent=2)
    print(markdown(results))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
