"""Time every non-default entry of a schedule file against the untuned defaults, side by side.

The tuner picks the best of many noisy measurements, and its winner is often lucky; before a
schedule file ships, each tuned configuration should still beat the defaults when the two are
measured alternately, outside the search. This does that with the tuner's own measurer (a fresh
worker process, cold cache, inputs at the workload's ratio), at each thread count given.

    python scripts/check_schedules.py schedules/znver5.json
    python scripts/check_schedules.py schedules/skylake-avx512.json --target "llvm -mcpu=skylake-avx512" --threads 1 2

Prints, per entry and thread count, the median time of each and tuned / default (below 1: tuned
is faster).
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from tvm_dual.target import resolve_target
from tvm_dual.tuning.measure import LocalMeasurer, MeasureOptions
from tvm_dual.tuning.space import config_from_dict
from tvm_dual.tuning.workload import workload_from_dict


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("schedule_file")
    ap.add_argument("--target", default=None, help="default: the file's own target")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--alternations", type=int, default=4, help="measurements of each configuration")
    args = ap.parse_args()

    with open(args.schedule_file) as f:
        data = json.load(f)
    target = resolve_target(args.target or data["target"])
    for threads in args.threads:
        measurer = LocalMeasurer(target, MeasureOptions(cold=True), threads=threads)
        for key, entry in data["entries"].items():
            workload = workload_from_dict(entry["workload"], key.split("/")[0])
            tuned, default = config_from_dict(entry["config"]), workload.default_config(target)
            if tuned == default:
                print(f"{threads} thread(s) {key}: the defaults (nothing to compare)", flush=True)
                continue
            results = measurer.measure(workload, [tuned, default] * args.alternations)
            times = {
                name: [m.time_s for m in results[i::2] if m.time_s is not None] for i, name in enumerate(("tuned", "default"))
            }
            if not times["tuned"] or not times["default"]:
                print(f"{threads} thread(s) {key}: failed: {[m.error for m in results if m.error][:1]}", flush=True)
                continue
            t, d = (1e6 * float(np.median(times[n])) for n in ("tuned", "default"))
            print(f"{threads} thread(s) {key}: tuned {t:.1f} us, defaults {d:.1f} us -> {t / d:.2f}", flush=True)


if __name__ == "__main__":
    main()
