"""BDKOS25's score network (SPEC §4, "neural regularisation"): an MLP on ``[x, Fourier(t)]``.

``h = [x, sin(2π t ω), cos(2π t ω)]`` with a fixed Gaussian Fourier time
embedding (``ω ~ N(0, scale²)``, ``dim/2`` frequencies; dim 8, scale 1) →
``blocks`` × ``ReLU(Linear(·, width))`` → ``Linear(width, d)``.  BDKOS25:
width 256, depth (hidden layers) 2, ReLU.  The output is the VP score
``s(x_vp, t)`` itself (no σ rescaling, as the paper's loss ``mean((σ s + z)²)``
is written); the parametrisation ``bdkos25_vp`` (:mod:`diffmem.parametrisation`)
turns it into a VE denoiser and feeds it the VP state and BDKOS25 time t.

The frequencies ``ω`` are drawn at construction from torch's global RNG (the
training loop seeds it) and kept as a buffer, so they are saved with the
weights.  Image-shaped input ``[B, C, H, W]`` is flattened to ``d = C·H·W``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..errors import DiffmemError
from .mlp import check_dims

__all__ = ["BDKOS25MLP", "GaussianFourierEmbedding"]


class GaussianFourierEmbedding(nn.Module):
    """``t [B] -> [sin(2π t ω), cos(2π t ω)] [B, dim]`` with fixed ``ω ~ N(0, scale²)`` (``dim/2`` of them)."""

    def __init__(self, dim: int = 8, scale: float = 1.0):
        super().__init__()
        if dim < 2 or dim % 2:
            raise DiffmemError(f"the Fourier time embedding needs an even dim ≥ 2, got {dim}")
        self.register_buffer("freqs", torch.randn(dim // 2) * float(scale))

    def forward(self, t: Tensor) -> Tensor:
        a = 2 * math.pi * t.reshape(-1, 1).to(self.freqs.dtype) * self.freqs
        return torch.cat([torch.sin(a), torch.cos(a)], dim=1)


class BDKOS25MLP(nn.Module):
    """``forward(x [B, *shape], t [B]) -> score [B, *shape]`` (BDKOS25's MLP; see the module docstring)."""

    def __init__(self, shape: tuple[int, ...], width: int = 256, blocks: int = 2, embed_dim: int = 8,
                 embed_scale: float = 1.0):
        super().__init__()
        self.shape, d = check_dims("BDKOS25MLP", shape, width, blocks, min_blocks=1)
        self.embed = GaussianFourierEmbedding(embed_dim, embed_scale)
        layers: list[nn.Module] = []
        fan_in = d + embed_dim
        for _ in range(blocks):
            layers += [nn.Linear(fan_in, width), nn.ReLU()]
            fan_in = width
        layers.append(nn.Linear(fan_in, d))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        h = torch.cat([x.reshape(x.shape[0], -1), self.embed(t).to(x.dtype)], dim=1)
        return self.net(h).reshape(x.shape)
