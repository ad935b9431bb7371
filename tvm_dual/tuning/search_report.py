"""The knob-search comparison in docs/BENCHMARKS.md: `tvm-dual tune --strategy both --report FILE`
runs the XGBoost-guided and the random search from nothing on each workload; this renders how
many trials each needed to come within 5% of the best time either found, and the best-so-far
curves."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

REACH = 0.95  # "reached": best / best-so-far >= REACH


def is_search_report(data: Any) -> bool:
    return isinstance(data, dict) and "runs" in data and "target" in data and "format" not in data


def best_so_far(history: list[float | None]) -> np.ndarray:
    """Best time after each trial (NaN until a trial succeeds)."""
    times = np.array([np.nan if t is None else t for t in history], dtype=float)
    return np.fmin.accumulate(times) if times.size else times


def trials_to_reach(history: list[float | None], best: float) -> int | None:
    curve = best_so_far(history)
    hits = np.nonzero(best / curve >= REACH)[0]
    return int(hits[0]) + 1 if hits.size else None


def _workloads(report: dict[str, Any]) -> dict[str, dict[str, dict]]:
    by_workload: dict[str, dict[str, dict]] = {}
    for run in report["runs"]:
        by_workload.setdefault(run["workload"], {})[run["strategy"]] = run
    return by_workload


def _verification(run: dict[str, Any]) -> str:
    """'0.97 (21/32), warm 1.12; 1.01 (14/32)': each finalist's paired ratios; '' in reports before them."""
    if "verification" not in run:
        return ""
    if not run["verification"]:
        return "none beat the defaults' median"
    cells = []
    for v in run["verification"]:
        cell = f"{v['ratio']:.3f} ({v['faster']}/{v['pairs']})"
        if len(v.get("by_measurer", {})) > 1:
            cell += " [" + ", ".join(f"{name} {ratio:.3f}" for name, ratio in v["by_measurer"].items()) + "]"
        if "warm_ratio" in v:
            cell += f", warm {v['warm_ratio']:.3f}"
        cells.append(cell)
    return "; ".join(cells)


def render_search(report: dict[str, Any], image: str | None, source: str) -> str:
    machine = report.get("machine") or {}
    lines = [
        f"## Knob search: XGBoost-guided vs random ({report['target']})",
        "",
        f"- **Machine:** {machine.get('cpu_model', 'not recorded')} (LLVM: {machine.get('llvm_cpu', '?')}), "
        f"{machine.get('cpus', '?')} CPUs{', VM (' + machine['hypervisor'] + ')' if machine.get('hypervisor') else ''}",
        f"- **Run:** {report.get('started', 'not recorded')} to {report.get('finished', 'not recorded')}",
        f"- **Command:** `{report.get('command') or '(not recorded)'}`; report `{source}`",
        "- Both searches start from nothing on the same workload, measured in the same run (cold cache, "
        "the tuner's measurer); each measures the untuned defaults first, so 1 trial to 95% means the "
        "defaults were already within 5% of the best. 'Trials to 95%': the "
        "first trial after which the search's best-so-far measurement is within 5% of the best time "
        "either search ended with (a median over its confirmation and verification measurements).",
        "- Tuned vs default, side by side: each finalist whose median beat the defaults' (three at most) "
        "was timed against the defaults in one process, alternating, in pairs of cold calls (in brackets, "
        "per measurer where it was also timed at other thread counts); the table gives its median tuned / "
        "default time over all the pairs and how many pairs it won, then, for a "
        "finalist that passed (median at most 0.95 and a one-sided sign test at 5%), the same timed warm. "
        "'Verdict': the search's schedule for the shape, a finalist that passed both or the defaults "
        "(schedules/README.md says what shipped after the checks outside the tuner). Blank: a report "
        "from before these columns (2026-12-04).",
        "",
        "| workload | strategy | trials | fastest single measurement µs | ended with (median) µs | trials to 95% "
        "| defaults (median) µs | finalists / defaults in pairs | verdict |",
        "|---|---|---:|---:|---:|---:|---:|---|---|",
    ]
    for key, runs in _workloads(report).items():
        best = min((r["best_time_s"] for r in runs.values() if r.get("best_time_s")), default=None)
        for strategy, run in runs.items():
            hit = trials_to_reach(run["history"], best) if best else None
            curve = best_so_far(run["history"])
            best_us = f"{1e6 * np.nanmin(curve):.1f}" if curve.size and not np.all(np.isnan(curve)) else ""
            reached = str(hit) if hit else f"not in {len(run['history'])}"
            ended = f"{1e6 * run['best_time_s']:.1f}" if run.get("best_time_s") else ""
            default = f"{1e6 * run['default_time_s']:.1f}" if run.get("default_time_s") else ""
            lines.append(f"| {key} | {strategy} | {len(run['history'])} | {best_us} | {ended} | {reached} | {default} "
                         f"| {_verification(run)} | {run.get('schedule', '')} |")
    lines.append("")
    if image:
        lines += [f"![knob search]({image})", ""]
    return "\n".join(lines)


def plot_search(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    workloads = _workloads(report)
    fig, axes = plt.subplots(1, len(workloads), figsize=(4.2 * len(workloads), 3.2), squeeze=False)
    for ax, (key, runs) in zip(axes[0], workloads.items()):
        for strategy, run in runs.items():
            curve = best_so_far(run["history"]) * 1e6
            ax.plot(np.arange(1, curve.size + 1), curve, label=strategy, drawstyle="steps-post")
        ax.set_title(key.split("/", 1)[-1], fontsize=9)
        ax.set_xlabel("trial")
        ax.set_ylabel("best so far (µs)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
