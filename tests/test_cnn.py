"""GenreCNN: shapes, that it is a real convolutional network, its embeddings and its ensemble."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from genre_spark.model.cnn import GenreCNN, PeriodicEmbedding, architecture

KWARGS = {
    "n_features": 10,
    "n_genres": 4,
    "channels": 8,
    "depth": 3,
    "kernel_size": 3,
    "dropout": 0.2,
    "hidden": 16,
}


@pytest.mark.parametrize("embedding", ["periodic", "linear"])
def test_probabilities_for_any_batch(embedding: str) -> None:
    model = GenreCNN(**KWARGS, embedding=embedding, members=2).eval()
    for n in (1, 2, 17):
        out = model(torch.randn(n, 10))
        assert out.shape == (n, 4)
        torch.testing.assert_close(out.exp().sum(1), torch.ones(n))


@pytest.mark.parametrize(("embedding", "embedding_convs"), [("periodic", 0), ("linear", 1)])
def test_contains_conv_batchnorm_dropout_layers(embedding: str, embedding_convs: int) -> None:
    kinds = [type(m) for m in GenreCNN(**KWARGS, embedding=embedding).modules()]
    assert kinds.count(nn.Conv1d) == embedding_convs + KWARGS["depth"]
    assert kinds.count(nn.BatchNorm1d) == 1 + KWARGS["depth"]
    assert kinds.count(nn.Dropout) == KWARGS["depth"] + 2  # one per block + two in the head
    convs = [m for m in GenreCNN(**KWARGS).modules() if isinstance(m, nn.Conv1d)]
    assert all(c.kernel_size == (3,) and c.groups == 1 for c in convs)


def test_periodic_embedding_is_per_feature_and_not_linear() -> None:
    """Equal values of different inputs embed differently; the embedding bends the input's scale."""
    torch.manual_seed(0)
    embed = PeriodicEmbedding(n_features=10, channels=8, frequencies=4, scale=1.0)
    lifted = embed(torch.ones(1, 10))
    assert lifted.shape == (1, 8, 10)
    assert not torch.allclose(lifted[0, :, 0], lifted[0, :, 1])
    x = torch.linspace(-2, 2, 5).repeat(10, 1).T  # [5, 10]
    y = embed(x)[:, :, 0]
    second = y[2:] - 2 * y[1:-1] + y[:-2]  # second differences vanish for an affine map
    assert second.abs().max() > 1e-3


def test_convolution_mixes_only_neighbouring_features() -> None:
    """A kernel-3 convolution's output at position i depends on inputs i-1..i+1 only."""
    torch.manual_seed(2)
    member = GenreCNN(**{**KWARGS, "depth": 1}).eval().members[0]
    x = torch.zeros(2, 10)
    x[1, 7] = 3.0  # change input 7 only
    with torch.no_grad():
        embedded = member.embed_norm(member.embed(x))
        h = member.blocks[0].conv(embedded)
        out = member.blocks(embedded)
    changed = (h[0] - h[1]).abs().sum(0) > 1e-6
    assert changed.nonzero().flatten().tolist() == [6, 7, 8]
    # After the ReLU a neighbour's change may be silenced, a far position never changes.
    block_changed = set(((out[0] - out[1]).abs().sum(0) > 1e-6).nonzero().flatten().tolist())
    assert 7 in block_changed <= {6, 7, 8}


def test_the_ensemble_averages_its_members_probabilities() -> None:
    torch.manual_seed(1)
    model = GenreCNN(**KWARGS, members=3).eval()
    x = torch.randn(6, 10)
    with torch.no_grad():
        each = [torch.softmax(m(x), dim=1) for m in model.members]
        logits = model.member_logits(x)
        out = model(x)
    assert logits.shape == (3, 6, 4)
    assert not torch.allclose(each[0], each[1])  # different initial weights
    torch.testing.assert_close(out.exp(), sum(each) / 3)
    torch.testing.assert_close(torch.softmax(out, dim=1), sum(each) / 3)


def test_gradients_reach_every_parameter() -> None:
    model = GenreCNN(**KWARGS, members=2)
    logits = model.member_logits(torch.randn(6, 10))
    target = torch.tensor([0, 1, 2, 3, 0, 1]).repeat(2)
    nn.functional.cross_entropy(logits.flatten(0, 1), target).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_architecture_rebuilds_the_same_shapes() -> None:
    model = GenreCNN(**KWARGS, members=2, frequencies=5, frequency_scale=0.3)
    assert architecture(model) == {
        **KWARGS,
        "embedding": "periodic",
        "frequencies": 5,
        "frequency_scale": 0.3,
        "members": 2,
    }
    rebuilt = GenreCNN(**architecture(model))
    rebuilt.load_state_dict(model.state_dict())
    x = torch.randn(5, 10)
    torch.testing.assert_close(rebuilt.eval()(x), model.eval()(x))


def test_wrong_input_width_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"expected input \[N, 10\]"):
        GenreCNN(**KWARGS)(torch.randn(3, 9))
    with pytest.raises(ValueError, match="n_genres >= 2"):
        GenreCNN(**{**KWARGS, "n_genres": 1})
    with pytest.raises(ValueError, match="embedding"):
        GenreCNN(**KWARGS, embedding="cubic")
    assert math.isfinite(float(GenreCNN(**KWARGS).eval()(torch.zeros(2, 10)).sum()))
