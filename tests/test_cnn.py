"""GenreCNN: shapes, that it is a real convolutional network, and what its first layer means."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from genre_spark.model.cnn import GenreCNN, architecture

KWARGS = {
    "n_features": 10,
    "n_genres": 4,
    "channels": 8,
    "depth": 3,
    "kernel_size": 3,
    "dropout": 0.2,
}


def test_logits_shape_for_any_batch() -> None:
    model = GenreCNN(**KWARGS).eval()
    for n in (1, 2, 17):
        assert model(torch.randn(n, 10)).shape == (n, 4)


def test_contains_conv_batchnorm_dropout_layers() -> None:
    kinds = [type(m) for m in GenreCNN(**KWARGS).modules()]
    assert kinds.count(nn.Conv1d) == 1 + KWARGS["depth"]  # per-feature embedding + one per block
    assert kinds.count(nn.BatchNorm1d) == 1 + KWARGS["depth"]
    assert kinds.count(nn.Dropout) == KWARGS["depth"] + 1  # one per block + head
    convs = [m for m in GenreCNN(**KWARGS).modules() if isinstance(m, nn.Conv1d)]
    assert convs[0].kernel_size == (1,) and convs[0].groups == 10
    assert all(c.kernel_size == (3,) and c.groups == 1 for c in convs[1:])


def test_embedding_is_per_feature() -> None:
    """Equal scaled values in different features get different embeddings (untied 1x1 conv)."""
    model = GenreCNN(**KWARGS)
    lifted = model.embed(torch.ones(1, 10))
    assert lifted.shape == (1, 8, 10)
    assert not torch.allclose(lifted[0, :, 0], lifted[0, :, 1])


def test_convolution_mixes_only_neighbouring_features() -> None:
    """A kernel-3, depth-1 network's block output at position i depends on features i-1..i+1 only."""
    model = GenreCNN(**{**KWARGS, "depth": 1}).eval()
    x = torch.zeros(2, 10)
    x[1, 7] = 3.0  # change feature 7 only
    with torch.no_grad():
        h = model.blocks(torch.relu(model.embed_norm(model.embed(x))))
    changed = (h[0] - h[1]).abs().sum(0) > 1e-6
    assert changed.nonzero().flatten().tolist() == [6, 7, 8]


def test_gradients_reach_every_parameter() -> None:
    model = GenreCNN(**KWARGS)
    nn.functional.cross_entropy(
        model(torch.randn(6, 10)), torch.tensor([0, 1, 2, 3, 0, 1])
    ).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_architecture_rebuilds_the_same_shapes() -> None:
    model = GenreCNN(**KWARGS)
    assert architecture(model) == KWARGS
    rebuilt = GenreCNN(**architecture(model))
    rebuilt.load_state_dict(model.state_dict())
    x = torch.randn(5, 10)
    torch.testing.assert_close(rebuilt.eval()(x), model.eval()(x))


def test_wrong_input_width_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"expected input \[N, 10\]"):
        GenreCNN(**KWARGS)(torch.randn(3, 9))
    with pytest.raises(ValueError, match="n_genres >= 2"):
        GenreCNN(**{**KWARGS, "n_genres": 1})
