"""compile_dual end to end: ratios, stats, calling convention, errors and fallbacks."""

import collections
import copy
import warnings

import numpy as np
import pytest
import torch

import tvm_dual
from tvm_dual.runtime import _fast_input
from models import FunctionalMLP, GeluMLP, odd_mlp


def _data(n, k, batch=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, k, generator=g) for _ in range(n)]


@pytest.fixture(scope="module")
def mlp():
    return odd_mlp("tanh", (64, 256, 192, 10))


@pytest.mark.parametrize("ratio", [0.3, 0.5, 0.7])
def test_observed_ratio_on_held_out_inputs(mlp, ratio):
    # the ratio is an average over samples whose little vectors differ in scale, so the thresholds
    # need a few thousand calibration rows and the check a thousand held-out samples
    mod = tvm_dual.compile_dual(mlp, (torch.randn(1, 64),), calibration=_data(64, 64), insensitive_ratio=ratio)
    for x in torch.randn(1000, 1, 64):
        mod(x)
    stats = mod.stats()
    assert [s.name for s in stats] == ["0", "2"]
    for layer in stats:
        assert layer.calls == 1000
        assert abs(layer.observed_ratio - ratio) <= 0.05, layer
        assert layer.dual_bytes < layer.dense_bytes


def test_per_layer_ratios_and_outputs_approximate(mlp):
    calib = _data(8, 64)
    mod = tvm_dual.compile_dual(mlp, (torch.randn(1, 64),), calibration=calib, insensitive_ratio={"0": 0.6})
    assert [layer["name"] for layer in mod.metadata["layers"]] == ["0"]
    assert {d["name"] for d in mod.metadata["dense_layers"]} >= {"2"}
    x = torch.randn(1, 64)
    with torch.no_grad():
        assert (mod(x) - mlp(x)).abs().max().item() < 0.5


def test_seeded_compiles_are_identical(mlp):
    calib = _data(4, 64)
    a = tvm_dual.compile_dual(mlp, (torch.randn(1, 64),), calibration=calib, insensitive_ratio=0.5)
    b = tvm_dual.compile_dual(mlp, (torch.randn(1, 64),), calibration=calib, insensitive_ratio=0.5)
    for x in torch.randn(20, 1, 64):
        assert torch.equal(a(x), b(x))


def test_the_few_rows_warning_counts_every_calibration_row(mlp):
    # every other row chooses thresholds and the rest fit the little module; the warning counts them all
    with pytest.warns(tvm_dual.DualCompileWarning, match="'0' is calibrated on only 128 input rows"):
        tvm_dual.compile_dual(mlp, (torch.randn(1, 64),), calibration=_data(2, 64), insensitive_ratio={"0": 0.5})


def test_unsupported_layer_stays_dense_and_exact():
    model = GeluMLP().eval()
    x = torch.randn(1, 40)
    with pytest.warns(tvm_dual.DualCompileWarning, match=r"1 layer\(s\) stay dense \(exact\): 'fc1' \(.*gelu"):
        mod = tvm_dual.compile_dual(model, (x,), calibration=_data(4, 40), insensitive_ratio={"fc2": 0.0})
    with torch.no_grad():
        assert (mod(x) - model(x)).abs().max().item() <= 1e-5
    with pytest.raises(ValueError, match="'fc1' cannot be compiled as a dual module"):
        tvm_dual.compile_dual(model, (x,), insensitive_ratio={"fc1": 0.5})


class _EmptySliceOutput(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(24, 40)

    def forward(self, x):
        y = torch.tanh(self.fc(x))
        return y, y[:, :0]


@pytest.mark.parametrize("ratio", [0.0, 0.5])
def test_an_output_with_no_elements_compiles_and_matches(ratio):
    model = _EmptySliceOutput().eval()
    x = torch.randn(1, 24)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", tvm_dual.DualCompileWarning)  # few calibration rows
        mod = tvm_dual.compile_dual(model, (x,), calibration=_data(4, 24), insensitive_ratio=ratio)
    y, empty = mod(x)
    assert tuple(empty.shape) == (1, 0)
    if ratio == 0.0:
        with torch.no_grad():
            assert (y - model(x)[0]).abs().max().item() <= 1e-5


class _ReusedPreActivation(torch.nn.Module):
    """fc's output feeds tanh and is also used on its own; the same layer then feeds a plain tanh."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(24, 48)

    def forward(self, x, y):
        z = self.fc(x)
        return torch.tanh(z) + 0.5 * z, torch.tanh(self.fc(y))


@pytest.mark.parametrize("act", [torch.nn.SiLU(), torch.nn.Tanhshrink(), torch.nn.ELU()])
def test_activation_that_reuses_the_linear_output_stays_dense_and_exact(act):
    """SiLU (z * sigmoid(z)), Tanhshrink (z - tanh(z)) and ELU import as a supported activation of z
    plus another use of z: only the activation could be approximated while z is computed densely
    anyway, so the layer stays dense, with a warning, and exact at any ratio."""
    model = torch.nn.Sequential(torch.nn.Linear(32, 64), act).eval()
    x = torch.randn(3, 32)
    with pytest.warns(tvm_dual.DualCompileWarning, match=r"stay dense \(exact\): '0' \(its output before \w+ is also used"):
        mod = tvm_dual.compile_dual(model, (x,), calibration=[torch.randn(512, 32)], insensitive_ratio=0.5)
    assert mod.metadata["layers"] == []
    with torch.no_grad():
        assert (mod(x) - model(x)).abs().max().item() <= 1e-5


def test_a_layer_is_dual_only_if_every_use_of_it_can_be():
    model = _ReusedPreActivation().eval()
    x, y = torch.randn(1, 24), torch.randn(1, 24)
    with pytest.warns(tvm_dual.DualCompileWarning, match="also used"):
        mod = tvm_dual.compile_dual(model, (x, y), calibration=[(torch.randn(1, 24), torch.randn(1, 24))] * 4,
                                    insensitive_ratio=0.5)
    assert mod.metadata["layers"] == []
    with torch.no_grad():
        for got, want in zip(mod(x, y), model(x, y)):
            assert (got - want).abs().max().item() <= 1e-5


class _ReusedMatmul(torch.nn.Module):
    """The matmul before the bias add is used on its own as well."""

    def __init__(self) -> None:
        super().__init__()
        self.w, self.b = torch.nn.Parameter(torch.randn(48, 24)), torch.nn.Parameter(torch.randn(48))

    def forward(self, x):
        z0 = x @ self.w.T
        return torch.tanh(z0 + self.b) - z0


class _ReusedConv(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(4, 8, 3, padding=1)

    def forward(self, x):
        z = self.conv(x)
        return torch.relu(z) + 0.5 * z


@pytest.mark.parametrize("model_class, shape", [(_ReusedMatmul, (1, 24)), (_ReusedConv, (1, 4, 10, 10))])
def test_a_layer_whose_inner_values_are_used_elsewhere_stays_dense(model_class, shape):
    model = model_class().eval()
    x = torch.randn(*shape)
    with pytest.warns(tvm_dual.DualCompileWarning, match="also used elsewhere"):
        mod = tvm_dual.compile_dual(model, (x,), calibration=[torch.randn(64, *shape[1:])], insensitive_ratio=0.5)
    assert mod.metadata["layers"] == []
    with torch.no_grad():
        assert (mod(x) - model(x)).abs().max().item() <= 1e-5


def test_wrong_inputs_are_rejected_with_expected_and_got(mlp):
    mod = tvm_dual.compile_dual(mlp, (torch.randn(2, 64),), insensitive_ratio=0.0)
    with pytest.raises(ValueError, match=r"expected shape \(2, 64\) dtype float32, got shape \(3, 64\) dtype float32"):
        mod(torch.randn(3, 64))
    with pytest.raises(ValueError, match=r"expected shape \(2, 64\) dtype float32, got shape \(2, 64\) dtype float64"):
        mod(np.zeros((2, 64)))
    with pytest.raises(ValueError, match="expected 1 inputs"):
        mod(torch.randn(2, 64), torch.randn(2, 64))
    with pytest.raises(TypeError, match="must be a torch.Tensor or numpy array"):
        mod([[0.0] * 64] * 2)


def test_inputs_that_cannot_be_passed_zero_copy_give_the_same_outputs(mlp):
    # aligned contiguous arrays go straight to the VM; the rest is staged (copied) first
    mod = tvm_dual.compile_dual(mlp, (torch.randn(2, 64),), calibration=_data(8, 64), insensitive_ratio=0.5)
    x = np.random.default_rng(0).standard_normal((2, 64)).astype(np.float32)
    expected = mod(x.copy())
    assert isinstance(expected, np.ndarray)
    misaligned = np.empty(2 * 64 + 1, np.float32)[1:].reshape(2, 64)
    misaligned[...] = x
    transposed = np.ascontiguousarray(x.T).T  # Fortran order: not C-contiguous
    for variant in (misaligned, transposed):
        np.testing.assert_array_equal(mod(variant), expected)
    # a misaligned input is recognized without raising: a failed from_dlpack requirement's FFI error
    # (with its traceback) cost more than the whole call
    assert _fast_input(misaligned) is None and _fast_input(torch.from_numpy(misaligned)) is None
    for variant in (torch.from_numpy(x).requires_grad_(), torch.from_numpy(transposed)):
        got = mod(variant)
        assert isinstance(got, torch.Tensor)
        np.testing.assert_array_equal(got.detach().numpy(), expected)
    assert all(s.calls == 5 for s in mod.stats())


@pytest.mark.parametrize("ratio", [-0.1, 1.0, 1.5, float("nan"), "0.5", True])
def test_ratios_out_of_range_are_rejected(mlp, ratio):
    with pytest.raises(ValueError, match="insensitive ratio"):
        tvm_dual.compile_dual(mlp, (torch.randn(1, 64),), insensitive_ratio=ratio)


def test_a_single_calibration_tensor_is_one_batch(mlp):
    rows = torch.cat(_data(16, 64))
    one = tvm_dual.compile_dual(mlp, (torch.randn(1, 64),), calibration=rows, insensitive_ratio=0.5)
    batches = tvm_dual.compile_dual(mlp, (torch.randn(1, 64),), calibration=[rows], insensitive_ratio=0.5)
    x = torch.randn(1, 64)
    np.testing.assert_array_equal(one(x).numpy(), batches(x).numpy())


@pytest.mark.parametrize(
    "calibration,message",
    [
        (torch.randn(4, 8, 64), r"calibration is one array of shape \(4, 8, 64\); pass an iterable of input batches"),
        ([torch.randn(8, 64), torch.randn(64)], r"calibration batch 1 has inputs of shapes \[\(64,\)\]; expected 1 input"),
        ([(torch.randn(8, 64), torch.randn(8, 64))], r"calibration batch 0 has inputs of shapes \[\(8, 64\), \(8, 64\)\]"),
        (["rows"], r"calibration batch 0 must be a tensor or a non-empty tuple of tensors, got str"),
        ([(torch.randn(8, 64), "h")], r"calibration batch 0: input 1 must be a torch.Tensor or numpy array, got str"),
        ([torch.randn(8, 64), torch.randint(0, 5, (8, 64))], r"calibration batch 1 input 0 has dtype int64; the example input has float32"),
        ([torch.randn(0, 64)], r"calibration batch 0: input 0 has shape \(0, 64\), with no elements"),
    ],
)
def test_calibration_of_the_wrong_form_is_rejected_naming_it(mlp, calibration, message):
    with pytest.raises((ValueError, TypeError), match=message):
        tvm_dual.compile_dual(mlp, (torch.randn(1, 64),), calibration=calibration, insensitive_ratio=0.5)


def test_calibration_the_model_cannot_run_on_is_named(mlp):
    with pytest.raises(tvm_dual.ModelImportError, match=r"cannot run on calibration or validation data of shapes \[\(8, 65\)\]"):
        tvm_dual.compile_dual(mlp, (torch.randn(1, 64),), calibration=[torch.randn(8, 65)], insensitive_ratio=0.5)
    with pytest.raises(ValueError, match=r"example_inputs: input 0 has shape \(0, 64\), with no elements"):
        tvm_dual.compile_dual(mlp, (torch.randn(0, 64),), insensitive_ratio=0.0)


class _NamedOutputs(torch.nn.Module):
    Out = collections.namedtuple("Out", "y")

    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(8, 8)

    def forward(self, x):
        return self.Out(torch.tanh(self.fc(x)))


def test_outputs_the_metadata_cannot_record_are_named():
    with pytest.raises(tvm_dual.ModelImportError, match="have a structure the library's metadata cannot record .*namedtuple"):
        tvm_dual.compile_dual(_NamedOutputs().eval(), (torch.randn(1, 8),), insensitive_ratio=0.0)


def test_float64_calibration_is_cast_to_the_models_dtype(mlp):
    rows = torch.cat(_data(16, 64))
    single = tvm_dual.compile_dual(mlp, (torch.randn(1, 64),), calibration=[rows], insensitive_ratio=0.5)
    double = tvm_dual.compile_dual(mlp, (torch.randn(1, 64),), calibration=[rows.double().numpy()], insensitive_ratio=0.5)
    x = torch.randn(1, 64)
    np.testing.assert_array_equal(single(x).numpy(), double(x).numpy())


class _TokenModel(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed, self.fc = torch.nn.Embedding(50, 16), torch.nn.Linear(16, 32)

    def forward(self, tokens):
        return torch.tanh(self.fc(self.embed(tokens)))


@pytest.mark.parametrize("executor", ["1", "0"])  # kernel plan, Relax VM
def test_token_ids_out_of_range_raise_index_error_as_in_pytorch(executor, monkeypatch, tmp_path):
    """TVM's take reads out of bounds for ids outside the table (garbage rows, or a segfault); the
    module checks ids as PyTorch does, exported and loaded too, and calibration ids up front."""
    monkeypatch.setenv("TVM_DUAL_KERNEL_PLAN", executor)
    model = _TokenModel().eval()
    tokens = torch.randint(0, 50, (4,))
    with pytest.raises(ValueError, match=r"calibration batch 1 input 0 \('tokens'\): index 1000000 is out of range for a table of 50 rows"):
        tvm_dual.compile_dual(model, (tokens,), calibration=[tokens, torch.tensor([1, 10**6, 2, 3])], insensitive_ratio=0.5)
    mod = tvm_dual.compile_dual(model, (tokens,), calibration=[torch.randint(0, 50, (64,))], insensitive_ratio=0.0)
    mod.export_library(tmp_path / "tokens.so")
    for module in (mod, tvm_dual.load(tmp_path / "tokens.so")):
        with torch.no_grad():
            assert (module(tokens) - model(tokens)).abs().max().item() <= 1e-5
        for bad in (50, -1, 10**6):
            ids = torch.tensor([0, 1, bad, 2])
            with pytest.raises(IndexError):
                model(ids)
            with pytest.raises(IndexError, match=rf"input 0 \('tokens'\): index {bad} is out of range for a table of 50 rows"):
                module(ids)
            with pytest.raises(IndexError, match=f"index {bad} is out of range"):
                module(ids.numpy())
        assert np.abs(module(tokens.numpy()) - model(tokens).detach().numpy()).max() <= 1e-5


def test_unknown_layer_name_is_rejected(mlp):
    with pytest.raises(ValueError, match=r"no dual-capable layer named 'fc9'; candidates are \['0', '2'\]"):
        tvm_dual.compile_dual(mlp, (torch.randn(1, 64),), insensitive_ratio={"fc9": 0.5})
    recurrent = torch.nn.LSTM(8, 16).eval()
    with pytest.raises(ValueError, match=r"no dual-capable layer named 'lstm'; candidates are \['l0'\]"):
        tvm_dual.compile_dual(recurrent, (torch.randn(3, 1, 8),), insensitive_ratio={"lstm": 0.5})


def test_numpy_and_tensor_scalars_are_ratios(mlp):
    calibration = _data(4, 64)
    plain = tvm_dual.compile_dual(mlp, (torch.randn(1, 64),), calibration=calibration, insensitive_ratio=0.5)
    x = torch.randn(1, 64)
    for ratio in (np.float32(0.5), torch.tensor(0.5), {"0": np.float64(0.5), "2": torch.tensor(0.5)}):
        mod = tvm_dual.compile_dual(mlp, (torch.randn(1, 64),), calibration=calibration, insensitive_ratio=ratio)
        assert torch.equal(mod(x), plain(x))
    for bad in (np.bool_(True), torch.tensor([0.5]), np.float32(1.0)):
        with pytest.raises(ValueError, match="must be a number in \\[0, 1\\)"):
            tvm_dual.compile_dual(mlp, (torch.randn(1, 64),), insensitive_ratio=bad)
    assert tvm_dual.QualityBudget(lambda m: 0.0, np.float32(0.25)).max_drop == 0.25


@pytest.mark.parametrize(
    "argument, value, message",
    [
        ("little", {"rank": 4}, "little must be a tvm_dual.LittleConfig or None, got dict"),
        ("recurrent", "fused", "recurrent must be a tvm_dual.RecurrentConfig or None, got str"),
        ("quality_budget", 0.01, "quality_budget must be a tvm_dual.QualityBudget or None, got float"),
        ("schedules", 3, "schedules must be 'default', a directory or None, got int"),
    ],
)
def test_options_of_the_wrong_type_are_named(mlp, argument, value, message):
    with pytest.raises(TypeError, match=message):
        tvm_dual.compile_dual(mlp, (torch.randn(1, 64),), **{argument: value})


def test_functional_model_dual_layers_are_named_by_parameter():
    model = FunctionalMLP().eval()
    x = torch.randn(1, 37)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", tvm_dual.DualCompileWarning)
        mod = tvm_dual.compile_dual(model, (x,), calibration=_data(4, 37), insensitive_ratio=0.5)
    names = {layer["name"] for layer in mod.metadata["layers"]}
    assert names == {"w1", "fc2", "fc3"}  # fc3 feeds tanh in one branch; w1 is a bare parameter
    out = mod(x)
    assert out["logits"].shape == (1, 11)


def test_stats_report_counters_not_estimates(mlp):
    mod = tvm_dual.compile_dual(mlp, (torch.randn(1, 64),), calibration=_data(8, 64), insensitive_ratio=0.5)
    assert all(s.calls == 0 for s in mod.stats())
    mod(torch.zeros(1, 64))
    first = mod.stats()
    mod(torch.randn(1, 64) * 100)
    second = mod.stats()
    assert all(s.calls == 1 for s in first) and all(s.calls == 2 for s in second)
    assert any(a.rows_read != b.rows_read - a.rows_read for a, b in zip(first, second))
    assert "observed" in str(second)
    mod.reset_stats()
    assert all(s.calls == 0 for s in mod.stats())


def test_nan_and_inf_inputs_behave_like_the_dense_model(mlp):
    mod = tvm_dual.compile_dual(mlp, (torch.randn(1, 64),), calibration=_data(16, 64), insensitive_ratio=0.7)
    for special in (float("nan"), float("inf"), -float("inf")):
        x = torch.randn(1, 64)
        x[0, 7] = special
        with torch.no_grad():
            expected = mlp(x)
        mod.reset_stats()
        got = mod(x)
        assert torch.equal(torch.isnan(got), torch.isnan(expected))
        assert torch.equal(torch.isinf(got), torch.isinf(expected))
        # the first layer saw the non-finite input: every row took the exact path
        first = mod.stats()[0]
        assert first.rows_read == first.shape[0]


def test_calls_from_several_threads_are_serialized_and_correct(mlp):
    import threading

    mod = tvm_dual.compile_dual(mlp, (torch.randn(1, 64),), calibration=_data(8, 64), insensitive_ratio=0.5)
    inputs = [torch.randn(1, 64) for _ in range(16)]
    expected = [mod(x).clone() for x in inputs]
    errors = []

    def worker(offset):
        try:
            for i in range(200):
                j = (i + offset) % len(inputs)
                if not torch.equal(mod(inputs[j]), expected[j]):
                    errors.append(j)
        except Exception as err:  # noqa: BLE001 (collected for the assertion)
            errors.append(err)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert all(s.calls == 16 + 800 for s in mod.stats())


class _TiedLSTM(torch.nn.Module):
    """An LSTM language model whose decoder reuses the embedding matrix, as the PTB models do."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(50, 24)
        self.rnn = torch.nn.LSTM(24, 24, batch_first=True)
        self.decoder = torch.nn.Linear(24, 50)
        self.decoder.weight = self.embed.weight

    def forward(self, tokens):
        return self.decoder(self.rnn(self.embed(tokens))[0])


@pytest.mark.parametrize("kind, ratio", [("mlp", 0.5), ("tied_lstm", 0.0)])
def test_compiled_module_keeps_the_weights_it_was_compiled_with(mlp, kind, ratio):
    # TVM's frontend binds parameters as zero-copy views of the torch tensors; a compiled module
    # must not follow in-place changes to the model (further training, load_state_dict)
    if kind == "mlp":
        model, x = copy.deepcopy(mlp), torch.randn(1, 64)
        calibration = _data(4, 64)
    else:
        model, x = _TiedLSTM().eval(), torch.randint(0, 50, (1, 7))
        calibration = [(torch.randint(0, 50, (1, 7)),) for _ in range(8)]
    mod = tvm_dual.compile_dual(model, (x,), calibration=calibration, insensitive_ratio=ratio)
    before = mod(x).clone()
    with torch.no_grad():
        expected_before = model(x)
        for p in model.parameters():
            p.mul_(-2.0).add_(1.0)
        assert not torch.allclose(model(x), expected_before)
    assert torch.equal(mod(x), before)
    if ratio == 0.0:
        assert (before - expected_before).abs().max().item() <= 1e-5


def test_calibration_captures_each_layers_exact_inputs():
    # With the probe returning its argument, the memory planner let the last layer's matmul write
    # into the buffer it was reading, and that layer was calibrated on inputs off by up to 0.69.
    from torch import nn

    from tvm_dual.calibrate import capture_layer_inputs
    from tvm_dual.frontend import import_model, normalize_inputs
    from tvm_dual.sites import find_linear_sites

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(37, 333), nn.ReLU(), nn.Linear(333, 333), nn.Tanh(), nn.Linear(333, 10), nn.ReLU()).eval()
    x = torch.randn(3, 37)
    imported = import_model(model, normalize_inputs((x,)))
    sites = find_linear_sites(imported.mod["main"])
    captured = capture_layer_inputs(model, [(x,)], [s.key for s in sites], imported)
    expected, h = {}, x
    with torch.no_grad():
        for path, layer in model.named_children():
            if isinstance(layer, nn.Linear):
                expected[path] = h.numpy()
            h = layer(h)
    assert sorted(imported.layer_names[s.digest] for s in sites) == sorted(expected) and len(expected) == 3
    for site in sites:
        path = imported.layer_names[site.digest]
        np.testing.assert_allclose(captured[site.key], expected[path], atol=1e-5, err_msg=path)
