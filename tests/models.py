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


class OddConvNet(nn.Module):
    """Odd channel counts and spatial sizes, conv bias, batch norm, ReLU6, stride 2, max pooling, a
    residual block with an identity shortcut and one with a 1x1 stride-2 shortcut, a Linear head."""

    def __init__(self) -> None:
        super().__init__()
        from tvm_dual.cnn_models import BasicBlock

        self.conv1 = nn.Conv2d(3, 5, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(5)
        self.conv2 = nn.Conv2d(5, 7, 3, stride=2, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(7)
        self.block1 = BasicBlock(7, 7, 1)
        self.block2 = BasicBlock(7, 9, 2)
        self.head = nn.Linear(9, 4)
        for m in self.modules():  # non-trivial batch-norm statistics, so that folding is tested
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.data.uniform_(0.5, 1.5)
                m.bias.data.uniform_(-0.5, 0.5)

    def forward(self, x):
        h = torch.relu(self.bn1(self.conv1(x)))
        h = F.max_pool2d(h, 2, ceil_mode=False) if h.shape[-1] > 6 else h
        h = F.relu6(self.bn2(self.conv2(h)))
        h = self.block2(self.block1(h))
        return self.head(torch.flatten(F.adaptive_avg_pool2d(h, 1), 1))
