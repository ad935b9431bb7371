"""Per-layer step time of a trained PTB recurrent layer: tvm_dual dual vs dense TVM vs PyTorch vs
ONNX Runtime, each timed in its own process, in rounds, side by side.

    .venv/bin/python scripts/bench_rnn_layer.py --model lstm-750 --ratios 0.1 0.3 0.5 0.7 0.9 --out docs/bench_lstm-750.json
    .venv/bin/python scripts/bench_rnn_layer.py --model lstm-750 --steps 35 --modes fused hoisted --ratios 0.5

--steps 1 times the one-token step (the streaming case); --steps 35 a 35-token sequence per call,
where the input projection can be hoisted (--modes compares that choice).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tvm_dual import ptb, rnn_bench


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="lstm-750")
    parser.add_argument("--ratios", type=float, nargs="+", default=[0.1, 0.3, 0.5, 0.7, 0.9])
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument("--modes", nargs="+", default=["auto"], choices=["auto", "fused", "hoisted"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=2.0, help="timed seconds per engine per round")
    parser.add_argument("--separate", action="store_true", help="one process per engine even at one thread")
    parser.add_argument("--folder", type=Path, default=None, help="where compiled variants go (default: the cache)")
    parser.add_argument("--skip-prepare", action="store_true", help="reuse the variants already in --folder")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    folder = args.folder or ptb.cache_dir().parent / "bench" / args.model
    if not args.skip_prepare:
        rnn_bench.prepare(args.model, args.ratios, folder, steps=args.steps, modes=tuple(args.modes))
    result = rnn_bench.measure(folder, args.steps, args.rounds, args.threads, args.seconds, interleave=not args.separate)
    fastest = result["fastest_dense"]
    print(f"\n{args.model}, {args.steps} step(s) per call, {args.threads} thread(s); fastest dense: {fastest}")
    print("| engine | ratio (observed) | median us/call | speedup vs fastest dense | W bytes read per step |")
    print("|---|---|---|---|---|")
    variants = result["manifest"]["variants"]
    for engine, seconds in result["median_s"].items():
        v = variants.get(engine, {})
        observed = f"{v['ratio']:g} ({v['observed_ratio']:.3f})" if "observed_ratio" in v else "0 (dense)"
        nbytes = f"{v['dual_bytes'] / 1e6:.2f} MB of {v['dense_bytes'] / 1e6:.2f}" if "dual_bytes" in v else ""
        print(f"| {engine} | {observed} | {1e6 * seconds:.1f} | {result['speedup_vs_fastest_dense'][engine]:.2f}x | {nbytes} |")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
