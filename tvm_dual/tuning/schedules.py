"""Distilled schedules: the best measured kernel knobs per (kernel shape, target), like TVM's old
TopHub. compile_dual looks layers up here by default; shapes never tuned get the untuned
defaults, and each layer's metadata says which it got.

A file `schedules/<target key>.json` holds {"format": 1, "target": ..., "entries": {shape key:
{"config": {...}, "time_s": ..., "workload": {...}, "measured": <records behind it>}}}.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tvm

from ..kernels.dual_dense import DualDenseShape, DualKernelConfig
from ..target import resolve_target
from .records import METHODS, WARM_OF, Record, check_method
from .space import config_from_dict
from .workload import DualWorkload, workload_from_dict

FORMAT = 1
# A tuned configuration replaces the defaults only if its median beats theirs by this much: the
# tuner's measurements of one configuration spread by 10-20%, so a smaller lead is mostly luck.
KEEP_MARGIN = 0.05
# Where the tuner verified its finalists in pairs against the defaults (tuner.py), only a finalist
# that passes beats_defaults replaces them: the medians of separately timed records let through
# finalists that side-by-side checks found 8-20% slower than the defaults on znver5 and 0.97-1.14x
# their time on znver3 (schedules/README.md).
VERIFY_P = 0.05
# A finalist that passed its cold pairs is then timed warm against the defaults (tuner.py) and is
# refused if its median warm ratio is above this: TVM's cold measurement (clflush of the arguments)
# leaves the TLB and page tables warm and never times back-to-back calls, and on znver4 it passed a
# Linear 1024->4096 entry that took 1.20 / 2.03x the defaults' time hot at 1 / 2 threads
# (schedules/README.md; the same had happened on znver5 and skylake-avx512, found by hand).
WARM_GUARD_RATIO = 1 + KEEP_MARGIN
TUNED_RATIO = 0.5  # of several tuned ratios of one shape, the schedule comes from the nearest to this
# The shipped schedules live next to the package (the repository's schedules/ directory);
# TVM_DUAL_SCHEDULES points elsewhere.
DEFAULT_DIR = Path(os.environ.get("TVM_DUAL_SCHEDULES", Path(__file__).resolve().parents[2] / "schedules"))


class ScheduleError(ValueError):
    """A schedule file that cannot be used."""


def target_key(target: tvm.target.Target) -> str:
    """Schedules are per CPU model: the -mcpu name ("znver3", "skylake-avx512"), or "generic"."""
    return str(target.attrs.get("mcpu") or "generic")


def shape_key(shape: DualDenseShape) -> str:
    return DualWorkload(shape.batch, shape.n, shape.k, shape.rank, shape.act).shape_key


@dataclass
class ScheduleEntry:
    config: DualKernelConfig
    time_s: float
    workload: DualWorkload  # or another kernel family's workload
    measured: int
    method: str = "warm"  # how its time was measured (records.METHODS); entries before it: warm


def _better(new: ScheduleEntry, old: ScheduleEntry | None) -> bool:
    """Times of different measurement methods are not comparable: the preferred method wins.
    Nor are times at different insensitive ratios (more skipped rows, less time): the ratio
    nearest TUNED_RATIO wins, then the lower time."""
    if old is None:
        return True
    if new.method != old.method:
        return METHODS.index(new.method) < METHODS.index(old.method)
    new_gap, old_gap = (abs(e.workload.ratio - TUNED_RATIO) for e in (new, old))
    if new_gap != old_gap:
        return new_gap < old_gap
    return new.time_s < old.time_s


def beats_defaults(ratios: Sequence[float]) -> bool:
    """Whether the tuned / default time ratios of verification pairs show the tuned configuration
    clearly faster: a median ratio of at most 1 - KEEP_MARGIN, and faster in so many of the pairs
    that a configuration no faster than the defaults would be so at most VERIFY_P of the time
    (one-sided sign test)."""
    if not ratios:
        return False
    n, wins = len(ratios), sum(r < 1 for r in ratios)
    chance = sum(math.comb(n, k) for k in range(wins, n + 1)) / 2**n
    return float(np.median(ratios)) <= 1 - KEEP_MARGIN and chance <= VERIFY_P


def loses_warm(ratios: Sequence[float]) -> bool:
    """Whether warm-guard pairs (tuned / default time, calls back to back) show the tuned
    configuration slower than the defaults by more than the noise margin."""
    return bool(ratios) and float(np.median(ratios)) > WARM_GUARD_RATIO


def distill(records: list[Record], target: str) -> dict[str, ScheduleEntry]:
    """Per shape key, for one target string, the configuration with the lowest median over its
    successful records (the minimum of single noisy measurements would reward the luckiest),
    from cold-cache records where a shape has any, and from the workload tuned nearest the
    headline ratio where a shape was tuned at several. A tuned configuration replaces the defaults
    only with a clear lead: where finalists were verified in pairs against the defaults, the
    fastest that passed beats_defaults and, where it has warm-guard pairs, not loses_warm; in
    older logs without pairs, a median KEEP_MARGIN below."""
    times: dict[tuple[str, str, DualKernelConfig], list[float]] = {}
    workloads: dict[tuple[str, str, DualKernelConfig], object] = {}
    counts: dict[tuple[str, str], int] = {}
    pairs: dict[tuple[str, str], dict[str, dict[DualKernelConfig, float]]] = {}
    for r in records:
        if r.target != target:
            continue
        key = r.workload.key  # shape and ratio
        counts[(key, r.method)] = counts.get((key, r.method), 0) + 1
        if r.time_s is not None:
            times.setdefault((key, r.method, r.config), []).append(r.time_s)
            workloads[(key, r.method, r.config)] = r.workload
            if r.pair is not None:
                pairs.setdefault((key, r.method), {}).setdefault(r.pair, {})[r.config] = r.time_s
    per_workload: dict[tuple[str, str], ScheduleEntry] = {}
    for (key, method, config), ts in times.items():
        entry = ScheduleEntry(config, float(np.median(ts)), workloads[(key, method, config)], counts[(key, method)], method)
        if _better(entry, per_workload.get((key, method))):
            per_workload[(key, method)] = entry
    defaults_target = resolve_target(target)
    best: dict[str, ScheduleEntry] = {}
    for (key, method), entry in per_workload.items():
        default = entry.workload.default_config(defaults_target)
        default_times = times.get((key, method, default), [])
        verified = paired_ratios(pairs.get((key, method), {}), default)
        warm_guard = paired_ratios(pairs.get((key, WARM_OF[method]), {}), default) if method in WARM_OF else {}
        if verified:
            passed = [c for c, ratios in verified.items() if beats_defaults(ratios) and not loses_warm(warm_guard.get(c, []))]
            choice = min(passed, key=lambda c: float(np.median(times[(key, method, c)]))) if passed else default
            entry = ScheduleEntry(
                choice, float(np.median(times[(key, method, choice)])), workloads[(key, method, choice)], entry.measured,
                method,
            )
        elif entry.config != default and len(default_times) >= 3:
            default_time = float(np.median(default_times))
            if entry.time_s > (1 - KEEP_MARGIN) * default_time:  # no clear lead: keep the defaults
                entry = ScheduleEntry(default, default_time, entry.workload, entry.measured, method)
        if _better(entry, best.get(entry.workload.shape_key)):
            best[entry.workload.shape_key] = entry
    return best


def paired_ratios(
    pairs: dict[str, dict[DualKernelConfig, float]], default: DualKernelConfig
) -> dict[DualKernelConfig, list[float]]:
    """Per configuration verified against `default`, its time / the default's in each pair."""
    out: dict[DualKernelConfig, list[float]] = {}
    for pair in pairs.values():
        if default in pair:
            for config, t in pair.items():
                if config != default:
                    out.setdefault(config, []).append(t / pair[default])
    return out


def _load(path: str | os.PathLike) -> dict:
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ScheduleError(f"{path}: not a readable schedule file ({type(err).__name__}: {err})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("entries"), dict):
        raise ScheduleError(f"{path}: not a tvm_dual schedule file of format {FORMAT}")
    return data


def _entries(path: str | os.PathLike, data: dict) -> dict[str, ScheduleEntry]:
    entries = {}
    for key, e in data["entries"].items():
        try:
            entries[key] = ScheduleEntry(
                config_from_dict(e["config"]), float(e["time_s"]), workload_from_dict(e["workload"], key.split("/")[0]),
                int(e["measured"]), check_method(e.get("method", "warm")),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise ScheduleError(f"{path}: entry {key!r} is malformed ({err})") from None
    return entries


def _withdrawn(path: str | os.PathLike, data: dict) -> dict[str, str]:
    """The file's "withdrawn" map: shape key -> why its tuned entry was taken out after a check
    outside the tuner (scripts/check_schedules.py, a benchmark)."""
    withdrawn = data.get("withdrawn", {})
    if not isinstance(withdrawn, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in withdrawn.items()):
        raise ScheduleError(f"{path}: 'withdrawn' must map shape keys to reasons")
    return withdrawn


def read_schedule_file(path: str | os.PathLike) -> dict[str, ScheduleEntry]:
    return _entries(path, _load(path))


def write_schedule_file(path: str | os.PathLike, target: str, entries: dict[str, ScheduleEntry]) -> None:
    """Merge `entries` (distilled from the records, which are the evidence) into the file: they
    replace the file's entries of the same shapes, except a cold-cache entry by a warm one. Shapes
    the file lists as withdrawn get no entry: the records that made them stay in the logs, and a
    later distillation would otherwise ship them again."""
    existing = _load(path) if os.path.exists(path) else {"entries": {}}
    merged, withdrawn = _entries(path, existing), _withdrawn(path, existing)
    for key, entry in entries.items():
        old = merged.get(key)
        if key not in withdrawn and (old is None or METHODS.index(entry.method) <= METHODS.index(old.method)):
            merged[key] = entry
    data = {
        "format": FORMAT,
        "target": target,
        **({"withdrawn": withdrawn} if withdrawn else {}),
        "entries": {
            key: {"config": e.config.to_dict(), "time_s": e.time_s, "workload": e.workload.to_dict(), "measured": e.measured,
                  "method": e.method}
            for key, e in sorted(merged.items())
        },
    }
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(data, f, indent=1, sort_keys=True)
        f.write("\n")


def schedule_path(target: tvm.target.Target, directory: str | os.PathLike | None = None) -> Path:
    return Path(directory or DEFAULT_DIR) / f"{target_key(target)}.json"


def lookup(
    shape: DualDenseShape | str, target: tvm.target.Target, schedules: str | os.PathLike | None = "default"
) -> tuple[DualKernelConfig | None, str]:
    """(tuned config, where from) or (None, why not), for a dense dual kernel shape or any
    workload's shape_key. schedules: "default", a file or directory, or None."""
    key = shape if isinstance(shape, str) else shape_key(shape)
    if schedules is None:
        return None, "default (schedules=None)"
    source = Path(schedules) if schedules != "default" else schedule_path(target)
    if source.is_dir():
        source = schedule_path(target, source)
    if not source.exists():
        if schedules != "default":
            raise ScheduleError(f"no schedule file at {source}")
        return None, f"default (no tuned schedules for {target_key(target)})"
    entry = read_schedule_file(source).get(key)
    if entry is None:
        return None, f"default (shape not tuned in {source.name})"
    return entry.config, f"tuned ({source.name}, {entry.measured} trials)"
