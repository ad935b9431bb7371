"""ResNet-20 training with an activation-sparsity penalty (TrainConfig.activation_l1), on real data."""

import numpy as np
import torch
from torch import nn

from tvm_dual import cnn_models
from tvm_dual.cnn_models import IMAGE_SHAPE, TrainConfig, train_resnet
from tvm_dual.datasets import load_fashion_mnist


def relu_sparsity(model: nn.Module, images: np.ndarray) -> float:
    """Fraction of the blocks' ReLU outputs that are zero."""
    zeros, total = 0, 0

    def hook(_m, _i, out):
        nonlocal zeros, total
        zeros += int((out == 0).sum())
        total += out.numel()

    handles = [m.register_forward_hook(hook) for m in model.blocks.modules() if isinstance(m, nn.ReLU)]
    with torch.no_grad():
        model(torch.from_numpy(images.reshape(-1, *IMAGE_SHAPE)))
    for h in handles:
        h.remove()
    return zeros / total


def test_activation_penalty_trains_a_sparser_network(tmp_path, monkeypatch):
    monkeypatch.setattr(cnn_models, "CACHE_DIR", str(tmp_path))
    torch.set_num_threads(1)
    train = load_fashion_mnist("train")
    images, labels = train.images[:1024], train.labels[:1024]
    plain = train_resnet(TrainConfig(epochs=1, batch_size=128), images, labels, log=lambda _m: None)
    sparse = train_resnet(TrainConfig(epochs=1, batch_size=128, activation_l1=5.0), images, labels, log=lambda _m: None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["resnet20_fmnist_e1_s0.pt", "resnet20_fmnist_e1_s0_l1-5.pt"]
    # the penalty's hooks are gone: the returned model is a plain ResNet
    assert not any(m._forward_hooks for m in sparse.modules())
    held_out = train.images[-256:]
    # same seed and data: without the penalty the two trainings would be identical (0.55 vs 0.44 here)
    assert relu_sparsity(sparse, held_out) > relu_sparsity(plain, held_out) + 0.05
