"""MLP noise-prediction network for vectors: the BUBM25 GMM network.

``Linear(d, W)`` → ``blocks`` × ``h = LayerNorm(h + L2(GELU(L1(h + PE[label]))))``
→ ``Linear(W, d)``.  PE is the fixed sinusoidal embedding of width W.  At
d = 8, W = 128, 3 blocks it has exactly 102,024 trainable parameters
(BUBM25's ``SimpleTimeModel``).  Image-shaped input ``[B, C, H, W]`` is
flattened to ``d = C·H·W`` and reshaped back.
"""

from __future__ import annotations

import math

from torch import Tensor, nn

from ..errors import DiffmemError
from .embedding import SinusoidalEmbedding

__all__ = ["MLP"]


def check_dims(name: str, shape, width: int, blocks: int, min_blocks: int = 0) -> tuple[tuple[int, ...], int]:
    """Validate an MLP's data shape, width and depth; returns ``(shape, d)`` with ``d`` the flattened size."""
    shape = tuple(int(s) for s in shape)
    if not shape or any(s < 1 for s in shape):
        raise DiffmemError(f"{name} needs a non-empty data shape of positive sizes, got {shape}")
    if width < 1 or blocks < min_blocks:
        raise DiffmemError(f"{name} needs width >= 1 and blocks >= {min_blocks}, got width={width}, blocks={blocks}")
    return shape, math.prod(shape)


class MLPBlock(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.l1 = nn.Linear(width, width)
        self.l2 = nn.Linear(width, width)
        self.act = nn.GELU()
        self.norm = nn.LayerNorm(width)

    def forward(self, h: Tensor, pe: Tensor) -> Tensor:
        # pe: [B, W]; added to the block input only, not to the residual
        return self.norm(h + self.l2(self.act(self.l1(h + pe))))


class MLP(nn.Module):
    """``forward(x [B, *shape], label [B]) -> eps [B, *shape]``."""

    def __init__(self, shape: tuple[int, ...], width: int = 128, blocks: int = 3,
                 max_period: float = 10000.0):
        super().__init__()
        self.shape, d = check_dims("MLP", shape, width, blocks)
        self.embed = SinusoidalEmbedding(width, max_period)
        self.inp = nn.Linear(d, width)
        self.blocks = nn.ModuleList(MLPBlock(width) for _ in range(blocks))
        self.out = nn.Linear(width, d)

    def forward(self, x: Tensor, label: Tensor) -> Tensor:
        pe = self.embed(label).to(x.dtype)
        h = self.inp(x.reshape(x.shape[0], -1))
        for block in self.blocks:
            h = block(h, pe)
        return self.out(h).reshape(x.shape)
