"""A 1-D convolutional network over the track's input vector, and a seed ensemble of them.

Layout. The input is one vector per track, ``[N, n_features]``, in the order
of the fitted feature transform's inputs (``FeatureTransform.outputs``:
``schema.MODEL_FEATURES`` order, a cyclic feature as its sin and cos, a
missing indicator right after its feature). The network treats it as a
sequence whose "time" axis is that input list.

What convolving over a feature list means (honestly). The feature axis is not
time or space: neighbouring positions are related only because the schema
groups related features next to each other (tempo, energy, danceability,
loudness describe intensity and drive; liveness, valence the mood of the
recording; acousticness, speechiness, instrumentalness its texture;
popularity and year the track's place in time; key's sin and cos, mode its
tonality). A kernel of size k therefore sees k related inputs at once and
learns interactions between neighbours ("loud AND danceable") with the same
weights at every position. Weight sharing is only sensible after each input
has been lifted into its own channels: a scaled tempo of 1.0 and a scaled
speechiness of 1.0 mean different things. So the first layer is a
*per-feature* embedding with its own weights per input, and the shared
kernels that follow work on embeddings rather than raw numbers. The head
flattens ``[channels, n_features]`` instead of pooling over positions,
because which input a pattern was found at matters here.

The embedding (``embedding``):

- ``periodic`` (default): a PLR embedding (Gorishniy et al., "On Embeddings
  for Numerical Features in Tabular Deep Learning", 2022): per input, ``k``
  learned frequencies ``c``, the periodic features ``sin(2 pi c x)``,
  ``cos(2 pi c x)``, then a per-input linear map to ``channels`` and a ReLU.
  A plain linear map can only scale a number; periodic features let the
  first layer bend each input's scale (thresholds, bumps) the way trees split
  it, which is what tabular inputs need.
- ``linear``: a per-input affine map (an untied 1x1 convolution), the
  original embedding.

Ensemble. ``members`` independent networks (different initial weights) are
trained together; ``forward`` returns the log of their *averaged*
probabilities, so ``softmax(forward(x))`` is the ensemble's prediction and
scoring needs nothing special. Training uses :meth:`GenreCNN.member_logits`
so every member learns from its own loss.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn


class PeriodicEmbedding(nn.Module):
    """``[N, F] -> [N, C, F]``: per input, learned sin/cos frequencies, a linear map and a ReLU."""

    def __init__(self, n_features: int, channels: int, frequencies: int, scale: float) -> None:
        super().__init__()
        self.frequencies = nn.Parameter(torch.randn(n_features, frequencies) * scale)
        self.weight = nn.Parameter(
            torch.randn(n_features, 2 * frequencies, channels) / math.sqrt(2 * frequencies)
        )
        self.bias = nn.Parameter(torch.zeros(n_features, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        angle = 2 * math.pi * x.unsqueeze(-1) * self.frequencies
        periodic = torch.cat([torch.sin(angle), torch.cos(angle)], dim=-1)
        lifted = torch.einsum("nfk,fkc->nfc", periodic, self.weight) + self.bias
        return torch.relu(lifted).transpose(1, 2)


class LinearEmbedding(nn.Module):
    """``[N, F] -> [N, C, F]``: per input its own affine map (a grouped 1x1 convolution) and a ReLU."""

    def __init__(self, n_features: int, channels: int) -> None:
        super().__init__()
        self.n_features = n_features
        self.channels = channels
        self.conv = nn.Conv1d(n_features, n_features * channels, kernel_size=1, groups=n_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lifted = self.conv(x.unsqueeze(-1))  # [N, F*C, 1], grouped by feature
        return torch.relu(lifted.view(x.shape[0], self.n_features, self.channels).transpose(1, 2))


class ConvBlock(nn.Module):
    """Conv1d -> BatchNorm1d -> ReLU -> Dropout, with a residual connection.

    "Same" padding keeps one position per input so the head still knows
    which input each activation belongs to.
    """

    def __init__(self, channels: int, kernel_size: int, dropout: float) -> None:
        super().__init__()
        self.conv = nn.Conv1d(channels, channels, kernel_size, padding="same", bias=False)
        self.norm = nn.BatchNorm1d(channels)
        self.act = nn.ReLU()
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual: torch.Tensor = self.drop(self.act(self.norm(self.conv(x))))
        return x + residual


@dataclass(frozen=True)
class NetworkShape:
    """The size of one member network (what ``GenreCNN``'s arguments describe)."""

    n_features: int
    n_genres: int
    channels: int
    depth: int
    kernel_size: int
    dropout: float
    hidden: int
    embedding: str
    frequencies: int
    frequency_scale: float

    def __post_init__(self) -> None:
        if (
            self.n_features < 1
            or self.n_genres < 2
            or self.channels < 1
            or self.depth < 1
            or self.kernel_size < 1
        ):
            raise ValueError(
                "GenreCNN needs n_features >= 1, n_genres >= 2, channels >= 1, depth >= 1, "
                f"kernel_size >= 1; got {self.n_features}, {self.n_genres}, {self.channels}, "
                f"{self.depth}, {self.kernel_size}"
            )
        if self.embedding not in ("periodic", "linear"):
            raise ValueError(f"embedding must be 'periodic' or 'linear', got {self.embedding!r}")


class Member(nn.Module):
    """One network: embedding -> BatchNorm -> conv blocks -> flatten -> MLP head -> logits."""

    def __init__(self, shape: NetworkShape) -> None:
        super().__init__()
        c = shape.channels
        self.embed: nn.Module = (
            PeriodicEmbedding(shape.n_features, c, shape.frequencies, shape.frequency_scale)
            if shape.embedding == "periodic"
            else LinearEmbedding(shape.n_features, c)
        )
        self.embed_norm = nn.BatchNorm1d(c)
        self.blocks = nn.Sequential(
            *(ConvBlock(c, shape.kernel_size, shape.dropout) for _ in range(shape.depth))
        )
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(shape.dropout),
            nn.Linear(c * shape.n_features, shape.hidden),
            nn.ReLU(),
            nn.Dropout(shape.dropout),
            nn.Linear(shape.hidden, shape.n_genres),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.head(self.blocks(self.embed_norm(self.embed(x))))
        return logits


class GenreCNN(nn.Module):
    """Genre log-probabilities from an input vector: ``forward([N, n_features]) -> [N, n_genres]``.

    Example::

        model = GenreCNN(n_features=17, n_genres=6, channels=16, depth=2, kernel_size=3,
                         dropout=0.1, members=3)
        probabilities = torch.softmax(model(torch.randn(8, 17)), dim=1)  # the 3 members' mean
    """

    def __init__(
        self,
        n_features: int,
        n_genres: int,
        channels: int,
        depth: int,
        kernel_size: int,
        dropout: float,
        hidden: int = 128,
        embedding: str = "periodic",
        frequencies: int = 16,
        frequency_scale: float = 0.1,
        members: int = 1,
    ) -> None:
        super().__init__()
        if members < 1:
            raise ValueError(f"GenreCNN needs members >= 1, got {members}")
        shape = NetworkShape(
            n_features,
            n_genres,
            channels,
            depth,
            kernel_size,
            dropout,
            hidden,
            embedding,
            frequencies,
            frequency_scale,
        )
        self.config = {**asdict(shape), "members": members}
        self.members = nn.ModuleList(Member(shape) for _ in range(members))

    @property
    def n_features(self) -> int:
        return int(self.config["n_features"])

    def member_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Each member's logits, ``[members, N, n_genres]`` (what training's loss reads)."""
        if x.dim() != 2 or x.shape[1] != self.n_features:
            raise ValueError(f"expected input [N, {self.n_features}], got {list(x.shape)}")
        return torch.stack([member(x) for member in self.members])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Log of the members' mean probabilities (softmax of it is that mean)."""
        log_probabilities = torch.log_softmax(self.member_logits(x), dim=-1)
        return torch.logsumexp(log_probabilities, dim=0) - math.log(len(self.members))


def architecture(model: GenreCNN) -> dict[str, int | float | str]:
    """The constructor arguments that rebuild ``model``'s shape (stored beside its weights)."""
    return dict(model.config)
