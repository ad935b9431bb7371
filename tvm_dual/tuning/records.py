"""Tuning records: one JSON object per line, every measured candidate, append-only.

A record: {"kernel", "workload" (key), "workload_params", "target", "config", "time_s" (median
seconds, null on failure), "error", "measurer", "method" (METHODS, MeasureOptions),
"tvm_version", "tvm_dual_version", "timestamp"}, and for a side of a verification pair "pair": an
id the pair's two records share (tuner.py; schedules.distill compares such records pair by pair).
"kernel" is the kernel family ("dual_dense", "dual_gates").
Reading is forgiving: a corrupt line, a record of an unknown kernel family or with unknown knobs is
skipped with one warning per file that says how many lines and why; a file that is not JSON lines
at all is an error.
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from collections import Counter
from dataclasses import dataclass

import tvm

from .._version import __version__ as TVM_DUAL_VERSION
from ..kernels.dual_dense import DualKernelConfig
from .space import config_from_dict
from .workload import DualWorkload, workload_from_dict


# How a record's time was measured (MeasureOptions.method), preferred first: "read-cold" and
# "rotate-warm" give every call another input, so another selection of rows, and "read-cold"
# evicts the caches by reading 128 MiB before each call, as the benchmarks time a stream of real
# inputs; "cold" (TVM's clflush of the arguments, one input) and "warm" (one input, back to back)
# are the older methods, still written over RPC, whose servers cannot rotate inputs.
METHODS = ("read-cold", "cold", "rotate-warm", "warm")
WARM_OF = {"read-cold": "rotate-warm", "cold": "warm"}  # the warm guard's method for a cold search


class TuningLogWarning(UserWarning):
    pass


class TuningLogError(ValueError):
    pass


@dataclass
class Record:
    workload: DualWorkload  # or another kernel family's workload (tuning/workload.py)
    target: str
    config: DualKernelConfig
    time_s: float | None
    error: str | None = None
    measurer: str = "local"
    method: str = "warm"  # MeasureOptions.method; records written before it existed are "warm"
    pair: str | None = None  # verification pair id (None: a measurement of its own)

    def to_json(self) -> str:
        return json.dumps(
            {
                "kernel": self.workload.kernel,
                "workload": self.workload.key,
                "workload_params": self.workload.to_dict(),
                "target": self.target,
                "config": self.config.to_dict(),
                "time_s": self.time_s,
                "error": self.error,
                "measurer": self.measurer,
                "method": self.method,
                "tvm_version": tvm.__version__,
                "tvm_dual_version": TVM_DUAL_VERSION,
                "timestamp": time.time(),
                **({"pair": self.pair} if self.pair is not None else {}),
            },
            sort_keys=True,
        )

    @staticmethod
    def from_json(line: str) -> "Record":
        d = json.loads(line)
        time_s = d["time_s"]
        if time_s is not None and not (
            isinstance(time_s, (int, float)) and not isinstance(time_s, bool) and 0 < time_s < math.inf
        ):
            raise ValueError(f"bad time {time_s!r}")
        if not isinstance(d["target"], str):
            raise ValueError(f"bad target {d['target']!r}")
        return Record(
            workload=workload_from_dict(d["workload_params"], d.get("kernel")),
            target=d["target"],
            config=config_from_dict(d["config"]),
            time_s=time_s,
            error=d.get("error"),
            measurer=d.get("measurer", "local"),
            method=check_method(d.get("method", "warm")),
            pair=_check_pair(d.get("pair")),
        )


def check_method(value) -> str:
    if value not in METHODS:
        raise ValueError(f"unknown measurement method {value!r}")
    return value


def _check_pair(value) -> str | None:
    if value is not None and not isinstance(value, str):
        raise ValueError(f"bad pair id {value!r}")
    return value


def append_records(path: str | os.PathLike, records: list[Record]) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "a") as f:
        for record in records:
            f.write(record.to_json() + "\n")


def read_records(path: str | os.PathLike) -> list[Record]:
    """All readable records of `path` (missing file: none)."""
    if not os.path.exists(path):
        return []
    records, skipped = [], Counter()
    with open(path, "rb") as f:
        raw = f.read()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise TuningLogError(f"{path}: not a tuning log (not UTF-8 text)") from None
    lines = [line for line in text.splitlines() if line.strip()]
    for line in lines:
        try:
            records.append(Record.from_json(line))
        except json.JSONDecodeError:
            skipped["not JSON"] += 1
        except (KeyError, TypeError, ValueError) as err:
            skipped[str(err).split(":")[0][:60] or type(err).__name__] += 1
    if lines and not records:
        raise TuningLogError(f"{path}: none of its {len(lines)} lines is a tvm_dual tuning record ({dict(skipped)})")
    if skipped:
        warnings.warn(
            f"{path}: skipped {sum(skipped.values())} of {len(lines)} lines that are not usable tvm_dual records "
            f"({', '.join(f'{n} x {why}' for why, n in skipped.items())})",
            TuningLogWarning,
            stacklevel=2,
        )
    return records
