"""Backbones and the preset registry.

Every backbone has ``forward(x [B, *shape], label [B]) -> [B, *shape]`` and
predicts the noise; wrap it in :class:`diffmem.denoiser.EpsDenoiser` (or
``EDMDenoiser``) to get a denoiser.  ``shape`` is ``(d,)`` for vectors and
``(C, H, W)`` for images.

Presets:

* ``"mlp"``: :class:`MLP` (kw: ``width=128``, ``blocks=3``); accepts any shape (flattened).
* ``"gmm"``: the BUBM25 GMM network, MLP with width 128 and 3 blocks
  (102,024 parameters at d = 8); kw ``width``/``blocks`` are not accepted.
* ``"unet"``: :class:`UNet` (kw: ``width=32``, ``mults=(1,2,4)``,
  ``attn=(False,True,True)``, ``blocks=2``, ``dropout=0.1``, ``groups=8``, ``heads=4``).
* ``"bubm25"``: the BUBM25 U-Net; only ``width`` (default 32) may be set;
  ``3910 W² + 606 W + 1`` parameters for one-channel input.
"""

from __future__ import annotations

import inspect

from torch import nn

from ..errors import DiffmemError
from .embedding import SinusoidalEmbedding, sinusoidal_embedding
from .mlp import MLP
from .unet import UNet

__all__ = ["MLP", "UNet", "SinusoidalEmbedding", "sinusoidal_embedding", "build_backbone",
           "count_params", "PRESETS"]


def _mlp(shape, width=128, blocks=3, max_period=10000.0):
    return MLP(shape, width=width, blocks=blocks, max_period=max_period)


def _gmm(shape):
    return MLP(shape, width=128, blocks=3)


def _unet(shape, width=32, mults=(1, 2, 4), attn=(False, True, True), blocks=2, dropout=0.1,
          groups=8, heads=4, max_period=10000.0):
    return UNet(_image_shape(shape), width=width, mults=mults, attn=attn, blocks=blocks,
                dropout=dropout, groups=groups, heads=heads, max_period=max_period)


def _bubm25(shape, width=32):
    return UNet(_image_shape(shape), width=width, mults=(1, 2, 4), attn=(False, True, True),
                blocks=2, dropout=0.1, groups=8, heads=4)


def _image_shape(shape):
    if len(shape) != 3:
        raise DiffmemError(f"the U-Net presets need image data of shape (C, H, W), got shape "
                           f"{tuple(shape)}; use the 'mlp' preset for vectors")
    return tuple(shape)


PRESETS = {"mlp": _mlp, "gmm": _gmm, "unet": _unet, "bubm25": _bubm25}


def build_backbone(name: str, shape: tuple, **kw) -> nn.Module:
    """Build the backbone preset ``name`` for data of per-sample ``shape``."""
    if name not in PRESETS:
        raise DiffmemError(f"unknown model preset {name!r}; choose one of {', '.join(PRESETS)}")
    allowed = list(inspect.signature(PRESETS[name]).parameters)[1:]
    bad = sorted(set(kw) - set(allowed))
    if bad:
        raise DiffmemError(f"model preset {name!r} takes no option {', '.join(map(repr, bad))}; "
                           f"its options: {', '.join(allowed) or 'none'}")
    return PRESETS[name](tuple(int(s) for s in shape), **kw)


def count_params(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
