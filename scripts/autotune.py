"""Tune dual kernels for a target; see `python scripts/autotune.py --help` (same as `tvm-dual tune`)."""

import sys

from tvm_dual.tuning.cli import main

if __name__ == "__main__":
    sys.exit(main())
