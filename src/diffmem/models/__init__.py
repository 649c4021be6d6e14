"""The model registry: every model a run can use, and the options each one takes.

A *network* (``mlp``, ``gmm``, ``unet``, ``bubm25``) is a backbone
``forward(x [B, *shape], label [B]) -> [B, *shape]`` wrapped by a
parametrisation (:mod:`diffmem.parametrisation`) into a denoiser.  A *closed
form* (``empirical``, ``gaussian``, ``exact``) is a denoiser built from the
data; it has no parameters and no training steps (:mod:`diffmem.closed_form`).
``shape`` is ``(d,)`` for vectors and ``(C, H, W)`` for images.

==============  ==========  =====================================  ===========================================
name            kind        options (default)                      what
==============  ==========  =====================================  ===========================================
``mlp``         network     width (128), blocks (3)                :class:`MLP`; any shape (flattened)
``gmm``         network     width (128), blocks (3)                BUBM25's GMM network (102,024 params at d = 8)
``unet``        network     width (32), blocks (2), dropout (0.1)  :class:`UNet`, mults (1,2,4), attention (0,1,1)
``bubm25``      network     width (32)                             the BUBM25 U-Net (dropout 0.1): ``3910 W² + 606 W + 1``
``bdkos25_mlp`` network     width (256), blocks (2)                BDKOS25's ReLU MLP on [x, Fourier(t)] (VP score;
                                                                   parametrisation ``bdkos25_vp``, the only one)
``empirical``   closed      --                                     posterior mean of the n training points
``gaussian``    closed      --                                     exact denoiser of the training set's Gaussian fit
``exact``       closed      --                                     the data distribution's exact denoiser (``gmm:``)
``tikhonov``    closed      ``:c=C`` (required), ``schedule=ve``   BDKOS25 Tikhonov: ``s_c = σ²/(σ² + c) s_N``
``consistency`` closed      ``:tau=T`` (required)                  BDKOS25 asymptotic consistency: ``s = min(1, ΣK/τ) s_N``
``transformer`` tokens      width (64), blocks (2), heads (4),     :class:`TokenTransformer`: a discrete denoiser
                            dropout (0)                            ``z [B, n] -> logits [B, n, v]`` (masked diffusion)
==============  ==========  =====================================  ===========================================

A *token* model (``transformer``) takes token-sequence data only
(``meta["kind"] == "tokens"``, e.g. ``data=rhm:...``), and token data takes a
token model only (:func:`check_data_model`, a one-line error before anything
is written).  It has no parametrisation (masked diffusion, :mod:`diffmem.masked_diffusion`;
the mask token is ``v``, so its embedding table has ``v + 1`` rows) and is
sampled by the masked ancestral sampler (``eval.sampler=masked``).

A closed form may carry parameters in its name, ``NAME:k=v,k=v``
(``model.name=tikhonov:c=1e-4``, ``model.name=consistency:tau=0.1``,
``tikhonov:c=1e-3,schedule=vp``).  ``MODELS[name]`` resolves such a name to a
:class:`ModelSpec` whose ``build`` has the parameters bound; an unknown or
missing parameter, or a negative c or τ, is a one-line :class:`DiffmemError`.

An option the chosen model does not take is an error naming it (never
silently ignored).  A network may fix its parametrisation (``bdkos25_mlp``:
``bdkos25_vp``, also its default); :func:`parametrisation_name` gives the one in
effect.  The training option ``loss_tikhonov_c`` (BDKOS25's Tikhonov term) is
for networks only; a closed form refuses it (use ``model.name=tikhonov:c=C``).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field, replace
from typing import Callable

import torch
from torch import nn

from ..errors import DiffmemError
from .bdkos25_mlp import BDKOS25MLP
from .embedding import SinusoidalEmbedding, sinusoidal_embedding
from .mlp import MLP
from .transformer import TokenTransformer
from .unet import UNet

__all__ = ["MLP", "UNet", "BDKOS25MLP", "TokenTransformer", "check_data_model", "is_token_model", "parametrisation_name", "model_sigma_range", "SinusoidalEmbedding", "sinusoidal_embedding", "build_backbone", "build_model",
           "check_model_config", "count_params", "ModelSpec", "MODELS", "PRESETS", "MODEL_OPTIONS",
           "parse_model_name"]

MODEL_OPTIONS = ("width", "blocks", "dropout", "heads")  # the ModelConfig fields that are backbone options


@dataclass(frozen=True)
class ModelSpec:
    name: str
    kind: str  # "network", "closed_form" or "tokens" (a discrete denoiser of token sequences)
    build: Callable
    defaults: dict  # option -> default (the options this model takes)
    doc: str
    params: dict = field(default_factory=dict)  # name-carried parameters: key -> (parser, default or REQUIRED)
    parametrisation: str | None = None  # a network's own (and only) parametrisation; None: any, default eps_ddpm


def _image_shape(shape):
    if len(shape) != 3:
        raise DiffmemError(f"the U-Net models need image data of shape (C, H, W), got shape "
                           f"{tuple(shape)}; use model.name=mlp for vectors")
    return tuple(shape)


def _unet(shape, width, blocks, dropout, mults=(1, 2, 4), attn=(False, True, True), groups=8, heads=4):
    return UNet(_image_shape(shape), width=width, mults=tuple(mults), attn=tuple(attn), blocks=blocks,
                dropout=dropout, groups=groups, heads=heads)


def _empirical(shape, data, train_set):
    from ..closed_form import EmpiricalDenoiser

    return EmpiricalDenoiser(train_set)


def _gaussian(shape, data, train_set):
    from ..closed_form import GaussianDenoiser

    return GaussianDenoiser.fit(train_set)


def _exact(shape, data, train_set):
    from ..closed_form import ExactDenoiser

    if data is None or getattr(data, "exact", None) is None:
        raise DiffmemError("model 'exact' needs a data set with a known distribution (data=gmm:...)")
    return ExactDenoiser(data.exact)


def _tikhonov(shape, data, train_set, c, schedule="ve"):
    from ..closed_form import TikhonovDenoiser

    return TikhonovDenoiser(train_set, c=c, schedule=schedule)


def _consistency(shape, data, train_set, tau):
    from ..closed_form import ConsistencyDenoiser

    return ConsistencyDenoiser(train_set, tau=tau)


def _transformer(shape, width, blocks, heads, dropout, vocab=None):
    if len(shape) != 1 or vocab is None:
        raise DiffmemError(f"model 'transformer' takes token sequences (data=rhm:...), got data of shape {tuple(shape)}")
    return TokenTransformer(shape[0], int(vocab), width=width, blocks=blocks, heads=heads, dropout=dropout)


REQUIRED = object()


def _nonneg(key):
    def parse(v: str) -> float:
        try:
            f = float(v)
        except ValueError:
            raise DiffmemError(f"model parameter {key}={v!r} is not a number") from None
        if not math.isfinite(f) or f < 0:
            raise DiffmemError(f"model parameter {key} must be a finite number ≥ 0, got {v}")
        return f
    return parse


def _schedule(v: str) -> str:
    if v not in ("ve", "vp"):
        raise DiffmemError(f"model parameter schedule must be ve or vp, got {v!r}")
    return v


def parse_model_name(name: str) -> tuple[str, dict]:
    """``"NAME:k=v,k=v"`` -> ``("NAME", {k: parsed v})``, validated against the model's parameters."""
    if not isinstance(name, str):
        raise DiffmemError(f"model name must be a string, got {name!r}")
    base, sep, rest = name.partition(":")
    base = base.strip()
    if base not in _BASE:
        raise DiffmemError(f"unknown model {base!r}; choose one of {', '.join(_BASE)}")
    spec = dict.__getitem__(MODELS, base)
    given: dict = {}
    if sep:
        for kv in rest.split(","):
            k, eq, v = kv.partition("=")
            k, v = k.strip(), v.strip()
            if not eq or not k or not v:
                raise DiffmemError(f"model {name!r}: parameter {kv!r} is not key=value")
            if k not in spec.params:
                raise DiffmemError(f"model {base!r} takes no parameter {k!r}; its parameters: "
                                   f"{', '.join(spec.params) or 'none'}")
            if k in given:
                raise DiffmemError(f"model {name!r}: parameter {k!r} given twice")
            given[k] = spec.params[k][0](v)
    missing = [k for k, (_, d) in spec.params.items() if d is REQUIRED and k not in given]
    if missing:
        raise DiffmemError(f"model {base!r} needs the parameter {', '.join(missing)} (e.g. "
                           f"model.name={base}:{missing[0]}=0.1)")
    return base, given


class _Registry(dict):
    """``MODELS``: plain names, plus ``NAME:k=v,...`` resolved on lookup (parameters bound into ``build``)."""

    def __missing__(self, key):
        if not isinstance(key, str) or ":" not in key:
            raise KeyError(key)
        base, params = parse_model_name(key)
        spec = dict.__getitem__(self, base)
        return replace(spec, name=key, build=functools.partial(spec.build, **params))

    def __contains__(self, key) -> bool:
        if dict.__contains__(self, key):
            return True
        try:
            self[key]
        except (KeyError, DiffmemError):
            return False
        return True

    def get(self, key, default=None):
        return self[key] if key in self else default


MODELS: dict[str, ModelSpec] = {
    "mlp": ModelSpec("mlp", "network", lambda shape, width, blocks: MLP(shape, width=width, blocks=blocks),
                     {"width": 128, "blocks": 3}, "MLP noise predictor on flattened input"),
    "gmm": ModelSpec("gmm", "network", lambda shape, width, blocks: MLP(shape, width=width, blocks=blocks),
                     {"width": 128, "blocks": 3}, "BUBM25's Gaussian-mixture network (an MLP)"),
    "unet": ModelSpec("unet", "network", _unet, {"width": 32, "blocks": 2, "dropout": 0.1, "mults": (1, 2, 4),
                                                 "attn": (False, True, True), "groups": 8, "heads": 4}, "U-Net"),
    "bubm25": ModelSpec("bubm25", "network", lambda shape, width: _unet(shape, width, 2, 0.1),
                        {"width": 32}, "the BUBM25 U-Net (dropout 0.1, fixed)"),
    "bdkos25_mlp": ModelSpec("bdkos25_mlp", "network",
                             lambda shape, width, blocks: BDKOS25MLP(shape, width=width, blocks=blocks),
                             {"width": 256, "blocks": 2}, "BDKOS25's ReLU MLP on [x, Fourier(t)] (VP score)",
                             parametrisation="bdkos25_vp"),
    "empirical": ModelSpec("empirical", "closed_form", _empirical, {}, "empirical posterior mean (memorises)"),
    "gaussian": ModelSpec("gaussian", "closed_form", _gaussian, {}, "Gaussian fit of the training set"),
    "exact": ModelSpec("exact", "closed_form", _exact, {}, "exact denoiser of the data distribution"),
    "tikhonov": ModelSpec("tikhonov", "closed_form", _tikhonov, {}, "BDKOS25 Tikhonov-regularised empirical score",
                          {"c": (_nonneg("c"), REQUIRED), "schedule": (_schedule, "ve")}),
    "consistency": ModelSpec("consistency", "closed_form", _consistency, {},
                             "BDKOS25 asymptotic-consistency regularised empirical score",
                             {"tau": (_nonneg("tau"), REQUIRED)}),
    "transformer": ModelSpec("transformer", "tokens", _transformer,
                             {"width": 64, "blocks": 2, "heads": 4, "dropout": 0.0},
                             "bidirectional transformer over token sequences (masked diffusion)"),
}
_BASE = tuple(MODELS)
MODELS = _Registry(MODELS)
PRESETS = {k: v for k, v in MODELS.items() if v.kind == "network"}  # backbones, for build_backbone


def _spec(name: str) -> ModelSpec:
    if isinstance(name, str) and dict.__contains__(MODELS, name) and not MODELS[name].params:
        return MODELS[name]
    parse_model_name(name)  # a one-line error naming what is wrong
    return MODELS[name]


def check_model_config(cfg, given: set[str] = frozenset()) -> None:
    """Refuse options the chosen model does not take (``cfg``: a RunConfig).

    ``given``: dotted keys the user set; training keys (steps, optim.*,
    batch_max) given for a closed form are refused too (it is never trained).
    """
    m = cfg.model
    spec = _spec(m.name)
    bad = [k for k in MODEL_OPTIONS if getattr(m, k) is not None and k not in spec.defaults]
    if bad:
        raise DiffmemError(f"model {m.name!r} takes no option {', '.join('model.' + k for k in bad)}; "
                           f"its options: {', '.join('model.' + k for k in spec.defaults) or 'none'}")
    if spec.kind == "tokens":
        _check_token_config(cfg, given)
        return
    if cfg.eval.sampler == "masked":
        raise DiffmemError(f"eval.sampler=masked samples token models (model.name=transformer); model {m.name!r} "
                           "is sampled by heun, ddim, ddpm or em")
    if spec.kind == "closed_form":
        extra = [k for k in ("model.parametrisation", "model.sigma_data") if getattr(m, k.split('.')[1]) is not None]
        extra += sorted(k for k in given if k in ("steps", "batch_max") or k.startswith("optim."))
        if getattr(cfg, "loss_tikhonov_c", 0) != 0 or "loss_tikhonov_c" in given:
            raise DiffmemError(f"model {m.name!r} is a closed form (no training): loss_tikhonov_c is a training-loss "
                               "option for networks; for BDKOS25's closed-form Tikhonov score use "
                               "model.name=tikhonov:c=C")
        if extra:
            raise DiffmemError(f"model {m.name!r} is a closed form (no training): it does not use "
                               f"{', '.join(extra)}; remove it")
    else:
        from ..parametrisation import get_parametrisation

        get_parametrisation(parametrisation_name(m), m.sigma_data)


# evaluation options that measure continuous data only (a token run refuses them when given)
_CONTINUOUS_EVAL = ("eval.quality", "eval.gap_sigmas", "eval.n_gap", "eval.fd_gap", "eval.trajectory", "eval.kl",
                    "eval.kl_samples", "eval.kl_rtol", "eval.feature_net")


def _check_token_config(cfg, given) -> None:
    m = cfg.model
    extra = [k for k in ("model.parametrisation", "model.sigma_data") if getattr(m, k.split(".")[1]) is not None]
    if cfg.loss_tikhonov_c != 0:
        extra.append("loss_tikhonov_c")
    extra += sorted(k for k in given if k in _CONTINUOUS_EVAL)
    if extra:
        raise DiffmemError(f"model {m.name!r} is a masked-diffusion model of token sequences: it does not use "
                           f"{', '.join(extra)}; remove it")
    if cfg.eval.sampler != "masked":
        raise DiffmemError(f"model {m.name!r} is a masked-diffusion model of token sequences (data=rhm:..., e.g. "
                           f"--preset rhm), sampled by eval.sampler=masked; got eval.sampler={cfg.eval.sampler!r}")
    bad = [t for t in cfg.eval.loss_t if not 0 < t <= 1]
    if bad:
        raise DiffmemError(f"config key 'eval.loss_t' holds mask fractions t in (0, 1] for a token model, got {bad[0]:g}")


def is_token_model(model_cfg) -> bool:
    """Whether ``model_cfg`` names a discrete denoiser of token sequences (``kind == "tokens"``)."""
    return _spec(model_cfg.name).kind == "tokens"


def check_data_model(model_cfg, data) -> None:
    """Token data needs a token model and a token model needs token data (one-line :class:`DiffmemError`)."""
    tokens = bool(getattr(data, "is_tokens", False))
    if tokens and not is_token_model(model_cfg):
        raise DiffmemError(f"data {data.name!r} is token sequences: it needs a token model (model.name=transformer, "
                           f"e.g. --preset rhm), not {model_cfg.name!r}")
    if not tokens and is_token_model(model_cfg):
        raise DiffmemError(f"model {model_cfg.name!r} takes token sequences (data=rhm:...); data {data.name!r} is "
                           f"continuous of shape {tuple(data.shape)}: use model.name=mlp or unet")


def model_sigma_range(model_cfg) -> tuple[float, float]:
    """The VE σ range a model is trained on (its parametrisation's; EDM's [0.002, 80] for a closed form)."""
    spec = _spec(model_cfg.name)
    if spec.kind == "closed_form":
        return 0.002, 80.0
    from ..parametrisation import get_parametrisation

    return tuple(get_parametrisation(parametrisation_name(model_cfg), model_cfg.sigma_data).sigma_range)


def parametrisation_name(model_cfg) -> str | None:
    """The parametrisation in effect for a network config: ``model.parametrisation``, else the model's own
    (None: :data:`diffmem.parametrisation.DEFAULT_PARAMETRISATION`).  A model with its own refuses another."""
    spec = _spec(model_cfg.name)
    if spec.kind == "tokens":
        return None
    given = model_cfg.parametrisation
    if spec.parametrisation is not None and given is not None and given != spec.parametrisation:
        raise DiffmemError(f"model {spec.name!r} is trained in parametrisation {spec.parametrisation!r} only, got "
                           f"model.parametrisation={given}; remove it")
    return given if given is not None else spec.parametrisation


def resolved_options(model_cfg) -> dict:
    """The backbone options in effect: the model's defaults, overridden by the config's values."""
    spec = _spec(model_cfg.name)
    return {k: (getattr(model_cfg, k, None) if getattr(model_cfg, k, None) is not None else d)
            for k, d in spec.defaults.items()}


def build_model(model_cfg, shape: tuple, data=None, train_set: torch.Tensor | None = None, vocab: int | None = None):
    """The denoiser of a model config (``cfg.model``) for data of per-sample ``shape``.

    Networks: backbone wrapped in the parametrisation's preconditioning
    (an ``nn.Module``).  Closed forms: built from ``data`` / ``train_set``.
    Token models: the discrete denoiser itself, over ``vocab`` symbols
    (default ``data.meta["vocab"]``).  Returns ``(denoiser, resolved_options)``.
    """
    spec = _spec(model_cfg.name)
    opts = resolved_options(model_cfg)
    shape = tuple(int(s) for s in shape)
    if data is not None:
        check_data_model(model_cfg, data)
    if spec.kind == "tokens":
        vocab = vocab if vocab is not None else (data.meta.get("vocab") if data is not None else None)
        return spec.build(shape, **opts, vocab=vocab), opts
    if spec.kind == "closed_form":
        if train_set is None:
            raise DiffmemError(f"model {spec.name!r} is built from the training set; none given")
        return spec.build(shape, data, train_set), opts
    from ..parametrisation import get_parametrisation

    par = get_parametrisation(parametrisation_name(model_cfg), model_cfg.sigma_data)
    return par.precondition(spec.build(shape, **opts)), opts


def build_backbone(name: str, shape: tuple, **kw) -> nn.Module:
    """Build the network backbone ``name`` for data of per-sample ``shape`` (options as keywords)."""
    if name not in PRESETS:
        raise DiffmemError(f"unknown model preset {name!r}; choose one of {', '.join(PRESETS)}")
    spec = PRESETS[name]
    bad = sorted(set(kw) - set(spec.defaults))
    if bad:
        raise DiffmemError(f"model preset {name!r} takes no option {', '.join(map(repr, bad))}; "
                           f"its options: {', '.join(spec.defaults) or 'none'}")
    return spec.build(tuple(int(s) for s in shape), **{**spec.defaults, **kw})


def count_params(module) -> int:
    """Number of trainable parameters (0 for a closed form)."""
    if not isinstance(module, nn.Module):
        return 0
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
