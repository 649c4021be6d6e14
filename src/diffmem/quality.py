"""Sample quality of a run against its held-out set (BUBM25 §1 "Quality"; DESIGN: no downloads).

:class:`QualityReference` is built once per run from the data set's held-out
points ``ds.test``; calling it on generated samples returns
``{name: (value, error_or_None)}`` for the requested metrics:

* ``fd_pixel`` -- Fréchet distance between Gaussian fits in pixel space
  (model space: the same centring as training).
* ``fd_feat`` -- Fréchet distance in the features of a small network trained
  on the data set's pool (classifier if it has labels, else a denoising
  autoencoder; see :mod:`diffmem.metrics.quality`).
* ``kid`` -- KID (unbiased polynomial-kernel MMD²) in the same features;
  the error is the standard deviation over subsets.
* ``fid`` -- standard Inception FID, only with weights the user has locally.

Fréchet distances are biased upwards at small sample sizes (the bias falls
like 1/N): compare values computed from the same number of samples, as the
evaluator does at every checkpoint of a run.

The feature net is cached: ``cfg.eval.feature_net`` names a file to reuse (it
is trained and written there if absent, so a sweep can share one net);
otherwise ``RUN/quality_net.safetensors`` is used.  Training is seeded with a
fixed seed (not the run's), so every run on one data set gets the same net.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import torch

from .errors import DiffmemError
from .metrics.quality import (
    FeatureNet,
    GaussianStats,
    extract_features,
    find_inception_weights,
    frechet_distance,
    inception_features,
    kid,
    load_feature_net,
    load_inception,
    save_feature_net,
    train_feature_net,
)

__all__ = ["QualityReference", "QUALITY_METRICS", "feature_net_for", "check_metric_names"]

QUALITY_METRICS = ("fd_pixel", "fd_feat", "kid", "fid")
FEATURE_NET_SEED = 0
FEATURE_NET_STEPS: int | None = None  # None: train_feature_net's default schedule


def check_metric_names(names) -> list[str]:
    if isinstance(names, str):
        names = [names]
    names = list(names)
    bad = [n for n in names if n not in QUALITY_METRICS]
    if bad:
        raise DiffmemError(f"unknown quality metric {bad[0]!r}; choose from {', '.join(QUALITY_METRICS)}")
    return names


def feature_net_for(ds, path) -> FeatureNet:
    """Load the feature net at ``path`` or train one on ``ds.pool`` (labels if any) and save it there."""
    path = Path(path)
    if path.exists():
        net, meta = load_feature_net(path, expected_shape=tuple(ds.shape))
        if meta.get("data") not in (None, getattr(ds, "name", None)):
            warnings.warn(f"feature net {path} was trained on {meta.get('data')!r}, not {ds.name!r}", stacklevel=2)
        return net
    net = train_feature_net(ds.pool, getattr(ds, "labels", None), seed=FEATURE_NET_SEED, steps=FEATURE_NET_STEPS)
    save_feature_net(net, path, meta={"data": getattr(ds, "name", None), "n_pool": int(len(ds.pool)),
                                      "seed": FEATURE_NET_SEED})
    return net


def _device(cfg) -> str:
    return cfg.device if str(cfg.device).startswith("cuda") and torch.cuda.is_available() else "cpu"


class QualityReference:
    """Reference statistics of a held-out set, and the metrics of samples against them.

    Args:
        reference: held-out points ``[N, *shape]`` (model space).
        feature_net: network for ``fd_feat``/``kid`` (required for those metrics).
        to_unit: maps model-space points to images in [0, 1] for ``fid``
            (default: the reference's min/max mapped to [0, 1]).
        kid_subsets, kid_subset_size, seed: KID settings.
        inception: an Inception module or weights path for ``fid`` (default: looked
            up with :func:`~diffmem.metrics.quality.find_inception_weights` on first use).
        device: where the Inception network runs.

    Statistics are computed on first use of each metric and kept.
    """

    def __init__(self, reference: torch.Tensor, feature_net: FeatureNet | None = None, *, to_unit=None,
                 kid_subsets: int = 100, kid_subset_size: int = 1000, seed: int = 0, inception=None,
                 device: str | torch.device = "cpu"):
        reference = torch.as_tensor(reference).detach().to("cpu", torch.float32)
        if reference.ndim < 2 or reference.shape[0] < 2:
            raise DiffmemError(f"the quality reference needs at least 2 held-out points, got shape "
                               f"{tuple(reference.shape)}")
        if not torch.isfinite(reference).all():
            raise DiffmemError("the held-out reference set contains NaN or infinite values")
        self.reference, self.feature_net = reference, feature_net
        self.shape = tuple(reference.shape[1:])
        self.to_unit = to_unit
        self.kid_subsets, self.kid_subset_size, self.seed = kid_subsets, kid_subset_size, seed
        self._inception, self.device = inception, torch.device(device)
        self._cache: dict = {}

    @staticmethod
    def check(cfg, ds) -> None:
        """Everything :meth:`for_run` could fail on, checked without writing anything: metric
        names, the held-out set's size, FID's image shape and local Inception weights."""
        names = check_metric_names(cfg.eval.quality)
        if names and len(ds.test) < 2:
            raise DiffmemError(f"the quality metrics ({', '.join(names)}) need at least 2 held-out points; data "
                               f"{ds.name!r} holds out {len(ds.test)} (raise test= in the data spec, or set "
                               "eval.quality= to measure no quality)")
        if "fid" in names:
            if len(ds.shape) != 3 or ds.shape[0] not in (1, 3):
                raise DiffmemError(f"fid needs image data of shape (1 or 3, H, W), got {tuple(ds.shape)}; "
                                   "use fd_feat/kid instead")
            find_inception_weights()
        if cfg.eval.feature_net and {"fd_feat", "kid"} & set(names) and Path(cfg.eval.feature_net).exists():
            load_feature_net(cfg.eval.feature_net, expected_shape=tuple(ds.shape))

    @classmethod
    def for_run(cls, cfg, ds, feature_net_path=None) -> "QualityReference":
        """The reference of a run: ``ds.test`` as held-out set, the cached or freshly trained
        feature net (``cfg.eval.feature_net``, else ``feature_net_path``, the run's own file),
        ``ds.to_pixels`` for FID.  Call :meth:`check` before writing anything."""
        cls.check(cfg, ds)
        names = check_metric_names(cfg.eval.quality)
        net = None
        if {"fd_feat", "kid"} & set(names):
            path = Path(cfg.eval.feature_net) if cfg.eval.feature_net else feature_net_path
            if path is None:
                raise DiffmemError("fd_feat and kid need a feature net: set eval.feature_net=PATH")
            net = feature_net_for(ds, path)
        inception = None
        if "fid" in names:
            inception = load_inception(find_inception_weights(), device=_device(cfg))
        to_unit = None
        if hasattr(ds, "to_pixels"):
            to_unit = lambda x: (ds.to_pixels(x) + 1) / 2  # noqa: E731  ([-1, 1] pixels -> [0, 1])
        return cls(ds.test, net, to_unit=to_unit, seed=int(cfg.eval.sample_seed), inception=inception, kid_subsets=50,
                   device=_device(cfg))

    # -- reference statistics (lazy, cached)
    def _flat(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], -1)

    def _ref(self, key: str):
        if key not in self._cache:
            if key == "pixel":
                self._cache[key] = GaussianStats.from_features(self._flat(self.reference))
            elif key == "feat":
                f = extract_features(self._need_net(), self.reference)
                self._cache[key] = (f, GaussianStats.from_features(f))
            elif key == "fid":
                f = inception_features(self._need_inception(), self._unit(self.reference))
                self._cache[key] = GaussianStats.from_features(f)
        return self._cache[key]

    def _need_net(self) -> FeatureNet:
        if self.feature_net is None:
            raise DiffmemError("fd_feat and kid need a feature net (QualityReference(feature_net=...))")
        return self.feature_net

    def _need_inception(self):
        if self._inception is None or isinstance(self._inception, (str, Path)):
            self._inception = load_inception(self._inception, device=self.device)
        return self._inception

    def _unit(self, x: torch.Tensor) -> torch.Tensor:
        if self.to_unit is not None:
            return self.to_unit(x)
        lo, hi = float(self.reference.min()), float(self.reference.max())
        return (x - lo) / max(hi - lo, 1e-12)

    def __call__(self, samples: torch.Tensor, names) -> dict:
        """Metrics of ``samples [N, *shape]``: ``{name: (value, error or None)}``.

        With fewer than 2 samples every value is NaN (a run whose samples all
        diverged still gets a record instead of an exception).  Fréchet
        distances from fewer samples than dimensions warn on the first call.
        """
        names = check_metric_names(names)
        samples = torch.as_tensor(samples).detach().to("cpu", torch.float32)
        if tuple(samples.shape[1:]) != self.shape:
            raise DiffmemError(f"samples of shape {tuple(samples.shape[1:])} against a reference of shape {self.shape}")
        out: dict = {}
        if samples.shape[0] < 2:
            return {n: (math.nan, None) for n in names}
        feats = None
        for name in names:
            if name == "fd_pixel":
                out[name] = (frechet_distance(GaussianStats.from_features(self._flat(samples)),
                                              self._ref("pixel")), None)
            elif name in ("fd_feat", "kid"):
                ref_f, ref_s = self._ref("feat")
                if feats is None:
                    feats = extract_features(self._need_net(), samples)
                if name == "fd_feat":
                    out[name] = (frechet_distance(GaussianStats.from_features(feats), ref_s), None)
                else:
                    # subsets of at most half of each set, so that the spread over subsets is a
                    # real subsampling spread (a subset as large as the set is the set itself)
                    m = max(2, min(self.kid_subset_size, len(feats) // 2, len(ref_f) // 2))
                    out[name] = kid(feats, ref_f, self.kid_subsets, m, self.seed)
            elif name == "fid":
                ref = self._ref("fid")
                f = inception_features(self._need_inception(), self._unit(samples))
                out[name] = (frechet_distance(GaussianStats.from_features(f), ref), None)
        return out
