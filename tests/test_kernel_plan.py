"""DualModule's kernel plan (tvm_dual/kernel_plan.py): what the Relax VM computes, counted the same."""

import numpy as np
import pytest
import torch
import torch.utils._pytree as pytree
from torch import nn

import tvm_dual
from models import FunctionalMLP
from tvm_dual import kernel_plan, runtime


def _through_the_vm(module, tmp_path, monkeypatch):
    """The same library, loaded with the kernel plan switched off."""
    path = tmp_path / "model.so"
    module.export_library(path)
    with monkeypatch.context() as patch:
        patch.setenv("TVM_DUAL_KERNEL_PLAN", "0")
        twin = tvm_dual.load(path)
        twin(*[torch.zeros(spec.shape) for spec in twin.input_specs])  # the executor is chosen on the first call
    assert twin.executor == "vm (TVM_DUAL_KERNEL_PLAN=0)"
    twin.reset_stats()
    return twin


def _assert_same_leaves(a, b):
    la, lb = pytree.tree_leaves(a), pytree.tree_leaves(b)
    assert pytree.tree_structure(a) == pytree.tree_structure(b)
    assert all(type(x) is type(y) and np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(la, lb))


@torch.no_grad()
def test_plan_gives_the_vms_outputs_and_counters(tmp_path, monkeypatch):
    torch.manual_seed(0)
    calibration = [torch.randn(32, 37) for _ in range(8)]
    module = tvm_dual.compile_dual(FunctionalMLP().eval(), (torch.randn(1, 37),), calibration=calibration, insensitive_ratio=0.5)
    twin = _through_the_vm(module, tmp_path, monkeypatch)
    xs = torch.randn(40, 1, 37)
    for x in xs:
        _assert_same_leaves(module(x), twin(x))
        _assert_same_leaves(module(x.numpy()), twin(x.numpy()))
    assert module.executor == "kernel plan"
    assert [(s.calls, s.observed_ratio) for s in module.stats()] == [(s.calls, s.observed_ratio) for s in twin.stats()]
    assert module.stats()[0].calls == 80 and 0 < module.stats()[0].observed_ratio < 1


@torch.no_grad()
def test_plan_counters_fold_exactly_across_full_rings(tmp_path, monkeypatch):
    """The plan keeps each call's counters in a ring that is summed when full: 16 rows here, so 40
    calls fold twice and leave 8 pending, and stats() in between must still count every call."""
    monkeypatch.setattr(runtime, "_PENDING_COUNTERS", 16)
    torch.manual_seed(3)
    calibration = [torch.randn(32, 37) for _ in range(8)]
    module = tvm_dual.compile_dual(FunctionalMLP().eval(), (torch.randn(1, 37),), calibration=calibration, insensitive_ratio=0.5)
    twin = _through_the_vm(module, tmp_path, monkeypatch)
    for i, x in enumerate(torch.randn(40, 1, 37)):
        module(x.numpy())
        twin(x.numpy())
        if i in (15, 20):
            assert [(s.calls, s.rows_read) for s in module.stats()] == [(s.calls, s.rows_read) for s in twin.stats()]
    assert module.executor == "kernel plan"
    assert [(s.calls, s.rows_read) for s in module.stats()] == [(s.calls, s.rows_read) for s in twin.stats()]
    assert module.stats()[0].calls == 40
    module.reset_stats()
    assert module.stats()[0].calls == 0


def test_output_builder_rebuilds_nested_tuples_lists_and_other_containers():
    leaves = [np.full(1, i) for i in range(5)]
    for value in [leaves[0], (leaves[0],), (leaves[0], (leaves[1], leaves[2])), [leaves[0], (leaves[1],), [leaves[2], leaves[3]]],
                  {"y": leaves[0], "state": (leaves[1], leaves[2])}]:
        flat, spec = pytree.tree_flatten(value)
        rebuilt = runtime._tree_builder(spec)(flat)
        assert pytree.tree_structure(rebuilt) == spec
        assert all(a is b for a, b in zip(pytree.tree_leaves(rebuilt), flat))


@torch.no_grad()
def test_plan_outputs_are_not_overwritten_by_later_calls():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(24, 40), nn.Tanh()).eval()
    module = tvm_dual.compile_dual(model, (torch.randn(2, 24),), calibration=[torch.randn(64, 24)], insensitive_ratio=0.5)
    x1, x2 = torch.randn(2, 24), torch.randn(2, 24)
    y1 = module(x1)
    kept = y1.clone()
    y2 = module(x2)
    assert module.executor == "kernel plan"
    assert torch.equal(y1, kept) and not torch.equal(y1, y2)
    y2 += 1  # the caller owns its outputs: writing them leaves the next call alone
    assert torch.equal(module(x1), kept)


@torch.no_grad()
def test_recurrent_plan_with_state_inputs_matches_the_vm(tmp_path, monkeypatch):
    """Three inputs, and outputs nested as (output, (h, c))."""
    torch.manual_seed(2)
    rnn = nn.LSTM(13, 33).eval()

    class Step(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = rnn

        def forward(self, x, *state):
            return self.rnn(x, (state[0], state[1]))

    model = Step().eval()
    inputs = (torch.randn(3, 1, 13), *[torch.randn(1, 1, 33) for _ in range(2)])
    calibration = [(torch.randn(3, 1, 13), *[torch.randn(1, 1, 33) for _ in range(2)]) for _ in range(20)]
    module = tvm_dual.compile_dual(model, inputs, calibration=calibration, insensitive_ratio=0.3)
    twin = _through_the_vm(module, tmp_path, monkeypatch)
    for args in calibration[:10]:
        _assert_same_leaves(module(*args), twin(*args))
    assert module.executor == "kernel plan"
    assert [s.observed_ratio for s in module.stats()] == [s.observed_ratio for s in twin.stats()]


@torch.no_grad()
def test_a_reshape_between_kernels_is_a_view_the_plan_follows():
    class Flatten(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(24, 16)

        def forward(self, x):
            return torch.tanh(self.fc(x.reshape(1, 24)))

    model = Flatten().eval()
    module = tvm_dual.compile_dual(model, (torch.randn(2, 12),), insensitive_ratio=0.0)
    for x in torch.randn(5, 2, 12):
        assert float((module(x) - model(x)).abs().max()) <= 1e-5
    assert module.executor == "kernel plan"


@torch.no_grad()
def test_a_program_the_plan_cannot_replay_runs_on_the_vm(monkeypatch):
    """A builtin that could move data (here: every builtin, by pretending none is data-free) sends
    the module to the VM, which says why, and the outputs stay right."""
    monkeypatch.setattr(kernel_plan, "DATA_FREE_BUILTINS", frozenset())
    model = nn.Sequential(nn.Linear(24, 40), nn.ReLU()).eval()
    module = tvm_dual.compile_dual(model, (torch.randn(1, 24),), insensitive_ratio=0.0)
    x = torch.randn(1, 24)
    assert float((module(x) - model(x)).abs().max()) <= 1e-5
    assert module.executor.startswith("vm (the VM runs vm.builtin.")
    kernels = module.profile(x, repeat=3, warmup_s=0.0)  # timed inside the VM instead
    assert kernels and all(seconds > 0 and not symbol.startswith("vm.builtin") for symbol, seconds in kernels.items())


@torch.no_grad()
def test_profile_times_every_kernel_after_the_flush_it_is_given():
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(24, 40), nn.Tanh(), nn.Linear(40, 8)).eval()
    module = tvm_dual.compile_dual(model, (torch.randn(1, 24),), calibration=[torch.randn(64, 24)], insensitive_ratio=0.5)
    flushes = []
    kernels = module.profile(torch.randn(1, 24), repeat=7, warmup_s=0.0, flush=lambda: flushes.append(1))
    assert len(flushes) == 7
    assert any(symbol.startswith("tvm_dual_") for symbol in kernels), kernels  # the dual kernel
    assert len(kernels) >= 2 and all(seconds > 0 for seconds in kernels.values())
    assert [s.calls for s in module.stats()] == [0]  # profiling does not count


@torch.no_grad()
def test_profile_rotates_over_the_input_tuples_it_is_given(monkeypatch):
    """Each timed run computes on the next tuple of `rotate`, in order (a dual kernel's time depends on
    the rows its input selects, so one input is not the average); bad tuples fail before any run."""
    torch.manual_seed(4)
    model = nn.Sequential(nn.Linear(24, 40), nn.Tanh()).eval()
    module = tvm_dual.compile_dual(model, (torch.randn(1, 24),), calibration=[torch.randn(64, 24)], insensitive_ratio=0.5)
    tuples = [(torch.randn(1, 24),) for _ in range(3)]
    loaded = []
    original_load = runtime._InputStage.load

    def spy(stage, value):
        loaded.append(value)
        original_load(stage, value)

    monkeypatch.setattr(runtime._InputStage, "load", spy)
    flushes = []
    kernels = module.profile(rotate=tuples, repeat=6, warmup_s=0.0, flush=lambda: flushes.append(len(loaded)))
    assert any(symbol.startswith("tvm_dual_") for symbol in kernels), kernels
    timed = loaded[-6:]
    assert [next(i for i, t in enumerate(tuples) if t[0] is v) for v in timed] == [0, 1, 2, 0, 1, 2]
    assert flushes == list(range(len(loaded) - 5, len(loaded) + 1))  # each flush after its run's input is loaded
    with pytest.raises(ValueError, match=r"expected shape \(1, 24\)"):
        module.profile(rotate=[tuples[0], (torch.randn(2, 24),)], repeat=1, warmup_s=0.0)
    with pytest.raises(ValueError, match="expected 1 inputs"):
        module.profile(rotate=[(tuples[0][0], tuples[0][0])], repeat=1)
    with pytest.raises(TypeError, match="not both or neither"):
        module.profile(tuples[0][0], rotate=tuples)
    with pytest.raises(TypeError, match="not both or neither"):
        module.profile()


class _ReturnsNone(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(12, 16)

    def forward(self, x):
        return torch.tanh(self.fc(x)), None, {"none": None, "y": x * 2}


@pytest.mark.parametrize("executor", ["1", "0"])  # kernel plan, Relax VM
@torch.no_grad()
def test_none_in_the_outputs_comes_back_as_none(executor, monkeypatch):
    monkeypatch.setenv("TVM_DUAL_KERNEL_PLAN", executor)
    model = _ReturnsNone().eval()
    x = torch.randn(2, 12)
    module = tvm_dual.compile_dual(model, (x,), insensitive_ratio=0.0)
    got, want = module(x), model(x)
    assert got[1] is None and got[2]["none"] is None
    assert float((got[0] - want[0]).abs().max()) <= 1e-5 and torch.equal(got[2]["y"], want[2]["y"])
    assert module(x.numpy())[1] is None
    assert module.executor.startswith("kernel plan" if executor == "1" else "vm")


def test_a_call_that_returns_its_result_is_not_replayed():
    """The plan replays calls that write their argument buffers; a packed call that returns a new
    array (here a calibration probe left in a module) would be replayed as its first result forever."""
    import importlib

    import tvm

    from tvm_dual.conv_sites import find_conv_sites
    from tvm_dual.frontend import import_model
    from tvm_dual.target import host_target
    from tvm_dual.transform.insert_conv_calibration_probes import InsertConvCalibrationProbes
    from tvm_dual.transform.pipeline import compile_module

    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU()).eval()
    imported = import_model(model, (torch.randn(1, 3, 8, 8),))
    keys = [site.key for site in find_conv_sites(imported.mod["main"])]
    executable = compile_module(InsertConvCalibrationProbes(keys)(imported.mod), host_target())
    importlib.import_module("tvm_dual.calibrate")  # registers the probe function the VM calls
    with pytest.raises(kernel_plan.NotReplayable, match="tvm_dual.calibration_probe return their results"):
        kernel_plan.KernelPlan(executable, [tvm.runtime.tensor(np.zeros((1, 3, 8, 8), np.float32))])
