"""Benchmark suite: the same as `tvm-dual bench` (see `tvm-dual bench --help` and tvm_dual/bench/).

    .venv/bin/python scripts/bench.py --smoke
    .venv/bin/python scripts/bench.py --docs      # regenerates docs/BENCHMARKS.md (make benchmarks)
"""

import sys

from tvm_dual.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
