"""LSTM/GRU: exactness at ratio 0, the gate rewrite's graph surgery, step functions, bad inputs."""


import numpy as np
import pytest
import torch
import torch.utils._pytree as pytree
import tvm
from torch import nn
from tvm import relax

import tvm_dual
from tvm_dual.frontend import import_model
from tvm_dual.kernels.dual_dense import DualKernelConfig
from tvm_dual.little import LittleConfig, fit_little_module
from tvm_dual.recurrent import RecurrentConfig, RecurrentLayerPlan, RecurrentPlan, find_recurrent_sites
from tvm_dual.recurrent_calibrate import default_gate_kernel_config, site_weights
from tvm_dual.target import host_target
from tvm_dual.transform.pipeline import compile_module, rewrite_passes
from tvm_dual.transform.recurrent_gate_rewrite import RecurrentGateRewrite


class Recurrent(nn.Module):
    def __init__(self, cell, layers, hidden, batch_first, with_state, input_size=11):
        super().__init__()
        self.rnn = (nn.LSTM if cell == "lstm" else nn.GRU)(input_size, hidden, num_layers=layers, batch_first=batch_first)
        self.with_state = with_state

    def forward(self, x, *state):
        if not self.with_state:
            return self.rnn(x)
        return self.rnn(x, (state[0], state[1]) if isinstance(self.rnn, nn.LSTM) else state[0])


def _inputs(cell, layers, hidden, batch_first, with_state, batch, steps, input_size=11):
    x = torch.randn(batch, steps, input_size) if batch_first else torch.randn(steps, batch, input_size)
    if not with_state:
        return (x,)
    state = [torch.randn(layers, batch, hidden) for _ in range(2 if cell == "lstm" else 1)]
    return (x, *state)


def _max_error(got, expected) -> float:
    got_leaves, expected_leaves = pytree.tree_leaves(got), pytree.tree_leaves(expected)
    assert len(got_leaves) == len(expected_leaves)
    for g, e in zip(got_leaves, expected_leaves):
        assert isinstance(g, torch.Tensor) and g.shape == e.shape
    return max(float((g - e).abs().max()) for g, e in zip(got_leaves, expected_leaves))


# every factor level appears at least once: cell, layers 1/2, hidden 37/129, batch_first, state
CASES = [
    ("lstm", 1, 37, True, False, 1, 3),
    ("lstm", 2, 129, False, True, 3, 2),
    ("gru", 1, 129, False, True, 2, 3),
    ("gru", 2, 37, True, False, 1, 2),
]


@pytest.fixture(scope="module")
def compiled_cases():
    out = {}
    for case in CASES:
        torch.manual_seed(1)
        model = Recurrent(*case[:5]).eval()
        inputs = _inputs(*case)
        out[case] = (model, inputs, tvm_dual.compile_dual(model, inputs, insensitive_ratio=0.0))
    return out


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-l{c[1]}-h{c[2]}-bf{int(c[3])}-state{int(c[4])}")
def test_ratio_zero_matches_pytorch(compiled_cases, case):
    model, inputs, mod = compiled_cases[case]
    for seed in range(2):
        torch.manual_seed(seed)
        fresh = _inputs(*case)
        with torch.no_grad():
            expected = model(*fresh)
        got = mod(*fresh)
        assert type(got) is type(expected)  # (output, (h, c)) / (output, h), as PyTorch
        assert _max_error(got, expected) <= 1e-5


def test_bad_state_shape_and_sequence_length_are_rejected(compiled_cases):
    case = CASES[1]  # LSTM, 2 layers, hidden 129, time-major, state given, batch 3, 2 steps
    _, (x, h, c), mod = compiled_cases[case]
    with pytest.raises(ValueError, match=r"input 1 .*expected shape \(2, 3, 129\).*got shape \(1, 3, 129\)"):
        mod(x, h[:1], c)
    with pytest.raises(ValueError, match=r"input 0 .*expected shape \(2, 3, 11\).*got shape \(5, 3, 11\)"):
        mod(torch.randn(5, 3, 11), h, c)


def _all_exact_plan(model, inputs, mode, kernel):
    """A plan whose thresholds make every gate row sensitive: the kernel computes every row
    exactly, so the rewritten model must equal PyTorch (the graph surgery, without approximation)."""
    imported = import_model(model, inputs)
    sites, _ = find_recurrent_sites(imported.mod["main"], imported.layer_names)
    plan = RecurrentPlan()
    config = RecurrentConfig(mode=mode)
    for site in sites:
        fused = config.fused_for(site)
        W, b = site_weights(site).little_target(fused)
        little = fit_little_module(W, b, np.random.default_rng(0).standard_normal((200, W.shape[1])), LittleConfig(rank=3))
        n = site.weights[1].shape[0]
        plan.layers[site.key] = RecurrentLayerPlan(
            name=site.name, key=site.key, cell=site.cell, fused=fused, hidden=site.hidden, input_size=site.input_size,
            batch=site.batch, little=little, lo=np.full(n, -np.inf, np.float32), hi=np.full(n, np.inf, np.float32),
            target_ratio=0.0, calibration_ratio=0.0, gate_ratios={},
            kernel=kernel or default_gate_kernel_config(host_target(), site.hidden),
        )
    return imported, sites, plan


# hidden 256 with the default knobs: 8 blocks of 32 units in spans of 2 (the default rule), on
# the path compile_dual takes for an untuned shape
@pytest.mark.parametrize("cell,mode,hidden,kernel", [
    ("lstm", "fused", 37, DualKernelConfig(little_block=16)),
    ("gru", "hoisted", 37, DualKernelConfig(little_block=16)),
    ("gru", "fused", 256, None),
])
def test_gate_rewrite_with_every_row_exact_matches_pytorch(cell, mode, hidden, kernel):
    if kernel is None:
        assert default_gate_kernel_config(host_target(), hidden).blocks_per_span == 2
    torch.manual_seed(2)
    case = (cell, 2, hidden, mode == "fused", True, 2, 3)
    model = Recurrent(*case[:5]).eval()
    inputs = _inputs(*case)
    imported, sites, plan = _all_exact_plan(model, inputs, mode, kernel)
    assert len(sites) == 2 and all(len(s.steps) == 3 for s in sites)
    mod = tvm.transform.Sequential([RecurrentGateRewrite(plan), *rewrite_passes(None, report_counters=True)])(imported.mod)
    script = mod["main"].script(show_meta=False)
    assert "R.matmul" not in script or mode == "hoisted"
    if cell == "lstm" and mode == "fused":
        # the kernel's out_h is the summed pre-activation: only the cell update's add is left per step
        assert script.count("R.add(") == 6  # 2 layers x 3 steps
    vm = relax.VirtualMachine(compile_module(mod, host_target()), tvm.cpu())
    result, counters = vm["main"](*[tvm.runtime.tensor(t.numpy()) for t in inputs])
    with torch.no_grad():
        expected = pytree.tree_leaves(model(*inputs))
    got = [result[0], result[1], result[2]] if cell == "lstm" else [result[0], result[1]]
    assert max(float(np.abs(g.numpy() - e.numpy()).max()) for g, e in zip(got, expected)) <= 1e-5
    gates = 4 if cell == "lstm" else 3
    assert counters.numpy().tolist() == [gates * hidden] * 6  # 2 layers x 3 steps, every row read


class CellStep(nn.Module):
    """One step of a cell: what a Python loop over time calls."""

    def __init__(self, cell):
        super().__init__()
        self.cell = (nn.LSTMCell if cell == "lstm" else nn.GRUCell)(13, 37)

    def forward(self, x, *state):
        return self.cell(x, state if isinstance(self.cell, nn.LSTMCell) else state[0])


def _loop(step, x_seq, state):
    outs = []
    for x in x_seq:
        result = step(x, *state)
        state = result if isinstance(result, tuple) else (result,)
        outs.append(state[0])
    return torch.stack(outs)


@torch.no_grad()
def test_cells_driven_by_a_python_loop():
    torch.manual_seed(3)
    x_seq = torch.randn(6, 1, 13)
    # LSTMCell at ratio 0: the step compiled once, looped, equals PyTorch's loop
    lstm = CellStep("lstm").eval()
    state = (torch.zeros(1, 37), torch.zeros(1, 37))
    mod = tvm_dual.compile_dual(lstm, (x_seq[0], *state), insensitive_ratio=0.0)
    assert float((_loop(mod, x_seq, state) - _loop(lstm, x_seq, state)).abs().max()) <= 1e-5
    # GRUCell at ratio 0.3, calibrated on the states of whole sequences run through PyTorch
    gru = CellStep("gru").eval()
    calibration = []
    for _ in range(40):
        h = torch.zeros(1, 37)
        for x in torch.randn(10, 1, 13):
            calibration.append((x, h))
            h = gru(x, h)
    dual = tvm_dual.compile_dual(gru, (x_seq[0], torch.zeros(1, 37)), calibration=calibration, insensitive_ratio=0.3,
                                 little=LittleConfig(rank=16))
    (layer,) = dual.metadata["layers"]
    assert layer["name"] == "cell" and layer["act"] == "gru" and layer["mode"] == "fused"
    got, expected = _loop(dual, x_seq, (torch.zeros(1, 37),)), _loop(gru, x_seq, (torch.zeros(1, 37),))
    assert float((got - expected).abs().mean()) < 0.03
    (stats,) = dual.stats()
    assert stats.calls == 6 and 0.1 < stats.observed_ratio < 0.5 and stats.rows_read < 6 * 111


class MixedRecurrent(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(11, 24)
        self.rnn = nn.RNN(24, 16)

    def forward(self, x):
        return self.rnn(self.lstm(x)[0])[0]


@torch.no_grad()
def test_unsupported_recurrent_layer_stays_dense_with_a_warning():
    torch.manual_seed(4)
    model = MixedRecurrent().eval()
    x = torch.randn(4, 1, 11)
    calibration = [(torch.randn(4, 1, 11),) for _ in range(30)]
    with pytest.warns(tvm_dual.DualCompileWarning, match=r"1 layer\(s\) stay dense \(exact\): 'rnn.l0' \(a vanilla RNN"):
        mod = tvm_dual.compile_dual(model, (x,), calibration=calibration, insensitive_ratio=0.3)
    assert [layer["name"] for layer in mod.metadata["layers"]] == ["lstm.l0"]
    assert "rnn.l0" in [layer["name"] for layer in mod.metadata["dense_layers"]]
    assert float((mod(x) - model(x)).abs().max()) < 0.3
    with pytest.raises(ValueError, match="'rnn.l0' cannot be compiled as a dual module"):
        tvm_dual.compile_dual(model, (x,), insensitive_ratio={"rnn.l0": 0.5})


@torch.no_grad()
def test_lstm_with_a_projected_state_stays_dense_and_exact():
    model = nn.LSTM(16, 32, proj_size=8).eval()
    x = torch.randn(5, 2, 16)
    with pytest.warns(tvm_dual.DualCompileWarning, match=r"stay dense \(exact\): 'l0' \(its recurrent state has 8 units, not the 32"):
        mod = tvm_dual.compile_dual(model, (x,), calibration=[torch.randn(5, 2, 16) for _ in range(8)], insensitive_ratio=0.5)
    assert mod.metadata["layers"] == []
    for got, want in zip(pytree.tree_leaves(mod(x)), pytree.tree_leaves(model(x))):
        assert float((got - want).abs().max()) <= 1e-5


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_calibration_captures_the_exact_states_of_every_step(cell):
    # The probe once returned its argument as the value of a pure call; the VM's memory planner
    # then let the gate matmul's output overwrite that buffer, and every state after the first
    # step of a calibration sequence was wrong (by up to 0.1 here, 2.0 on the PTB LSTM-750), so
    # little modules and thresholds were fitted to states the model never has.
    from tvm_dual import ptb
    from tvm_dual.frontend import normalize_inputs
    from tvm_dual.recurrent_calibrate import capture_step_inputs

    torch.manual_seed(3)
    steps = 6
    lm = ptb.WordLM(ptb.LMConfig(cell=cell, hidden=37, vocab=50)).eval()
    ids = np.random.default_rng(0).integers(0, 50, steps)
    (inputs,) = ptb.stream_inputs(lm, ids, chunk=steps)
    model = ptb.StepLM(lm)
    imported = import_model(model, normalize_inputs(inputs))
    sites, _ = find_recurrent_sites(imported.mod["main"], imported.layer_names)
    (captured,) = capture_step_inputs(model, [[inputs]], sites, imported, [1000])
    x, h = captured[sites[0].key]
    state, xs, hs = lm.init_state(1), [], []
    with torch.no_grad():
        for t in range(steps):
            xs.append(lm.embed(torch.tensor([[ids[t]]])))
            hs.append((state[0] if cell == "lstm" else state).reshape(-1).numpy())
            _, state = lm.rnn(xs[-1], state)
    np.testing.assert_allclose(x, torch.cat(xs).reshape(steps, -1).numpy(), atol=1e-6)
    np.testing.assert_allclose(h, np.array(hs), atol=1e-5)


def test_importing_a_recurrent_model_passes_on_no_warnings_of_torchs_own():
    """torch.export warns that nn.LSTM's _flat_weights should be buffers, and torch 2.13's
    run_decompositions about its own pytree use: nothing a user of nn.LSTM can act on, printed on
    every compile. A warning about the user's own attributes must still come through."""
    import warnings

    class _Flagged(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = nn.LSTM(8, 16)

        def forward(self, x):
            self.scale = torch.ones(1)  # an attribute assigned in forward: torch's warning is the user's to see
            return self.rnn(x)[0] * self.scale

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        import_model(nn.LSTM(8, 16), (torch.randn(3, 1, 8),))
    assert [str(w.message) for w in caught] == []
    with pytest.warns(UserWarning, match="self.scale"):
        import_model(_Flagged(), (torch.randn(3, 1, 8),))


@torch.no_grad()
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_a_dual_layer_at_batch_3_gives_each_sample_its_batch_1_result(cell):
    """At batch > 1 a row of W is read if any sample needs it, and each sample still takes its own
    little or exact value: so every sample of a batch-3 call must get what a batch-1 module of the
    same plan gives it alone, at every step, with rows skipped."""
    torch.manual_seed(8)
    model = Recurrent(cell, 1, 37, False, True).eval()
    calibration = [_inputs(cell, 1, 37, False, True, 8, 2) for _ in range(12)]  # short sequences: quick to compile
    compiled = {
        batch: tvm_dual.compile_dual(model, _inputs(cell, 1, 37, False, True, batch, 3), calibration=calibration,
                                     insensitive_ratio=0.5, little=LittleConfig(rank=12))
        for batch in (1, 3)
    }
    inputs = _inputs(cell, 1, 37, False, True, 3, 3)
    together = pytree.tree_leaves(compiled[3](*inputs))
    for sample in range(3):
        alone = pytree.tree_leaves(compiled[1](*(t[:, sample : sample + 1] for t in inputs)))
        for got, expected in zip(together, alone):
            np.testing.assert_allclose(got[:, sample : sample + 1].numpy(), expected.numpy(), rtol=1e-5, atol=1e-5)
    assert _max_error(compiled[3](*inputs), model(*inputs)) > 1e-3  # the little modules were used
    (stats,) = compiled[3].stats()
    assert stats.calls == 2 * 3 and 0 < stats.rows_read < stats.calls * stats.shape[0]  # two calls of three steps
