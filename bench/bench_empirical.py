"""Speed and memory of the empirical denoiser (issue 9, item 1; BDKOS25 at scale).

From one run it prints, for :class:`diffmem.closed_form.EmpiricalDenoiser`
(blocked running log-sum-exp, matmul distances, float32) at
1,000 queries × 50,000 training points × d = 1,024:

(a) its time against a per-training-point Python loop (a running
    log-sum-exp updated one training point at a time, vectorised over the
    queries).  The loop is timed on the first ``--loop-points`` training
    points and extrapolated linearly to all of them (said in the output);
(b) its time against the "complex logarithm" form of the BUBM25 scripts as
    we reconstruct it: broadcast distances ``((x[:, None] − y[None])²).sum(−1)``,
    then ``Σ_n K_n y_n`` as ``exp(logsumexp(logits[:, :, None] +
    torch.log(y.to(complex64))[None], dim=1)).real`` (the log of a negative
    coordinate is ``log|y| + iπ``), i.e. a ``[B, n, d]`` complex tensor.  It is
    run for a few queries over training chunks (as large as memory allows) and
    extrapolated linearly in the number of queries;
(c) the achieved GFLOP/s (``4 B n d`` flops: the two matmuls) as a fraction of
    this machine's float32 matmul rate measured in the same run;
(d) peak memory at 10,000 × 200,000 × 1,024.  The training set is generated
    block by block (never held whole: 200,000 × 1,024 float32 would be 0.8 GB
    by itself).  The full size is ~8 TFLOP, minutes on 2 cores, so by default
    it is measured at 10,000 × ``--peak-n`` (20,000) × 1,024 -- the blocked
    pass's working memory does not depend on n -- and its time extrapolated
    linearly in n; ``--peak-n 200000`` measures the full size.  Peak memory is
    the process's peak RSS (``VmHWM``, reset just before the call) minus the
    resident size before it, in a fresh subprocess.

    python bench/bench_empirical.py                # ~2-4 min on 2 shared cores
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import numpy as np
import torch

from diffmem.closed_form import EmpiricalDenoiser


def best_time(fn, reps=3):
    best = float("inf")
    out = None
    for _ in range(reps):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def matmul_rate(n=2048):
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    t, _ = best_time(lambda: torch.mm(a, b), reps=5)
    return 2 * n**3 / t / 1e9


def loop_form(x, y, sigma, points):
    """Per-training-point Python loop: running log-sum-exp over y[0..points)."""
    inv = 1.0 / (2 * sigma.reshape(-1, 1) ** 2)
    m = torch.full((x.shape[0], 1), -torch.inf)
    z = torch.zeros_like(m)
    acc = torch.zeros_like(x)
    for n in range(points):
        yn = y[n]
        logit = -((x - yn) ** 2).sum(1, keepdim=True) * inv
        m_new = torch.maximum(m, logit)
        scale = torch.exp(m - m_new)
        p = torch.exp(logit - m_new)
        acc = acc * scale + p * yn
        z = z * scale + p
        m = m_new
    return acc / z


def complex_log_form(x, y, sigma, chunk):
    """BUBM25-style: Σ K y through torch.log of complex coordinates and a logsumexp over a [B, n, d] tensor."""
    inv = 1.0 / (2 * sigma.reshape(-1, 1) ** 2)
    logy = torch.log(y.to(torch.complex64))
    nums, dens = [], []
    for i in range(0, y.shape[0], chunk):
        d2 = ((x[:, None] - y[None, i : i + chunk]) ** 2).sum(-1)
        lg = -d2 * inv
        nums.append(torch.logsumexp(lg[:, :, None].to(torch.complex64) + logy[None, i : i + chunk], dim=1))
        dens.append(torch.logsumexp(lg, dim=1))
    num = torch.logsumexp(torch.stack(nums), dim=0)
    den = torch.logsumexp(torch.stack(dens), dim=0)
    return torch.exp(num - den[:, None]).real


class GeneratedRows:
    """A ``[n, d]`` float32 training set generated block by block (seeded by row), never held whole."""

    def __init__(self, n, d, seed=0):
        self.shape, self.ndim, self.seed = (n, d), 2, seed

    def reshape(self, *shape):
        return self

    def __getitem__(self, sl):
        lo, hi = sl.start or 0, min(sl.stop, self.shape[0])
        rng = np.random.default_rng([self.seed, lo])
        return rng.standard_normal((hi - lo, self.shape[1]), dtype=np.float32)


def _vmhwm_kib():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM"):
            return int(line.split()[1])
    return 0


def _vmrss_kib():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1])
    return 0


def peak_child(B, n, d, block):
    """Run in a fresh process: peak RSS increase and time of one denoiser call at B × n × d."""
    x = torch.randn(B, d) * 0.5
    sigma = torch.full((B,), 30.0)
    den = EmpiricalDenoiser(GeneratedRows(n, d), block=block)
    den(x[:8], sigma[:8])  # warm up (allocator, BLAS)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current RSS
    base = _vmrss_kib()
    t0 = time.perf_counter()
    out = den(x, sigma)
    dt = time.perf_counter() - t0
    assert torch.isfinite(out).all()
    print(json.dumps({"seconds": dt, "peak_increase_mb": (_vmhwm_kib() - base) / 1024, "base_mb": base / 1024,
                      "peak_total_mb": _vmhwm_kib() / 1024}))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--B", type=int, default=1000)
    ap.add_argument("--n", type=int, default=50_000)
    ap.add_argument("--d", type=int, default=1024)
    ap.add_argument("--loop-points", type=int, default=1000)
    ap.add_argument("--complex-queries", type=int, default=2)
    ap.add_argument("--peak-B", type=int, default=10_000)
    ap.add_argument("--peak-n", type=int, default=20_000)
    ap.add_argument("--block", type=int, default=4096)
    ap.add_argument("--child", nargs=4, type=int, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        return peak_child(*a.child)

    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    rate = matmul_rate()
    print(f"float32 matmul rate (best torch.mm 2048^3): {rate:.1f} GFLOP/s")
    B, n, d = a.B, a.n, a.d
    y = torch.randn(n, d)
    x = y[torch.randint(0, n, (B,))] + 0.3 * torch.randn(B, d)
    sigma = torch.full((B,), 20.0)  # σ where many points share the weight (the costliest regime numerically)
    den = EmpiricalDenoiser(y, block=a.block)
    den(x[:8], sigma[:8])
    t_blk, out = best_time(lambda: den(x, sigma), reps=2)
    gflops = 4 * B * n * d / t_blk / 1e9
    print(f"\nEmpiricalDenoiser, {B} x {n} x {d} float32, block {a.block}: {t_blk:.2f} s, {gflops:.1f} GFLOP/s "
          f"= {gflops / rate:.0%} of the measured matmul rate")

    P = min(a.loop_points, n)
    t_loop, _ = best_time(lambda: loop_form(x, y, sigma, P), reps=1)
    ref_small = EmpiricalDenoiser(y[:P], block=a.block)(x, sigma)
    err = float((loop_form(x[:16], y, sigma[:16], P) - ref_small[:16]).abs().max())
    t_loop_full = t_loop * n / P
    print(f"(a) per-training-point Python loop: timed on the first {P} of {n} points ({t_loop:.2f} s), "
          f"EXTRAPOLATED linearly to {t_loop_full:.1f} s -> blocked is {t_loop_full / t_blk:.0f}x faster "
          f"(loop vs blocked on those {P} points: max |diff| {err:.1e})")

    q = a.complex_queries
    chunk = max(1, min(n, int(2e8 // (q * d * 8))))  # keep the [q, chunk, d] complex64 tensor near 200 MB
    t_cx, got = best_time(lambda: complex_log_form(x[:q], y, sigma[:q], chunk), reps=1)
    err = float((got - out[:q]).abs().max())
    t_cx_full = t_cx * B / q
    print(f"(b) complex-logarithm form ([q, n, d] complex64 logsumexp): timed on {q} of {B} queries in training "
          f"chunks of {chunk} ({t_cx:.2f} s), EXTRAPOLATED to {t_cx_full:.1f} s -> blocked is "
          f"{t_cx_full / t_blk:.0f}x faster (max |diff| vs blocked {err:.1e}); unchunked it would need "
          f"{B * n * d * 8 / 1e12:.2f} TB for one [B, n, d] complex64 tensor")
    del y, x, den, out

    pb, pn = a.peak_B, a.peak_n
    r = subprocess.run([sys.executable, __file__, "--child", str(pb), str(pn), str(d), str(a.block)],
                       capture_output=True, text=True, check=True)
    res = json.loads(r.stdout.strip().splitlines()[-1])
    t_full = res["seconds"] * 200_000 / pn
    est = (3 * pb * a.block + 4 * pb * d + 2 * a.block * d) * 4 / 2**20
    scale = "MEASURED at the full size" if pn == 200_000 else \
        f"measured at {pb} x {pn} x {d} (working memory is independent of n); time EXTRAPOLATED to n = 200,000"
    print(f"(d) peak memory, {pb} x 200,000 x {d} float32, training set generated block by block: {scale}: "
          f"peak RSS increase {res['peak_increase_mb']:.0f} MB (process peak {res['peak_total_mb']:.0f} MB; "
          f"model 3·B·block + 4·B·d + 2·block·d floats = {est:.0f} MB); {res['seconds']:.1f} s at n = {pn} "
          f"-> {t_full:.0f} s at n = 200,000 ({4 * pb * pn * d / res['seconds'] / 1e9:.1f} GFLOP/s)")


if __name__ == "__main__":
    main()
