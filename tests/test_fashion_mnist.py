"""Quality on real data: a small MLP trained here on Fashion-MNIST keeps its accuracy at ratio 0.5."""

import pytest
import torch

import tvm_dual
from tvm_dual.datasets import load_fashion_mnist
from tvm_dual.models import FashionMLP, accuracy, train_classifier


@pytest.fixture(scope="module")
def trained():
    train = load_fashion_mnist("train")
    test = load_fashion_mnist("test")
    torch.set_num_threads(2)
    # a fixed number of steps, not a time budget: the result must not depend on machine load
    model = train_classifier(FashionMLP(256, 128), train.images[:30000], train.labels[:30000], seconds=1e9, epochs=1)
    return model, train, test


def test_accuracy_within_one_point_of_dense(trained):
    model, train, test = trained
    calibration = [train.images[i : i + 256] for i in range(30000, 34096, 256)]  # not used for training
    dense = tvm_dual.compile_dual(model, (test.images[:1],), insensitive_ratio=0.0)
    dual = tvm_dual.compile_dual(model, (test.images[:1],), calibration=calibration, insensitive_ratio=0.5)
    images, labels = test.images[:4000], test.labels[:4000]
    dense_acc = accuracy(dense, images, labels)
    dual_acc = accuracy(dual, images, labels)
    with torch.no_grad():
        torch_acc = accuracy(lambda x: model(torch.from_numpy(x)).numpy(), images, labels, batch=500)
    assert dense_acc == pytest.approx(torch_acc, abs=1e-9)  # ratio 0 is the same model
    assert dense_acc > 0.75, "the model did not train"
    assert dual_acc >= dense_acc - 0.01, (dual_acc, dense_acc)
    for layer in dual.stats():
        assert abs(layer.observed_ratio - 0.5) <= 0.05
        assert layer.calls == len(images)
