"""The benchmark suite: structure and validity of what it writes, never timing values."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import tvm_dual
from tvm_dual.bench import report, workloads
from tvm_dual.bench.bandwidth import COLD_READ
from tvm_dual.bench.engines import ENGINES, Engine
from tvm_dual.cli import main

CORE_ENGINES = ("numpy", "torch", "tvm-untuned", "tvm-dense", "tvm-dual")  # need only core dependencies


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """One smoke run of the whole suite (every engine that is installed), shared by the tests below."""
    out = tmp_path_factory.mktemp("bench_smoke")
    rc = main(["bench", "--smoke", "--out", str(out), "--ms-database", str(out / "no_database")])
    return rc, out


def test_smoke_run_writes_valid_json(smoke):
    rc, out = smoke
    assert rc == 0
    results = report.load_results(out / "results.json")
    assert results["errors"] == []
    assert results["machine"]["cpus"] >= 1 and results["machine"]["caches"]
    assert results["versions"]["torch"] and results["versions"]["apache-tvm"]
    assert "revision" in results["run"]["git"]
    engines = results["engines"]
    assert list(engines) == list(ENGINES)
    for name in CORE_ENGINES:
        assert engines[name]["status"] == "ok", (name, engines[name])
    for name, entry in engines.items():
        assert entry["status"] in ("ok", "skipped"), (name, entry)  # missing engines are skipped, never failed
        if entry["status"] == "skipped":
            assert entry["reason"]
    assert engines["tvm-ms"]["status"] == "skipped" and "no MetaSchedule tuning database" in engines["tvm-ms"]["reason"]

    measured = {(r["engine"], r["cache"]) for r in results["records"]}
    ok = [n for n, e in engines.items() if e["status"] == "ok"]
    assert measured == {(n, c) for n in ok for c in ("hot", "cold")}
    footprint = results["workload"]["footprint_bytes"]
    for r in results["records"]:
        assert r["threads"] == 1 and r["round"] == 0 and r["samples"] >= 10
        assert 0 < r["p10_us"] <= r["median_us"] <= r["p90_us"] and math.isfinite(r["median_us"])
        if r["engine"] in ("tvm-dual", "tvm-dual-default", "tvm-dual-kernel"):
            assert r["target_ratio"] == 0.5 and 0.0 <= r["observed_ratio"] <= 1.0
            assert 0 < r["bytes"] < footprint + 64 * 1024  # rows read x K x 4 + little module
            assert r["layers"][0]["name"] == "0"
        else:
            assert r["bytes"] == footprint
    assert {(b["label"], b["cold"]) for b in results["bandwidth"]} == {("working set", False), ("DRAM", False), (COLD_READ, True)}
    assert all(b["gbps"] > 0 for b in results["bandwidth"])

    checks = {c["engine"]: c for c in results["checks"]}
    assert set(checks) == set(ok)
    for name, check in checks.items():
        if not engines[name]["approximate"]:  # exact engines agree with PyTorch
            assert check["output_rel_error"] < 1e-4, (name, check)
    assert checks["tvm-dual"]["output_rel_error"] > 0

    summary = {(r["engine"], r["cache"]): r for r in results["summary"]}
    for cache in ("hot", "cold"):
        assert max(summary[(n, cache)]["speedup"] for n in ok if not engines[n]["approximate"]) == pytest.approx(1.0)
        assert 0 < summary[(ok[0], cache)]["of_limit"]
    assert all(0 < r["of_cold_read_limit"] for r in results["summary"] if r["cache"] == "cold")
    assert not any("cold_read_limit_us" in r for r in results["summary"] if r["cache"] == "hot")

    paired = {(r["baseline"], r["cache"]): r for r in results["paired"]}  # tvm-ms has no database here
    assert set(paired) == {(base, cache) for base in ("tvm-dense", "tvm-dense-kernel") for cache in ("hot", "cold")}
    for r in paired.values():
        assert len(r["ratios"]) >= 10 and all(x > 0 and math.isfinite(x) for x in r["ratios"])
        assert r["target_ratio"] == 0.5 and 0.0 <= r["observed_ratio"] <= 1.0


def test_smoke_run_writes_markdown_and_plots(smoke, tmp_path):
    _, out = smoke
    text = (out / "results.md").read_text()
    results = json.loads((out / "results.json").read_text())
    assert text.startswith("# Linear 64->128 + tanh, batch 1")
    for needle in ("**Streaming read bandwidth**", "**Hot cache, 1 thread**", "**Cold cache, 1 thread**",
                   "**Outputs vs PyTorch**", "| tvm-dual 0.50 |", "cold-read limit µs | % of it |", "![speedup](results_speedup.png)", "Check (issue 2)",
                   "**Paired, in one process**"):
        assert needle in text, needle
    for name, entry in results["engines"].items():
        assert entry["label"] in text
    for png in ("results_speedup.png", "results_quality.png"):
        data = (out / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000

    doc = tmp_path / "docs" / "BENCHMARKS.md"
    assert main(["bench", "--render", str(out / "results.json"), "--doc", str(doc)]) == 0
    rendered = doc.read_text()
    assert rendered.startswith("# Benchmarks") and "do not edit by hand" in rendered
    assert "## Linear 64->128 + tanh, batch 1" in rendered
    assert "results_speedup.png)" in rendered
    assert main(["bench", "--render", str(out / "results.json"), "--doc", str(doc)]) == 0
    assert doc.read_text() == rendered  # rendering is a pure function of the stored results


class _MissingEngine(Engine):
    name = "missing"
    label = "An engine that is not installed"
    modules = ("numpy", "no_such_module_for_tvm_dual_tests")


def test_missing_and_untuned_engines_are_skipped_with_a_note(tmp_path, monkeypatch):
    """prepare records why an engine cannot run instead of failing (runs in this process: no compiling)."""
    from tvm_dual.bench import smoke_settings, worker

    monkeypatch.setitem(ENGINES, "missing", _MissingEngine())
    settings = smoke_settings(engines=["missing", "tvm-ms", "numpy"], ms_database=str(tmp_path / "nothing"))
    worker.prepare({"settings": settings.to_dict(), "workdir": str(tmp_path)})
    prepared = json.loads((tmp_path / worker.PREPARED).read_text())
    engines = prepared["engines"]
    assert engines["missing"]["status"] == "skipped"
    assert "no_such_module_for_tvm_dual_tests not installed" in engines["missing"]["reason"]
    assert engines["tvm-ms"]["status"] == "skipped" and str(tmp_path / "nothing") in engines["tvm-ms"]["reason"]
    assert engines["numpy"]["status"] == "ok"
    inputs = worker.load_tuples(tmp_path / worker.TIMING_INPUTS)
    references = worker.load_tuples(tmp_path / worker.REFERENCE_OUTPUTS)
    assert len(inputs) == len(references) == 8 and inputs[0][0].shape == (1, 64) and references[0][0].shape == (1, 128)


def _record(engine, variant, us, **extra):
    return dict(engine=engine, variant=variant, threads=1, cache="hot", round=0, median_us=us, p10_us=us * 0.9,
                p90_us=us * 1.1, mean_us=us, min_us=us * 0.8, samples=100, bytes=1e6, **extra)


def _summary_fixture() -> dict:
    """Results of a made-up run: two exact engines and two dual ratios, hot cache, one thread."""
    engines = {
        "numpy": {"label": "numpy (BLAS)", "approximate": False, "status": "ok"},
        "tvm-dense": {"label": "TVM dense", "approximate": False, "status": "ok"},
        "tvm-dual": {"label": "tvm-dual", "approximate": True, "status": "ok"},
    }
    records = [
        _record("numpy", "", 100.0),
        _record("tvm-dense", "", 120.0),
        _record("tvm-dual", "r0.50", 60.0, target_ratio=0.5, observed_ratio=0.5),
        _record("tvm-dual", "r0.75", 40.0, target_ratio=0.75, observed_ratio=0.74),
    ]
    bandwidth = [{"label": "working set", "threads": 1, "bytes": 1 << 20, "gbps": 20.0, "round": 0}]
    return {"engines": engines, "records": records, "bandwidth": bandwidth}


def test_summary_speedups_and_limits_are_computed_within_the_run():
    rows = {(r["engine"], r["variant"]): r for r in report.summarize(_summary_fixture())}
    assert rows[("numpy", "")]["speedup"] == pytest.approx(1.0)
    assert rows[("tvm-dense", "")]["speedup"] == pytest.approx(100 / 120)
    assert rows[("tvm-dual", "r0.50")]["speedup"] == pytest.approx(100 / 60)
    assert rows[("tvm-dual", "r0.50")]["fastest_exact"] == "numpy (BLAS)"
    assert rows[("numpy", "")]["limit_us"] == pytest.approx(1e6 / 20e9 * 1e6)  # bytes / bandwidth
    assert rows[("numpy", "")]["of_limit"] == pytest.approx(50.0 / 100.0)
    (check,) = report.criterion(list(rows.values()))
    assert check["baseline"] == "numpy (BLAS)" and check["speedup"] == pytest.approx(100 / 60) and check["reached"]


def test_cold_rows_get_the_cold_read_limit_and_hot_rows_do_not():
    results = _summary_fixture()
    results["records"].append(dict(_record("tvm-dual", "r0.50", 80.0, target_ratio=0.5, observed_ratio=0.5), cache="cold", bytes=5e5))
    results["bandwidth"] += [
        {"label": "DRAM", "threads": 1, "bytes": 1 << 28, "gbps": 10.0, "round": 0, "cold": False},
        {"label": COLD_READ, "threads": 1, "bytes": 1 << 20, "gbps": 8.0, "round": 0, "cold": True},
    ]
    rows = {(r["engine"], r["variant"], r["cache"]): r for r in report.summarize(results)}
    cold = rows[("tvm-dual", "r0.50", "cold")]
    assert cold["limit_us"] == pytest.approx(5e5 / 10e9 * 1e6)  # the DRAM limit as before
    assert cold["cold_read_limit_us"] == pytest.approx(5e5 / 8e9 * 1e6)
    assert cold["of_cold_read_limit"] == pytest.approx(62.5 / 80.0)
    assert "cold_read_limit_us" not in rows[("tvm-dual", "r0.50", "hot")]


def test_criterion_checks_whole_calls_and_kernels_against_their_own_dense_builds():
    results = _summary_fixture()
    results["engines"]["tvm-dense-kernel"] = {"label": "TVM dense, kernels only", "approximate": False, "status": "ok"}
    results["engines"]["tvm-dual-kernel"] = {"label": "tvm-dual, kernels only", "approximate": True, "status": "ok"}
    results["records"] += [
        _record("tvm-dense-kernel", "", 90.0),
        _record("tvm-dual-kernel", "r0.50", 50.0, target_ratio=0.5, observed_ratio=0.5),
    ]
    checks = {c["level"]: c for c in report.criterion(report.summarize(results))}
    # whole calls ignore the kernel-only rows, which are faster than every whole-call engine
    assert checks["whole call"]["baseline"] == "numpy (BLAS)" and checks["whole call"]["speedup"] == pytest.approx(100 / 60)
    assert checks["kernels only"]["baseline"] == "TVM dense, kernels only"
    assert checks["kernels only"]["speedup"] == pytest.approx(90 / 50) and checks["kernels only"]["reached"]


def test_paired_timing_alternates_which_engine_goes_first_and_flushes_before_every_timed_call():
    from tvm_dual.bench.timing import TimingPlan, measure_paired

    events: list[str] = []
    plan = TimingPlan(warmup_s=0.0, budget_s=0.0, min_samples=4, max_samples=4)
    stats = measure_paired(
        (lambda x: events.append(f"a{x}"), [0, 1]), (lambda x: events.append(f"b{x}"), [0, 1]), plan,
        flush=lambda: events.append("flush"),
    )
    timed = events[6:]  # 3 warm-up rounds of both engines
    assert timed == ["flush", "a1", "flush", "b1", "flush", "b0", "flush", "a0",
                     "flush", "a1", "flush", "b1", "flush", "b0", "flush", "a0"]
    assert len(stats.ratios) == 4 and all(r > 0 for r in stats.ratios)
    events.clear()
    measure_paired((lambda x: events.append(f"a{x}"), [0, 1]), (lambda x: events.append(f"b{x}"), [0, 1]), plan)
    # hot: an untimed call on the other input before each timed one
    assert events[6:10] == ["a0", "a1", "b0", "b1"]


def test_paired_summary_pools_the_pairs_of_all_rounds():
    def rec(round_index: int, ratios: list[float]) -> dict:
        return {
            "level": "kernels only", "baseline": "tvm-dense-kernel", "contender": "tvm-dual-kernel", "target_ratio": 0.5,
            "threads": 1, "cache": "cold", "round": round_index, "ratios": ratios,
            "baseline_median_us": 100.0, "contender_median_us": 60.0, "observed_ratio": 0.5,
        }

    (row,) = report.paired_summary({"paired": [rec(0, [1.0, 1.2, 1.4]), rec(1, [2.0, 2.2])]})
    assert row["speedup"] == pytest.approx(1.4) and row["pairs"] == 5 and row["rounds"] == 2
    assert row["round_min"] == pytest.approx(1.2) and row["round_max"] == pytest.approx(2.1)


def test_bandwidth_check_prefers_kernels_alone_and_judges_on_the_summary_limit():
    results = _summary_fixture()  # working set 20 GB/s, 1e6 bytes: a 50 us bound
    checks = report.bandwidth_check(report.summarize(results))
    assert [(c["level"], c["reached"]) for c in checks] == [("whole call", False)]  # 50 / 60 us = 83%
    assert checks[0]["of_limit"] == pytest.approx(50 / 60)
    results["engines"]["tvm-dual-kernel"] = {"label": "tvm-dual, kernels only", "approximate": True, "status": "ok"}
    results["records"].append(_record("tvm-dual-kernel", "r0.50", 55.0, target_ratio=0.5, observed_ratio=0.5))
    (check,) = report.bandwidth_check(report.summarize(results))
    assert check["level"] == "kernels only" and check["of_limit"] == pytest.approx(50 / 55) and check["reached"]
    for r in results["records"]:
        r["bytes"] = -1.0  # a byte count that cannot be right has no bound to compare with
    assert report.bandwidth_check(report.summarize(results)) == []


# ---- workloads and the command line ----------------------------------------------------------


def test_criterion_counts_the_metaschedule_build_as_dense_tvm_at_both_levels():
    results = _summary_fixture()
    results["engines"]["tvm-ms"] = {"label": "TVM dense, MetaSchedule-tuned", "approximate": False, "status": "ok"}
    results["engines"]["tvm-dense-kernel"] = {"label": "TVM dense, kernels only", "approximate": False, "status": "ok"}
    results["engines"]["tvm-dual-kernel"] = {"label": "tvm-dual, kernels only", "approximate": True, "status": "ok"}
    results["records"] += [
        _record("tvm-ms", "", 80.0),
        _record("tvm-dense-kernel", "", 90.0),
        _record("tvm-dual-kernel", "r0.50", 50.0, target_ratio=0.5, observed_ratio=0.5),
    ]
    checks = {c["level"]: c for c in report.criterion(report.summarize(results))}
    for level, dual_us in (("whole call", 60.0), ("kernels only", 50.0)):
        assert checks[level]["baseline"] == "TVM dense, MetaSchedule-tuned"
        assert checks[level]["speedup"] == pytest.approx(80.0 / dual_us)
    assert checks["kernels only"]["reached"] and not checks["whole call"]["reached"]


def test_build_workload_converts_and_checks_parameters():
    w = workloads.build_workload("linear", {"k": "32", "n": "48", "act": "relu", "calibration_rows": "128", "timing_inputs": "3"})
    assert w.params["k"] == 32 and w.description == "Linear 32->48 + relu, batch 1"
    assert len(w.timing_inputs) == 3 and w.timing_inputs[0][0].shape == (1, 32)
    x = w.timing_inputs[0][0]
    with torch.no_grad():
        expected = w.model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(w.numpy_forward(x)[0], expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(workloads.WorkloadError, match="no parameter width"):
        workloads.build_workload("linear", {"width": "3"})
    with pytest.raises(workloads.WorkloadError, match="not a valid int"):
        workloads.build_workload("linear", {"k": "many"})
    with pytest.raises(workloads.WorkloadError, match="unknown workload"):
        workloads.build_workload("nope")


def tiny_factory():
    """A user model factory, as --model test_bench:tiny_factory would name it."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
    return model, (torch.randn(1, 8),), [(torch.randn(5, 8),), (torch.randn(3, 8),)]


def test_model_workload_takes_a_factory_import_path():
    w = workloads.build_workload("model", {"factory": "test_bench:tiny_factory"})
    assert w.description == "Sequential from test_bench:tiny_factory"
    assert len(w.timing_inputs) == 8 and all(x[0].shape == (1, 8) for x in w.timing_inputs)  # calibration split per row
    with pytest.raises(workloads.WorkloadError, match="package.module:function"):
        workloads.build_workload("model", {"factory": "no_colon"})
    with pytest.raises(workloads.WorkloadError, match="cannot import"):
        workloads.build_workload("model", {"factory": "no_such_module_xyz:f"})


def test_cli_errors_are_one_line_with_nonzero_exit(capsys):
    assert main(["bench", "--workload", "nope"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["tvm-dual bench: error: unknown workload 'nope'; known: linear, model, ptb_step, resnet20_fmnist"]
    assert main(["bench", "--param", "k"]) == 1
    assert "KEY=VALUE" in capsys.readouterr().err
    assert main(["bench", "--engines", "torch,nope", "--smoke"]) == 1
    assert "unknown engine 'nope'" in capsys.readouterr().err
    assert main(["bench", "--render", "does_not_exist.json"]) == 1
    assert "Traceback" not in capsys.readouterr().err
    assert main(["--verbose", "bench", "--render", "does_not_exist.json"]) == 1
    assert "Traceback" in capsys.readouterr().err
    assert main([]) == 2


def test_cli_help_and_list(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out and "--smoke" in out and "--model MODULE:FUNCTION" in out
    assert main(["bench", "--list"]) == 0
    out = capsys.readouterr().out
    assert "linear" in out and all(name in out for name in ENGINES)
    assert "ptb_lstm-750" in out  # the docs runs
    assert main(["bench", "--docs-run", "linear"]) == 1
    assert "give --docs too" in capsys.readouterr().err


# ---- kernel replay ---------------------------------------------------------------------------


def test_kernel_replay_computes_what_the_module_computes(tmp_path):
    from tvm_dual.bench.engines.kernel_replay import KernelReplay

    w = workloads.build_workload("linear", {"k": 48, "n": 96, "calibration_rows": 512, "timing_inputs": 4, "latent": 8})
    module = tvm_dual.compile_dual(w.model, w.example_inputs, calibration=w.calibration, insensitive_ratio=0.5)
    module.export_library(tmp_path / "dual.so")
    replay = KernelReplay(tmp_path / "dual.so", w.timing_inputs[0], outputs_index=0)
    outputs = []
    for x in w.timing_inputs[1:]:  # not the probe input: the timed inputs must replace it
        (y,) = [t.numpy() for t in replay.run(replay.bind(x))]
        np.testing.assert_array_equal(y, module(*x))
        outputs.append(y)
    assert not np.array_equal(outputs[0], outputs[1])


def test_kernel_replay_follows_reshaped_inputs_and_outputs(tmp_path):
    """The VM reshapes the input before the kernel and the kernel's result after it (vm.builtin.reshape,
    views): replayed on new inputs, the kernels must read the new input through the same view, and
    the output must be the reshaped kernel buffer."""
    from tvm_dual.bench.engines.kernel_replay import KernelReplay

    class Flatten(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(24, 16)

        def forward(self, x):
            return torch.tanh(self.fc(x.reshape(1, 24))).reshape(4, 4)

    torch.manual_seed(0)
    model = Flatten().eval()
    xs = [torch.randn(2, 12) for _ in range(3)]
    tvm_dual.compile_dual(model, (xs[0],), insensitive_ratio=0.0).export_library(tmp_path / "flat.so")
    replay = KernelReplay(tmp_path / "flat.so", (xs[0].numpy(),))
    for x in xs[1:]:
        (y,) = [t.numpy() for t in replay.run(replay.bind((x.numpy(),)))]
        with torch.no_grad():
            np.testing.assert_allclose(y, model(x).numpy(), atol=1e-5)


def test_an_engine_that_finds_it_runs_below_fp32_is_not_an_exact_baseline(tmp_path, monkeypatch):
    """OpenVINO's default precision is bf16 on CPUs with AVX-512 BF16: its prepare says so in the
    variant's info, and the run must then count it as approximate (not the fp32 speedup baseline)."""
    from tvm_dual.bench import worker
    from tvm_dual.bench.engines import Variant
    from tvm_dual.bench.settings import smoke_settings

    class ReducedPrecisionEngine(Engine):
        name, label = "reduced", "reduced precision"

        def prepare(self, context):
            return [Variant(info={"inference_precision": "bf16", "approximate": True})]

    class Fp32Engine(ReducedPrecisionEngine):
        name, label = "fp32", "fp32"

        def prepare(self, context):
            return [Variant(info={"inference_precision": "f32", "approximate": False})]

    monkeypatch.setitem(ENGINES, "reduced", ReducedPrecisionEngine())
    monkeypatch.setitem(ENGINES, "fp32", Fp32Engine())
    settings = smoke_settings(engines=["reduced", "fp32", "numpy"])
    worker.prepare({"settings": settings.to_dict(), "workdir": str(tmp_path)})
    engines = json.loads((tmp_path / worker.PREPARED).read_text())["engines"]
    assert engines["reduced"]["approximate"] is True
    assert engines["fp32"]["approximate"] is False and engines["numpy"]["approximate"] is False
