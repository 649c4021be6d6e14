"""Two nearest neighbours by blocked matmul distances (DESIGN principle 9).

The memorisation test of BUBM25 needs, for every generated sample, the
distances ``d1 ≤ d2`` to its two nearest training points.  The squared
distance is expanded as ``‖q‖² + ‖r‖² − 2 q·r`` so that the work is one
``torch.addmm`` per (query block, reference block) pair -- a matrix multiply
that runs near the machine's peak -- followed by a ``topk(2)`` over the block
and a merge into a running top-2.  A broadcast ``(M, N, D)`` difference tensor
is never formed, and the working set is bounded by ``max_bytes`` whatever M
and N are.

Accuracy.  The expansion loses precision to cancellation when ``‖q‖²`` is much
larger than ``‖q − r‖²``.  Two cheap steps keep the result exact where it
matters:

* both sets are centred on the mean of the references before the matmul
  (distances do not change; the norms, and so the cancellation, shrink);
* the two selected candidates are re-measured directly as ``‖q − r‖``, so an
  exact duplicate gives ``d1 = 0`` exactly and every returned distance carries
  only the rounding of a plain difference.

The matmul stage only ranks; an ordering error can only swap two references
whose squared distances agree to within float32 rounding.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..errors import DiffmemError

__all__ = ["two_nearest", "choose_blocks", "DEFAULT_MAX_BYTES"]

DEFAULT_MAX_BYTES = 1 << 30  # 1 GiB of working set beyond the inputs themselves
# A distance block of this many elements keeps addmm near peak while the block
# (and its top-k pass) stays cache-friendly on a CPU; GPUs like bigger blocks.
_CPU_BLOCK_ELEMS = 1024 * 2048
_GPU_BLOCK_ELEMS = 8192 * 16384


def _rows(x, name: str):
    """``x`` as a 2-D ``[rows, features]`` array or tensor without copying (flattened per row)."""
    if torch.is_tensor(x):
        if x.dtype.is_complex or x.dtype == torch.bool:
            raise DiffmemError(f"{name} must be real numbers, got dtype {x.dtype}")
    elif not isinstance(x, np.ndarray) and getattr(x, "ndim", None) == 2 and hasattr(x, "__getitem__"):
        # a block source (diffmem.audit_sources.Rows): rows[a:b] and rows[int array] give float blocks
        if np.dtype(x.dtype).kind != "f":
            raise DiffmemError(f"{name} must be a float block source, got dtype {x.dtype}")
        return x
    else:
        x = np.asarray(x)
        if x.dtype.kind not in "fiu":
            raise DiffmemError(f"{name} must be a numeric array, got dtype {x.dtype}")
    if x.ndim == 0:
        raise DiffmemError(f"{name} must have shape (N, ...), got a scalar")
    if x.ndim == 1:
        x = x.reshape(-1, 1)
    elif x.ndim > 2:
        x = x.reshape(x.shape[0], -1)
    return x


def _block(x, start: int, stop: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Rows ``start:stop`` of ``x`` (numpy or tensor) as a tensor of ``dtype`` on ``device``."""
    b = x[start:stop]
    if not torch.is_tensor(b):
        b = np.asarray(b)
        if not b.flags.writeable or not b.flags.c_contiguous:  # memmaps, views
            b = np.array(b, order="C")
        b = torch.from_numpy(b)
    return b.to(device=device, dtype=dtype)


def _gather(x, idx: torch.Tensor, dtype, device) -> torch.Tensor:
    if torch.is_tensor(x):
        return x[idx.to(x.device)].to(device=device, dtype=dtype)
    return torch.from_numpy(np.asarray(x[idx.cpu().numpy()])).to(device=device, dtype=dtype)


def _centre(x, dtype, device, max_rows: int = 1024) -> torch.Tensor:
    """An approximate column mean of ``x``: the mean of at most ``max_rows`` evenly spaced rows.

    Any shift leaves the distances unchanged; it only has to bring the data
    near the origin to reduce cancellation, so a subsample is plenty.
    """
    n = x.shape[0]
    rows = np.unique(np.linspace(0, n - 1, min(n, max_rows)).round().astype(np.int64))
    return _gather(x, torch.from_numpy(rows), dtype, device).mean(0).to(device=device,
                                                                                             dtype=dtype)


def choose_blocks(m: int, n: int, d: int, itemsize: int = 4, max_bytes: int = DEFAULT_MAX_BYTES,
                  device: str | torch.device = "cpu") -> tuple[int, int]:
    """Query and reference block sizes ``(block_q, block_r)`` for a working-set budget.

    The working set of one step is the distance block ``block_q × block_r``
    (plus the top-k temporaries, counted twice over) and the converted
    reference and query blocks ``(block_q + 2 block_r) × d``.  Blocks are as
    large as the device likes (``_CPU_BLOCK_ELEMS`` / ``_GPU_BLOCK_ELEMS``
    distance elements) but never exceed ``max_bytes``.
    """
    dev = torch.device(device)
    target = _GPU_BLOCK_ELEMS if dev.type == "cuda" else _CPU_BLOCK_ELEMS
    bq = max(1, min(m, 8192 if dev.type == "cuda" else 1024))
    br = max(2, min(n, target // bq))

    def cost(bq, br):
        return itemsize * (3 * bq * br + (bq + 2 * br) * d)

    while cost(bq, br) > max_bytes and (bq > 1 or br > 2):
        if br >= bq and br > 2:
            br = max(2, br // 2)
        else:
            bq = max(1, bq // 2)
    if cost(bq, br) > max_bytes:
        raise DiffmemError(f"max_bytes={max_bytes} is too small for {d}-dimensional points "
                           f"(need at least {cost(bq, br)} bytes)")
    return bq, br


@torch.no_grad()
def two_nearest(queries, refs, *, block_q: int | None = None, block_r: int | None = None,
                max_bytes: int = DEFAULT_MAX_BYTES, dtype: torch.dtype = torch.float32,
                device: str | torch.device | None = None, centre: bool = True, refine: bool = True,
                with_second: bool = False):
    """Euclidean distances from each query to its nearest and second-nearest reference.

    Args:
        queries: ``[M, ...]`` numpy array or tensor (flattened per row).
        refs: ``[N, ...]`` with the same number of features per row; ``N ≥ 2``.
            Either may live on the CPU or a CUDA device, or be a ``np.memmap``:
            only blocks are ever converted to ``dtype``.
        block_q, block_r: block sizes; by default chosen from ``max_bytes``.
        max_bytes: working-set budget in bytes, on top of the inputs.
        dtype: ``torch.float32`` (default) or ``torch.float64`` arithmetic.
        device: where to compute (default: the device of ``queries`` if it is a
            tensor, else of ``refs``, else the CPU).
        centre: subtract the mean of ``refs`` before the matmul (less cancellation).
        refine: re-measure the two selected distances as ``‖q − r‖`` (exact zeros
            for duplicates); otherwise return the matmul distances, clamped at 0.

    Inputs are assumed finite (:func:`~diffmem.metrics.memorization.validate_pair`
    checks them).

        with_second: also return ``idx2 [M]``, the row of the second-nearest reference.
            ``refs`` may also be a block source (``refs[a:b]``, ``refs[int array]``,
            ``shape``, ``ndim == 2``, a float ``dtype``), e.g. an image folder read in blocks.

    Returns:
        ``(d1 [M], d2 [M], idx1 [M])`` with ``d1 ≤ d2`` and ``idx1`` the row of
        the nearest reference (``+ (idx2 [M],)`` with ``with_second``).  Tensors (on ``device``) when ``queries`` is a
        tensor, numpy arrays otherwise.
    """
    as_numpy = not torch.is_tensor(queries)
    Q, R = _rows(queries, "queries"), _rows(refs, "refs")
    M, D = Q.shape
    N = R.shape[0]
    if N < 2:
        raise DiffmemError(f"need at least 2 reference points for the two nearest neighbours, got {N}")
    if R.shape[1] != D:
        raise DiffmemError(f"queries have {D} features per row but refs have {R.shape[1]}")
    if dtype not in (torch.float32, torch.float64):
        raise DiffmemError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
    if device is None:
        device = Q.device if torch.is_tensor(Q) else R.device if torch.is_tensor(R) else "cpu"
    device = torch.device(device)
    itemsize = torch.empty((), dtype=dtype).element_size()
    # The centred queries are reused for every reference block: keep them whole
    # when they fit in a quarter of the budget (the blocks get the rest), else
    # re-convert them per block.
    keep_q = M * D * itemsize <= max_bytes // 4
    bq0, br0 = choose_blocks(M, N, D, itemsize, max_bytes - (M * D * itemsize if keep_q else 0), device)
    bq = max(1, int(block_q or bq0))
    br = max(2, int(block_r or br0))

    best_v = torch.full((M, 2), math.inf, dtype=dtype, device=device)
    best_i = torch.zeros((M, 2), dtype=torch.long, device=device)
    if M == 0:
        return _out(best_v[:, 0], best_v[:, 1], best_i[:, 0], as_numpy, best_i[:, 1] if with_second else None)

    mean = _centre(R, dtype, device) if centre else None
    Qc = None
    if keep_q:
        Qc = _block(Q, 0, M, dtype, device)
        if centre:
            Qc = Qc - mean

    for rs in range(0, N, br):
        rb = _block(R, rs, rs + br, dtype, device)
        if centre:
            rb = rb - mean
        rn = rb.square().sum(1).unsqueeze(0)  # [1, br]
        k = min(2, rb.shape[0])
        for qs in range(0, M, bq):
            if keep_q:
                qb = Qc[qs : qs + bq]
            else:
                qb = _block(Q, qs, qs + bq, dtype, device)
                if centre:
                    qb = qb - mean
            # ‖r‖² − 2 q·r: the squared distance up to the per-query constant ‖q‖²,
            # which does not change the ranking.
            s = torch.addmm(rn, qb, rb.T, beta=1.0, alpha=-2.0)  # [bq, br]
            v, i = s.topk(k, dim=1, largest=False, sorted=True)
            bv, bi = best_v[qs : qs + bq], best_i[qs : qs + bq]
            cv = torch.cat([bv, v], 1)
            ci = torch.cat([bi, i + rs], 1)
            mv, mi = cv.topk(2, dim=1, largest=False, sorted=True)
            best_v[qs : qs + bq] = mv
            best_i[qs : qs + bq] = ci.gather(1, mi)

    if refine:
        d12 = torch.empty((M, 2), dtype=dtype, device=device)
        step = max(1, (max_bytes // 4) // max(1, 3 * D * itemsize))
        for qs in range(0, M, step):
            qb = _block(Q, qs, qs + step, dtype, device)  # uncentred: duplicates give exact zeros
            idx = best_i[qs : qs + step]
            rb = _gather(R, idx.reshape(-1), dtype, device).reshape(idx.shape[0], 2, D)
            d12[qs : qs + step] = (qb.unsqueeze(1) - rb).square().sum(2).sqrt()
        swap = d12[:, 1] < d12[:, 0]
        d12 = torch.where(swap.unsqueeze(1), d12.flip(1), d12)
        best_i = torch.where(swap.unsqueeze(1), best_i.flip(1), best_i)
    else:
        qn = torch.empty(M, dtype=dtype, device=device)
        for qs in range(0, M, bq):
            qb = Qc[qs : qs + bq] if keep_q else _block(Q, qs, qs + bq, dtype, device)
            if centre and not keep_q:
                qb = qb - mean
            qn[qs : qs + bq] = qb.square().sum(1)
        d12 = (best_v + qn.unsqueeze(1)).clamp_min(0).sqrt()
    return _out(d12[:, 0], d12[:, 1], best_i[:, 0], as_numpy, best_i[:, 1] if with_second else None)


def _out(d1, d2, i1, as_numpy, i2=None):
    out = (d1, d2, i1) + (() if i2 is None else (i2,))
    return tuple(t.cpu().numpy() for t in out) if as_numpy else out
