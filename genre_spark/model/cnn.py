"""A 1-D convolutional network over the scaled audio-feature vector.

Layout. The input is one scaled vector per track, ``[N, n_features]``, in the
order of ``settings.features`` (which keeps ``schema.FEATURES``' order). The
network reads it as a one-channel sequence, ``[N, 1, n_features]``, whose
"time" axis is the feature list.

What convolving over a feature list means (honestly). The feature axis is not
time or space: neighbouring positions are related only because the schema
groups related features next to each other (tempo, energy, danceability,
loudness describe intensity and drive; liveness, valence the mood of the
recording; acousticness, speechiness, instrumentalness its texture). A kernel
of size k therefore sees k related features at once and learns pairwise and
triple interactions between neighbours ("loud AND danceable"), with the same
weights at every position. Weight sharing is only sensible after each
feature has been lifted into its own channels: a scaled tempo of 1.0 and a
scaled speechiness of 1.0 mean different things. So the first layer is a
*per-feature* 1x1 embedding (an untied, locally connected 1x1 convolution,
implemented as a grouped ``Conv1d``): each feature gets its own ``channels``
-dimensional embedding, and the shared kernels that follow work on embeddings
rather than raw numbers. The head flattens ``[channels, n_features]`` instead of
pooling over positions, because which feature a pattern was found at matters
here (pooling would throw that away, as it would not for audio frames).
With ten features this is a small model; depth and kernel size grow the
receptive field so later blocks see interactions across groups.
"""

from __future__ import annotations

import torch
from torch import nn


class FeatureEmbedding(nn.Module):
    """Lift each scalar feature into its own ``channels``-dim embedding: ``[N, F] -> [N, C, F]``.

    A 1x1 convolution with one group per feature, so feature i has its own
    weights (a shared 1x1 kernel would map equal scaled values of different
    features to the same embedding).
    """

    def __init__(self, n_features: int, channels: int) -> None:
        super().__init__()
        self.n_features = n_features
        self.channels = channels
        self.conv = nn.Conv1d(n_features, n_features * channels, kernel_size=1, groups=n_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        lifted = self.conv(x.unsqueeze(-1))  # [N, F*C, 1], grouped by feature
        return lifted.view(n, self.n_features, self.channels).transpose(1, 2)


class ConvBlock(nn.Module):
    """Conv1d -> BatchNorm1d -> ReLU -> Dropout, with a residual connection.

    The residual keeps deeper stacks (config ``depth`` up to 6) trainable on
    a small catalogue; "same" padding keeps one position per feature so the
    head still knows which feature each activation belongs to.
    """

    def __init__(self, channels: int, kernel_size: int, dropout: float) -> None:
        super().__init__()
        self.conv = nn.Conv1d(channels, channels, kernel_size, padding="same", bias=False)
        self.norm = nn.BatchNorm1d(channels)
        self.act = nn.ReLU()
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.drop(self.act(self.norm(self.conv(x))))


class GenreCNN(nn.Module):
    """Genre logits from a scaled feature vector: ``forward([N, n_features]) -> [N, n_genres]``.

    Example::

        model = GenreCNN(n_features=10, n_genres=4, channels=16, depth=2, kernel_size=3, dropout=0.1)
        logits = model(torch.randn(8, 10))  # shape [8, 4]
    """

    def __init__(
        self,
        n_features: int,
        n_genres: int,
        channels: int,
        depth: int,
        kernel_size: int,
        dropout: float,
    ) -> None:
        super().__init__()
        if n_features < 1 or n_genres < 2 or channels < 1 or depth < 1 or kernel_size < 1:
            raise ValueError(
                "GenreCNN needs n_features >= 1, n_genres >= 2, channels >= 1, depth >= 1, "
                f"kernel_size >= 1; got {n_features}, {n_genres}, {channels}, {depth}, {kernel_size}"
            )
        self.n_features = n_features
        self.n_genres = n_genres
        self.embed = FeatureEmbedding(n_features, channels)
        self.embed_norm = nn.BatchNorm1d(channels)
        self.blocks = nn.Sequential(
            *(ConvBlock(channels, kernel_size, dropout) for _ in range(depth))
        )
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(channels * n_features, channels * 2),
            nn.ReLU(),
            nn.Linear(channels * 2, n_genres),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2 or x.shape[1] != self.n_features:
            raise ValueError(f"expected input [N, {self.n_features}], got {list(x.shape)}")
        h = torch.relu(self.embed_norm(self.embed(x)))
        return self.head(self.blocks(h))


def architecture(model: GenreCNN) -> dict[str, int | float]:
    """The constructor arguments that rebuild ``model``'s shape (stored beside its weights)."""
    block = model.blocks[0]
    return {
        "n_features": model.n_features,
        "n_genres": model.n_genres,
        "channels": model.embed.channels,
        "depth": len(model.blocks),
        "kernel_size": block.conv.kernel_size[0],
        "dropout": block.drop.p,
    }
