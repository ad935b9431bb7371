"""Time every non-default entry of a schedule file against the untuned defaults, side by side.

The tuner picks the best of many noisy measurements, and its winner is often lucky; before a
schedule file ships, each tuned configuration should still beat the defaults when the two are
measured alternately, outside the search. This does that with the tuner's own paired measurement
(both loaded in one worker process, alternating, cold cache, inputs at the workload's ratio) and
its rule (schedules.beats_defaults), at each thread count given: the tuner verifies at the thread
count it tuned at, a shipped schedule runs at every thread count.

    python scripts/check_schedules.py schedules/znver5.json
    python scripts/check_schedules.py schedules/skylake-avx512.json --target "llvm -mcpu=skylake-avx512" --threads 1 2

Prints, per entry and thread count, the median tuned / default time ratio over the pairs (below
1: tuned is faster), in how many pairs the tuned one was faster, and the rule's verdict; then the
same pairs timed warm (calls back to back) and the tuner's warm guard (schedules.loses_warm).
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from tvm_dual.target import resolve_target
from tvm_dual.tuning.measure import LocalMeasurer, MeasureOptions
from tvm_dual.tuning.schedules import beats_defaults, loses_warm
from tvm_dual.tuning.space import config_from_dict
from tvm_dual.tuning.workload import workload_from_dict


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("schedule_file")
    ap.add_argument("--target", default=None, help="default: the file's own target")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--pairs", type=int, default=32, help="alternations of the tuned configuration and the defaults")
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
            paired = measurer.measure_pair(workload, tuned, default, args.pairs)
            if paired.error:
                print(f"{threads} thread(s) {key}: failed: {paired.error}", flush=True)
                continue
            ratios = paired.ratios
            verdict = "beats the defaults" if beats_defaults(ratios) else "no clear lead"
            warm = measurer.measure_pair(workload, tuned, default, args.pairs, options=MeasureOptions(cold=False))
            if warm.error:
                warm_verdict = f"warm: failed: {warm.error}"
            else:
                warm_verdict = (f"warm {np.median(warm.ratios):.3f} "
                                f"({'slower: the tuner refuses it' if loses_warm(warm.ratios) else 'not slower'})")
            print(f"{threads} thread(s) {key}: tuned / defaults {np.median(ratios):.3f} (median of {len(ratios)} pairs, "
                  f"tuned faster in {sum(r < 1 for r in ratios)}): {verdict}; {warm_verdict}", flush=True)


if __name__ == "__main__":
    main()
