"""Small reference models and their training loops, shared by the demo, tests and benchmarks."""

from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn


class FashionMLP(nn.Module):
    """784 -> hidden (ReLU) -> hidden2 (tanh) -> 10: both dual activations in one small model."""

    def __init__(self, hidden: int = 512, hidden2: int = 256) -> None:
        super().__init__()
        self.fc1 = nn.Linear(784, hidden)
        self.fc2 = nn.Linear(hidden, hidden2)
        self.head = nn.Linear(hidden2, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.fc2(torch.relu(self.fc1(x)))))


def train_classifier(
    model: nn.Module,
    images: np.ndarray,
    labels: np.ndarray,
    seconds: float = 5.0,
    epochs: int = 3,
    batch_size: int = 128,
    lr: float = 2e-3,
    seed: int = 0,
) -> nn.Module:
    """Adam on cross-entropy until `epochs` passes or `seconds` of wall time, whichever is first."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    x_all, y_all = torch.from_numpy(images), torch.from_numpy(labels)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    deadline = time.monotonic() + seconds
    model.train()
    for _ in range(epochs):
        order = torch.from_numpy(rng.permutation(len(images)))
        for start in range(0, len(images), batch_size):
            idx = order[start : start + batch_size]
            xb, yb = x_all[idx], y_all[idx]
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(xb), yb).backward()
            optimizer.step()
            if time.monotonic() > deadline:
                model.eval()
                return model
    model.eval()
    return model


def accuracy(predict, images: np.ndarray, labels: np.ndarray, batch: int = 1) -> float:
    """Top-1 accuracy of `predict` (numpy (batch, 784) -> logits), fed `batch` images at a time."""
    correct = 0
    n = len(images) - len(images) % batch
    for start in range(0, n, batch):
        logits = np.asarray(predict(images[start : start + batch]))
        correct += int((logits.argmax(axis=1) == labels[start : start + batch]).sum())
    return correct / n
