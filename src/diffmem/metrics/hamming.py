"""Nearest neighbours of token sequences in Hamming distance (FSW25's copy and ratio tests).

The Hamming distance of two sequences of length n over ``range(v)`` is
``n − <onehot(a), onehot(b)>``, so the distances of a block of queries to a
block of references are one matmul of one-hot matrices ``[*, n·v]`` (blocked
over the references, as :mod:`diffmem.metrics.nn`; never a broadcast
``[M, N, n]`` tensor).  An exact copy is ``d1 = 0``.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import DiffmemError

__all__ = ["hamming_two_nearest", "copy_and_ratio_flags"]


def _onehot(x: torch.Tensor, vocab: int) -> torch.Tensor:
    # tokens outside range(vocab) (e.g. a left-over mask) match nothing: an all-zero row block
    ok = (x >= 0) & (x < vocab)
    oh = torch.nn.functional.one_hot(torch.where(ok, x, 0), vocab).to(torch.float32) * ok[..., None]
    return oh.reshape(x.shape[0], -1)


def hamming_two_nearest(queries, refs, vocab: int, block: int = 4096) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Hamming distances of each query ``[M, n]`` to its nearest and second-nearest of ``refs [N, n]`` (N ≥ 2).

    Returns ``(d1 [M], d2 [M], i1 [M])`` (int64 numpy): the two smallest
    distances and the index of the nearest reference (ties: the lowest index).
    """
    q = torch.as_tensor(np.asarray(queries) if not torch.is_tensor(queries) else queries).long().cpu()
    r = torch.as_tensor(np.asarray(refs) if not torch.is_tensor(refs) else refs).long().cpu()
    if q.ndim != 2 or r.ndim != 2 or q.shape[1] != r.shape[1]:
        raise DiffmemError(f"Hamming neighbours need [M, n] and [N, n] sequences, got {tuple(q.shape)} and "
                           f"{tuple(r.shape)}")
    if r.shape[0] < 2:
        raise DiffmemError("the Hamming ratio test needs at least 2 reference sequences")
    n = q.shape[1]
    qo = _onehot(q, vocab)
    best_d = torch.full((q.shape[0], 2), n + 1, dtype=torch.long)
    best_i = torch.zeros((q.shape[0], 2), dtype=torch.long)
    for b in range(0, r.shape[0], block):
        ro = _onehot(r[b:b + block], vocab)
        d = n - (qo @ ro.T).round().long()  # [M, b]
        k = min(2, d.shape[1])
        dv, di = torch.topk(d, k, dim=1, largest=False, sorted=True)
        cand_d = torch.cat([best_d, dv], 1)
        cand_i = torch.cat([best_i, di + b], 1)
        # stable: earlier (lower-index) candidates win ties
        order = torch.sort(cand_d * (cand_i.max() + 2) + cand_i, dim=1).indices[:, :2]
        best_d, best_i = cand_d.gather(1, order), cand_i.gather(1, order)
    return best_d[:, 0].numpy(), best_d[:, 1].numpy(), best_i[:, 0].numpy()


def copy_and_ratio_flags(samples, train, vocab: int, threshold: float = 1 / 3) -> dict:
    """Per-sample flags against ``train``: ``copy`` (identical to a training sequence, d1 = 0) and ``ratio``
    (the nearest-neighbour ratio test ``d1/d2 < threshold`` in Hamming distance; a copy passes it), with
    ``d1``, ``d2``, ``nearest``."""
    d1, d2, i1 = hamming_two_nearest(samples, train, vocab)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(d1 == 0, 0.0, d1 / np.maximum(d2, 1))
    return {"copy": d1 == 0, "ratio": ratio < float(threshold), "d1": d1, "d2": d2, "nearest": i1}
