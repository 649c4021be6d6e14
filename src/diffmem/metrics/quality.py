"""Sample quality without downloads: Fréchet distance, KID, a self-trained feature net.

Staged as features → statistics → metric (as in EDM2), so reference
statistics are computed once and reused at every checkpoint.

* :class:`GaussianStats` / :func:`frechet_distance` -- the Fréchet distance
  between Gaussian fits, ``‖μ₁−μ₂‖² + Tr C₁ + Tr C₂ − 2 Tr (C₁^{½} C₂ C₁^{½})^{½}``.
  With factors ``C = S Sᵀ`` the last trace is the nuclear norm ``‖S₁ᵀ S₂‖_*``
  (the eigenvalues of ``C₁^{½}C₂C₁^{½}`` are those of ``S₁ᵀC₂S₁`` = the squared
  singular values of ``S₁ᵀS₂``).  A singular-value decomposition is always
  real and non-negative: no ``sqrtm``, no imaginary parts to clean up, and when
  there are fewer samples than dimensions the centred data itself is the
  factor, so the cost is set by the number of samples, not by D².
* :func:`kid` -- Kernel Inception Distance: unbiased MMD² with the polynomial
  kernel ``(xᵀy/d + 1)³``, averaged over random subsets (mean and standard
  deviation over subsets).
* :class:`FeatureNet` / :func:`train_feature_net` -- a small network trained
  on the data set itself (the "FID on MNIST" practice): a classifier when
  labels exist (penultimate features), otherwise a denoising autoencoder
  (bottleneck features).  MLP for vectors and small images (< 16 px), a small
  conv net for larger images.  Seeded and saved with safetensors.
* :func:`load_inception` / :func:`inception_features` -- standard Inception
  FID features, only from weights the user already has locally (never
  downloaded): the pytorch-fid state dict ``pt_inception-2015-12-05-*.pth`` or
  the TorchScript ``inception-2015-12-05.pt`` of clean-fid / StyleGAN.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import DiffmemError

__all__ = [
    "GaussianStats", "gaussian_stats", "frechet_distance", "frechet_distance_features", "kid",
    "FeatureNet", "train_feature_net", "save_feature_net", "load_feature_net", "extract_features",
    "INCEPTION_ENV", "inception_candidates", "find_inception_weights", "load_inception",
    "inception_features", "FIDInceptionV3",
]


# --------------------------------------------------------------------------- statistics

def _as_f64(x, name: str = "features") -> np.ndarray:
    x = x.detach().cpu().numpy() if torch.is_tensor(x) else np.asarray(x)
    if x.ndim == 1:
        x = x[:, None]
    x = x.reshape(x.shape[0], -1).astype(np.float64, copy=False)
    if not np.isfinite(x).all():
        raise DiffmemError(f"{name} contain NaN or infinite values")
    return x


@dataclass
class GaussianStats:
    """Mean ``mu [D]`` and covariance ``cov = factor @ factor.T`` (``factor [D, r]``, r ≤ D)."""

    mu: np.ndarray
    factor: np.ndarray
    n: int = 0  # number of points the fit came from (0: given as moments)

    @property
    def dim(self) -> int:
        return self.mu.shape[0]

    @property
    def trace(self) -> float:
        return float(np.sum(self.factor * self.factor))

    @property
    def cov(self) -> np.ndarray:
        return self.factor @ self.factor.T

    @classmethod
    def from_moments(cls, mu, cov) -> "GaussianStats":
        """Factor a given covariance by a symmetric eigendecomposition (negatives clipped)."""
        mu = np.asarray(mu, dtype=np.float64).reshape(-1)
        cov = np.asarray(cov, dtype=np.float64)
        if cov.shape != (mu.size, mu.size):
            raise DiffmemError(f"covariance of shape {cov.shape} does not match a mean of size {mu.size}")
        lam, v = np.linalg.eigh(0.5 * (cov + cov.T))
        return cls(mu, v * np.sqrt(np.clip(lam, 0.0, None)), 0)

    @classmethod
    def from_features(cls, x) -> "GaussianStats":
        """Fit ``x [n, D]`` (unbiased covariance, as ``np.cov``); the factor has rank ≤ min(n−1, D)."""
        x = _as_f64(x)
        n, d = x.shape
        if n < 2:
            raise DiffmemError(f"need at least 2 points for a Gaussian fit, got {n}")
        mu = x.mean(0)
        xc = (x - mu) / math.sqrt(n - 1)
        if n <= d:
            return cls(mu, xc.T.copy(), n)
        lam, v = np.linalg.eigh(xc.T @ xc)
        return cls(mu, v * np.sqrt(np.clip(lam, 0.0, None)), n)


def gaussian_stats(x) -> GaussianStats:
    """Gaussian fit of the rows of ``x [n, ...]`` (flattened)."""
    return GaussianStats.from_features(x)


_WARNED: set = set()


def frechet_distance(a, b, cov_a=None, cov_b=None) -> float:
    """Fréchet (2-Wasserstein²) distance between two Gaussians.

    Call as ``frechet_distance(stats_a, stats_b)`` with :class:`GaussianStats`
    or as ``frechet_distance(mu_a, mu_b, cov_a, cov_b)``.
    """
    if cov_a is not None or cov_b is not None:
        a, b = GaussianStats.from_moments(a, cov_a), GaussianStats.from_moments(b, cov_b)
    if a.dim != b.dim:
        raise DiffmemError(f"Fréchet distance between {a.dim}- and {b.dim}-dimensional statistics")
    for s in (a, b):
        if 0 < s.n < s.dim + 1 and (s.n, s.dim) not in _WARNED:  # once per process and size, not per run
            _WARNED.add((s.n, s.dim))
            warnings.warn(f"Fréchet distance from {s.n} points in {s.dim} dimensions: the covariance is "
                          "rank-deficient and the estimate is biased (use more samples)", stacklevel=2)
            break
    cross = np.linalg.svd(a.factor.T @ b.factor, compute_uv=False).sum()
    dmu = a.mu - b.mu
    return float(max(dmu @ dmu + a.trace + b.trace - 2.0 * cross, 0.0))


def frechet_distance_features(x, y) -> float:
    """Fréchet distance between Gaussian fits of two point sets ``[n, D]`` and ``[m, D]``."""
    return frechet_distance(GaussianStats.from_features(x), GaussianStats.from_features(y))


def _mmd2_poly(x: np.ndarray, y: np.ndarray, degree: int, gamma: float, coef0: float) -> float:
    m = x.shape[0]
    kxx = (x @ x.T * gamma + coef0) ** degree
    kyy = (y @ y.T * gamma + coef0) ** degree
    kxy = (x @ y.T * gamma + coef0) ** degree
    sxx = (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
    syy = (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
    return float(sxx + syy - 2.0 * kxy.mean())


def kid(x, y, n_subsets: int = 100, subset_size: int = 1000, seed: int = 0, degree: int = 3,
        gamma: float | None = None, coef0: float = 1.0) -> tuple[float, float]:
    """Kernel Inception Distance between feature sets ``x [n, D]`` and ``y [m, D]``.

    Unbiased MMD² with the kernel ``(γ xᵀy + coef0)^degree`` (γ = 1/D by
    default) on ``n_subsets`` random subsets of ``min(subset_size, n, m)``
    points from each set (drawn without replacement within a subset).
    Returns ``(mean, std)`` over subsets; the mean is ≈ 0 (it can be slightly
    negative) when both sets come from one distribution.
    """
    x, y = _as_f64(x), _as_f64(y)
    if x.shape[1] != y.shape[1]:
        raise DiffmemError(f"KID between {x.shape[1]}- and {y.shape[1]}-dimensional features")
    m = min(int(subset_size), x.shape[0], y.shape[0])
    if m < 2:
        raise DiffmemError(f"KID needs at least 2 points in each set, got {x.shape[0]} and {y.shape[0]}")
    if n_subsets < 1:
        raise DiffmemError(f"n_subsets must be positive, got {n_subsets}")
    g = 1.0 / x.shape[1] if gamma is None else float(gamma)
    rng = np.random.default_rng(seed)
    vals = np.array([_mmd2_poly(x[rng.choice(x.shape[0], m, replace=False)],
                                y[rng.choice(y.shape[0], m, replace=False)], degree, g, coef0)
                     for _ in range(int(n_subsets))])
    return float(vals.mean()), float(vals.std(ddof=1)) if vals.size > 1 else 0.0


# --------------------------------------------------------------------------- feature net

_FORMAT = "diffmem.feature_net.v1"


class FeatureNet(nn.Module):
    """A small encoder with a head; ``features(x)`` is the representation used for FD/KID.

    ``arch`` is ``"mlp"`` (flattened input: D → hidden → hidden → feat) or
    ``"conv"`` (images ``(C, H, W)``: four 3×3 convs of 16-32-32-64 channels,
    two of stride 2, global average pool → feat).  ``mode`` is ``"classifier"`` (head: feat → classes)
    or ``"dae"`` (head: feat → hidden → D, reconstructs the clean input).
    Inputs are standardised with the scalar ``offset``/``scale`` of the
    training data and features with ``feat_offset``/``feat_scale`` (a mean
    vector and one scalar: the geometry is kept), all stored as buffers.
    """

    def __init__(self, in_shape, arch: str = "mlp", mode: str = "classifier", n_out: int = 10,
                 feat_dim: int = 64, hidden: int = 256):
        super().__init__()
        self.in_shape, self.arch, self.mode = tuple(int(s) for s in in_shape), arch, mode
        self.n_out, self.feat_dim, self.hidden = int(n_out), int(feat_dim), int(hidden)
        d = int(np.prod(self.in_shape))
        if arch == "mlp":
            self.encoder = nn.Sequential(nn.Flatten(), nn.Linear(d, hidden), nn.GELU(), nn.Linear(hidden, hidden),
                                         nn.GELU(), nn.Linear(hidden, feat_dim), nn.GELU())
        elif arch == "conv":
            if len(self.in_shape) != 3:
                raise DiffmemError(f"the conv feature net needs (C, H, W) images, got shape {self.in_shape}")
            c = self.in_shape[0]
            self.encoder = nn.Sequential(
                nn.Conv2d(c, 16, 3, padding=1), nn.GELU(), nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.GELU(),
                nn.Conv2d(32, 32, 3, padding=1), nn.GELU(), nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.GELU(),
                nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, feat_dim), nn.GELU())
        else:
            raise DiffmemError(f"unknown feature-net architecture {arch!r}; choose mlp or conv")
        if mode == "classifier":
            self.head = nn.Linear(feat_dim, n_out)
        elif mode == "dae":
            self.head = nn.Sequential(nn.Linear(feat_dim, hidden), nn.GELU(), nn.Linear(hidden, d))
        else:
            raise DiffmemError(f"unknown feature-net mode {mode!r}; choose classifier or dae")
        self.register_buffer("offset", torch.zeros(()))
        self.register_buffer("scale", torch.ones(()))
        self.register_buffer("feat_offset", torch.zeros(feat_dim))
        self.register_buffer("feat_scale", torch.ones(()))

    def config(self) -> dict:
        return {"in_shape": list(self.in_shape), "arch": self.arch, "mode": self.mode, "n_out": self.n_out,
                "feat_dim": self.feat_dim, "hidden": self.hidden}

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder((x - self.offset) / self.scale)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``x [B, *in_shape]`` (data space) → ``[B, feat_dim]``, centred and scaled to unit
        mean variance on the training data (so FD/KID values are comparable across data sets)."""
        return (self._encode(x) - self.feat_offset) / self.feat_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.head(self._encode(x))
        return out if self.mode == "classifier" else out.view(x.shape[0], *self.in_shape)


def _default_arch(shape) -> str:
    return "conv" if len(shape) == 3 and min(shape[1:]) >= 16 else "mlp"


def train_feature_net(pool: torch.Tensor, labels: torch.Tensor | None = None, *, seed: int = 0,
                      steps: int | None = None, batch_size: int = 128, lr: float = 2e-3,
                      arch: str | None = None, feat_dim: int = 64, hidden: int = 256,
                      noise: float = 0.5) -> FeatureNet:
    """Train a :class:`FeatureNet` on ``pool [N, *shape]`` (labels ``[N]`` → classifier, else DAE).

    Deterministic for a given seed and torch build: training runs on one CPU
    thread whatever the caller's setting (small nets gain nothing from more,
    and the result then does not depend on it) and leaves the global RNG state
    untouched.  ``steps`` defaults to 30 epochs clamped to [500, 2000] for the
    MLP and [200, 500] for the conv net; the DAE corrupts standardised inputs
    with Gaussian noise of std ``noise``.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _train_feature_net(pool, labels, seed, steps, batch_size, lr, arch, feat_dim, hidden, noise)
    finally:
        torch.set_num_threads(threads)


def _train_feature_net(pool, labels, seed, steps, batch_size, lr, arch, feat_dim, hidden, noise) -> FeatureNet:
    pool = torch.as_tensor(pool).detach().to("cpu", torch.float32)
    if pool.ndim < 2 or pool.shape[0] < 2:
        raise DiffmemError(f"need at least 2 points of shape (N, ...) to train a feature net, got {tuple(pool.shape)}")
    if not torch.isfinite(pool).all():
        raise DiffmemError("data for the feature net contain NaN or infinite values")
    shape = tuple(pool.shape[1:])
    arch = arch or _default_arch(shape)
    mode, n_out, y = "dae", int(np.prod(shape)), None
    if labels is not None:
        lab = torch.as_tensor(labels).reshape(-1)
        if lab.numel() != pool.shape[0]:
            raise DiffmemError(f"{lab.numel()} labels for {pool.shape[0]} data points")
        classes, y = torch.unique(lab, return_inverse=True)
        if len(classes) >= 2:
            mode, n_out = "classifier", len(classes)
        else:
            y = None
    n = pool.shape[0]
    if steps is None:
        epochs = 30 * max(1, math.ceil(n / batch_size))
        steps = int(np.clip(epochs, 500, 2000) if arch == "mlp" else np.clip(epochs, 200, 500))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = FeatureNet(shape, arch, mode, n_out, feat_dim, hidden)
    net.offset.fill_(float(pool.mean()))
    net.scale.fill_(float(pool.std()) or 1.0)
    g = torch.Generator().manual_seed(seed + 1)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    net.train()
    bs = min(batch_size, n)
    for _ in range(steps):
        idx = torch.randint(0, n, (bs,), generator=g)
        xb = pool[idx]
        if mode == "classifier":
            loss = F.cross_entropy(net(xb), y[idx])
        else:
            xn = xb + noise * net.scale * torch.randn(xb.shape, generator=g)
            loss = F.mse_loss(net(xn), xb) / float(net.scale) ** 2
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    with torch.no_grad():
        f = torch.cat([net._encode(pool[i : i + 1024]) for i in range(0, n, 1024)])
        net.feat_offset.copy_(f.mean(0))
        net.feat_scale.fill_(float(f.var(0).mean().sqrt()) or 1.0)
    return net


def save_feature_net(net: FeatureNet, path, meta: dict | None = None) -> Path:
    """Write ``net`` to a safetensors file atomically (temporary file, then rename)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in net.state_dict().items()}
    md = {"format": _FORMAT, "config": json.dumps(net.config()), "meta": json.dumps(meta or {})}
    from ..fileio import atomic_write

    return atomic_write(path, lambda p: save_file(tensors, str(p), metadata=md))


def load_feature_net(path, expected_shape=None) -> tuple[FeatureNet, dict]:
    """Load a feature net saved by :func:`save_feature_net`; returns ``(net, meta)``."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file, safe_open

    path = Path(path)
    if not path.is_file():
        raise DiffmemError(f"feature net file not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            md = f.metadata() or {}
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise DiffmemError(f"{path} is not a readable safetensors file ({e})") from None
    if md.get("format") != _FORMAT:
        raise DiffmemError(f"{path} is not a diffmem feature net (format {md.get('format')!r})")
    cfg = json.loads(md["config"])
    if expected_shape is not None and tuple(cfg["in_shape"]) != tuple(expected_shape):
        raise DiffmemError(f"feature net {path} was trained on data of shape {tuple(cfg['in_shape'])}, "
                           f"not {tuple(expected_shape)}; delete it or point eval.feature_net elsewhere")
    net = FeatureNet(cfg["in_shape"], cfg["arch"], cfg["mode"], cfg["n_out"], cfg["feat_dim"], cfg["hidden"])
    net.load_state_dict(state)
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net, json.loads(md.get("meta", "{}"))


@torch.no_grad()
def extract_features(net: nn.Module, x: torch.Tensor, batch_size: int = 1024) -> np.ndarray:
    """``net.features`` of ``x [N, ...]`` in batches, as float64 numpy ``[N, feat]``."""
    p = next(iter(net.parameters()), None)
    dev = p.device if p is not None else "cpu"
    out = [net.features(x[i : i + batch_size].to(dev, torch.float32)).double().cpu()
           for i in range(0, x.shape[0], batch_size)]
    return torch.cat(out).numpy() if out else np.zeros((0, getattr(net, "feat_dim", 0)))


# --------------------------------------------------------------------------- Inception (local weights only)

INCEPTION_ENV = "DIFFMEM_INCEPTION_WEIGHTS"
_PTFID_NAME = "pt_inception-2015-12-05-6726825d.pth"


def inception_candidates() -> list[Path]:
    """Where Inception weights are looked for, in order (``$DIFFMEM_INCEPTION_WEIGHTS`` first)."""
    home = Path.home()
    torch_home = Path(os.environ.get("TORCH_HOME", home / ".cache" / "torch"))
    c = [home / ".cache" / "diffmem" / "pt_inception-2015-12-05.pth",
         home / ".cache" / "diffmem" / _PTFID_NAME,
         home / ".cache" / "diffmem" / "inception-2015-12-05.pt",
         torch_home / "hub" / "checkpoints" / _PTFID_NAME]
    env = os.environ.get(INCEPTION_ENV)
    return ([Path(env).expanduser()] if env else []) + c


def find_inception_weights() -> Path:
    """The first existing Inception weights file, or a :class:`DiffmemError` saying where to put one."""
    env = os.environ.get(INCEPTION_ENV)
    if env and not Path(env).expanduser().is_file():
        raise DiffmemError(f"${INCEPTION_ENV} points to {env}, which is not a file")
    for p in inception_candidates():
        if p.is_file():
            return p
    raise DiffmemError(
        "Inception FID needs the FID Inception weights, and diffmem never downloads: put pytorch-fid's "
        f"{_PTFID_NAME} at {Path.home() / '.cache' / 'diffmem' / 'pt_inception-2015-12-05.pth'} "
        f"(or the TorchScript inception-2015-12-05.pt at {Path.home() / '.cache' / 'diffmem'}/), "
        f"or set {INCEPTION_ENV}=/path/to/file; or drop 'fid' from eval.quality")


class _Conv(nn.Module):
    """Conv (no bias) + BatchNorm(eps 1e-3) + ReLU; names as in torchvision's ``BasicConv2d``."""

    def __init__(self, cin, cout, k, s=1, p=0):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride=s, padding=p, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


def _avg3(x):  # the TF graph's 3×3 average pool ignores padding
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


class _MixedA(nn.Module):  # 35×35 blocks
    def __init__(self, cin, pool_features):
        super().__init__()
        self.branch1x1 = _Conv(cin, 64, 1)
        self.branch5x5_1, self.branch5x5_2 = _Conv(cin, 48, 1), _Conv(48, 64, 5, p=2)
        self.branch3x3dbl_1 = _Conv(cin, 64, 1)
        self.branch3x3dbl_2, self.branch3x3dbl_3 = _Conv(64, 96, 3, p=1), _Conv(96, 96, 3, p=1)
        self.branch_pool = _Conv(cin, pool_features, 1)

    def forward(self, x):
        return torch.cat([self.branch1x1(x), self.branch5x5_2(self.branch5x5_1(x)),
                          self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                          self.branch_pool(_avg3(x))], 1)


class _MixedB(nn.Module):  # 35 → 17 reduction
    def __init__(self, cin):
        super().__init__()
        self.branch3x3 = _Conv(cin, 384, 3, s=2)
        self.branch3x3dbl_1 = _Conv(cin, 64, 1)
        self.branch3x3dbl_2, self.branch3x3dbl_3 = _Conv(64, 96, 3, p=1), _Conv(96, 96, 3, s=2)

    def forward(self, x):
        return torch.cat([self.branch3x3(x), self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                          F.max_pool2d(x, 3, stride=2)], 1)


class _MixedC(nn.Module):  # 17×17 blocks with factorised 7×7 convs
    def __init__(self, cin, c7):
        super().__init__()
        r, c = (1, 7), (7, 1)
        pr, pc = (0, 3), (3, 0)
        self.branch1x1 = _Conv(cin, 192, 1)
        self.branch7x7_1, self.branch7x7_2 = _Conv(cin, c7, 1), _Conv(c7, c7, r, p=pr)
        self.branch7x7_3 = _Conv(c7, 192, c, p=pc)
        self.branch7x7dbl_1, self.branch7x7dbl_2 = _Conv(cin, c7, 1), _Conv(c7, c7, c, p=pc)
        self.branch7x7dbl_3, self.branch7x7dbl_4 = _Conv(c7, c7, r, p=pr), _Conv(c7, c7, c, p=pc)
        self.branch7x7dbl_5 = _Conv(c7, 192, r, p=pr)
        self.branch_pool = _Conv(cin, 192, 1)

    def forward(self, x):
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        d = x
        for m in (self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4,
                  self.branch7x7dbl_5):
            d = m(d)
        return torch.cat([self.branch1x1(x), b7, d, self.branch_pool(_avg3(x))], 1)


class _MixedD(nn.Module):  # 17 → 8 reduction
    def __init__(self, cin):
        super().__init__()
        self.branch3x3_1, self.branch3x3_2 = _Conv(cin, 192, 1), _Conv(192, 320, 3, s=2)
        self.branch7x7x3_1 = _Conv(cin, 192, 1)
        self.branch7x7x3_2 = _Conv(192, 192, (1, 7), p=(0, 3))
        self.branch7x7x3_3 = _Conv(192, 192, (7, 1), p=(3, 0))
        self.branch7x7x3_4 = _Conv(192, 192, 3, s=2)

    def forward(self, x):
        b = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return torch.cat([self.branch3x3_2(self.branch3x3_1(x)), b, F.max_pool2d(x, 3, stride=2)], 1)


class _MixedE(nn.Module):  # 8×8 blocks; the last one max-pools its pool branch (TF graph quirk)
    def __init__(self, cin, max_pool: bool):
        super().__init__()
        self.max_pool = max_pool
        self.branch1x1 = _Conv(cin, 320, 1)
        self.branch3x3_1 = _Conv(cin, 384, 1)
        self.branch3x3_2a, self.branch3x3_2b = _Conv(384, 384, (1, 3), p=(0, 1)), _Conv(384, 384, (3, 1), p=(1, 0))
        self.branch3x3dbl_1, self.branch3x3dbl_2 = _Conv(cin, 448, 1), _Conv(448, 384, 3, p=1)
        self.branch3x3dbl_3a = _Conv(384, 384, (1, 3), p=(0, 1))
        self.branch3x3dbl_3b = _Conv(384, 384, (3, 1), p=(1, 0))
        self.branch_pool = _Conv(cin, 192, 1)

    def forward(self, x):
        a = self.branch3x3_1(x)
        b = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        p = F.max_pool2d(x, 3, stride=1, padding=1) if self.max_pool else _avg3(x)
        return torch.cat([self.branch1x1(x), self.branch3x3_2a(a), self.branch3x3_2b(a),
                          self.branch3x3dbl_3a(b), self.branch3x3dbl_3b(b), self.branch_pool(p)], 1)


class FIDInceptionV3(nn.Module):
    """InceptionV3 as in the TF FID graph, with module names matching pytorch-fid's weights.

    ``forward(x)`` takes images ``[B, 3, H, W]`` in [0, 1], resizes them
    bilinearly to 299×299, maps them to [−1, 1] and returns the 2048-d pool3
    features.  Randomly initialised; load the weights with :func:`load_inception`.
    """

    def __init__(self):
        super().__init__()
        self.Conv2d_1a_3x3 = _Conv(3, 32, 3, s=2)
        self.Conv2d_2a_3x3 = _Conv(32, 32, 3)
        self.Conv2d_2b_3x3 = _Conv(32, 64, 3, p=1)
        self.Conv2d_3b_1x1 = _Conv(64, 80, 1)
        self.Conv2d_4a_3x3 = _Conv(80, 192, 3)
        self.Mixed_5b, self.Mixed_5c, self.Mixed_5d = _MixedA(192, 32), _MixedA(256, 64), _MixedA(288, 64)
        self.Mixed_6a = _MixedB(288)
        self.Mixed_6b, self.Mixed_6c = _MixedC(768, 128), _MixedC(768, 160)
        self.Mixed_6d, self.Mixed_6e = _MixedC(768, 160), _MixedC(768, 192)
        self.Mixed_7a = _MixedD(768)
        self.Mixed_7b, self.Mixed_7c = _MixedE(1280, max_pool=False), _MixedE(2048, max_pool=True)
        self.fc = nn.Linear(2048, 1008)  # present in the weights file; unused for features

    def forward(self, x):
        x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False) * 2 - 1
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(F.max_pool2d(x, 3, stride=2)))
        x = F.max_pool2d(x, 3, stride=2)
        for m in (self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a, self.Mixed_6b, self.Mixed_6c,
                  self.Mixed_6d, self.Mixed_6e, self.Mixed_7a, self.Mixed_7b, self.Mixed_7c):
            x = m(x)
        return x.mean((2, 3))


class _TorchScriptInception(nn.Module):
    """The clean-fid / StyleGAN TorchScript detector: takes [0, 255] images, resizes itself."""

    def __init__(self, module):
        super().__init__()
        self.module = module

    def forward(self, x):  # x in [0, 1]
        return self.module(x * 255.0, return_features=True).reshape(x.shape[0], -1)


def load_inception(path=None, device="cpu") -> nn.Module:
    """The FID Inception network from local weights (``path`` or :func:`find_inception_weights`).

    Accepts pytorch-fid's state dict (``.pth``) or a TorchScript module.  The
    returned module maps ``[B, 3, H, W]`` images in [0, 1] to ``[B, 2048]``.
    """
    path = Path(path) if path else find_inception_weights()
    if not path.is_file():
        raise DiffmemError(f"Inception weights not found: {path}")
    try:
        return _TorchScriptInception(torch.jit.load(str(path), map_location=device)).eval()
    except Exception:  # not TorchScript: a state dict
        pass
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:
        raise DiffmemError(f"cannot read Inception weights {path}: {type(e).__name__}: {e}") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    net = FIDInceptionV3()
    try:
        missing, unexpected = net.load_state_dict(state, strict=False)
    except (RuntimeError, TypeError, AttributeError) as e:
        raise DiffmemError(f"{path} does not hold FID Inception weights: {str(e).splitlines()[0]}") from None
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    unexpected = [k for k in unexpected if not k.startswith("AuxLogits.")]
    if missing or unexpected:
        raise DiffmemError(f"{path} does not hold FID Inception weights (missing {missing[:3]}, "
                           f"unexpected {unexpected[:3]})")
    return net.to(device).eval()


@torch.no_grad()
def inception_features(net: nn.Module, images: torch.Tensor, batch_size: int = 50) -> np.ndarray:
    """2048-d features of ``images [N, C, H, W]`` in [0, 1] (C = 1 is replicated to 3 channels).

    Images are quantised to 8 bits first, as FID implementations do with files.
    """
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise DiffmemError(f"Inception FID needs images of shape (N, 1 or 3, H, W), got {tuple(images.shape)}")
    p = next(iter(net.parameters()), None)
    dev = p.device if p is not None else "cpu"
    out = []
    for i in range(0, images.shape[0], batch_size):
        x = images[i : i + batch_size].to(dev, torch.float32)
        x = torch.round(x.clamp(0, 1) * 255) / 255
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        out.append(net(x).double().cpu())
    return torch.cat(out).numpy()
