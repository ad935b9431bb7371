"""The Fashion-MNIST ResNet-20 workload: model, inputs, calibration, quality, operation counts.

    from tvm_dual.cnn import workload
    w = workload()                                  # the checkpoint scripts/train_cnn.py wrote
    mod = tvm_dual.compile_dual(w.model, w.example_inputs, calibration=w.calibration, insensitive_ratio=0.7)
    print(w.accuracy(mod), operations(mod, w.model_macs))

For the benchmark suite (tvm_dual/bench), a factory can wrap it:

    @register_workload("resnet20_fmnist")
    def resnet20_fmnist(checkpoint: str = "") -> Workload:
        w = cnn.workload(checkpoint or None)
        return Workload(name="resnet20_fmnist", params={"checkpoint": checkpoint}, description=w.description,
                        model=w.model, example_inputs=w.example_inputs, calibration=w.calibration,
                        timing_inputs=w.timing_inputs, quality=lambda p: w.accuracy(lambda x: p(x)[0]),
                        quality_name="Fashion-MNIST test accuracy", quality_higher_is_better=True)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from .cnn_models import HELD_OUT, IMAGE_SHAPE, TrainConfig, checkpoint_path, load_resnet
from .datasets import load_fashion_mnist


@dataclass
class CnnWorkload:
    description: str
    model: torch.nn.Module
    example_inputs: tuple[torch.Tensor]  # (1, 1, 28, 28)
    calibration: list[torch.Tensor]  # held-out training images, never trained on
    timing_inputs: list[tuple[np.ndarray]]  # test images, batch 1
    test_images: np.ndarray  # (10000, 1, 28, 28)
    test_labels: np.ndarray
    model_macs: int  # multiply-adds of one batch-1 forward pass (convolutions and Linear layers)

    def accuracy(self, predict: Callable, limit: int | None = None) -> float:
        """Top-1 test accuracy of predict((1, 1, 28, 28) array) -> logits, fed one image at a time."""
        images, labels = self.test_images[:limit], self.test_labels[:limit]
        correct = 0
        for image, label in zip(images, labels):
            correct += int(np.asarray(predict(image[None])).argmax() == label)
        return correct / len(images)


def default_checkpoint() -> str:
    return checkpoint_path(TrainConfig())


def model_macs(model: torch.nn.Module, example: torch.Tensor) -> int:
    """Multiply-adds of convolutions and Linear layers in one forward pass, counted with hooks."""
    total = 0

    def hook(module, _inputs, output):
        nonlocal total
        if isinstance(module, torch.nn.Conv2d):
            total += output.numel() * module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
        elif isinstance(module, torch.nn.Linear):
            total += output.numel() * module.in_features

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    try:
        with torch.no_grad():
            model(example)
    finally:
        for h in handles:
            h.remove()
    return total


def workload(checkpoint: str | None = None, calibration_images: int = 1024, calibration_batch: int = 256, timing_images: int = 16) -> CnnWorkload:
    """ResNet-20 trained on Fashion-MNIST (scripts/train_cnn.py), with calibration data from the
    held-out end of the training set and timing inputs from the test set."""
    model = load_resnet(checkpoint or default_checkpoint())
    train, test = load_fashion_mnist("train"), load_fashion_mnist("test")
    held = train.images[-HELD_OUT:].reshape(-1, *IMAGE_SHAPE)
    test_images = test.images.reshape(-1, *IMAGE_SHAPE)
    calibration = [
        torch.from_numpy(held[i : i + calibration_batch]) for i in range(0, min(calibration_images, len(held)), calibration_batch)
    ]
    example = (torch.from_numpy(test_images[:1].copy()),)
    return CnnWorkload(
        description="ResNet-20 (16/32/64) on Fashion-MNIST 28x28, batch 1",
        model=model,
        example_inputs=example,
        calibration=calibration,
        timing_inputs=[(test_images[i : i + 1].copy(),) for i in range(timing_images)],
        test_images=test_images,
        test_labels=test.labels,
        model_macs=model_macs(model, example[0]),
    )


@dataclass
class OperationCount:
    dense_macs: int  # the whole model, dense
    dual_macs: float  # per call, averaged: dense layers + exact outputs + little modules of dual layers
    little_macs: float

    @property
    def reduction(self) -> float:
        return self.dense_macs / self.dual_macs


def operations(module, dense_macs: int) -> OperationCount:
    """Multiply-adds per call of a compiled module, from its kernels' counters (module.stats())
    and the little modules' sizes; layers that are not dual count as dense."""
    conv = _conv_layers(module)
    saved, little = 0.0, 0.0
    for layer in module.stats():
        if layer.name not in conv or layer.calls == 0:
            continue
        meta = conv[layer.name]
        exact = layer.rows_read / layer.calls * meta["k"]
        little += meta["little_macs"]
        saved += meta["dense_macs"] - exact - meta["little_macs"]
    return OperationCount(dense_macs=dense_macs, dual_macs=dense_macs - saved, little_macs=little)


def ideal_reduction(module, dense_macs: int, sparsity: dict[str, float]) -> float:
    """The operations reduction of an ideal predictor in the module's dual layers: each computes
    exactly the outputs its ReLU keeps, a fraction 1 - sparsity[layer] (conv_plan.natural_sparsity),
    at no cost. No little module can skip more work without zeroing positive outputs."""
    saved = sum(sparsity[name] * layer["dense_macs"] for name, layer in _conv_layers(module).items() if name in sparsity)
    return dense_macs / (dense_macs - saved)


def _conv_layers(module) -> dict[str, dict]:
    """The metadata of a compiled module's dual convolution layers, by layer name."""
    return {layer["name"]: layer for layer in module.metadata["layers"] if layer.get("kind") == "conv2d"}
