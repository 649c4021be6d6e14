"""Audit any generator's samples against its training set: ``diffmem audit``.

    diffmem audit --train TRAIN --samples SAMPLES [--threshold 0.3333] [--n-boot N] [--seed S]
                  [--space pixels|embeddings|features] [--train-emb E.npy --samples-emb E.npy]
                  [--gallery G.png] [--gallery-html G.html] [--allow-space-mismatch]
                  [--json] [--out FILE] [--no-progress]

TRAIN and SAMPLES are any audit input (:mod:`diffmem.audit_sources`): ``.npy``
/ ``.npz[?key=K]`` arrays (uint8 mapped to [−1, 1] as for training; read in
blocks, never loaded whole), image folders (``FOLDER[?size=S&gray=0|1]``, read
as stored or preprocessed as ``data=`` does), a diffmem run directory
(``RUN[@STEP]``: as samples its saved samples at STEP, as training set its
training subset; with ``--samples RUN`` the training set defaults to the
run's own) or a named data set.  Both sides are compared in data space.

A sample is memorised when ``d1/d2 < threshold`` (BUBM25; see
:mod:`diffmem.metrics.memorization`).  Distances are taken in pixels
(default), in embeddings the user computed (``--space embeddings``: one row
per image of each side, in the same order) or in the features of a run's own
quality network (``--space features``).  The training set is streamed in
blocks through the distance kernel with a progress bar on stderr (off with
``--json`` or ``--no-progress``).

Before any distance, the two sides' value ranges and means are compared
(:func:`diffmem.audit_sources.compare_spaces`): a gross mismatch (range widths
differing by more than 1.8×, e.g. [0, 1] against [−1, 1], or mean rows further
apart than the training spread, e.g. centred against uncentred) is refused
with exit 2 unless ``--allow-space-mismatch``; a milder one (1.3×, half the
spread) prints a warning.  Both sides of one run are the same space by
construction and are never refused.

``--json`` prints one JSON object with ``f_mem``, ``stderr``, ``ci95``
(bootstrap [low, high]), ``boot_mean``, ``n_samples``, ``n_train``,
``threshold``, ``n_boot``, ``memorized`` (sample indices),
``nearest_train`` (their nearest training rows), ``ratio_quantiles``,
``train``, ``samples`` -- the keys of every earlier version -- and
``n_flagged``, ``ci95_wilson``, ``ci95_exact`` (Clopper–Pearson),
``ratios`` (summary and histogram of d1/d2), ``space``, ``space_check``,
``inputs`` and ``timing``; otherwise a short summary.  ``--out`` writes the
JSON object to a file, ``--gallery`` a PNG of the most memorised samples
beside their two nearest training images with a histogram of d1/d2; every
file is written atomically after all the work, so a failure writes nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from .data import load_array
from .errors import DiffmemError
from .fileio import atomic_write, atomic_write_text
from .metrics.memorization import bootstrap_fraction, memorization_fraction

__all__ = ["audit", "audit_rows", "run_audit", "load_array", "add_audit_parser", "cmd_audit", "main"]

_Q = (5, 25, 50, 75, 95)
AUDIT_MAX_BYTES = 256 << 20  # working set of the distance kernel beyond the samples (blocks of the training set)


def ratio_summary(ratio: np.ndarray, threshold: float) -> dict:
    """Quantiles, mean, extremes and a 20-bin histogram on [0, 1] of the per-sample ``d1/d2``."""
    counts, edges = np.histogram(np.clip(ratio, 0, 1), bins=20, range=(0.0, 1.0))
    q = np.percentile(ratio, [1, *_Q, 99])
    return {"min": float(ratio.min()), "max": float(ratio.max()), "mean": float(ratio.mean()),
            "quantiles": {f"p{p}": float(v) for p, v in zip((1, *_Q, 99), q)},
            "below": {f"{t:g}": int((ratio < t).sum()) for t in (0.1, 0.25, 1 / 3, 0.5)},
            "histogram": {"edges": [float(e) for e in edges], "counts": [int(c) for c in counts]},
            "threshold": float(threshold)}


def audit(train, samples, threshold: float = 1 / 3, n_boot: int = 1000, seed: int = 0, **nn_kwargs) -> dict:
    """Memorisation audit of ``samples [M, ...]`` against ``train [N, ...]`` (arrays or tensors, as given).

    Returns the :func:`~diffmem.metrics.memorization.memorization_fraction`
    dict (``f_mem``, ``stderr``, ``ci95``, ``boot_mean``, ``n_flagged``,
    ``ci95_wilson``, ``ci95_exact``, ``n_samples``, ``n_train``,
    ``threshold``, ``n_boot``, ``memorized``, ``nearest_train``) plus
    ``ratio_quantiles`` (5, 25, 50, 75, 95 % of ``d1/d2`` over samples) and
    ``ratios`` (:func:`ratio_summary`).
    """
    out = memorization_fraction(samples, train, threshold=threshold, n_boot=n_boot, seed=seed, details=True,
                                **nn_kwargs)
    ratio = out.pop("ratio")
    for k in ("d1", "d2", "nearest"):
        out.pop(k)
    out["ratio_quantiles"] = {f"p{p}": float(v) for p, v in zip(_Q, np.percentile(ratio, _Q))}
    out["ratios"] = ratio_summary(ratio, threshold)
    return out


# ---------------------------------------------------------------------------- rows (streamed) audit


class _Stream:
    """The training rows as the kernel sees them: a progress bar over block reads, finiteness checked per block."""

    def __init__(self, rows, bar, check_finite: bool):
        self.rows, self.bar, self.check = rows, bar, check_finite
        self.shape, self.dtype, self.ndim = rows.shape, rows.dtype, 2

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, key):
        b = self.rows[key]
        if isinstance(key, slice):
            if self.check and not np.isfinite(b.sum(1)).all() and not np.isfinite(b).all():
                bad = int(np.flatnonzero(~np.isfinite(b).all(1))[0]) + (key.start or 0)
                raise DiffmemError(f"training points contain NaN or infinite values (first bad row {bad})")
            if self.bar is not None:
                self.bar.update(len(b))
        return b


def audit_rows(train, samples, threshold: float = 1 / 3, n_boot: int = 1000, seed: int = 0,
               progress: bool = False, **nn_kwargs) -> tuple[dict, dict]:
    """Audit of two :class:`~diffmem.audit_sources.Rows` (the training side streamed in blocks).

    Returns ``(result, per_sample)``: the JSON-ready result of :func:`audit`
    plus ``timing`` (``total_s``, ``read_train_s``, ``kernel_s``,
    ``kernel_fraction``), and the per-sample numpy arrays ``ratio``, ``d1``,
    ``d2``, ``nearest``, ``second``.
    """
    from .metrics.memorization import _check_finite
    from .metrics.nn import two_nearest

    _check_pair(train, samples, threshold)
    t0 = time.perf_counter()
    S = samples[0 : len(samples)]
    if not samples.finite:
        _check_finite(S, "samples")
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(train), desc="audit: training rows", unit="row", file=sys.stderr, leave=False)
    r0 = train.read_seconds
    nn_kwargs.setdefault("max_bytes", AUDIT_MAX_BYTES)
    try:
        t1 = time.perf_counter()
        d1, d2, i1, i2 = two_nearest(S, _Stream(train, bar, not train.finite), with_second=True, **nn_kwargs)
        t_nn = time.perf_counter() - t1
    finally:
        if bar is not None:
            bar.close()
    d1, d2 = d1.astype(np.float64), d2.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(d1 == 0, 0.0, d1 / d2)
    flags = ratio < float(threshold)
    out = bootstrap_fraction(flags, n_boot, seed)
    idx = np.flatnonzero(flags)
    out.update({"n_samples": int(flags.size), "n_train": len(train), "threshold": float(threshold),
                "n_boot": int(n_boot), "memorized": [int(i) for i in idx],
                "nearest_train": [int(i) for i in i1[idx]],
                "ratio_quantiles": {f"p{p}": float(v) for p, v in zip(_Q, np.percentile(ratio, _Q))},
                "ratios": ratio_summary(ratio, threshold)})
    read = train.read_seconds - r0
    total = time.perf_counter() - t0
    out["timing"] = {"total_s": total, "read_train_s": read, "kernel_s": t_nn - read,
                     "kernel_fraction": (t_nn - read) / total if total > 0 else None}
    return out, {"ratio": ratio, "d1": d1, "d2": d2, "nearest": i1.astype(np.int64), "second": i2.astype(np.int64)}


def _check_pair(train, samples, threshold) -> None:
    if not 0 < float(threshold) <= 1:
        raise DiffmemError(f"threshold must be in (0, 1], got {threshold}")
    if len(train) < 2:
        raise DiffmemError(f"need at least 2 training points for the d1/d2 ratio test, got {len(train)}")
    if samples.d != train.d:
        raise DiffmemError(f"samples have {samples.d} features per row but training points have {train.d} "
                           f"(per-sample shapes {samples.sample_shape} vs {train.sample_shape}); images must "
                           "match in size and channels (FOLDER?size=S&gray=0|1 preprocesses a folder)")


# ---------------------------------------------------------------------------- the whole audit


def _check_out(path, suffixes: tuple[str, ...], flag: str) -> Path | None:
    if path is None:
        return None
    p = Path(path)
    if suffixes and p.suffix.lower() not in suffixes:
        raise DiffmemError(f"{flag} must end in {' or '.join(suffixes)}, got {p}")
    if p.is_dir():
        raise DiffmemError(f"{flag} {p} is a directory; give a file name")
    return p


def _distance_rows(space: str, train, samples, train_emb, samples_emb, feature_run):
    from .audit_sources import load_embeddings

    if space == "pixels":
        if train_emb or samples_emb:
            raise DiffmemError("--train-emb/--samples-emb need --space embeddings")
        return train, samples
    if space == "embeddings":
        if not (train_emb and samples_emb):
            raise DiffmemError("--space embeddings needs --train-emb E_TRAIN.npy and --samples-emb E_SAMPLES.npy "
                               "(one row per image, same order as --train and --samples)")
        te, se = load_embeddings(train_emb, train, "train"), load_embeddings(samples_emb, samples, "samples")
        if te.d != se.d:
            raise DiffmemError(f"training embeddings have {te.d} dimensions but sample embeddings have {se.d}")
        return te, se
    if space == "features":
        return _feature_rows(train, samples, feature_run)
    raise DiffmemError(f"unknown --space {space!r}; use pixels, embeddings or features")


def _feature_rows(train, samples, feature_run):
    """Both sides in the features of a run's own quality network (input: model space = data − the run's mean)."""
    import torch

    from .audit_sources import ArrayRows, _run_dataset
    from .metrics.quality import load_feature_net
    from .rundir import Run

    run = Run(feature_run) if feature_run else (samples.run or train.run)
    if run is None or not run.exists():
        raise DiffmemError("--space features needs a diffmem run (--samples RUN, --train RUN or --feature-run RUN) "
                           "whose quality feature net it uses")
    cfg, ds = _run_dataset(run)
    path = Path(cfg.eval.feature_net) if cfg.eval.feature_net else run.feature_net_path
    if not path.is_file():
        raise DiffmemError(f"run {run.path} has no quality feature net ({path}); it exists when fd_feat or kid "
                           "was measured")
    net, _ = load_feature_net(path, expected_shape=tuple(ds.shape))
    mean = ds.mean.reshape(1, -1).numpy() if ds.mean is not None else 0.0
    if samples.d != int(np.prod(ds.shape)) or train.d != samples.d:
        raise DiffmemError(f"--space features: the run's feature net takes shape {tuple(ds.shape)}; the inputs have "
                           f"{samples.sample_shape} and {train.sample_shape}")

    def feats(rows):
        out = []
        with torch.no_grad():
            for a in range(0, len(rows), 2048):
                x = torch.from_numpy(rows[a : a + 2048] - mean).reshape(-1, *ds.shape)
                out.append(net.features(x).numpy())
        return ArrayRows(np.concatenate(out).astype(np.float32), name=f"{rows.name} (features)", kind="features")

    return feats(train), feats(samples)


def run_audit(train: str | None, samples: str, *, threshold: float = 1 / 3, n_boot: int = 1000, seed: int = 0,
              space: str = "pixels", train_emb: str | None = None, samples_emb: str | None = None,
              feature_run: str | None = None, allow_space_mismatch: bool = False, progress: bool = False,
              gallery: str | None = None, gallery_html: str | None = None, gallery_k: int = 16,
              out: str | None = None, warn=None) -> dict:
    """The whole audit of two specs (see the module docstring); returns the JSON-ready result.

    Every input and output name is checked before any distance is computed,
    and every file is written (atomically) only after all the work: a bad
    input, a mismatch or a failure part-way writes nothing.
    """
    from .audit_sources import compare_spaces, open_rows, space_stats

    warn = warn or (lambda msg: print(f"diffmem: warning: {msg}", file=sys.stderr))
    if n_boot < 0:
        raise DiffmemError(f"--n-boot must be ≥ 0, got {n_boot}")
    if gallery_k < 1:
        raise DiffmemError(f"--gallery-k must be ≥ 1, got {gallery_k}")
    outs = {"out": _check_out(out, (), "--out"), "gallery": _check_out(gallery, (".png",), "--gallery"),
            "html": _check_out(gallery_html, (".html", ".htm"), "--gallery-html")}
    T = open_rows(train, "train") if train is not None else None
    S = open_rows(samples, "samples")
    if T is None and S.run is None:
        raise DiffmemError("--train is required unless --samples is a diffmem run directory (RUN[@STEP])")
    T = T if T is not None else open_rows(str(S.run.path), "train")
    if space == "pixels":
        _check_pair(T, S, threshold)
    Td, Sd = _distance_rows(space, T, S, train_emb, samples_emb, feature_run)
    _check_pair(Td, Sd, threshold)
    check = None
    if T.d == S.d:
        check = compare_spaces(space_stats(T), space_stats(S))
        same_run = T.run is not None and S.run is not None and T.run.path.resolve() == S.run.path.resolve()
        msg = (f"value range {check['samples']['q_lo']:.3g}..."
               f"{check['samples']['q_hi']:.3g} (samples) vs {check['train']['q_lo']:.3g}..."
               f"{check['train']['q_hi']:.3g} (train), range ratio {check['range_ratio']:.3g}, mean shift "
               f"{check['mean_shift']:.3g} training spreads")
        if check["verdict"] == "refuse" and not (allow_space_mismatch or same_run):
            raise DiffmemError("the two sides look like different spaces: " + msg + "; put both in one space (uint8 or [-1, 1] images, uncentred: diffmem sample "
                               "--space data, diffmem export-train) or pass --allow-space-mismatch")
        if check["verdict"] != "ok" and not same_run:
            warn("the two sides may be in different spaces: " + msg)
    r, per = audit_rows(Td, Sd, threshold, n_boot, seed, progress=progress)
    r["train"], r["samples"], r["space"] = str(T.name), str(S.name), space
    r["space_check"] = check
    r["inputs"] = {"train": T.info, "samples": S.info}
    files = _render(r, per, T, S, outs, threshold, gallery_k)
    for path, data in files:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda p, data=data: p.write_bytes(data))
    return r


def _render(r: dict, per: dict, T, S, outs: dict, threshold: float, k: int) -> list[tuple[Path, bytes]]:
    """Every output file as bytes (nothing written yet)."""
    from .gallery import gallery_html, gallery_png, histogram_png, pick_gallery

    files = []
    if outs["out"] is not None:
        files.append((outs["out"], (json.dumps(r) + "\n").encode()))
    if outs["gallery"] is not None or outs["html"] is not None:
        pick = pick_gallery(per["ratio"], k)
        s_img, t1, t2 = S.images(pick), T.images(per["nearest"][pick]), T.images(per["second"][pick])
        flat = lambda a: a.reshape(len(a), -1)  # noqa: E731
        args = (pick, flat(s_img), flat(t1), flat(t2), per, threshold, S.sample_shape)
        if outs["gallery"] is not None:
            title = (f"f_mem = {r['f_mem']:.3f} ({r['n_flagged']}/{r['n_samples']}), Wilson 95% "
                     f"[{r['ci95_wilson'][0]:.3f}, {r['ci95_wilson'][1]:.3f}]; {r['space']} space")
            files.append((outs["gallery"], gallery_png(*args, title=title)))
        if outs["html"] is not None:
            files.append((outs["html"], gallery_html(*args, summary=r, hist_png=histogram_png(per["ratio"],
                                                                                             threshold))))
    return files


def _summary(r: dict) -> str:
    lo, hi = r["ci95"]
    wl, wh = r["ci95_wilson"]
    k = len(r["memorized"])
    lines = [
        f"f_mem = {r['f_mem']:.4f} ± {r['stderr']:.4f}  (95% CI [{lo:.4f}, {hi:.4f}], {r['n_boot']} bootstrap "
        f"resamples; Wilson [{wl:.4f}, {wh:.4f}])",
        f"{k} of {r['n_samples']} samples in {r['samples']} have d1/d2 < {r['threshold']:.4g} against the "
        f"{r['n_train']} training points in {r['train']} ({r.get('space', 'pixels')} space)",
        f"median d1/d2 = {r['ratio_quantiles']['p50']:.3f}",
    ]
    if k:
        show = ", ".join(f"{s}->{t}" for s, t in zip(r["memorized"][:10], r["nearest_train"][:10]))
        lines.append(f"memorised (sample->train): {show}{' ...' if k > 10 else ''}")
    return "\n".join(lines)


def cmd_audit(args) -> int:
    """Handler of ``diffmem audit``: all input is checked before anything is written."""
    r = run_audit(args.train, args.samples, threshold=args.threshold, n_boot=args.n_boot, seed=args.seed,
                  space=args.space, train_emb=args.train_emb, samples_emb=args.samples_emb,
                  feature_run=args.feature_run, allow_space_mismatch=args.allow_space_mismatch,
                  progress=not (args.json or args.no_progress), gallery=args.gallery,
                  gallery_html=args.gallery_html, gallery_k=args.gallery_k, out=args.out)
    print(json.dumps(r) if args.json else _summary(r))
    return 0


def add_audit_parser(sub) -> argparse.ArgumentParser:
    """Add the ``audit`` subcommand to an argparse subparsers object."""
    q = sub.add_parser("audit", help="memorisation audit of any generator's samples against its training set",
                       description="Flag samples whose nearest training point is much closer than the second "
                                   "nearest (d1/d2 < threshold, BUBM25) and report the memorised fraction "
                                   "with bootstrap and Wilson intervals.")
    q.add_argument("--train", help="training set: .npy/.npz (FILE.npz?key=KEY), image folder (FOLDER?size=S&gray=1), "
                   "run directory (its training subset) or a named data set; default with --samples RUN: the run's")
    q.add_argument("--samples", required=True, help="generated samples: .npy/.npz, image folder or RUN[@STEP] "
                   "(a run's saved samples; default step: the last)")
    q.add_argument("--threshold", type=float, default=1 / 3, help="ratio threshold d1/d2 (default 1/3)")
    q.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples (0: binomial error bars)")
    q.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    q.add_argument("--space", default="pixels", choices=["pixels", "embeddings", "features"],
                   help="distance space: pixels (default), embeddings (--train-emb/--samples-emb), features "
                        "(a run's quality feature net)")
    q.add_argument("--train-emb", help="embeddings of the training images (.npy/.npz, one row per image)")
    q.add_argument("--samples-emb", help="embeddings of the samples (.npy/.npz, one row per sample)")
    q.add_argument("--feature-run", help="run whose feature net --space features uses (default: the run given)")
    q.add_argument("--allow-space-mismatch", action="store_true",
                   help="audit even when the two sides' value ranges or means differ grossly")
    q.add_argument("--gallery", help="write a PNG of the most memorised samples, their two nearest training "
                   "images and a histogram of d1/d2")
    q.add_argument("--gallery-html", help="the same as a self-contained HTML page")
    q.add_argument("--gallery-k", type=int, default=16, help="samples shown in the gallery (default 16)")
    q.add_argument("--json", action="store_true", help="print one JSON object (and no progress bar)")
    q.add_argument("--no-progress", action="store_true", help="no progress bar")
    q.add_argument("--out", help="also write the JSON object to this file (atomically)")
    q.set_defaults(func=cmd_audit)
    return q


def main(argv: list[str] | None = None) -> int:
    """``python -m diffmem.audit ...``: the audit command on its own (same options and exit codes)."""
    p = argparse.ArgumentParser(prog="diffmem")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    add_audit_parser(sub)
    args = p.parse_args(["audit", *(sys.argv[1:] if argv is None else argv)])
    try:
        return int(args.func(args) or 0)
    except DiffmemError as e:
        print(f"diffmem: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
