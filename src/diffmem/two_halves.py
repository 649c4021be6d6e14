"""The two-halves test (FSW25 / Kadkhodaie et al., issue #11 item 7): two models trained on disjoint halves.

Two ordinary runs of one config that differ only in ``subset_offset``
(``0`` and ``n``: the first and the next ``n`` points of one seeded shuffle of
the pool, disjoint by construction) draw their checkpoint samples with the same
per-sample seeds (``eval.sample_seed``, ``eval.n_samples``).  While both
models generalise they learn the same distribution, so the same seed gives the
same sample; once they memorise, each produces copies of its own half, and
the samples part.  :func:`two_halves` pairs the checkpoints of the two runs by
step and records, per step, the agreement between sample j of A and sample j
of B:

* **token sequences** (integer samples): ``agreement`` = the fraction of
  seeds whose two sequences are identical; ``distance`` = the mean Hamming
  distance (a fraction of the length).
* **continuous data**: ``agreement`` = the fraction of seeds whose samples are
  nearest-neighbour matched: B's sample j is the nearest of B's samples to A's
  sample j, with a ratio ``d1/d2 < threshold`` to the second nearest (the
  ratio test of the memorisation metric, default 1/3); ``distance`` = the mean
  ``‖a_j − b_j‖ / ‖a_j‖``.

``agreement(a, b)`` is the measurement on two arrays; :func:`two_halves` reads
two run directories (one-line :class:`DiffmemError` when they are not a pair:
different data, n, seeds, sampler or overlapping training sets).
:func:`summarise_two_halves` gives the agreement before τ_mem (the last
checkpoint at or below it) and at the last checkpoint.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from .errors import DiffmemError

__all__ = ["agreement", "two_halves", "summarise_two_halves", "plot_two_halves", "DEFAULT_THRESHOLD"]

DEFAULT_THRESHOLD = 1.0 / 3.0


def agreement(a, b, threshold: float = DEFAULT_THRESHOLD) -> dict[str, Any]:
    """Agreement between paired samples ``a[j]``, ``b[j]`` (same seed j): see the module docstring."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.ndim < 2 or len(a) == 0:
        raise DiffmemError(f"two-halves samples must have one shape [S, ...] with S ≥ 1, got {a.shape} and {b.shape}")
    if not (math.isfinite(threshold) and 0 < threshold <= 1):
        raise DiffmemError(f"threshold must be in (0, 1], got {threshold}")
    S = len(a)
    if np.issubdtype(a.dtype, np.integer) and np.issubdtype(b.dtype, np.integer):
        a2, b2 = a.reshape(S, -1), b.reshape(S, -1)
        same = np.all(a2 == b2, axis=1)
        return {"agreement": float(same.mean()), "n_agree": int(same.sum()), "n": S, "kind": "exact",
                "distance": float((a2 != b2).mean())}
    a2, b2 = a.reshape(S, -1).astype(np.float64), b.reshape(S, -1).astype(np.float64)
    d2 = (a2 ** 2).sum(1)[:, None] + (b2 ** 2).sum(1)[None, :] - 2 * a2 @ b2.T
    d = np.sqrt(np.maximum(d2, 0.0))
    own = d[np.arange(S), np.arange(S)]
    if S > 1:
        others = d.copy()
        others[np.arange(S), np.arange(S)] = np.inf
        second = others.min(1)
        matched = (own <= second) & (own < threshold * second)
    else:
        matched = own == 0
    norm = np.sqrt((a2 ** 2).sum(1))
    rel = own / np.where(norm > 0, norm, 1.0)
    return {"agreement": float(matched.mean()), "n_agree": int(matched.sum()), "n": S, "kind": "nearest_neighbour",
            "threshold": float(threshold), "distance": float(rel.mean())}


_SAME = ("data", "n", "subset_seed", "seed", "steps")
_SAME_EVAL = ("sample_seed", "n_samples", "sampler", "sampler_steps")


def _check_pair(ca: dict, cb: dict, pa: Path, pb: Path) -> None:
    for k in _SAME:
        if ca.get(k) != cb.get(k):
            raise DiffmemError(f"two halves must share {k}: {pa} has {ca.get(k)!r}, {pb} has {cb.get(k)!r}")
    ea, eb = ca.get("eval", {}), cb.get("eval", {})
    for k in _SAME_EVAL:
        if ea.get(k) != eb.get(k):
            raise DiffmemError(f"two halves must sample with the same eval.{k}: {ea.get(k)!r} vs {eb.get(k)!r}")
    oa, ob, n = int(ca.get("subset_offset", 0)), int(cb.get("subset_offset", 0)), int(ca["n"])
    if abs(oa - ob) < n:
        raise DiffmemError(f"the training sets of {pa} and {pb} overlap (n = {n}, subset_offset {oa} and {ob}); "
                           f"train the second half with subset_offset={oa + n}")


def two_halves(run_a: str | Path, run_b: str | Path, threshold: float = DEFAULT_THRESHOLD) -> dict[str, Any]:
    """Agreement of the two runs' samples at every step where both saved samples (paired by step)."""
    from .rundir import Run, metric_series

    ra, rb = Run(run_a), Run(run_b)
    for r in (ra, rb):
        if not r.exists():
            raise DiffmemError(f"not a run directory: {r.path}")
    ca, cb = ra.read_config(), rb.read_config()
    _check_pair(ca, cb, ra.path, rb.path)
    steps = sorted(set(ra.sample_steps()) & set(rb.sample_steps()))
    if not steps:
        raise DiffmemError(f"{ra.path} and {rb.path} have no checkpoint with saved samples in common")
    rows = []
    for s in steps:
        rec = agreement(ra.load_samples(s), rb.load_samples(s), threshold)
        rows.append({"step": int(s), **rec})
    fm = {}
    for key, r in (("f_mem_a", ra), ("f_mem_b", rb)):
        try:
            st, val = metric_series(r.path, "f_mem")[:2]
            fm[key] = dict(zip(np.asarray(st, int).tolist(), np.asarray(val, float).tolist()))
        except (DiffmemError, KeyError, ValueError):
            fm[key] = {}
    for row in rows:
        row["f_mem_a"] = fm["f_mem_a"].get(row["step"])
        row["f_mem_b"] = fm["f_mem_b"].get(row["step"])
    return {"run_a": str(ra.path), "run_b": str(rb.path), "n": int(ca["n"]),
            "subset_offset": [int(ca.get("subset_offset", 0)), int(cb.get("subset_offset", 0))],
            "kind": rows[0]["kind"], "steps": [r["step"] for r in rows], "records": rows}


def summarise_two_halves(result: dict, tau_mem: float | None) -> dict[str, Any]:
    """Agreement at the last checkpoint at or before ``tau_mem`` (and its maximum there), and at the end."""
    rows = result["records"]
    out: dict[str, Any] = {"tau_mem": tau_mem, "final_step": rows[-1]["step"], "final": rows[-1]["agreement"],
                           "max": max(r["agreement"] for r in rows)}
    if tau_mem is not None and math.isfinite(tau_mem):
        before = [r for r in rows if r["step"] <= tau_mem]
        if before:
            out.update(before_step=before[-1]["step"], before=before[-1]["agreement"],
                       max_before=max(r["agreement"] for r in before))
    return out


def plot_two_halves(result: dict, path: str | Path, tau_mem: float | None = None) -> Path:
    """Agreement (and each half's f_mem) against training step."""
    from matplotlib.figure import Figure

    from .fileio import save_figure

    rows = result["records"]
    st = np.array([max(r["step"], 1) for r in rows], float)
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    ax.plot(st, [r["agreement"] for r in rows], "o-", color="k", label="agreement (A vs B, same seeds)")
    for key, c, lab in (("f_mem_a", "C0", "f_mem A"), ("f_mem_b", "C3", "f_mem B")):
        v = [np.nan if r.get(key) is None else r[key] for r in rows]
        ax.plot(st, v, "--", color=c, label=lab)
    if tau_mem is not None and math.isfinite(tau_mem):
        ax.axvline(tau_mem, color="grey", ls=":", label="τ_mem (A)")
    ax.set_xscale("log")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("training step")
    ax.set_ylabel("fraction")
    ax.set_title(f"two halves: n = {result['n']} each, disjoint ({result['kind']} match)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, Path(path), dpi=110)
