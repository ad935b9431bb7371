"""Small PyTorch models used across tests."""

import torch
from torch import nn
from torch.nn import functional as F

ACTS = {"tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "relu": nn.ReLU}


def odd_mlp(act: str, sizes=(37, 333, 10)) -> nn.Module:
    """Sequential Linear + act layers of odd sizes, with a plain Linear head."""
    layers = []
    for k, n in zip(sizes[:-2], sizes[1:-1]):
        layers += [nn.Linear(k, n), ACTS[act]()]
    layers.append(nn.Linear(sizes[-2], sizes[-1]))
    return nn.Sequential(*layers).eval()


class FunctionalMLP(nn.Module):
    """The same layers written with F.linear, x @ W.T + b and torch.* activations."""

    def __init__(self) -> None:
        super().__init__()
        self.w1 = nn.Parameter(torch.randn(129, 37) / 6)
        self.b1 = nn.Parameter(torch.randn(129) / 6)
        self.fc2 = nn.Linear(129, 65, bias=False)
        self.fc3 = nn.Linear(65, 11)

    def forward(self, x):
        h = torch.sigmoid(F.linear(x, self.w1, self.b1))
        h = F.relu(h @ self.fc2.weight.T)
        return {"logits": self.fc3(h), "hidden": (h, torch.tanh(self.fc3(h)))}


class GeluMLP(nn.Module):
    """A Linear + GELU layer (no insensitive region the kernel supports) next to a tanh layer."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(40, 96)
        self.fc2 = nn.Linear(96, 72)
        self.head = nn.Linear(72, 5)

    def forward(self, x):
        return self.head(torch.tanh(self.fc2(F.gelu(self.fc1(x)))))
