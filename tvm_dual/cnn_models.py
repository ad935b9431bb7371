"""Convolutional reference models and their resumable training (Fashion-MNIST).

ResNet-20 as in He et al. (2016) for 32x32 inputs, here on 28x28x1 Fashion-MNIST images:
a 3x3 stem, three stages of three basic blocks (widths 16/32/64, the last two stages start with
stride 2), global average pooling and a Linear head. Downsampling shortcuts are 1x1 convolutions
with BatchNorm (option B), which the frontend imports as ordinary convolutions.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

CACHE_DIR = os.path.expanduser(os.environ.get("TVM_DUAL_CACHE", "~/.cache/tvm_dual"))
IMAGE_SHAPE = (1, 28, 28)
HELD_OUT = 5000  # last training images: never trained on; calibration and threshold choice


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int, act: type[nn.Module] = nn.ReLU) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.act = act()
        self.shortcut = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.bn1(self.conv1(x)))
        return self.act(self.bn2(self.conv2(h)) + self.shortcut(x))


class ResNet(nn.Module):
    """CIFAR-style ResNet-(6n+2) for (C, H, W) images."""

    def __init__(self, blocks_per_stage: int = 3, widths=(16, 32, 64), in_channels: int = 1, classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        self.bn = nn.BatchNorm2d(widths[0])
        layers = []
        c_in = widths[0]
        for stage, width in enumerate(widths):
            for i in range(blocks_per_stage):
                layers.append(BasicBlock(c_in, width, 2 if stage > 0 and i == 0 else 1))
                c_in = width
        self.blocks = nn.Sequential(*layers)
        self.head = nn.Linear(c_in, classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn(self.stem(x)))
        h = self.blocks(h)
        return self.head(torch.flatten(F.adaptive_avg_pool2d(h, 1), 1))


def resnet20() -> ResNet:
    return ResNet(3, (16, 32, 64))


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 2
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    seed: int = 0
    # Weight of an L1 penalty on every block's ReLU outputs (their mean per layer, summed over the
    # layers). Dual convolutions save work only on outputs the ReLU zeroes, and a plainly trained
    # ResNet-20 zeroes 32-55% per layer; the penalty trains a sparser network (Kurtz et al. 2020,
    # "Inducing and exploiting activation sparsity for fast inference on deep neural networks").
    activation_l1: float = 0.0

    @property
    def tag(self) -> str:
        sparse = f"_l1-{self.activation_l1:g}" if self.activation_l1 else ""
        return f"resnet20_fmnist_e{self.epochs}_s{self.seed}{sparse}"


def checkpoint_path(config: TrainConfig, final: bool = True) -> str:
    return os.path.join(CACHE_DIR, f"{config.tag}{'' if final else '.partial'}.pt")


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random 2-pixel translation (zero padding) and horizontal flip."""
    n = x.shape[0]
    padded = F.pad(x, (2, 2, 2, 2))
    dx, dy = torch.randint(0, 5, (2,), generator=gen).tolist()
    out = padded[:, :, dy : dy + 28, dx : dx + 28]
    flip = torch.rand(n, generator=gen) < 0.5
    return torch.where(flip[:, None, None, None], out.flip(3), out)


def evaluate(model: nn.Module, images: np.ndarray, labels: np.ndarray, batch: int = 1000) -> float:
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(images), batch):
            logits = model(torch.from_numpy(images[i : i + batch].reshape(-1, *IMAGE_SHAPE)))
            correct += int((logits.argmax(1).numpy() == labels[i : i + batch]).sum())
    return correct / len(images)


def train_resnet(config: TrainConfig, train_images: np.ndarray, train_labels: np.ndarray, log=print) -> ResNet:
    """SGD with momentum and a cosine schedule; checkpoints every epoch and resumes from the last one.

    Returns the trained model (also saved at checkpoint_path(config)). If that file exists, it is
    loaded instead of training.
    """
    final = checkpoint_path(config)
    model = resnet20()
    if os.path.exists(final):
        model.load_state_dict(torch.load(final, weights_only=True)["model"])
        return model.eval()
    os.makedirs(CACHE_DIR, exist_ok=True)
    partial = checkpoint_path(config, final=False)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay, nesterov=True
    )
    steps_per_epoch = math.ceil(len(train_images) / config.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.lr, epochs=config.epochs, steps_per_epoch=steps_per_epoch, pct_start=0.15
    )
    start_epoch = 0
    if os.path.exists(partial):
        state = torch.load(partial, weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        start_epoch = int(state["epoch"])
        log(f"resuming {config.tag} after epoch {start_epoch}")
    relu_outputs: list[torch.Tensor] = []
    hooks = []
    if config.activation_l1:
        for module in model.blocks.modules():
            if isinstance(module, nn.ReLU):  # each block's ReLU runs twice: after conv1, after the add
                hooks.append(module.register_forward_hook(lambda _m, _i, out: relu_outputs.append(out)))
    x_all = torch.from_numpy(train_images.reshape(-1, *IMAGE_SHAPE))
    model = model.to(memory_format=torch.channels_last)  # about 15% faster training on one thread here
    y_all = torch.from_numpy(train_labels)
    for epoch in range(start_epoch, config.epochs):
        gen = torch.Generator().manual_seed(config.seed * 1000 + epoch)
        torch.manual_seed(config.seed * 1000 + epoch)
        order = torch.randperm(len(x_all), generator=gen)
        model.train()
        started, total_loss = time.monotonic(), 0.0
        for i in range(steps_per_epoch):
            idx = order[i * config.batch_size : (i + 1) * config.batch_size]
            xb, yb = _augment(x_all[idx], gen).contiguous(memory_format=torch.channels_last), y_all[idx]
            optimizer.zero_grad(set_to_none=True)
            relu_outputs.clear()
            loss = F.cross_entropy(model(xb), yb)
            if relu_outputs:
                loss = loss + config.activation_l1 * sum(out.mean() for out in relu_outputs)
            loss.backward()
            optimizer.step()
            schedule.step()
            total_loss += float(loss.detach())
            if (i + 1) % 100 == 0:
                log(f"  epoch {epoch + 1} step {i + 1}/{steps_per_epoch}: loss {total_loss / (i + 1):.4f}")
        log(f"epoch {epoch + 1}/{config.epochs}: loss {total_loss / steps_per_epoch:.4f} ({time.monotonic() - started:.0f} s)")
        state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(), "epoch": epoch + 1}
        torch.save(state, partial + ".tmp")
        os.replace(partial + ".tmp", partial)
    for hook in hooks:
        hook.remove()
    model = model.to(memory_format=torch.contiguous_format).eval()
    torch.save({"model": model.state_dict(), "config": asdict(config)}, final + ".tmp")
    os.replace(final + ".tmp", final)
    if os.path.exists(partial):
        os.remove(partial)
    return model


def load_resnet(path: str) -> ResNet:
    """A trained ResNet-20 from a checkpoint written by train_resnet."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"no checkpoint at {path!r}; train one with scripts/train_cnn.py")
    model = resnet20()
    model.load_state_dict(torch.load(path, weights_only=True)["model"])
    return model.eval()


def write_summary(path: str, summary: dict) -> None:
    with open(path, "w") as f:
        json.dump(summary, f, indent=2)
