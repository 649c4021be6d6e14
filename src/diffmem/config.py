"""One typed, serialisable configuration per run (DESIGN principle 6).

A :class:`RunConfig` is built from a named preset, then a TOML file, then
command-line overrides ``key.sub=value`` (only the keys given change).  The
resolved configuration is written to ``RUN/config.json``.

Every field declares its type and its allowed range next to its default
(``_opt(...)``); one function checks a value of any origin (preset, TOML,
command line, a config.json read back) against that declaration, so a bad
value always ends in one line naming the key::

    diffmem: error: config key 'eval.sampler_steps' must be ≥ 1, got 0

Why not pydantic or OmegaConf: the whole schema is ~40 scalar keys; the
declarations below are as short as a pydantic model, the messages are one
line by construction (pydantic's are multi-line and would need reformatting),
and there is no extra dependency.  Options that the chosen model or optimiser
does not use are errors (:meth:`RunConfig.validate`): for that the resolver
records which keys the user actually set.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

from .errors import DiffmemError

try:  # Python >= 3.11
    import tomllib
except ModuleNotFoundError:  # pragma: no cover
    import tomli as tomllib  # type: ignore

__all__ = ["ModelConfig", "OptimConfig", "EvalConfig", "RunConfig", "PRESETS", "resolve_config",
           "apply_overrides", "preset_dict", "EXECUTION_KEYS"]

# Keys that may change when a run is resumed (results are bit-identical only on the same device/threads).
EXECUTION_KEYS = ("threads", "device")


# ---------------------------------------------------------------------------
# declarations


def _ge(lo):
    return lambda v: None if v >= lo else f"must be ≥ {lo:g}"


def _gt(lo):
    return lambda v: None if v > lo else f"must be > {lo:g}"


def _in(lo, hi, hi_open=True):
    def check(v):
        ok = lo <= v < hi if hi_open else lo <= v <= hi
        return None if ok else f"must be in [{lo:g}, {hi:g}{')' if hi_open else ']'}"
    return check


def _each(check):
    def c(vs):
        for v in vs:
            msg = check(v)
            if msg:
                return f"entries {msg} (got {v!r})"
        return None
    return c


def _opt(default=None, type_: Any = str, check: Callable | None = None, factory=None, optional: bool = False):
    md = {"type": type_, "check": check, "optional": optional}
    if factory is not None:
        return field(default_factory=factory, metadata=md)
    return field(default=default, metadata=md)


def _device_check(v: str):
    import re

    if not re.fullmatch(r"cpu|cuda(:\d+)?|mps", v):
        return "must be cpu, cuda, cuda:N or mps"
    return None


@dataclass
class ModelConfig:
    # a key of the model registry (diffmem.models.MODELS): mlp, gmm, unet, bubm25 (networks);
    # empirical, gaussian, exact (closed forms: no training)
    name: str = _opt("mlp", str)  # ... and bdkos25_mlp (BDKOS25's MLP; parametrisation bdkos25_vp)
    width: int | None = _opt(None, int, _ge(1), optional=True)  # None: the model's own default
    blocks: int | None = _opt(None, int, _ge(0), optional=True)
    dropout: float | None = _opt(None, float, _in(0.0, 1.0), optional=True)
    heads: int | None = _opt(None, int, _ge(1), optional=True)  # attention heads (transformer only)
    parametrisation: str | None = _opt(None, str, optional=True)  # eps_ddpm (default), edm or bdkos25_vp
    sigma_data: float | None = _opt(None, float, _gt(0), optional=True)  # edm only (default 0.5)


@dataclass
class OptimConfig:
    name: str = _opt("sgd", str, lambda v: None if v in ("sgd", "adam") else "must be sgd or adam")
    lr: float = _opt(0.01, float, _gt(0))
    momentum: float = _opt(0.95, float, _in(0.0, 1.0))  # sgd only
    beta1: float = _opt(0.9, float, _in(0.0, 1.0))  # adam only
    beta2: float = _opt(0.999, float, _in(0.0, 1.0))  # adam only
    weight_decay: float = _opt(0.0, float, _ge(0))


@dataclass
class EvalConfig:
    n_samples: int = _opt(256, int, _ge(1))  # generated samples per checkpoint (same seeds every checkpoint)
    sample_seed: int = _opt(1_000_000, int, _ge(0))
    # ddim (η=0, deterministic), ddpm, em, heun (checked against the registry); masked: token models (the
    # masked ancestral sampler on linspace(1, 0, sampler_steps + 1))
    sampler: str = _opt("ddim", str)
    sampler_steps: int = _opt(50, int, _ge(1))
    threshold: float = _opt(1 / 3, float, _in(0.0, 1.0, hi_open=False))  # f_mem ratio test d1/d2 < threshold
    n_boot: int = _opt(1000, int, _ge(0))
    quality: list = _opt(type_=[str], factory=lambda: ["fd_pixel", "fd_feat", "kid"])
    # OU times of the loss probes (token models: mask fractions t in (0, 1])
    loss_t: list = _opt(type_=[float], check=_each(_gt(0)), factory=lambda: [0.01, 0.1])
    loss_draws: int = _opt(5, int, _ge(1))  # fixed noise draws per image, reused at every checkpoint
    n_loss: int = _opt(2048, int, _ge(1))  # at most this many train / test images in the loss probe
    batch_size: int = _opt(1024, int, _ge(1))
    save_samples: bool = _opt(True, bool)
    feature_net: str = _opt("", str)  # path of a cached quality feature net ("" = train one in the run dir)
    # KK26 (diffmem.metrics.gap): denoising error per noise level on fixed train / held-out images with
    # one fixed noise draw each, at gap_sigmas log-spaced σ over the model's σ range (0 = off)
    gap_sigmas: int = _opt(64, int, lambda v: None if v == 0 or v >= 2 else "must be 0 (off) or ≥ 2")
    n_gap: int = _opt(64, int, _ge(1))  # at most this many train / held-out images in the gap
    fd_gap: bool = _opt(True, bool)  # FD(samples, training subset) beside FD(samples, held-out subset of equal size)
    trajectory: int = _opt(64, int, _ge(0))  # samples whose sampling trajectories are analysed (0 = off)
    # BUBM25's KL(P_θ‖P_0) by the PF-ODE likelihood ("" = off; exact | hutchinson), data with a known density
    kl: str = _opt("", str, lambda v: None if v in ("", "exact", "hutchinson") else "must be '', exact or hutchinson")
    kl_samples: int = _opt(256, int, _ge(2))
    kl_rtol: float = _opt(1e-5, float, _gt(0))  # rtol = atol of the adaptive ODE solve


@dataclass
class RunConfig:
    data: str = _opt("digits", str)  # digits | gmm[:d=8] | image folder path | .npy/.npz path
    n: int = _opt(64, int, lambda v: None if v >= 2 else "must be ≥ 2 (need at least 2 training points)")
    subset_seed: int = _opt(0, int, _ge(0))
    # training points n of the shuffled pool start at this index (0: the nested prefix); the two-halves test
    # (diffmem.two_halves) trains on subset_offset=0 and subset_offset=n, disjoint sets of one shuffle
    subset_offset: int = _opt(0, int, _ge(0))
    seed: int = _opt(0, int, _ge(0))  # initialisation, batches, noise draws (per-step reseeding)
    steps: int = _opt(20000, int, lambda v: None if v > 0 else "must be positive (number of steps)")
    batch_max: int = _opt(512, int, _ge(1))  # batch = min(n, batch_max): full batch when n <= batch_max
    checkpoints_per_decade: int = _opt(12, int, _ge(1))
    device: str = _opt("cpu", str, _device_check)
    threads: int = _opt(0, int, _ge(0))  # torch CPU threads (0 = leave torch's default)
    # BDKOS25 Tikhonov term: loss + c mean_dims s² (networks only; s: the parametrisation's score, VP for
    # bdkos25_vp, else VE); 0 = off, the loss exactly as without it
    loss_tikhonov_c: float = _opt(0.0, float, _ge(0))
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        if not d["subset_offset"]:  # absent when 0: configs (and run directories) of earlier runs unchanged
            del d["subset_offset"]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "RunConfig":
        """Build and type-check (every value converted or refused with a one-line error)."""
        return _from_dict(cls, d, "")

    def validate(self, given: set[str] | None = None) -> "RunConfig":
        """Check ranges and combinations.  ``given``: the dotted keys the user set (TOML, overrides,
        the preset's model options); an option that the chosen model or optimiser does not use is an
        error when it was given, never for a default or another part of a preset."""
        _check_ranges(self, "")
        given = set(given or ())
        if self.device != "cpu":
            check_device(self.device)
        from .samplers import SAMPLERS

        if self.eval.sampler not in SAMPLERS and self.eval.sampler != "masked":  # masked: token models
            raise DiffmemError(f"config key 'eval.sampler' must be one of {', '.join(SAMPLERS)}, masked, "
                               f"got {self.eval.sampler!r}")
        from .quality import check_metric_names

        check_metric_names(self.eval.quality)
        unused = {"sgd": ("optim.beta1", "optim.beta2"), "adam": ("optim.momentum",)}[self.optim.name]
        bad = sorted(k for k in unused if k in given)
        if bad:
            raise DiffmemError(f"optimiser {self.optim.name!r} does not use {', '.join(bad)}; remove it")
        from .models import check_model_config

        check_model_config(self, given)
        _check_eval_options(self.eval, given)
        return self


def _check_eval_options(e: "EvalConfig", given: set[str]) -> None:
    """Evaluation options that only one measurement uses are errors when that measurement is off."""
    fd = {"fd_pixel", "fd_feat"} & set(e.quality)
    if "eval.fd_gap" in given and e.fd_gap and not fd:
        raise DiffmemError("eval.fd_gap needs a Fréchet distance among eval.quality (fd_pixel or fd_feat); "
                           "add one or remove eval.fd_gap")
    for off, keys, switch in ((not e.kl, ("eval.kl_samples", "eval.kl_rtol"), "eval.kl is ''"),
                              (not e.gap_sigmas, ("eval.n_gap",), "eval.gap_sigmas is 0")):
        unused = [k for k in keys if k in given] if off else []
        if unused:
            raise DiffmemError(f"{', '.join(unused)} is not used ({switch}); remove it or turn the measurement on")


def check_device(dev: str) -> None:
    import torch

    if dev.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DiffmemError(f"device {dev!r} requested but CUDA is not available on this machine; use device=cpu")
        idx = int(dev.split(":")[1]) if ":" in dev else 0
        if idx >= torch.cuda.device_count():
            raise DiffmemError(f"device {dev!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif dev == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise DiffmemError("device 'mps' requested but MPS is not available on this machine; use device=cpu")


class _Text(str):
    """A value typed on the command line: text to be parsed (a TOML value is already typed)."""


def _typed(value: Any, f: dataclasses.Field, key: str) -> Any:
    """Convert ``value`` (native, or :class:`_Text` from the command line) to the declared type of ``f``."""
    t, optional = f.metadata.get("type", str), f.metadata.get("optional", False)
    if value is None or (optional and isinstance(value, _Text) and value.lower() in ("none", "null")):
        if optional:
            return None
        raise DiffmemError(f"config key {key!r} must not be empty")
    if isinstance(t, list):
        items = [_Text(v.strip()) for v in value.split(",") if v.strip()] if isinstance(value, _Text) else value
        if not isinstance(items, (list, tuple)):
            items = [items]
        sub = dataclasses.field(metadata={"type": t[0]})
        return [_typed(v, sub, key) for v in items]
    want = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}[t]
    bad = DiffmemError(f"config key {key!r} must be {want}, got {value!r}")
    if t is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, _Text) and value.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            return value.lower() in ("1", "true", "yes", "on")
        raise bad
    if t is str:
        if not isinstance(value, str):
            raise bad
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float, _Text)):
        raise bad
    try:
        x = float(value) if isinstance(value, _Text) else value
    except ValueError:
        raise bad from None
    if isinstance(x, float) and not math.isfinite(x):
        raise DiffmemError(f"config key {key!r} must be finite, got {value!r}")
    if t is int:
        if isinstance(x, float):
            if not x.is_integer():
                raise bad
            x = int(x)
        return int(x)
    return float(x)


def _from_dict(cls, d: dict, prefix: str):
    if not isinstance(d, dict):
        raise DiffmemError(f"config section {prefix.rstrip('.') or 'root'!r} must be a table")
    known = {f.name: f for f in fields(cls)}
    kw = {}
    for k, v in d.items():
        if k not in known:
            raise DiffmemError(f"unknown config key {prefix + k!r}; known: {', '.join(known)}")
        f = known[k]
        if f.default_factory is not dataclasses.MISSING and dataclasses.is_dataclass(f.default_factory()):
            kw[k] = _from_dict(type(f.default_factory()), v, prefix + k + ".")
        else:
            kw[k] = _typed(v, f, prefix + k)
    return cls(**kw)


def _check_ranges(obj, prefix: str) -> None:
    for f in fields(obj):
        v = getattr(obj, f.name)
        if dataclasses.is_dataclass(v):
            _check_ranges(v, prefix + f.name + ".")
            continue
        check = f.metadata.get("check")
        if check is not None and v is not None:
            msg = check(v)
            if msg:
                raise DiffmemError(f"config key {prefix + f.name!r} {msg}, got {_show(v)}")


def _show(v) -> str:
    return repr([float(x) if isinstance(x, float) else x for x in v]) if isinstance(v, list) else repr(v)


def apply_overrides(d: dict, overrides: list[str]) -> dict:
    """Apply ``key.sub=value`` strings to a config dict (values stay text until :func:`_typed`)."""
    for ov in overrides:
        if "=" not in ov:
            raise DiffmemError(f"override {ov!r} is not of the form key=value")
        key, text = ov.split("=", 1)
        parts = key.strip().split(".")
        node, cls = d, RunConfig
        for p in parts[:-1]:
            sub = {f.name: f for f in fields(cls)}.get(p)
            if sub is None or not dataclasses.is_dataclass(sub.default_factory() if callable(sub.default_factory)
                                                           else None):
                raise DiffmemError(f"unknown config key {key.strip()!r}")
            node = node.setdefault(p, {})
            cls = type(sub.default_factory())
        if parts[-1] not in {f.name for f in fields(cls)} or dataclasses.is_dataclass(
                getattr(cls(), parts[-1], None)):
            raise DiffmemError(f"unknown config key {key.strip()!r}")
        node[parts[-1]] = _Text(text)
    return d


def _merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _keys(d: dict, prefix: str = "") -> set[str]:
    out = set()
    for k, v in d.items():
        out |= _keys(v, prefix + k + ".") if isinstance(v, dict) else {prefix + k}
    return out


# Named presets: partial dicts over the RunConfig defaults.
PRESETS: dict[str, dict] = {
    # Embedded default: sklearn digits (8×8, d = 64).  The regime where the two
    # timescales appear on a laptop CPU (see diffmem.demo): MLP W = 256, EDM
    # preconditioning, SGD lr 0.01 momentum 0.95, fixed batch 16, Heun 18 steps.
    "digits": {
        "data": "digits",
        "model": {"name": "mlp", "width": 256, "blocks": 3, "parametrisation": "edm"},
        "optim": {"name": "sgd", "lr": 0.01, "momentum": 0.95},
        "batch_max": 16,
        "eval": {"sampler": "heun", "sampler_steps": 18},
    },
    # BUBM25 Gaussian-mixture experiment (SPEC §1): d = 8, W = 128 (102,024 params),
    # SGD lr 6e-3 momentum 0.95, full batch; Euler–Maruyama sampler, 1000 steps.
    "gmm-bubm25": {
        "data": "gmm:d=8",
        "model": {"name": "gmm", "width": 128},
        "optim": {"name": "sgd", "lr": 6e-3, "momentum": 0.95},
        "batch_max": 1_000_000,
        "eval": {"sampler": "em", "sampler_steps": 1000, "quality": ["fd_pixel"], "kl": "exact"},
    },
    # BUBM25 CelebA U-Net (SPEC §1): 32×32 grayscale, W = 32, SGD lr 0.01 momentum 0.95,
    # batch min(n, 512), DDIM 100 steps.  It has no data of its own: data= must point at a local
    # CelebA folder or array (e.g. data=/data/celeba?size=32&gray=1).
    "celeba-bubm25": {
        "data": None,
        "model": {"name": "bubm25", "width": 32},
        "optim": {"name": "sgd", "lr": 0.01, "momentum": 0.95},
        "batch_max": 512,
        "steps": 2_000_000,
        "eval": {"sampler": "ddim", "sampler_steps": 100, "n_samples": 10000},
    },
    # FSW25 (SPEC §3): masked diffusion on the random hierarchy model v=8, m=4, s=2, L=3, nc=8 (131072
    # distinct sequences of 8 tokens); a 2-block bidirectional transformer W = 64, 4 heads; Adam lr 1e-3;
    # batch min(n, 64); copy fraction and validity per level at each checkpoint on 512 samples drawn with
    # 32 reveal steps (4 × the sequence length), the masked loss probed at t = 0.1 … 0.9.
    "rhm": {
        "data": "rhm:v=8,m=4,s=2,L=3,nc=8,seed=0",
        "n": 256,
        "steps": 20000,
        "batch_max": 64,
        "model": {"name": "transformer", "width": 64, "blocks": 2, "heads": 4},
        "optim": {"name": "adam", "lr": 1e-3},
        "eval": {"sampler": "masked", "sampler_steps": 32, "n_samples": 512, "quality": [], "gap_sigmas": 0,
                 "trajectory": 0, "fd_gap": False, "loss_t": [0.1, 0.3, 0.5, 0.7, 0.9], "loss_draws": 4,
                 "n_loss": 1024},
    },
}


def preset_dict(name: str, full: bool = False) -> dict:
    if name not in PRESETS:
        raise DiffmemError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return _merge(RunConfig().to_dict(), PRESETS[name]) if full else PRESETS[name]


def resolve_config(preset: str | None = None, toml_path: str | Path | None = None,
                   overrides: list[str] | None = None) -> RunConfig:
    """Preset, then TOML file, then ``key=value`` overrides -> validated :class:`RunConfig`.

    When the TOML file or the overrides choose another ``model.name`` than the
    preset's, the preset's model options (width, blocks, ...) are dropped: they
    belong to the preset's model.
    """
    base: dict = {}
    if preset is not None:
        base = dict(preset_dict(preset))
    user: dict = {}
    if toml_path is not None:
        p = Path(toml_path)
        if not p.is_file():
            raise DiffmemError(f"config file not found: {p}")
        try:
            user = tomllib.loads(p.read_text())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise DiffmemError(f"cannot parse TOML config {p}: {str(e).splitlines()[0]}") from None
    user = apply_overrides(user, list(overrides or []))
    user_model = user.get("model", {}).get("name") if isinstance(user.get("model"), dict) else None
    if user_model is not None and "model" in base and base["model"].get("name") != user_model:
        base = {k: v for k, v in base.items() if k != "model"}
    d = _merge(base, user)
    # what the user asked for: their keys, and the preset's model options when its model is kept
    given = _keys(user) | {k for k in _keys(base) if k.startswith("model.")}
    if d.get("data", "") is None:
        raise DiffmemError(f"preset {preset!r} has no data of its own: give data=PATH (a local image folder "
                           "or .npy/.npz array)")
    cfg = RunConfig.from_dict(d)
    return cfg.validate(given=given)
