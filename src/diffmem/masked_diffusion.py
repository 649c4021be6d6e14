"""Masked (absorbing-state) diffusion on token sequences (FSW25, SPEC §3; MD4 and MDLM).

Tokens are ints in ``range(v)``; the mask token is ``mask_id`` (by convention
``v``).  Linear schedule ``α_t = 1 − t``, t ∈ (0, 1]: the forward process
replaces each token independently by the mask with probability ``1 − α_t = t``.

A *discrete denoiser* is any callable ``model(z) -> logits`` with ``z`` a
partially masked ``[B, n]`` int64 tensor and ``logits`` ``[B, n, v]`` over the
``v`` symbols (no mask class: MDLM's "SUBS" sets the mask logit to −∞; only the
masked positions' logits are ever used).  Row ``j`` of the output must depend
only on row ``j`` of the input (no batch statistics), so per-sample seeds give
the same sample whatever the batch.  The time is not an input: with absorbing
masks the number of masks carries it (MDLM drops time conditioning).

* Loss (MD4 eq. for α = 1 − t): ``(1/t) Σ_{i masked} −log p_θ(x_i | z_t) / n`` per
  sequence (weight ``−α'_t/(1 − α_t) = 1/t``; normalised by the sequence length
  n, MDLM's "divide by all tokens"), t antithetic ``t = 1 − ((u + k/B) mod 1)``.
  ``n ·`` its expectation is an upper bound on ``−log p_θ(x)``, tight (equal) for
  exact conditionals: integrating ``1/t`` against the Binomial(n, t) number of
  masks k gives ``1/k``, the chain rule averaged over random orders.
* Ancestral sampler on a decreasing time grid (``1 = t_0 > … > t_K ≥ 0``): from t
  to s each masked token is revealed with probability ``(α_s − α_t)/(1 − α_t) =
  (t − s)/t``, its value drawn from ``softmax(model(z))``; masks left at the end
  (only when ``t_K > 0``) are decoded by the mode.  Sample j draws all its
  randomness (``2 × n`` uniforms: a reveal time and a value uniform per token)
  from its own generator seeded with ``seeds[j]`` (as
  :class:`diffmem.samplers.PerSampleNoise`).  Tokens revealed in the same step
  are drawn independently given z_t, so a coarse grid does not sample the
  exact joint even with exact conditionals; as the grid refines (at most one
  reveal per step) it becomes random-order autoregressive sampling, which does.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from .errors import DiffmemError
from .samplers import PerSampleNoise

__all__ = ["alpha", "loss_weight", "mask_tokens", "antithetic_times", "masked_nll", "masked_diffusion_loss",
           "reveal_probability", "time_grid", "PerSampleUniform", "masked_ancestral", "generate_tokens",
           "ExactConditional"]

DiscreteDenoiser = Callable[[Tensor], Tensor]  # z [B, n] int64 -> logits [B, n, v]


def alpha(t):
    """Probability that a token is still unmasked at time t: ``α_t = 1 − t``."""
    return 1.0 - t


def loss_weight(t):
    """``−α'_t / (1 − α_t) = 1/t`` for the linear schedule."""
    return 1.0 / t


def mask_tokens(x: Tensor, t: Tensor, mask_id: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Forward process: ``x [B, n]``, ``t [B]`` → ``(z [B, n], masked [B, n] bool)``, each token masked w.p. t."""
    u = torch.rand(x.shape, generator=generator, dtype=torch.float64).to(x.device)
    masked = u < torch.as_tensor(t, dtype=torch.float64, device=x.device).reshape(-1, 1)
    return torch.where(masked, torch.full_like(x, mask_id), x), masked


def antithetic_times(batch: int, generator: torch.Generator | None = None) -> Tensor:
    """``t_k = 1 − ((u + k/B) mod 1)``, k < B: one uniform u, B stratified times in (0, 1] (never 0)."""
    u = torch.rand((), generator=generator, dtype=torch.float64)
    return 1.0 - torch.remainder(u + torch.arange(batch, dtype=torch.float64) / batch, 1.0)


def masked_nll(logits: Tensor, x: Tensor, masked: Tensor, t: Tensor) -> Tensor:
    """Per-sequence loss ``(1/t) Σ_{masked} −log softmax(logits)[x] / n`` → ``[B]`` (``logits [B, n, v]``)."""
    logp = torch.log_softmax(logits if logits.dtype == torch.float64 else logits.float(), -1)
    nll = -logp.gather(-1, x.unsqueeze(-1)).squeeze(-1)
    nll = torch.where(masked, nll, torch.zeros((), dtype=nll.dtype, device=nll.device))  # no 0·inf
    w = loss_weight(torch.as_tensor(t, device=nll.device).to(nll.dtype).reshape(-1))
    return nll.sum(1) * w / x.shape[1]


def masked_diffusion_loss(model: DiscreteDenoiser, x: Tensor, mask_id: int, t: Tensor | None = None,
                          generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Continuous-time masked-diffusion loss of a batch: ``(loss [B], t [B])`` (DESIGN: losses return their time).

    ``t`` defaults to antithetic times; ``n · loss`` averages to an upper bound
    on ``−log p_θ(x)`` (in nats), equal for exact conditionals.
    """
    if t is None:
        t = antithetic_times(x.shape[0], generator)
    t = torch.as_tensor(t, dtype=torch.float64).reshape(-1)
    if t.numel() != x.shape[0] or not bool(((t > 0) & (t <= 1)).all()):
        raise DiffmemError("masked-diffusion times must be one per sequence, in (0, 1]")
    z, masked = mask_tokens(x, t, mask_id, generator)
    return masked_nll(model(z), x, masked, t.to(x.device)), t


def reveal_probability(t, s):
    """Probability that a token masked at time t is revealed by time s < t: ``(α_s − α_t)/(1 − α_t) = (t − s)/t``."""
    return (alpha(s) - alpha(t)) / (1.0 - alpha(t))


def time_grid(steps: int, t_end: float = 0.0) -> np.ndarray:
    """``linspace(1, t_end, steps + 1)`` (MDLM uses t_end = 1e-5; with 0 the last step reveals every mask)."""
    if int(steps) < 1 or not 0.0 <= float(t_end) < 1.0:
        raise DiffmemError(f"a masked time grid needs steps ≥ 1 and t_end in [0, 1), got {steps}, {t_end}")
    return np.linspace(1.0, float(t_end), int(steps) + 1)


def _check_grid(grid) -> np.ndarray:
    g = np.asarray(grid, dtype=np.float64).ravel()
    if g.size < 2 or g[0] > 1 or g[-1] < 0 or np.any(np.diff(g) >= 0) or not np.all(np.isfinite(g)):
        raise DiffmemError("a masked time grid must hold ≥ 2 strictly decreasing times in [0, 1]")
    return g


class PerSampleUniform(PerSampleNoise):
    """One CPU generator per sample (as :class:`~diffmem.samplers.PerSampleNoise`), also drawing uniforms."""

    def rand(self, shape: Sequence[int], dtype=torch.float64, device=None) -> Tensor:
        return torch.stack([torch.rand(tuple(shape), generator=g, dtype=dtype) for g in self.gens]).to(device)


def _draw(probs: Tensor, u: Tensor) -> Tensor:
    """Inverse-CDF categorical draw: ``probs [B, n, v]``, ``u [B, n]`` in [0, 1) → values ``[B, n]``."""
    cdf = probs.cumsum(-1)
    idx = torch.searchsorted(cdf, (u * cdf[..., -1]).unsqueeze(-1).contiguous(), right=True).squeeze(-1)
    return idx.clamp_(max=probs.shape[-1] - 1)


@torch.no_grad()
def masked_ancestral(model: DiscreteDenoiser, z: Tensor, grid, noise: PerSampleUniform, mask_id: int,
                     callback: Callable | None = None) -> Tensor:
    """Ancestral sampling of ``z [B, n]`` (masked or partly masked at time ``grid[0]``) along ``grid`` (decreasing).

    From t to s each masked token is revealed with probability ``(t − s)/t``.
    Drawn as: each masked token gets one reveal time ``τ = grid[0]·(1 − u)``
    (u uniform) and is revealed at the step whose ``(s, t]`` holds τ; given that
    it is still masked at t, ``P(τ > s) = (t − s)/t``, the same law as a fresh
    coin per step, with ``2n`` uniforms per sample in all (τ and the value's
    inverse-CDF uniform), drawn once from the sample's own generator.  The
    model is called only at steps, and on rows, that reveal something.
    ``grid=None`` is the continuous-time limit (:func:`_reveal_in_order`): the
    same uniforms, one token per model call in the order of its reveal time,
    so a grid fine enough to hold one reveal per step gives the same samples.
    ``callback(k, t, s, z)`` sees the state after step k (t → s).
    """
    if len(noise.gens) != z.shape[0]:
        raise DiffmemError(f"{len(noise.gens)} seeds for {z.shape[0]} sequences")
    n = z.shape[1]
    u = noise.rand((2, n), torch.float64, z.device)  # [B, 2, n]: reveal time, value uniform
    if grid is None:
        return _reveal_in_order(model, z, u, mask_id, callback)
    g = _check_grid(grid)
    K = len(g) - 1
    tau = g[0] * (1.0 - u[:, 0])  # in (0, grid[0]]
    # the step k with tau in (g[k+1], g[k]]; K (never) for tokens not masked and for tau <= g[K] > 0
    step = K - torch.searchsorted(torch.from_numpy(g[::-1].copy()).to(tau), tau.contiguous(), right=False)
    step = torch.where(z == mask_id, step, torch.full_like(step, K))
    z = z.clone()
    for k in (range(K) if callback is not None else torch.unique(step[step < K]).tolist()):
        reveal = step == k
        rows = reveal.any(1).nonzero().squeeze(1)
        if len(rows):
            probs = torch.softmax(model(z[rows]).to(torch.float64), -1)
            z[rows] = torch.where(reveal[rows], _draw(probs, u[rows, 1]), z[rows])
        if callback is not None:
            callback(k, float(g[k]), float(g[k + 1]), z)
    left = z == mask_id
    if bool(left.any()):  # only when the grid stops above 0: decode the rest by the mode
        z = torch.where(left, model(z).argmax(-1), z)
    return z


def _reveal_in_order(model: DiscreteDenoiser, z: Tensor, u: Tensor, mask_id: int, callback=None) -> Tensor:
    """The infinitely fine grid: reveal masked tokens one at a time, latest reveal time first (random order AR)."""
    z = z.clone()
    tau = torch.where(z == mask_id, 1.0 - u[:, 0], torch.full_like(u[:, 0], -1.0))  # as on a grid from t = 1
    order = torch.argsort(tau, dim=1, descending=True)
    for r in range(z.shape[1]):
        pos = order[:, r]
        rows = (z.gather(1, pos[:, None]).squeeze(1) == mask_id).nonzero().squeeze(1)
        if len(rows) == 0:
            break
        probs = torch.softmax(model(z[rows]).to(torch.float64), -1)  # [b, n, v]
        p_pos = probs[torch.arange(len(rows)), pos[rows]]  # [b, v]
        z[rows, pos[rows]] = _draw(p_pos[:, None], u[rows, 1, pos[rows]][:, None])[:, 0]
        if callback is not None:
            callback(r, None, None, z)
    return z


def generate_tokens(model: DiscreteDenoiser, seeds: Sequence[int], seq_len: int, mask_id: int, steps: int | None = None,
                    grid=None, callback: Callable | None = None, device=None) -> Tensor:
    """Sequences ``[len(seeds), seq_len]`` from all-mask starts; sample j depends only on ``seeds[j]``.

    ``steps`` (default ``seq_len``) builds ``time_grid(steps)``; or pass ``grid``;
    ``steps=0`` is the continuous-time limit (one token per model call).
    """
    if grid is None and steps != 0:
        grid = time_grid(seq_len if steps is None else steps)
    z = torch.full((len(seeds), int(seq_len)), int(mask_id), dtype=torch.long, device=device)
    return masked_ancestral(model, z, grid, PerSampleUniform(seeds), mask_id, callback)


class ExactConditional:
    """Exact conditionals of a distribution on an enumerated support (a discrete denoiser for tests).

    ``support [K, n]`` int sequences over ``range(v)``, ``probs [K]`` (default
    uniform).  ``model(z)`` returns ``log p(x_i = a | unmasked tokens of z)``
    as logits ``[B, n, v]`` (float64; −inf for impossible values; an unmasked
    position is one-hot on its token).  A ``z`` compatible with no support row
    gets uniform logits.
    """

    def __init__(self, support, probs=None, v: int | None = None, mask_id: int | None = None, chunk: int = 1 << 22):
        S = torch.as_tensor(np.asarray(support), dtype=torch.long)
        if S.ndim != 2 or len(S) == 0:
            raise DiffmemError("an exact conditional model needs a non-empty [K, n] support")
        self.v = int(S.max()) + 1 if v is None else int(v)
        self.mask_id = self.v if mask_id is None else int(mask_id)
        p = torch.ones(len(S), dtype=torch.float64) if probs is None else torch.as_tensor(probs, dtype=torch.float64)
        self.support, self.probs = S, p / p.sum()
        self._onehot = torch.nn.functional.one_hot(S, self.v).to(torch.float64)  # [K, n, v]
        self._chunk = max(1, int(chunk) // (len(S) * S.shape[1]))

    def __call__(self, z: Tensor) -> Tensor:
        out = [self._logits(z[i:i + self._chunk].cpu()) for i in range(0, len(z), self._chunk)]
        return torch.cat(out).to(z.device)

    def _logits(self, z: Tensor) -> Tensor:
        compat = ((z[:, None, :] == self.mask_id) | (z[:, None, :] == self.support[None])).all(-1)  # [b, K]
        w = compat.to(torch.float64) * self.probs
        tot = w.sum(1)
        counts = torch.einsum("bk,kia->bia", w, self._onehot)
        counts = torch.where(tot[:, None, None] > 0, counts / tot.clamp_min(1e-300)[:, None, None], 1.0 / self.v)
        return counts.log()

    def log_prob(self, x: Tensor) -> Tensor:
        """``log p(x)`` of complete sequences ``[B, n]`` (−inf outside the support)."""
        eq = (torch.as_tensor(x, dtype=torch.long)[:, None, :] == self.support[None]).all(-1)  # [B, K]
        return (eq.to(torch.float64) * self.probs).sum(1).log()
