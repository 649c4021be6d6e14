"""One typed, serialisable configuration per run (DESIGN principle 6).

A :class:`RunConfig` is built from a named preset, then a TOML file, then
command-line overrides ``key.sub=value`` (only the keys given change).  The
resolved configuration is written to ``RUN/config.json``.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .errors import DiffmemError

try:  # Python >= 3.11
    import tomllib
except ModuleNotFoundError:  # pragma: no cover
    import tomli as tomllib  # type: ignore

__all__ = ["ModelConfig", "OptimConfig", "EvalConfig", "RunConfig", "PRESETS", "resolve_config"]


@dataclass
class ModelConfig:
    name: str = "mlp"  # a key of diffmem.models registry: mlp, gmm, unet, bubm25
    width: int = 256
    blocks: int = 3  # MLP residual blocks
    dropout: float = 0.0
    parametrisation: str = "eps_ddpm"  # eps_ddpm (BUBM25: ε-prediction on DDPM indices) or edm


@dataclass
class OptimConfig:
    name: str = "sgd"  # sgd (with momentum) or adam
    lr: float = 0.01
    momentum: float = 0.95
    beta1: float = 0.9
    beta2: float = 0.999
    weight_decay: float = 0.0


@dataclass
class EvalConfig:
    n_samples: int = 256  # generated samples per checkpoint (same seeds every checkpoint)
    sample_seed: int = 1_000_000
    sampler: str = "ddim"  # ddim (η=0, deterministic), ddpm, em, heun
    sampler_steps: int = 50
    threshold: float = 1 / 3  # f_mem ratio test d1/d2 < threshold
    n_boot: int = 1000
    quality: list = field(default_factory=lambda: ["fd_pixel", "fd_feat", "kid"])
    loss_t: list = field(default_factory=lambda: [0.01, 0.1])  # OU times of the train/test loss probes
    loss_draws: int = 5  # fixed noise draws per image, reused at every checkpoint
    n_loss: int = 2048  # at most this many train / test images in the loss probe
    batch_size: int = 1024
    save_samples: bool = True
    feature_net: str = ""  # path of a cached quality feature net ("" = train one in the run dir)


@dataclass
class RunConfig:
    data: str = "digits"  # digits | gmm[:d=8] | image folder path | .npy/.npz path
    n: int = 64  # training-set size (a nested prefix of one seeded permutation)
    subset_seed: int = 0
    seed: int = 0  # initialisation, batches, noise draws (per-step reseeding)
    steps: int = 20000
    batch_max: int = 512  # batch = min(n, batch_max): full batch when n <= batch_max
    checkpoints_per_decade: int = 12
    device: str = "cpu"
    threads: int = 0  # torch CPU threads (0 = leave torch's default)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "RunConfig":
        return _from_dict(cls, d, "")

    def validate(self) -> "RunConfig":
        if self.steps <= 0:
            raise DiffmemError(f"number of steps must be positive, got {self.steps}")
        if self.n < 2:
            raise DiffmemError(f"need at least 2 training points, got n={self.n}")
        if self.batch_max < 1:
            raise DiffmemError(f"batch_max must be positive, got {self.batch_max}")
        if self.optim.name not in ("sgd", "adam"):
            raise DiffmemError(f"unknown optimiser {self.optim.name!r}; choose sgd or adam")
        if self.optim.lr <= 0:
            raise DiffmemError(f"learning rate must be positive, got {self.optim.lr}")
        if self.model.parametrisation not in ("eps_ddpm", "edm"):
            raise DiffmemError(f"unknown parametrisation {self.model.parametrisation!r}; choose eps_ddpm or edm")
        if not 0 < self.eval.threshold <= 1:
            raise DiffmemError(f"f_mem threshold must be in (0, 1], got {self.eval.threshold}")
        if self.eval.n_samples < 1:
            raise DiffmemError(f"eval.n_samples must be positive, got {self.eval.n_samples}")
        return self


def _from_dict(cls, d: dict, prefix: str):
    if not isinstance(d, dict):
        raise DiffmemError(f"config section {prefix or 'root'!r} must be a table")
    known = {f.name: f for f in fields(cls)}
    kw = {}
    for k, v in d.items():
        if k not in known:
            raise DiffmemError(f"unknown config key {prefix + k!r}; known: {', '.join(known)}")
        default = known[k].default_factory() if known[k].default_factory is not dataclasses.MISSING else known[k].default
        if dataclasses.is_dataclass(default):
            kw[k] = _from_dict(type(default), v, prefix + k + ".")
        else:
            kw[k] = v
    return cls(**kw)


def _coerce(text: str, current: Any, key: str) -> Any:
    try:
        if isinstance(current, bool):
            if text.lower() in ("1", "true", "yes", "on"):
                return True
            if text.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if isinstance(current, int):
            return int(float(text)) if float(text).is_integer() else int(text)
        if isinstance(current, float):
            return float(text)
        if isinstance(current, list):
            return [type(current[0])(x) if current else _auto(x) for x in text.split(",") if x != ""]
    except ValueError:
        raise DiffmemError(f"bad value {text!r} for config key {key!r} (expected {type(current).__name__})") from None
    return text


def _auto(x: str):
    for t in (int, float):
        try:
            return t(x)
        except ValueError:
            pass
    return x


def apply_overrides(d: dict, overrides: list[str]) -> dict:
    """Apply ``key.sub=value`` strings to a config dict (values coerced to the current type)."""
    base = RunConfig().to_dict()
    for ov in overrides:
        if "=" not in ov:
            raise DiffmemError(f"override {ov!r} is not of the form key=value")
        key, text = ov.split("=", 1)
        parts = key.strip().split(".")
        node, ref = d, base
        for p in parts[:-1]:
            if p not in ref or not isinstance(ref[p], dict):
                raise DiffmemError(f"unknown config key {key!r}")
            node = node.setdefault(p, {})
            ref = ref[p]
        if parts[-1] not in ref:
            raise DiffmemError(f"unknown config key {key!r}")
        node[parts[-1]] = _coerce(text, ref[parts[-1]], key)
    return d


def _merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
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
        "eval": {"sampler": "em", "sampler_steps": 1000, "quality": ["fd_pixel"]},
    },
    # BUBM25 CelebA U-Net (SPEC §1): 32×32 grayscale, W = 32, SGD lr 0.01 momentum 0.95,
    # batch min(n, 512), DDIM 100 steps. Point data= at a local CelebA folder or array.
    "celeba-bubm25": {
        "model": {"name": "bubm25", "width": 32, "dropout": 0.1},
        "optim": {"name": "sgd", "lr": 0.01, "momentum": 0.95},
        "batch_max": 512,
        "steps": 2_000_000,
        "eval": {"sampler": "ddim", "sampler_steps": 100, "n_samples": 10000},
    },
}


def resolve_config(preset: str | None = None, toml_path: str | Path | None = None,
                   overrides: list[str] | None = None) -> RunConfig:
    """Preset, then TOML file, then ``key=value`` overrides -> validated :class:`RunConfig`."""
    d: dict = {}
    if preset is not None:
        if preset not in PRESETS:
            raise DiffmemError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
        d = _merge(d, PRESETS[preset])
    if toml_path is not None:
        p = Path(toml_path)
        if not p.is_file():
            raise DiffmemError(f"config file not found: {p}")
        try:
            d = _merge(d, tomllib.loads(p.read_text()))
        except tomllib.TOMLDecodeError as e:
            raise DiffmemError(f"cannot parse TOML config {p}: {e}") from None
    d = apply_overrides(d, list(overrides or []))
    return RunConfig.from_dict(d).validate()


def load_run_config(run_dir: str | Path) -> RunConfig:
    p = Path(run_dir) / "config.json"
    if not p.is_file():
        raise DiffmemError(f"{run_dir} is not a run directory (no config.json)")
    d = json.loads(p.read_text())
    d.pop("resolved", None)
    d = {k: v for k, v in d.items() if k in {f.name for f in fields(RunConfig)}}
    return RunConfig.from_dict(d)
