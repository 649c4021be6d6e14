"""U-Net noise-prediction network for images: the BUBM25 CelebA network.

Layout (base width W, multipliers ``mults``, ``L = len(mults)`` levels)::

    label → sinusoidal(W) → Linear(W,4W) → GELU → Linear(4W,4W) = temb
    x [B,C,H,W] → conv3×3 C→W
    encoder, level l (channels W·mults[l], resolution H/2^l):
        `blocks` ResBlocks (+ self-attention where attn[l]);
        then a stride-2 conv3×3 down-sampler, except after the last level
    bottleneck: ResBlock + attention, ResBlock (channels W·mults[-1])
    decoder, level l from L-1 down to 0:
        `blocks`+1 ResBlocks, each on [h, popped skip] concatenated
        (+ self-attention where attn[l]);
        then nearest ×2 + conv3×3 up-sampler, except after level 0
    GroupNorm → SiLU → conv3×3 W→C

    ResBlock(c_in→c_out): GN → SiLU → conv3×3 → + Linear(SiLU(temb)) →
        GN → SiLU → dropout → conv3×3, plus a 1×1 conv shortcut when c_in≠c_out.
    Attention(c): GN → 4-head self-attention over the H·W positions, with
        biased q,k,v and output projections → + residual.

The skips are the output of the input conv, of every encoder ResBlock and of
every down-sampler (``1 + L·blocks + (L−1)`` tensors), which the
``L·(blocks+1)`` decoder blocks consume in reverse order.

Preset ``bubm25``: mults (1,2,4), attention (off, on, on), 2 blocks, dropout
0.1, GroupNorm(8), 4 heads.  For one-channel input it has exactly
``p(W) = 3910 W² + 606 W + 1`` trainable parameters (W = 32: 4,023,233).
At 32×32 the levels are 32, 16, 8 px; the same network on 16×16 or 8×8 input
runs its levels at 16, 8, 4 or 8, 4, 2 px (the parameter count does not
depend on the resolution).  H and W must be divisible by ``2^(L−1)``.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import DiffmemError
from .embedding import SinusoidalEmbedding

__all__ = ["UNet"]


class ResBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, temb_dim: int, dropout: float, groups: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.temb = nn.Linear(temb_dim, c_out)
        self.norm2 = nn.GroupNorm(groups, c_out)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: Tensor, temb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.temb(F.silu(temb))[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return h + self.skip(x)


class Attention(nn.Module):
    def __init__(self, channels: int, heads: int, groups: int):
        super().__init__()
        self.heads = heads
        self.norm = nn.GroupNorm(groups, channels)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj = nn.Linear(channels, channels)

    def forward(self, x: Tensor) -> Tensor:
        B, C, H, W = x.shape
        h = self.norm(x).flatten(2).transpose(1, 2)  # [B, HW, C]
        q, k, v = self.qkv(h).view(B, H * W, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        h = F.scaled_dot_product_attention(q, k, v)  # [B, heads, HW, C/heads]
        h = h.transpose(1, 2).reshape(B, H * W, C)
        return x + self.proj(h).transpose(1, 2).reshape(B, C, H, W)


class Level(nn.Module):
    """A ResBlock optionally followed by self-attention (one step of the U)."""

    def __init__(self, c_in: int, c_out: int, temb_dim: int, dropout: float, groups: int,
                 attn: bool, heads: int):
        super().__init__()
        self.res = ResBlock(c_in, c_out, temb_dim, dropout, groups)
        self.attn = Attention(c_out, heads, groups) if attn else nn.Identity()

    def forward(self, x: Tensor, temb: Tensor) -> Tensor:
        return self.attn(self.res(x, temb))


class UNet(nn.Module):
    """``forward(x [B, C, H, W], label [B]) -> eps [B, C, H, W]``."""

    def __init__(self, shape: tuple[int, int, int], width: int = 32,
                 mults: Sequence[int] = (1, 2, 4), attn: Sequence[bool] = (False, True, True),
                 blocks: int = 2, dropout: float = 0.1, groups: int = 8, heads: int = 4,
                 max_period: float = 10000.0):
        super().__init__()
        _check_config(shape, width, mults, attn, blocks, dropout, groups, heads)
        C = shape[0]
        mults, attn = tuple(int(m) for m in mults), tuple(bool(a) for a in attn)
        self.shape = tuple(int(s) for s in shape)
        tdim = 4 * width
        self.time = nn.Sequential(SinusoidalEmbedding(width, max_period), nn.Linear(width, tdim),
                                  nn.GELU(), nn.Linear(tdim, tdim))
        self.inp = nn.Conv2d(C, width, 3, padding=1)

        skip_ch = [width]
        ch = width
        self.down = nn.ModuleList()
        for lvl, m in enumerate(mults):
            for _ in range(blocks):
                self.down.append(Level(ch, width * m, tdim, dropout, groups, attn[lvl], heads))
                ch = width * m
                skip_ch.append(ch)
            if lvl != len(mults) - 1:
                self.down.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))
                skip_ch.append(ch)

        self.mid = nn.ModuleList([Level(ch, ch, tdim, dropout, groups, True, heads),
                                  Level(ch, ch, tdim, dropout, groups, False, heads)])

        self.up = nn.ModuleList()
        for lvl in reversed(range(len(mults))):
            for _ in range(blocks + 1):
                c_out = width * mults[lvl]
                self.up.append(Level(ch + skip_ch.pop(), c_out, tdim, dropout, groups, attn[lvl], heads))
                ch = c_out
            if lvl != 0:
                self.up.append(nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"),
                                             nn.Conv2d(ch, ch, 3, padding=1)))

        self.out = nn.Sequential(nn.GroupNorm(groups, ch), nn.SiLU(), nn.Conv2d(ch, C, 3, padding=1))

    def forward(self, x: Tensor, label: Tensor) -> Tensor:
        temb = self.time(label).to(x.dtype)
        h = self.inp(x)
        skips = [h]
        for layer in self.down:
            h = layer(h, temb) if isinstance(layer, Level) else layer(h)
            skips.append(h)
        for layer in self.mid:
            h = layer(h, temb)
        for layer in self.up:
            if isinstance(layer, Level):
                h = layer(torch.cat([h, skips.pop()], dim=1), temb)
            else:
                h = layer(h)
        return self.out(h)


def _check_config(shape, width, mults, attn, blocks, dropout, groups, heads) -> None:
    if len(shape) != 3 or any(int(s) < 1 for s in shape):
        raise DiffmemError(f"U-Net needs image data of shape (C, H, W), got {tuple(shape)}")
    if len(mults) < 1 or any(int(m) < 1 for m in mults):
        raise DiffmemError(f"U-Net channel multipliers must be >= 1 and non-empty, got {tuple(mults)}")
    if len(attn) != len(mults):
        raise DiffmemError(f"U-Net needs one attention flag per level: {len(mults)} levels, "
                           f"{len(attn)} flags")
    if blocks < 1:
        raise DiffmemError(f"U-Net needs at least one ResBlock per level, got blocks={blocks}")
    if not 0 <= dropout < 1:
        raise DiffmemError(f"dropout must be in [0, 1), got {dropout}")
    if width < 1 or width % groups:
        raise DiffmemError(f"U-Net width {width} must be a positive multiple of the "
                           f"{groups} GroupNorm groups")
    if width % heads:
        raise DiffmemError(f"U-Net width {width} must be divisible by the {heads} attention heads")
    f = 2 ** (len(mults) - 1)
    _, H, W = (int(s) for s in shape)
    if H % f or W % f:
        raise DiffmemError(f"U-Net with {len(mults)} levels needs height and width divisible by {f}, "
                           f"got {H}x{W}; resize/crop the images (e.g. to 8, 16 or 32 px) or use "
                           f"fewer levels")
