"""Knob tuning of the dual kernel: records, resume, schedules picked up by compile_dual, RPC."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest
import torch
import tvm
import tvm_ffi

import tvm_dual
from tvm_dual.target import host_target, target_to_string, vector_bits
from tvm_dual.tuning import (
    DualWorkload,
    LocalMeasurer,
    MeasureOptions,
    RPCMeasurer,
    TuningLogError,
    TuningLogWarning,
    read_records,
    tune_dual_kernel,
)
from tvm_dual.tuning.cost_model import XGBCostModel
from tvm_dual.tuning.schedules import ScheduleError, distill, lookup, schedule_path, write_schedule_file
from tvm_dual.tuning.space import config_space

FAST = MeasureOptions(repeat=3, min_repeat_ms=2, warmup_ms=10)
WORKLOAD = DualWorkload(batch=1, n=200, k=96, rank=12, act="tanh", ratio=0.5)


def test_space_is_large_and_valid():
    space = config_space()
    assert len(space) > 1000
    assert len(set(space)) == len(space)


def test_cost_model_learns_a_ranking():
    rng = np.random.default_rng(0)
    x = rng.random((200, 5))
    t = np.exp(2 * x[:, 0] - x[:, 1])
    model = XGBCostModel()
    model.fit(x[:150], t[:150])
    predicted = model.predict(x[150:])
    assert np.corrcoef(np.log(predicted), np.log(t[150:]))[0, 1] > 0.9


def test_tune_resume_and_schedule_used_by_compile_dual(tmp_path):
    log = tmp_path / "dual.jsonl"
    measurer = LocalMeasurer(host_target(), FAST)
    first = tune_dual_kernel(WORKLOAD, measurer, trials=10, batch_size=5, log_path=log, progress=False, confirm_rounds=0,
                             verify_pairs=0)
    records = read_records(log)
    assert len(records) == 10 and len(first.history) == 10
    assert first.best_time_s is not None and all(r.error is None for r in records), [r.error for r in records]
    assert WORKLOAD.default_config(host_target()) in {r.config for r in records}  # measured against the defaults
    assert {r.measurer for r in records} == {f"local:{measurer.threads}t"} and measurer.threads >= 1
    # resuming measures only new candidates; then the fastest four and the default are measured
    # until each has three measurements, and a configuration's time is the median of its records;
    # last the finalists whose medians beat the default's are timed against it in pairs
    second = tune_dual_kernel(WORKLOAD, measurer, trials=3, batch_size=3, log_path=log, progress=False, verify_pairs=8)
    records = read_records(log)
    assert second.resumed == 10 and len(second.history) == 3 and len(records) >= 13 + 2 * 4
    assert len({r.config for r in records}) == 13
    default = WORKLOAD.default_config(host_target())
    paired = [r for r in records if r.pair is not None and r.method == "read-cold"]
    assert all(r.error is None for r in paired), [r.error for r in paired]
    verified = {r.config for r in paired} - {default}
    assert len(verified) <= 3 and len(paired) == 2 * 8 * len(verified)  # 8 pairs per finalist, each with the default
    # a finalist that passed them was then timed warm against the default, 8 pairs too
    guarded = {r.config for r in records if r.pair is not None and r.method == "rotate-warm"} - {default}
    assert guarded <= verified and len([r for r in records if r.method == "rotate-warm"]) == 2 * 8 * len(guarded)
    assert second.schedule == default or second.schedule in verified  # only a verified finalist replaces the defaults
    best_times = [r.time_s for r in read_records(log) if r.config == second.best_config and r.method == "read-cold"]
    assert len(best_times) >= 3 and second.best_time_s == pytest.approx(float(np.median(best_times)))

    target = target_to_string(host_target())
    entries = distill(read_records(log), target)
    write_schedule_file(schedule_path(host_target(), tmp_path), target, entries)
    model = torch.nn.Sequential(torch.nn.Linear(96, 200), torch.nn.Tanh()).eval()
    calibration = [torch.randn(64, 96) for _ in range(4)]
    little = tvm_dual.LittleConfig(rank=12)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", tvm_dual.DualCompileWarning)
        tuned = tvm_dual.compile_dual(model, (torch.randn(1, 96),), calibration=calibration, little=little, schedules=tmp_path)
        untuned = tvm_dual.compile_dual(model, (torch.randn(1, 96),), calibration=calibration, little=little, schedules=None)
    layer = tuned.metadata["layers"][0]
    assert layer["schedule_source"].startswith("tuned")
    assert entries[WORKLOAD.shape_key].config == second.schedule  # the best if its pairs beat the defaults, else they
    assert layer["kernel"] == second.schedule.to_dict()
    assert untuned.metadata["layers"][0]["schedule_source"].startswith("default")
    for x in torch.randn(20, 1, 96):
        # same little module and thresholds, different knobs: the same dual computation
        assert (tuned(x) - untuned(x)).abs().max() < 1e-3
    assert abs(tuned.stats()[0].observed_ratio - 0.5) < 0.15


def test_the_defaults_are_measured_even_where_the_space_lacks_them(tmp_path):
    # the defaults' spans (dual_dense.default_blocks_per_span) once fell outside the knob grid, and
    # a tuning run then never measured them: its best shipped unchallenged
    default = WORKLOAD.default_config(host_target())
    space = [c for c in config_space() if c != default][:5]
    tune_dual_kernel(WORKLOAD, LocalMeasurer(host_target(), FAST), trials=2, batch_size=2, space=space,
                     log_path=tmp_path / "log.jsonl", progress=False, confirm_rounds=0, verify_pairs=0)
    assert default in {r.config for r in read_records(tmp_path / "log.jsonl")}
    assert default in config_space()


@torch.no_grad()
def test_gate_kernel_tuning_and_schedule_used_by_compile_dual(tmp_path):
    from tvm_dual.tuning.gate_workload import GateWorkload

    hidden, inputs, rank = 24, 13, 8
    workload = GateWorkload("gru", 1, hidden, inputs, rank, fused=True, ratio=0.5)
    log = tmp_path / "gates.jsonl"
    result = tune_dual_kernel(workload, LocalMeasurer(host_target(), FAST), trials=4, batch_size=4, log_path=log,
                              progress=False, confirm_rounds=0, verify_pairs=0)
    records = read_records(log)
    assert len(records) == 4 and all(r.error is None for r in records), [r.error for r in records]
    assert all(isinstance(r.workload, GateWorkload) for r in records)
    assert all(json.loads(line)["kernel"] == "dual_gates" for line in log.read_text().splitlines())
    target = target_to_string(host_target())
    write_schedule_file(schedule_path(host_target(), tmp_path), target, distill(records, target))

    torch.manual_seed(0)
    cell = torch.nn.GRUCell(inputs, hidden).eval()
    calibration = [(torch.randn(1, inputs), torch.randn(1, hidden).tanh()) for _ in range(300)]
    example = calibration[0]
    options = dict(calibration=calibration, insensitive_ratio=0.5, little=tvm_dual.LittleConfig(rank=rank))
    tuned = tvm_dual.compile_dual(cell, example, schedules=tmp_path, **options)
    untuned = tvm_dual.compile_dual(cell, example, schedules=None, **options)
    (layer,) = tuned.metadata["layers"]
    assert layer["schedule_source"].startswith("tuned") and layer["kernel"] == result.best_config.to_dict()
    assert untuned.metadata["layers"][0]["schedule_source"].startswith("default")
    for x, h in calibration[:20]:
        assert (tuned(x, h) - untuned(x, h)).abs().max() < 1e-4


def test_times_at_different_ratios_are_not_compared():
    """A shape tuned at 0.9 and at 0.5: the 0.9 run's times are all lower (fewer rows computed), so
    comparing across ratios would let any 0.9 record win; the schedule comes from the 0.5 run."""
    import dataclasses

    from tvm_dual.tuning.records import Record

    target = target_to_string(host_target())
    at_half, at_09 = WORKLOAD, dataclasses.replace(WORKLOAD, ratio=0.9)
    best_at_half, other = config_space()[:2]
    records = [Record(at_09, target, other, 1e-5, method="cold")] + [
        Record(at_half, target, best_at_half, 5e-4, method="cold"), Record(at_half, target, other, 6e-4, method="cold"),
    ]
    entry = distill(records, target)[WORKLOAD.shape_key]
    assert entry.config == best_at_half and entry.workload.ratio == 0.5 and entry.measured == 2


def test_the_defaults_stay_unless_a_tuned_configuration_clearly_beats_them():
    from tvm_dual.tuning.records import Record
    from tvm_dual.tuning.schedules import KEEP_MARGIN

    target = target_to_string(host_target())
    default = WORKLOAD.default_config(host_target())
    rival = next(c for c in config_space() if c != default)

    def best(lead: float):
        records = [Record(WORKLOAD, target, default, t, method="cold") for t in (1.00e-4, 1.02e-4, 0.98e-4)]
        records += [Record(WORKLOAD, target, rival, 1e-4 * (1 - lead), method="cold") for _ in range(3)]
        return distill(records, target)[WORKLOAD.shape_key]

    assert best(KEEP_MARGIN / 2).config == default  # faster, but by less than the margin
    entry = best(2 * KEEP_MARGIN)
    assert entry.config == rival and entry.time_s == pytest.approx(1e-4 * (1 - 2 * KEEP_MARGIN))


def test_a_finalist_replaces_the_defaults_only_if_it_beats_them_in_pairs():
    from tvm_dual.tuning.records import Record
    from tvm_dual.tuning.schedules import beats_defaults

    assert beats_defaults([0.9] * 32) and beats_defaults([0.9] * 24 + [1.05] * 8)
    assert not beats_defaults([0.99] * 32)  # always faster, by less than the margin
    assert not beats_defaults([0.5] * 10 + [1.1] * 6)  # a large median lead from 10 of 16 pairs: a coin does that
    assert not beats_defaults([])

    target = target_to_string(host_target())
    default = WORKLOAD.default_config(host_target())
    lucky, real = [c for c in config_space() if c != default][:2]
    # separately timed, the lucky one has by far the best median
    records = [Record(WORKLOAD, target, c, t, method="cold") for c, t in ((default, 1e-4), (lucky, 0.6e-4), (real, 0.9e-4))
               for _ in range(3)]

    def pairs(config, ratios, tag):
        return [Record(WORKLOAD, target, c, t, method="cold", pair=f"{tag}:{i}")
                for i, r in enumerate(ratios) for c, t in ((config, 1e-4 * r), (default, 1e-4))]

    records += pairs(lucky, [0.97, 1.02, 1.01] * 8, "a")
    assert distill(records, target)[WORKLOAD.shape_key].config == default  # verified, it failed; nothing passed
    records += pairs(real, [0.9] * 20 + [1.02] * 4, "b")
    entry = distill(records, target)[WORKLOAD.shape_key]
    assert entry.config == real and entry.time_s == pytest.approx(0.9e-4)
    # the pair ids survive the log's JSON
    assert Record.from_json(records[-1].to_json()).pair == "b:23" and "pair" not in json.loads(records[0].to_json())
    # timed warm against the defaults, a passing finalist that is slower there is refused
    warm = [Record(WORKLOAD, target, c, t, method="warm", pair=f"w:{i}")
            for i in range(16) for c, t in ((real, 1.2e-5), (default, 1e-5))]
    assert distill(records + warm, target)[WORKLOAD.shape_key].config == default
    warm_ok = [Record(WORKLOAD, target, c, t, method="warm", pair=f"v:{i}")
               for i in range(16) for c, t in ((real, 1.03e-5), (default, 1e-5))]
    assert distill(records + warm_ok, target)[WORKLOAD.shape_key].config == real  # within the noise margin


def test_cold_cache_times_are_not_compared_with_warm_ones(tmp_path):
    from tvm_dual.tuning.records import Record
    from tvm_dual.tuning.schedules import ScheduleEntry

    target, key = host_target(), WORKLOAD.shape_key
    slow_cold, fast_warm = config_space()[:2]
    # distill prefers cold-cache records to faster warm ones, and takes medians, not minima
    tstr = target_to_string(target)
    records = [Record(WORKLOAD, tstr, fast_warm, 1e-4, method="warm")] + [
        Record(WORKLOAD, tstr, slow_cold, t, method="cold") for t in (5e-4, 6e-4, 7e-4)
    ]
    entry = distill(records, tstr)[key]
    assert entry.config == slow_cold and entry.method == "cold" and entry.time_s == pytest.approx(6e-4)
    # a schedule file keeps a cold entry against a warm one, whatever their times
    path = schedule_path(target, tmp_path)
    write_schedule_file(path, "t", {key: entry})
    write_schedule_file(path, "t", {key: ScheduleEntry(fast_warm, 1e-4, WORKLOAD, 1, "warm")})
    assert lookup(WORKLOAD.shape, target, tmp_path)[0] == slow_cold
    # records written before the field existed are warm
    old = json.loads(records[0].to_json())
    del old["method"]
    assert Record.from_json(json.dumps(old)).method == "warm"


def test_withdrawn_shapes_stay_out_when_the_records_are_distilled_again(tmp_path):
    from tvm_dual.tuning.schedules import ScheduleEntry

    target, key = host_target(), WORKLOAD.shape_key
    tuned = next(c for c in config_space() if c != WORKLOAD.default_config(target))
    path = schedule_path(target, tmp_path)
    path.write_text(json.dumps({"format": 1, "target": "t", "withdrawn": {key: "slower in the benchmark"}, "entries": {}}))
    write_schedule_file(path, "t", {key: ScheduleEntry(tuned, 1e-4, WORKLOAD, 5, "cold")})
    config, source = lookup(WORKLOAD.shape, target, tmp_path)
    assert config is None and "shape not tuned" in source
    assert json.loads(path.read_text())["withdrawn"] == {key: "slower in the benchmark"}
    path.write_text(json.dumps({"format": 1, "target": "t", "withdrawn": ["not", "a", "map"], "entries": {}}))
    with pytest.raises(ScheduleError, match="'withdrawn' must map"):
        write_schedule_file(path, "t", {})


def test_untuned_shape_falls_back_to_defaults(tmp_path):
    target = host_target()
    write_schedule_file(schedule_path(target, tmp_path), "t", {})
    config, source = lookup(WORKLOAD.shape, target, tmp_path)
    assert config is None and "shape not tuned" in source


def test_corrupt_and_foreign_logs(tmp_path):
    good = tmp_path / "mixed.jsonl"
    measurer = LocalMeasurer(host_target(), FAST)
    tune_dual_kernel(WORKLOAD, measurer, trials=2, batch_size=2, log_path=good, progress=False, confirm_rounds=0, verify_pairs=0)
    with open(good, "a") as f:
        f.write("{not json\n")
        f.write(json.dumps({"kernel": "conv2d_nchw", "workload": "x"}) + "\n")
        f.write(json.dumps({"input": "autotvm record"}) + "\n")
    with pytest.warns(TuningLogWarning, match="skipped 3 of 5 lines"):
        assert len(read_records(good)) == 2
    foreign = tmp_path / "foreign.jsonl"
    foreign.write_text(json.dumps({"input": ["llvm", "dense"], "result": [[0.1]]}) + "\n")
    with pytest.raises(TuningLogError, match="none of its 1 lines is a tvm_dual tuning record"):
        read_records(foreign)
    binary = tmp_path / "binary.jsonl"
    binary.write_bytes(bytes(range(256)))
    with pytest.raises(TuningLogError, match="not UTF-8"):
        read_records(binary)
    broken = tmp_path / "znver3.json"
    broken.write_text("{")
    with pytest.raises(ScheduleError, match="not a readable schedule file"):
        lookup(WORKLOAD.shape, host_target(), broken)


def test_records_with_impossible_values_are_skipped(tmp_path):
    """A record must not carry a knob of the wrong type, an impossible shape or ratio, or a time that
    is not a positive finite number: the best of them would be written to a schedule file, and a
    string prefetch or a fractional task count then failed every compile of the shape inside TVM."""
    log = tmp_path / "log.jsonl"
    tune_dual_kernel(WORKLOAD, LocalMeasurer(host_target(), FAST), trials=1, batch_size=1, log_path=log, progress=False,
                     confirm_rounds=0, verify_pairs=0)
    good = json.loads(log.read_text().splitlines()[0])
    bad = [
        {"config": {**good["config"], "prefetch": "no"}},
        {"config": {**good["config"], "tasks": 1.5}},
        {"workload_params": {**good["workload_params"], "n": -5}},
        {"workload_params": {**good["workload_params"], "ratio": 7}},
        {"time_s": float("inf")},
        {"time_s": True},
        {"target": {"a": 1}},
    ]
    with open(log, "a") as f:
        for change in bad:
            f.write(json.dumps({**good, **change}) + "\n")
    with pytest.warns(TuningLogWarning, match=f"skipped {len(bad)} of {len(bad) + 1} lines") as warned:
        assert len(read_records(log)) == 1
    message = str(warned[0].message)
    for reason in ("prefetch must be a bool", "tasks must be an int", "sizes must be positive", "ratio must be a number", "bad time"):
        assert reason in message, message


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def rpc_tracker():
    """A TVM RPC tracker and one server on loopback, as a fleet of one."""
    port = _free_port()
    env = dict(os.environ, TVM_NUM_THREADS="1")
    tracker = subprocess.Popen(
        [sys.executable, "-m", "tvm.exec.rpc_tracker", "--host", "127.0.0.1", "--port", str(port), "--port-end", str(port + 1)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    server = None
    try:
        deadline = time.time() + 120  # both start slowly on a loaded machine
        while time.time() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.2)
        server_port = _free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "tvm.exec.rpc_server", "--host", "127.0.0.1", "--port", str(server_port),
             "--port-end", str(server_port + 1), "--tracker", f"127.0.0.1:{port}", "--key", "loopback"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )
        import tvm.rpc

        while time.time() < deadline:
            try:
                summary = tvm.rpc.connect_tracker("127.0.0.1", port).summary()
                if any(q.get("free", 0) for q in summary.get("queue_info", {}).values()):
                    break
            except Exception:
                pass
            time.sleep(0.3)
        else:
            pytest.fail("the RPC server did not register with the tracker within 120 s")
        yield port
    finally:
        # whole process groups: the server's session workers (popen_worker) outlive a terminated server
        for proc in (server, tracker):
            if proc is not None:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=30)


def test_rpc_measurement_on_loopback(rpc_tracker, tmp_path):
    measurer = RPCMeasurer(host_target(), "127.0.0.1", rpc_tracker, "loopback", parallel=1, options=FAST)
    result = tune_dual_kernel(WORKLOAD, measurer, trials=2, batch_size=2, log_path=tmp_path / "rpc.jsonl", progress=False,
                              confirm_rounds=0, verify_pairs=0)
    records = read_records(tmp_path / "rpc.jsonl")
    assert len(records) == 2
    assert all(r.error is None and r.time_s > 0 for r in records), [r.error for r in records]
    assert all(r.measurer.startswith("rpc:loopback@127.0.0.1") for r in records)
    assert result.best_time_s == min(r.time_s for r in records)
    paired = measurer.measure_pair(WORKLOAD, records[0].config, records[1].config, pairs=2)
    assert paired.error is None and len(paired.times_s) == 2 and min(min(p) for p in paired.times_s) > 0, paired.error


def test_search_report_counts_trials_to_95_percent_and_renders_into_the_benchmarks_doc(tmp_path):
    from tvm_dual.bench.report import render_document
    from tvm_dual.tuning.search_report import best_so_far, trials_to_reach

    assert list(best_so_far([3.0, None, 2.0, 2.5])) == [3.0, 3.0, 2.0, 2.0]
    assert trials_to_reach([3.0, 1.04, 1.0], best=1.0) == 2  # within 5% counts
    assert trials_to_reach([3.0, 1.06], best=1.0) is None
    report = {
        "target": "llvm -mcpu=test", "command": "tvm-dual tune --strategy both", "started": "s", "finished": "f",
        "machine": {"cpu_model": "CPU", "llvm_cpu": "test", "cpus": 2},
        "runs": [
            {"workload": "dual_dense/w@0.5", "strategy": "xgb", "history": [5e-5, 2e-5, 1e-5], "best_time_s": 1e-5, "resumed": 0},
            {"workload": "dual_dense/w@0.5", "strategy": "random", "history": [5e-5, None, 3e-5, 2e-5], "best_time_s": 2e-5, "resumed": 0,
             "default_time_s": 5e-5, "schedule": "tuned",
             "verification": [{"config": {}, "pairs": 32, "ratio": 1.01, "faster": 14, "passed": False},
                              {"config": {}, "pairs": 32, "ratio": 0.9, "faster": 30, "passed": True, "warm_ratio": 0.98}]},
        ],
    }
    path = tmp_path / "tuning" / "search.json"
    path.parent.mkdir()
    path.write_text(json.dumps(report))
    text = render_document([path], tmp_path / "BENCHMARKS.md")
    assert "| dual_dense/w@0.5 | xgb | 3 | 10.0 | 10.0 | 3 |  |  |  |" in text  # a report from before the pairs column
    assert ("| dual_dense/w@0.5 | random | 4 | 20.0 | 20.0 | not in 4 | 50.0 "
            "| 1.010 (14/32); 0.900 (30/32), warm 0.980 | tuned |") in text
    assert "`tvm-dual tune --strategy both`" in text and "![knob search](tuning/search.png)" in text
    assert path.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_check_schedules_times_a_tuned_entry_against_the_defaults(tmp_path):
    from tvm_dual.tuning.schedules import ScheduleEntry

    target = host_target()
    default = WORKLOAD.default_config(target)
    tuned = next(c for c in config_space() if c != default)
    path = schedule_path(target, tmp_path)
    write_schedule_file(path, target_to_string(target), {WORKLOAD.shape_key: ScheduleEntry(tuned, 1e-5, WORKLOAD, 3, "cold")})
    script = os.path.join(os.path.dirname(__file__), "..", "scripts", "check_schedules.py")
    done = subprocess.run([sys.executable, script, str(path), "--threads", "1", "--pairs", "3"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    (line,) = [l for l in done.stdout.splitlines() if WORKLOAD.shape_key in l]
    assert line.startswith("1 thread(s)") and "tuned / defaults" in line and "median of 3 pairs" in line
    assert "no clear lead; warm " in line  # three pairs can never pass the sign test
    assert line.endswith(("(not slower)", "(slower: the tuner refuses it)"))


def test_metaschedule_tunes_the_legalized_dense_layers():
    # `tvm-dual tune --dense` once handed tune_relax the imported module, in which MetaSchedule finds
    # no task ("No tasks to tune"); the module it tunes must hold the dense layer as a task
    from tvm.s_tir import meta_schedule as ms

    from tvm_dual.frontend import import_model
    from tvm_dual.tuning.dense_metaschedule import dense_tuning_module

    model = torch.nn.Sequential(torch.nn.Linear(24, 40), torch.nn.Tanh()).eval()
    imported = import_model(model, (torch.randn(1, 24),))
    target = host_target()
    assert not ms.relax_integration.extract_tasks(imported.mod, target)
    tasks = ms.relax_integration.extract_tasks(dense_tuning_module(imported.mod, target, gemv_template=False), target)
    # and it must be the PrimFunc the lowering pipeline compiles, whose tanh LegalizeFastActivations
    # made rational: a record for TVM's tanh never matched it (the bench ran the dlight fallback, 17 ms)
    assert [t.task_name for t in tasks] == ["fused_matmul_add_fast_tanh"]


def test_a_metaschedule_database_is_applied_without_tvms_creation_warning(tmp_path, capfd):
    """compile_dual and the benchmark's MetaSchedule build hand the lowering pipeline a database
    folder. A record in it must schedule its PrimFunc (here a distinctive split of the output loop
    into 8 x 5), and TVM must not log "Creating JSONDatabase" on every compile, as it does when
    MetaScheduleApplyDatabase opens the folder itself."""
    from tvm import s_tir
    from tvm.s_tir import meta_schedule as ms

    from tvm_dual.frontend import import_model
    from tvm_dual.transform.pipeline import lowering_pipeline, rewrite_passes
    from tvm_dual.tuning.dense_metaschedule import dense_tuning_module

    model = torch.nn.Sequential(torch.nn.Linear(24, 40), torch.nn.Tanh()).eval()
    imported = import_model(model, (torch.randn(1, 24),))
    target = host_target()
    (task,) = ms.relax_integration.extract_tasks(dense_tuning_module(imported.mod, target, gemv_template=False), target)
    func = task.dispatched[0]
    sch = s_tir.Schedule(func)
    _, outputs, _ = sch.get_loops(sch.get_sblock("matmul"))
    sch.split(outputs, factors=[None, 5])
    database = ms.database.JSONDatabase(work_dir=str(tmp_path))
    database.commit_tuning_record(ms.database.TuningRecord(
        sch.trace, database.commit_workload(func), run_secs=[1e-6], target=target,
        args_info=ms.arg_info.ArgInfo.from_prim_func(func["main"]),
    ))
    mod = tvm.transform.Sequential(rewrite_passes(None, report_counters=False, gemv_template=False))(imported.mod)
    capfd.readouterr()

    def scripts(database_dir):
        lowered = lowering_pipeline(target, database_dir)(mod)
        return "\n".join(f.script() for f in lowered.functions.values() if isinstance(f, tvm.tirx.PrimFunc))

    split = "T.grid(T.int64(1), T.int64(8), T.int64(5)"
    assert split in scripts(tmp_path) and split not in scripts(None)
    assert "Creating JSONDatabase" not in capfd.readouterr().err


def test_dense_tuning_of_a_gate_workload_tunes_the_benchmarks_layer_step():
    """`tvm-dual tune --dense --shapes ptb750` tunes the PTB layer step the benchmark's tvm-ms engine
    compiles (ptb.LayerStep): a random-weight model of the shape must give the trained model's
    tasks, which take the weights as arguments."""
    from tvm.s_tir import meta_schedule as ms

    from tvm_dual import ptb
    from tvm_dual.frontend import import_model
    from tvm_dual.tuning.cli import dense_models, gate_workload
    from tvm_dual.tuning.dense_metaschedule import dense_tuning_module

    target = host_target()

    def tasks(model, inputs) -> list:
        module = dense_tuning_module(import_model(model, inputs).mod, target, gemv_template=False)
        return [(t.task_name, tvm_ffi.structural_hash(t.dispatched[0])) for t in ms.relax_integration.extract_tasks(module, target)]

    ((name, model, inputs),) = dense_models([gate_workload("gru", 24, 24, 0.5), gate_workload("gru", 24, 24, 0.3)], None)
    assert name == "gru-24 layer step" and isinstance(model, ptb.LayerStep)
    config = ptb.LMConfig(cell="gru", hidden=24, vocab=50)
    torch.manual_seed(3)
    trained_like = ptb.LayerStep(ptb.WordLM(config))
    assert tasks(model, inputs) == tasks(trained_like, ptb.step_inputs(config, layer=True))
    with pytest.raises(SystemExit, match="input size = hidden"):
        dense_models([gate_workload("lstm", 24, 16, 0.5)], None)


def test_the_reference_check_that_every_candidate_passes_before_it_is_timed():
    """measure._load_checked runs each candidate on the workload's inputs and refuses it, with the
    reason in its record, unless check_outputs passes: a kernel's true outputs pass, and wrong
    values in 5% of the outputs, or a row count off by more than threshold ties explain, do not."""
    from tvm_dual.tuning.workload import check_outputs

    target = host_target()
    bits = vector_bits(target)
    w = DualWorkload(1, 200, 64, 8, "tanh", 0.5)
    config = w.default_config(target)
    kernel = tvm.compile(tvm.IRModule({"main": w.primfunc(config, bits)}), target=target)["main"]
    arrays, expected = w.arguments(config, bits)
    tensors = [tvm.runtime.tensor(a, tvm.cpu()) for a in arrays]
    kernel(*tensors)
    y, rows = w.result([t.numpy() for t in tensors[-w.outputs :]])
    assert check_outputs(y, rows, expected, w.rows) is None
    wrong = y.copy()
    wrong.reshape(-1)[::20] += 0.5
    assert "5.0% of outputs differ from the reference" == check_outputs(wrong, rows, expected, w.rows)
    assert f"the reference reads {expected['rows']}" in check_outputs(y, rows + 5, expected, w.rows)


def test_a_configuration_paired_with_itself_is_an_error_not_a_worker_crash():
    measurer = LocalMeasurer(host_target(), FAST)
    default = WORKLOAD.default_config(host_target())
    paired = measurer.measure_pair(WORKLOAD, default, default, pairs=2)
    assert paired.times_s == [] and "paired with itself" in paired.error


def test_every_timed_call_gets_the_next_input_and_a_cold_one_evicted_caches():
    """The tuner times a stream of inputs, as the benchmarks do: TVM's f_preproc hook gives each
    timed call the next prepared input (another selection of rows) after the cache flush."""
    import os.path

    from tvm_dual.tuning import measure

    target = host_target()
    bits, config = vector_bits(target), WORKLOAD.default_config(target)
    session = tvm.rpc.LocalSession()
    builder = measure.Builder(target)  # its temporary directory lives as long as it does
    library = builder.build(WORKLOAD, config)
    session.upload(library)
    lib = session.load_module(os.path.basename(library))
    arrays, expected = WORKLOAD.arguments(config, bits)
    dev = session.cpu(0)
    args = measure._tensors(arrays, dev)
    options = MeasureOptions(repeat=3)
    measure._prepare_rotation(WORKLOAD, config, bits, options)
    flushes = []
    measure._rotation["flush"] = lambda: flushes.append(args[0].numpy().copy())  # instead of reading 128 MiB
    measure._evaluator(lib, dev, options, 3)(*args)
    variants = measure._rotation["inputs"]
    assert len(variants) == measure.ROTATED_INPUTS and len(flushes) == 3
    np.testing.assert_array_equal(flushes[1], variants[0][0])  # flushed, then the input replaced
    np.testing.assert_array_equal(args[0].numpy(), variants[2][0])  # the third timed call's input
    # and the kernel computed on it: its outputs are those of a call on that input, not the first one
    fresh = measure._tensors([variants[2][0], *arrays[1:]], dev)
    lib["dual"](*fresh)
    np.testing.assert_array_equal(args[-2].numpy(), fresh[-2].numpy())
    assert not np.allclose(args[-2].numpy(), expected["y"])
    # the inputs are the workload's kind: about the ratio of their rows insensitive
    rows = [int(args[-1].numpy()[0])]
    for variant in variants[3:8]:
        lib["dual"](*measure._tensors(variant, dev), *args[1:])
        rows.append(int(args[-1].numpy()[0]))
    assert all(0.25 * WORKLOAD.n < r < 0.75 * WORKLOAD.n for r in rows) and len(set(rows)) > 1, rows


class _InstantMeasurer:
    """Times every candidate at 1 us without compiling it: the search's bookkeeping alone."""

    name = "instant"

    def __init__(self) -> None:
        self.target, self.options = host_target(), MeasureOptions()

    def measure(self, workload, batch):
        from types import SimpleNamespace

        return [SimpleNamespace(config=c, time_s=1e-6, error=None) for c in batch]


class _ScriptedMeasurer(_InstantMeasurer):
    """Times each candidate at a fixed multiple of 1 us, and a finalist against the defaults at a
    fixed ratio cold and another warm: the tuner's verification bookkeeping without a compile."""

    def __init__(self, times: dict, cold_ratios: dict, warm_ratios: dict) -> None:
        super().__init__()
        self.times, self.cold_ratios, self.warm_ratios = times, cold_ratios, warm_ratios

    def measure(self, workload, batch):
        from types import SimpleNamespace

        return [SimpleNamespace(config=c, time_s=1e-6 * self.times[c], error=None) for c in batch]

    def measure_pair(self, workload, a, b, pairs, options=None):
        from tvm_dual.tuning.measure import PairedMeasurement

        ratio = (self.cold_ratios if options is None or options.cold else self.warm_ratios)[a]
        return PairedMeasurement((a, b), [(ratio * 1e-6 * self.times[b], 1e-6 * self.times[b])] * pairs)


def test_the_search_reports_each_finalist_timed_against_the_defaults(tmp_path):
    """The tune --report's 'tuned vs default, side by side' column: every verified finalist's
    paired ratio cold, and warm for one that passed cold; the first that passes both ships."""
    default = WORKLOAD.default_config(host_target())
    fast, faster, slow = [c for c in config_space() if c != default][:3]
    measurer = _ScriptedMeasurer({default: 10.0, fast: 8.0, faster: 7.0, slow: 12.0},
                                 cold_ratios={faster: 0.7, fast: 0.8}, warm_ratios={faster: 1.3, fast: 1.0})
    result = tune_dual_kernel(WORKLOAD, measurer, trials=4, batch_size=4, log_path=tmp_path / "log.jsonl",
                              space=[default, fast, faster, slow], progress=False, verify_pairs=16)
    assert result.default_time_s == pytest.approx(10e-6)
    assert [(v["ratio"], v["faster"], v["pairs"], v.get("warm_ratio"), v["passed"]) for v in result.verification] == [
        (pytest.approx(0.7), 16, 16, pytest.approx(1.3), False),  # faster cold, refused warm
        (pytest.approx(0.8), 16, 16, pytest.approx(1.0), True),
    ]
    assert result.verification[0]["config"] == faster.to_dict() and result.schedule == fast


def test_a_finalist_is_judged_by_its_pairs_at_every_thread_count_verified(tmp_path):
    """A finalist that beats the defaults at the tuning thread count but not at another (verify_measurers)
    is refused, in the tuner and when the log is distilled again."""
    from tvm_dual.tuning.records import read_records

    default = WORKLOAD.default_config(host_target())
    fast, faster = [c for c in config_space() if c != default][:2]
    times = {default: 10.0, fast: 8.0, faster: 7.0}
    two = _ScriptedMeasurer(times, cold_ratios={faster: 0.9, fast: 0.8}, warm_ratios={faster: 1.0, fast: 1.0})
    one = _ScriptedMeasurer(times, cold_ratios={faster: 1.2, fast: 0.9}, warm_ratios={})
    one.name = "instant, one thread"
    log = tmp_path / "log.jsonl"
    result = tune_dual_kernel(WORKLOAD, two, trials=3, batch_size=3, log_path=log, space=[default, fast, faster],
                              progress=False, verify_pairs=16, verify_measurers=[one])
    first, second = result.verification
    assert first["config"] == faster.to_dict() and not first["passed"] and first["pairs"] == 32
    assert first["by_measurer"] == {"instant": pytest.approx(0.9), "instant, one thread": pytest.approx(1.2)}
    assert second["passed"] and second["ratio"] == pytest.approx(0.85) and result.schedule == fast
    records = read_records(log)
    assert {r.measurer for r in records if r.pair is not None} == {"instant", "instant, one thread"}
    assert distill(records, target_to_string(host_target()))[WORKLOAD.shape_key].config == fast


def test_resuming_records_of_configurations_outside_todays_space(tmp_path):
    """A knob value dropped from the space since the records were written (an older
    parallel_projection_min, found in a skylake-avx512 log) once crashed the XGBoost search with a
    KeyError; such records are measurements all the same, and the cost model learns from them."""
    from tvm_dual.tuning.records import Record, append_records

    measurer = _InstantMeasurer()
    space = config_space()
    today, dropped = space[:40], space[40:52]
    log = tmp_path / "dual.jsonl"
    append_records(log, [Record(WORKLOAD, target_to_string(measurer.target), c, 1e-5 * (1 + i), None, measurer.name,
                                measurer.options.method) for i, c in enumerate(dropped)])
    result = tune_dual_kernel(WORKLOAD, measurer, trials=6, batch_size=6, log_path=log, space=today, progress=False,
                              confirm_rounds=0, verify_pairs=0)
    assert result.resumed == len(dropped) and len(result.history) == 6
    assert len(read_records(log)) == len(dropped) + 6
