"""What is measured at each checkpoint of a token-sequence run (FSW25, SPEC §3): the sibling of
:class:`diffmem.evaluate.Evaluator`, chosen by :func:`diffmem.evaluate.evaluator_class` for token data.

Records (long format ``{"step", "metric", "value", "error", ...}``), on
``eval.n_samples`` sequences generated with the same per-sample seeds at every
checkpoint (the masked ancestral sampler, ``eval.sampler_steps`` reveal steps):

* ``f_mem`` -- the **exact-copy fraction**: samples identical to a training
  sequence (FSW25's memorisation measure for sequences), with the bootstrap
  stderr as ``error``, its 95 % interval ``ci_low``/``ci_high``, the Wilson
  interval ``wilson_low``/``wilson_high``, ``n_flagged`` of ``n``, ``test:
  "exact_copy"`` and ``chance = n_train / num_data`` (the copy fraction of a
  model that samples the grammar uniformly).  Recorded under the name
  ``f_mem`` so that :func:`diffmem.analysis.analyse`, τ_mem, the power-law fit
  and the report read it unchanged.
* ``copy/test`` -- the fraction identical to a held-out sequence (a
  generalising model produces unseen valid data; chance ``n_test / num_data``).
* ``hamming/ratio_test`` -- the nearest-neighbour ratio test in Hamming
  distance, ``d1/d2 < eval.threshold`` against the training set (an exact copy
  passes it), same interval keys; ``hamming/d1`` and ``hamming/d1_test``: the
  mean nearest Hamming distance (a fraction of the sequence length) to the
  training and to the held-out set.
* ``validity/valid`` (whole-sequence parse reaches a root class) and
  ``validity/level`` per parse level (key ``level``, 0 = bottom; the fraction
  of reached s-tuples that are right-hand sides, :func:`diffmem.grammar.parse`;
  ``chance``: the rule density, what uniform tokens give) -- when the data set
  is a grammar (``meta["rhm"]``).
* ``diversity/distinct`` -- distinct sequences among the samples, as a fraction
  (``count``: how many).
* ``loss/train``, ``loss/test`` at each mask fraction ``t`` of ``eval.loss_t``
  (key ``t``): the masked-diffusion loss ``(1/t) Σ_masked −log p / n`` on fixed
  sequences with ``eval.loss_draws`` fixed masks each, reused at every
  checkpoint; ``nll/train``, ``nll/test``: ``n ×`` the loss over fixed
  antithetic times and masks, the bound on ``−log p_θ(x)`` in nats per sequence
  (a perfect generaliser: ``log num_data``; a perfect memoriser on its training
  set: ``log n``).

Image-only evaluation settings (quality, gap, trajectories, KL) do not apply
and are ignored (a token model refuses them when given, :mod:`diffmem.models`).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .errors import DiffmemError
from .masked_diffusion import antithetic_times, generate_tokens, masked_nll
from .metrics.hamming import copy_and_ratio_flags, hamming_two_nearest
from .metrics.memorization import bootstrap_fraction

__all__ = ["SequenceEvaluator", "sample_tokens"]


@torch.no_grad()
def sample_tokens(model, seeds, seq_len: int, vocab: int, steps: int, batch_size: int = 1024, device=None):
    """``generate_tokens`` in batches of ``batch_size`` (per-sample seeds: batching changes nothing) → ``[S, n]`` CPU."""
    out = [generate_tokens(model, seeds[b:b + batch_size], seq_len, vocab, steps=steps, device=device).cpu()
           for b in range(0, len(seeds), batch_size)]
    return torch.cat(out) if out else torch.empty((0, seq_len), dtype=torch.long)


class SequenceEvaluator:
    """The measurements of one token run at a checkpoint (module docstring); the same interface as
    :class:`diffmem.evaluate.Evaluator` (``check``, then construct, then call on the model)."""

    def __init__(self, cfg, ds, train_set: torch.Tensor, run, device, save_samples: bool | None = None):
        self.cfg, self.ds, self.device, self.run = cfg, ds, device, run
        e = cfg.eval
        self.save_samples = e.save_samples if save_samples is None else save_samples
        if self.save_samples and run is None:
            raise ValueError("saving samples needs a run directory")
        self.train_set = train_set.cpu().long()
        self.vocab, self.seq_len = int(ds.meta["vocab"]), int(ds.shape[0])
        self.seeds = list(range(e.sample_seed, e.sample_seed + e.n_samples))
        self.grammar = None
        if "rhm" in ds.meta:
            from .grammar import RHM

            self.grammar = RHM(**ds.meta["rhm"])
        self.num_data = ds.meta.get("num_data")
        # fixed probes: per set, per draw k, masks at every t of loss_t and at antithetic times (the NLL bound)
        g = torch.Generator().manual_seed(e.sample_seed + 7)
        self.probe = {}
        for name, x in (("train", self.train_set[: e.n_loss]), ("test", ds.test[: e.n_loss].long())):
            u = torch.rand((e.loss_draws, *x.shape), generator=g, dtype=torch.float64)
            times = torch.stack([antithetic_times(len(x), g) for _ in range(e.loss_draws)])  # [K, N]
            self.probe[name] = (x.to(device), u.to(device), times.to(device))

    @staticmethod
    def check(cfg, ds) -> None:
        """Raise :class:`DiffmemError` for settings that cannot be evaluated on ``ds`` (writes nothing)."""
        if len(ds.test) < 1:
            raise DiffmemError(f"data {ds.name!r} has no held-out sequences for the test-loss probe")
        if "vocab" not in ds.meta:
            raise DiffmemError(f"token data {ds.name!r} does not say its vocabulary size (meta['vocab'])")

    def _loss(self, model, name: str, t: float | None) -> float:
        """Mean loss over the fixed draws: at mask fraction ``t``, or (None) at the fixed antithetic times."""
        x, u, times = self.probe[name]
        tot, cnt, bs = 0.0, 0, self.cfg.eval.batch_size
        for k in range(u.shape[0]):
            for b in range(0, len(x), bs):
                xb, ub = x[b:b + bs], u[k, b:b + bs]
                tb = torch.full((len(xb),), float(t), dtype=torch.float64, device=xb.device) if t is not None \
                    else times[k, b:b + bs]
                masked = ub < tb[:, None]
                z = torch.where(masked, torch.full_like(xb, self.vocab), xb)
                tot += float(masked_nll(model(z), xb, masked, tb).sum())
                cnt += len(xb)
        return tot / cnt

    @torch.no_grad()
    def __call__(self, model, step: int) -> list[dict]:
        e = self.cfg.eval
        recs: list[dict] = []

        def rec(metric, value, error=None, **extra):
            recs.append({"step": int(step), "metric": metric, "value": float(value),
                         "error": None if error is None else float(error), **extra})

        def fraction(metric, flags, **extra):
            b = bootstrap_fraction(flags, e.n_boot, seed=int(step))
            rec(metric, b["f_mem"], b["stderr"], ci_low=b["ci95"][0], ci_high=b["ci95"][1],
                wilson_low=b["ci95_wilson"][0], wilson_high=b["ci95_wilson"][1], n_flagged=b["n_flagged"],
                n=int(len(flags)), **extra)

        x = sample_tokens(model, self.seeds, self.seq_len, self.vocab, e.sampler_steps, e.batch_size, self.device)
        if self.save_samples:
            self.run.save_samples(step, x.numpy())
        fl = copy_and_ratio_flags(x, self.train_set, self.vocab, e.threshold)
        chance = {} if not self.num_data else {"chance": len(self.train_set) / self.num_data}
        fraction("f_mem", fl["copy"], test="exact_copy", **chance)
        fraction("hamming/ratio_test", fl["ratio"], threshold=float(e.threshold))
        rec("hamming/d1", fl["d1"].mean() / self.seq_len)
        test = self.ds.test.long()
        if len(test) >= 2:
            d1t, _, _ = hamming_two_nearest(x, test, self.vocab)
            fraction("copy/test", d1t == 0, **({} if not self.num_data else {"chance": len(test) / self.num_data}))
            rec("hamming/d1_test", d1t.mean() / self.seq_len)
        distinct = len(np.unique(x.numpy(), axis=0))
        rec("diversity/distinct", distinct / len(x), count=distinct)
        if self.grammar is not None:
            from .grammar import parse

            p = parse(self.grammar, x)
            rec("validity/valid", p.valid_fraction, n=p.n)
            for k, (v, dens) in enumerate(zip(p.valid_per_level, self.grammar.densities_bottom_up())):
                if v == v:  # nan: no tuple of this level was reached
                    rec("validity/level", v, level=k, chance=dens)
        was = getattr(model, "training", False)
        if isinstance(model, torch.nn.Module):
            model.eval()
        try:
            for t in e.loss_t:
                for name in self.probe:
                    rec(f"loss/{name}", self._loss(model, name, float(t)), t=float(t))
            for name in self.probe:
                rec(f"nll/{name}", self.seq_len * self._loss(model, name, None),
                    **({"entropy": math.log(self.num_data)} if self.num_data else {}))
        finally:
            if was:
                model.train()
        return recs
