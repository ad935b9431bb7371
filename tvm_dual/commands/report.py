"""`tvm-dual report`: what a compiled library does per layer (ratios, bytes of W read, time), as a
table and a PNG."""

from __future__ import annotations

import argparse
import os
import re

import numpy as np

from .common import FACTORY_HELP, input_data, load_workload

DESCRIPTION = "Per-layer report of a compiled library: shape, ratio target/observed, bytes of W read, time share."

EPILOG = """examples:
  tvm-dual report model.so --model mypkg.models:make_model    run on the factory's calibration data
  tvm-dual report model.so --inputs samples.npz --png model.png
  tvm-dual report model.so                                     no data: random inputs (ratios then say little)

Observed ratios and bytes come from running the library on the data (--limit tuples); times are
medians per call of each compiled kernel (DualModule.profile), the runs taking the tuples in turn, and
the time share is of all kernels of one call. Layers left dense are listed with the reason.
"""

KIB = 1024.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("library", help="a .so written by tvm-dual compile or DualModule.export_library")
    data = parser.add_mutually_exclusive_group()
    data.add_argument("--model", metavar="MODULE:FUNCTION", help="run on this factory's calibration data; " + FACTORY_HELP)
    data.add_argument("--inputs", metavar="NPZ", help="run on these inputs (one array per input, optionally stacked)")
    parser.add_argument("--limit", type=int, default=256, help="input tuples to run (default 256)")
    parser.add_argument("--png", help="plot to write (default: LIBRARY with .png instead of .so)")


def layer_rows(metadata: dict) -> list[str]:
    """The compile-time table: what was planned per layer."""
    header = f"{'layer':<20} {'kind':<8} {'N x K':>12} {'rank':>5} {'target':>7} {'calib':>7}"
    lines = [header, "-" * len(header)]
    for layer in metadata["layers"]:
        lines.append(f"{layer['name']:<20} {layer['act']:<8} {layer['n']:>5}x{layer['k']:<6} {layer['rank']:>5} "
                     f"{layer['target_ratio']:>7.3f} {layer['calibration_ratio']:>7.3f}")
    for layer in metadata.get("dense_layers", []):
        lines.append(f"{layer['name']:<20} dense ({layer['reason']})")
    return lines


def describe_budget(metadata: dict) -> list[str]:
    """The quality-budget search's choice next to the best uniform ratio, if there was one."""
    report = metadata.get("quality_budget")
    if not report:
        return []
    sign = "-" if report["higher_is_better"] else "+"
    total = report["searched_w_bytes"] / KIB
    per_layer, uniform = report["per_layer"], report["uniform"]
    ratios = ", ".join(f"{name}={r:g}" for name, r in per_layer["ratios"].items())

    def saved(choice: dict) -> str:
        return (f"metric {choice['metric']:.6g}, saves {choice['bytes_saved'] / KIB:.1f} of {total:.1f} KiB per call "
                f"({choice['w_bytes_skipped'] / KIB:.1f} KiB of W rows skipped, less the little modules)")

    return [
        f"quality budget: metric {report['metric_dense']:.6g} exact, at most {sign}{report['max_drop']:g} "
        f"({report['evaluations']} evaluations on the metric's data)",
        f"  per layer ({ratios}): {saved(per_layer)}",
        f"  best uniform ratio {uniform['ratio']:g}: {saved(uniform)}",
    ]


def kernel_times(profile: dict[str, float], names: list[str]) -> dict[str, float]:
    """Seconds per call of each dual layer's kernels (symbols as the rewrites name them)."""
    times = {}
    for name in names:
        safe = re.escape(re.sub(r"[^0-9a-zA-Z_]", "_", name))
        pattern = re.compile(rf"^tvm_dual_({safe}(_(lstm|gru))?_b\d+|conv_{safe})$")
        times[name] = sum(t for symbol, t in profile.items() if pattern.match(symbol))
    return times


def _random_inputs(specs) -> list[tuple[np.ndarray, ...]]:
    rng = np.random.default_rng(0)
    return [tuple(rng.standard_normal(s.shape).astype(s.dtype) if np.dtype(s.dtype).kind == "f" else np.zeros(s.shape, s.dtype)
                  for s in specs)]


def _plot(path: str, rows: list[dict], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["name"] for r in rows]
    x = np.arange(len(rows))
    fig, (ax_ratio, ax_time) = plt.subplots(2, 1, figsize=(max(6, 0.8 * len(rows) + 3), 6), sharex=True)
    ax_ratio.bar(x - 0.2, [r["target"] for r in rows], 0.4, label="target")
    ax_ratio.bar(x + 0.2, [r["observed"] for r in rows], 0.4, label="observed")
    ax_ratio.set_ylabel("insensitive ratio")
    ax_ratio.set_ylim(0, 1)
    ax_ratio.legend()
    ax_time.bar(x, [1e6 * r["seconds"] for r in rows], 0.6, color="tab:gray")
    ax_time.set_ylabel("kernel time per call (us)")
    ax_time.set_xticks(x, names, rotation=30, ha="right")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run(args: argparse.Namespace, _command: str) -> int:
    import tvm_dual

    if args.limit < 1:
        raise ValueError(f"--limit must be at least 1, got {args.limit}")
    module = tvm_dual.load(args.library)
    workload = load_workload(args.model) if args.model else None
    data = input_data(args.inputs, workload, module, args.limit)
    note = ""
    if data is None:
        data, note = _random_inputs(module.input_specs), " (random inputs: observed ratios say little)"
    for inputs in data:
        module(*inputs)
    stats = module.stats()
    profile = module.profile(rotate=data)
    total = sum(profile.values())
    times = kernel_times(profile, [s.name for s in stats])

    print(f"{args.library}: {module.target}, {len(data)} input tuple(s){note}")
    header = (f"{'layer':<20} {'kind':<8} {'N x K':>12} {'target':>7} {'observed':>9} "
              f"{'W KiB read / dense':>19} {'time us':>8} {'share':>6}")
    print(header)
    print("-" * len(header))
    rows = []
    for s in stats:
        seconds = times[s.name]
        rows.append({"name": s.name, "target": s.target_ratio, "observed": s.observed_ratio, "seconds": seconds})
        print(f"{s.name:<20} {s.act:<8} {s.shape[0]:>5}x{s.shape[1]:<6} {s.target_ratio:>7.3f} {s.observed_ratio:>9.3f} "
              f"{s.dual_bytes / KIB:>9.1f} / {s.dense_bytes / KIB:<7.1f} {1e6 * seconds:>8.1f} {100 * seconds / total:>5.1f}%")
    for layer in module.metadata.get("dense_layers", []):
        print(f"{layer['name']:<20} dense ({layer['reason']})")
    other = total - sum(times.values())
    print(f"{'other kernels':<20} {'':<8} {'':>12} {'':>7} {'':>9} {'':>19} {1e6 * other:>8.1f} {100 * other / total:>5.1f}%")
    if stats:
        dense = sum(s.dense_bytes for s in stats)
        read = sum(s.dual_bytes for s in stats)
        print(f"dual layers read {read / KIB:.1f} KiB of W and little modules per call, {100 * read / dense:.1f}% of dense ({dense / KIB:.1f} KiB)")
    for line in describe_budget(module.metadata):
        print(line)
    png = args.png or os.path.splitext(args.library)[0] + ".png"
    _plot(png, rows + [{"name": "other kernels", "target": 0.0, "observed": 0.0, "seconds": other}],
          f"{os.path.basename(args.library)}: {module.target}")
    print(f"wrote {png}")
    return 0
