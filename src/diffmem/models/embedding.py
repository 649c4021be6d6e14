"""Fixed sinusoidal embedding of a scalar noise label (shared by every backbone).

The label is a float: a (fractional) DDPM index in ``[0, 999]`` in the BUBM25
setup, or an OU time / ``ln σ / 4`` for other wrappers (see
:func:`diffmem.denoiser.noise_label`).  The frequencies span
``1 … 1/max_period``, which resolves labels of order ``1 … max_period``; for a
label living in ``[0, 5]`` (OU time) pass ``scale=1000`` so that it covers the
same range as a DDPM index.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["sinusoidal_embedding", "SinusoidalEmbedding"]


def sinusoidal_embedding(label: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """``label [B]`` → ``[B, dim]`` = ``[cos(label·f_k), sin(label·f_k)]``, ``f_k = max_period^{-k/half}``.

    Same frequencies as the Transformer / DDPM positional encoding (up to the
    order of the columns); an odd ``dim`` gets a zero last column.
    """
    half = dim // 2
    k = torch.arange(half, dtype=torch.float32, device=label.device)
    freqs = torch.exp(-math.log(max_period) * k / max(half, 1))
    arg = label.to(torch.float32)[:, None] * freqs[None]
    emb = torch.cat([torch.cos(arg), torch.sin(arg)], dim=1)
    if dim % 2:
        emb = torch.nn.functional.pad(emb, (0, 1))
    return emb


class SinusoidalEmbedding(nn.Module):
    """Module form of :func:`sinusoidal_embedding`; no trainable parameters."""

    def __init__(self, dim: int, max_period: float = 10000.0, scale: float = 1.0):
        super().__init__()
        self.dim, self.max_period, self.scale = dim, max_period, scale

    def forward(self, label: Tensor) -> Tensor:
        # computed in float32 (a DDPM index of ~1000 times a frequency needs it), returned in float32
        return sinusoidal_embedding(label * self.scale, self.dim, self.max_period)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, max_period={self.max_period}, scale={self.scale}"
