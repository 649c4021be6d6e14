"""A small bidirectional transformer over token sequences: the discrete denoiser of masked diffusion (FSW25).

``forward(z [B, n] int64) -> logits [B, n, v]``: token embedding over ``v + 1``
ids (id ``v`` is the mask token) plus a learned position embedding, ``blocks``
pre-LayerNorm encoder blocks (full, unmasked self-attention with ``heads``
heads; a GELU MLP of width ``4 W``), a final LayerNorm and a linear read-out
to the ``v`` symbols (no mask class: MDLM's "SUBS").  No time input (the
number of masks carries it, MDLM).  Every operation is per row, so row ``j``
of the output depends on row ``j`` of the input only (per-sample seeds give
the same sample whatever the batch).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..errors import DiffmemError

__all__ = ["TokenTransformer"]


class _Block(nn.Module):
    def __init__(self, width: int, heads: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))
        self.drop = nn.Dropout(dropout)
        self.p = dropout

    def forward(self, h: Tensor) -> Tensor:  # h: [B, n, W]
        B, n, W = h.shape
        q, k, v = self.qkv(self.ln1(h)).reshape(B, n, 3, self.heads, W // self.heads).permute(2, 0, 3, 1, 4)
        a = nn.functional.scaled_dot_product_attention(q, k, v, dropout_p=self.p if self.training else 0.0)
        h = h + self.drop(self.proj(a.transpose(1, 2).reshape(B, n, W)))
        return h + self.drop(self.mlp(self.ln2(h)))


class TokenTransformer(nn.Module):
    """``forward(z [B, n]) -> logits [B, n, vocab]`` (module docstring); ``mask_id == vocab``."""

    def __init__(self, seq_len: int, vocab: int, width: int = 64, blocks: int = 2, heads: int = 4,
                 dropout: float = 0.0):
        super().__init__()
        if seq_len < 1 or vocab < 2:
            raise DiffmemError(f"the transformer needs sequences of length ≥ 1 over ≥ 2 symbols, got seq_len="
                               f"{seq_len}, vocab={vocab}")
        if width < 1 or blocks < 1 or heads < 1 or width % heads:
            raise DiffmemError(f"the transformer needs blocks ≥ 1 and a width divisible by heads, got width={width}, "
                               f"blocks={blocks}, heads={heads}")
        self.seq_len, self.vocab, self.mask_id = int(seq_len), int(vocab), int(vocab)
        self.tok = nn.Embedding(vocab + 1, width)
        self.pos = nn.Parameter(torch.randn(seq_len, width) * 0.02)
        self.blocks = nn.ModuleList(_Block(width, heads, dropout) for _ in range(blocks))
        self.ln = nn.LayerNorm(width)
        self.out = nn.Linear(width, vocab)

    def forward(self, z: Tensor) -> Tensor:
        if z.ndim != 2 or z.shape[1] != self.seq_len:
            raise DiffmemError(f"the transformer takes token sequences [B, {self.seq_len}], got {tuple(z.shape)}")
        h = self.tok(z) + self.pos
        for block in self.blocks:
            h = block(h)
        return self.out(self.ln(h))
