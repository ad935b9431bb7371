"""Quality-budget calibration. On a small MLP trained here on Fashion-MNIST the chosen per-layer
ratios hold the accuracy budget on a split the search never saw and save at least as many bytes as
the best uniform ratio; on LSTMCell and GRUCell streams, nn.LSTM and nn.GRU sequences and the MLP,
the compiled module scores what the search's fast numpy path reported."""

import math
import warnings

import numpy as np
import pytest
import torch

import tvm_dual
from tests.models import GeluMLP
from tvm_dual.datasets import load_fashion_mnist
from tvm_dual.models import FashionMLP, train_classifier

MAX_DROP = 0.01  # one accuracy point


def _correct(predict, images: np.ndarray, labels: np.ndarray) -> np.ndarray:
    return np.array([int(np.argmax(predict(images[i : i + 1])) == labels[i]) for i in range(len(images))])


def test_budget_holds_on_held_out_data():
    train = load_fashion_mnist("train")
    test = load_fashion_mnist("test")
    torch.set_num_threads(1)
    model = train_classifier(FashionMLP(256, 128), train.images[:20000], train.labels[:20000], seconds=1e9, epochs=1)
    # three disjoint splits: fitting (calibration), the search's metric, and held-out checking
    calibration = [train.images[i : i + 256] for i in range(30000, 34096, 256)]
    search_x, search_y = torch.from_numpy(train.images[40000:50000]), train.labels[40000:50000]
    evaluated = []

    def accuracy(m) -> float:
        evaluated.append(1)
        return float((m(search_x).argmax(1).numpy() == search_y).mean())

    budget = tvm_dual.QualityBudget(accuracy, MAX_DROP)
    dual = tvm_dual.compile_dual(model, (test.images[:1],), calibration=calibration, quality_budget=budget)
    report = dual.metadata["quality_budget"]
    assert report["evaluations"] == len(evaluated) > 10
    assert set(report["per_layer"]["ratios"]) == {"fc1", "fc2"}
    # the search's own numbers hold the budget and per-layer beats (or ties) uniform
    assert report["per_layer"]["metric"] >= report["metric_dense"] - MAX_DROP
    assert report["uniform"]["metric"] >= report["metric_dense"] - MAX_DROP
    assert report["per_layer"]["bytes_saved"] >= report["uniform"]["bytes_saved"] > 0
    # the compiled module runs the ratios the search chose
    for layer in dual.stats():
        assert layer.target_ratio == report["per_layer"]["ratios"][layer.name]

    # the search's fast path (numpy reference of the dual layers in PyTorch) is what the kernels do
    on_search_data = _correct(dual, search_x.numpy(), search_y).mean()
    assert on_search_data == pytest.approx(report["per_layer"]["metric"], abs=1e-3)

    # held out: 10000 test images, compiled module vs exact model, one image per call
    images, labels = test.images, test.labels
    with torch.no_grad():
        exact = (model(torch.from_numpy(images)).argmax(1).numpy() == labels).astype(int)
    approx = _correct(dual, images, labels)
    drop = exact.mean() - approx.mean()
    # The search fills the budget on its own 10000 images; a different sample sees the same drop up
    # to sampling noise of the paired difference (standard error from the per-image differences,
    # for both samples). 2 standard errors: a search that ignored the budget (every layer at 0.9
    # drops about 5 points here) fails by far.
    se = np.std(exact - approx) / math.sqrt(len(images)) * math.sqrt(2)
    print(f"held-out drop {drop:.4f} (search {report['metric_dense'] - report['per_layer']['metric']:.4f}), se {se:.4f}; "
          f"per layer {report['per_layer']['ratios']} saves {report['per_layer']['bytes_saved']:.0f} B/call, "
          f"uniform {report['uniform']['ratio']} saves {report['uniform']['bytes_saved']:.0f} B/call "
          f"(search {report['metric_dense'] - report['uniform']['metric']:.4f}); {report['evaluations']} evaluations")
    assert drop <= MAX_DROP + 2 * se, (drop, se, report)
    # and saves on held-out data about the bytes the search counted on
    saved = sum(layer.dense_bytes - layer.dual_bytes for layer in dual.stats())
    assert saved >= 0.9 * report["per_layer"]["bytes_saved"], (saved, report)


def test_budget_validation_and_unsearchable_layers():
    with pytest.raises(ValueError, match="max_drop"):
        tvm_dual.QualityBudget(lambda m: 0.0, -1)
    with pytest.raises(ValueError, match="steps"):
        tvm_dual.QualityBudget(lambda m: 0.0, 0.1, steps=(0.2, 0.5))
    with pytest.raises(TypeError, match="callable"):
        tvm_dual.QualityBudget(0.5, 0.1)
    # a metric that any approximation breaks: everything stays exact, the module is the dense model
    model = GeluMLP().eval()
    x = torch.randn(64, 40)
    with torch.no_grad():
        reference = model(x)

    def exactness(m) -> float:
        return -float((m(x) - reference).abs().max())

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mod = tvm_dual.compile_dual(
            model, (x[:1],), calibration=[x], quality_budget=tvm_dual.QualityBudget(exactness, 0.0, steps=(0.0, 0.5))
        )
    assert [str(w.message) for w in caught if "quality budget" in str(w.message)] == []  # fc1 (GELU) is never dual
    assert mod.metadata["quality_budget"]["per_layer"]["ratios"] == {"fc2": 0.0}
    assert [layer["name"] for layer in mod.metadata["layers"]] == []
    np.testing.assert_allclose(mod(x[:1]).numpy(), reference[:1].numpy(), rtol=1e-5, atol=1e-5)
    nan_metric = tvm_dual.QualityBudget(lambda m: float("nan"), 0.1)
    with pytest.raises(ValueError, match="finite"):
        tvm_dual.compile_dual(model, (x[:1],), calibration=[x], quality_budget=nan_metric)
    for result in (None, torch.ones(3), "0.5"):
        budget = tvm_dual.QualityBudget(lambda m, result=result: result, 0.1)
        with pytest.raises(TypeError, match="metric_fn must return a number, got"):
            tvm_dual.compile_dual(model, (x[:1],), calibration=[x], quality_budget=budget)


class CellStep(torch.nn.Module):
    """One step of an LSTMCell or GRUCell stream with a dual tanh layer and a dense head on its
    output; the state (h, c) or (h,) comes in and goes out after the head's output."""

    def __init__(self, cell: str) -> None:
        super().__init__()
        self.cell = torch.nn.LSTMCell(16, 48) if cell == "lstm" else torch.nn.GRUCell(16, 48)
        self.fc = torch.nn.Linear(48, 32)
        self.head = torch.nn.Linear(32, 6)

    def forward(self, x, *state):
        if isinstance(self.cell, torch.nn.GRUCell):
            state = (self.cell(x, state[0]),)
        else:
            state = self.cell(x, state)
        return (self.head(torch.tanh(self.fc(state[0]))), *state)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@torch.no_grad()
def test_recurrent_cell_budget_matches_the_compiled_module(cell):
    torch.manual_seed(0)
    model = CellStep(cell).eval()
    n_state = 2 if cell == "lstm" else 1
    zeros = (torch.zeros(1, 48),) * n_state

    def stream(m, xs):  # xs (streams, steps, batch, 16) -> outputs (streams, steps, batch, 6)
        outputs = []
        for seq in xs:
            state = (torch.zeros(seq.shape[1], 48),) * n_state
            steps = []
            for x in seq:
                y, *state = m(x, *state)
                steps.append(y)
            outputs.append(torch.stack(steps))
        return torch.stack(outputs)

    calibration = []
    for seq in torch.randn(40, 20, 1, 16):
        state = zeros
        for x in seq:
            calibration.append((x, *state))
            _, *state = model(x, *state)
    held = torch.randn(1, 20, 12, 16)  # 12 streams of 20 steps, run side by side (batch 12)
    exact = stream(model, held)

    def closeness(m, one_at_a_time=False) -> float:  # minus the mean error of the logits over the streams
        if one_at_a_time:  # the compiled module takes batch 1: the same streams, one after another
            got = stream(m, held.permute(2, 1, 0, 3)).permute(2, 1, 0, 3)
        else:
            got = stream(m, held)
        return -float((got - exact).abs().mean())

    max_drop = 0.1 * float(exact.abs().mean())
    budget = tvm_dual.QualityBudget(closeness, max_drop)
    mod = tvm_dual.compile_dual(model, (held[0, 0, :1], *zeros), calibration=calibration, quality_budget=budget)
    report = mod.metadata["quality_budget"]
    ratios = report["per_layer"]["ratios"]
    print(f"{cell} cell budget: {ratios}, uniform {report['uniform']['ratio']}, search metric "
          f"{report['per_layer']['metric']:.5f}, budget {-max_drop:.5f}")
    assert set(ratios) == {"fc", "cell"} and ratios["cell"] > 0
    assert {layer["name"]: layer["target_ratio"] for layer in mod.metadata["layers"]} == {k: v for k, v in ratios.items() if v}
    # the hooks' numpy model of the dual layers is what the compiled kernels compute
    compiled = closeness(mod, one_at_a_time=True)
    print(f"compiled metric {compiled:.5f}")
    assert compiled == pytest.approx(report["per_layer"]["metric"], abs=0.1 * max_drop)
    assert compiled >= -max_drop * 1.1
    assert report["per_layer"]["bytes_saved"] >= report["uniform"]["bytes_saved"]


class Sequence(torch.nn.Module):
    """A two-layer nn.LSTM or nn.GRU over a whole sequence (input projection hoisted) and a dense head."""

    def __init__(self, cell: str) -> None:
        super().__init__()
        self.rnn = (torch.nn.LSTM if cell == "lstm" else torch.nn.GRU)(12, 40, num_layers=2)
        self.head = torch.nn.Linear(40, 5)

    def forward(self, x):
        return self.head(self.rnn(x)[0])


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@torch.no_grad()
def test_recurrent_layer_budget_matches_the_compiled_module(cell):
    torch.manual_seed(1)
    model = Sequence(cell).eval()
    calibration = [(x,) for x in torch.randn(60, 3, 1, 12)]
    held = torch.randn(3, 20, 12)  # 20 sequences side by side (batch 20)
    exact = model(held)

    def closeness(m, one_at_a_time=False) -> float:
        if one_at_a_time:  # the compiled module takes batch 1
            return -float((torch.cat([m(held[:, i : i + 1]) for i in range(20)], dim=1) - exact).abs().mean())
        return -float((m(held) - exact).abs().mean())

    # tight enough to bind: with the per-gate allocation, 0.5% of the mean output allowed 0.9 / 0.8
    max_drop = 0.002 * float(exact.abs().mean())
    mod = tvm_dual.compile_dual(model, (held[:, :1],), calibration=calibration,
                                quality_budget=tvm_dual.QualityBudget(closeness, max_drop))
    report = mod.metadata["quality_budget"]
    ratios = report["per_layer"]["ratios"]
    print(f"nn.{cell.upper()} budget: {ratios}, uniform {report['uniform']['ratio']}, search metric "
          f"{report['per_layer']['metric']:.5f}, budget {-max_drop:.5f}")
    assert set(ratios) == {"rnn.l0", "rnn.l1"} and 0 < max(ratios.values()) < 0.9  # the budget binds
    assert {layer["mode"] for layer in mod.metadata["layers"]} == {"hoisted"}
    compiled = closeness(mod, one_at_a_time=True)
    print(f"compiled metric {compiled:.5f}")
    assert compiled == pytest.approx(report["per_layer"]["metric"], abs=0.1 * max_drop)
