"""Speed and memory of the memorisation fraction (issue 2, item 7 and "Performance").

From one run it prints:

(a) the time of :func:`two_nearest` and of the full :func:`memorization_fraction`
    at 1,000 samples × 4,096 training points × d = 1,024, against the
    broadcast method of the BUBM25 scripts, ``torch.norm(s[:, None] - X, dim=2)``
    (run in query chunks only as large as memory requires) followed by a top-2;
    the speed-up ratio (target ≥ 50×);
(b) the achieved GFLOP/s of ``two_nearest`` (2·M·N·d flops of its matmuls)
    against this machine's float32 matmul rate measured in the same run
    (best ``torch.mm`` of 4096×4096 by 4096×4096); fraction (target ≥ 50 %);
(c) with ``--big``: time and peak resident memory of ``memorization_fraction``
    at 20,000 × 100,000 × 1,024 (target ≤ 4 GB), measured as the process's
    peak RSS (``VmHWM``, reset just before the call) -- inputs included -- and
    its increase over the resident size before the call.

    python bench/bench_fmem.py                 # (a) and (b), ~20 s on 2 cores
    python bench/bench_fmem.py --big           # adds (c), a few minutes on 2 cores
    python bench/bench_fmem.py --device cuda   # the same on a GPU (peak = torch.cuda.max_memory_allocated)
"""

from __future__ import annotations

import argparse
import json
import math
import time

import torch

from diffmem.metrics import memorization_fraction, two_nearest


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def best_time(fn, device, reps=5, warmup=1):
    for _ in range(warmup):
        fn()
    best = math.inf
    for _ in range(reps):
        sync(device)
        t = time.perf_counter()
        fn()
        sync(device)
        best = min(best, time.perf_counter() - t)
    return best


def matmul_rate(device, n=4096, reps=3):
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    return 2 * n**3 / best_time(lambda: torch.mm(a, b), device, reps=reps)


@torch.no_grad()
def broadcast_two_nearest(s, X, chunk_bytes=256 << 20):
    """The BUBM25 method: ``torch.norm(s[:, None] - X, dim=2)``, query chunks bounded by ``chunk_bytes``."""
    c = max(1, chunk_bytes // (X.shape[0] * X.shape[1] * s.element_size()))
    d1, d2 = [], []
    for i in range(0, s.shape[0], c):
        d = torch.norm(s[i : i + c, None] - X, dim=2)
        v = d.topk(2, dim=1, largest=False).values
        d1.append(v[:, 0])
        d2.append(v[:, 1])
    return torch.cat(d1), torch.cat(d2)


def broadcast_fmem(s, X, threshold=1 / 3):
    d1, d2 = broadcast_two_nearest(s, X)
    return float((d1 / d2 < threshold).float().mean())


def rss_now():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def rss_peak():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def reset_peak():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
        return True
    except OSError:
        return False


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--m", type=int, default=1000)
    ap.add_argument("--n", type=int, default=4096)
    ap.add_argument("--d", type=int, default=1024)
    ap.add_argument("--big", action="store_true", help="also run 20,000 x 100,000 x 1,024 (slow on a CPU)")
    ap.add_argument("--big-m", type=int, default=20000)
    ap.add_argument("--big-n", type=int, default=100000)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    res = {"device": str(dev), "threads": torch.get_num_threads()}

    g = torch.Generator().manual_seed(0)
    M, N, D = args.m, args.n, args.d
    X = torch.randn(N, D, generator=g).to(dev)
    s = torch.randn(M, D, generator=g).to(dev)
    s[: M // 10] = X[: M // 10] + 0.01 * torch.randn(M // 10, D, generator=g).to(dev)  # some copies

    # (b) machine rate first (same conditions)
    res["matmul_gflops"] = matmul_rate(dev) / 1e9

    # (a) fast kernel and full f_mem vs broadcast
    t_nn = best_time(lambda: two_nearest(s, X), dev)
    t_fm = best_time(lambda: memorization_fraction(s, X, n_boot=1000), dev, reps=5)
    sync(dev)
    t0 = time.perf_counter()
    b1, b2 = broadcast_two_nearest(s, X)
    sync(dev)
    t_bc = time.perf_counter() - t0
    d1, d2, _ = two_nearest(s, X)
    f_fast = memorization_fraction(s, X)["f_mem"]
    f_slow = float((b1 / b2 < 1 / 3).float().mean())
    res.update({
        "shape": [M, N, D],
        "two_nearest_s": t_nn, "f_mem_s": t_fm, "broadcast_s": t_bc,
        "speedup_two_nearest": t_bc / t_nn, "speedup_f_mem": t_bc / t_fm,
        "max_abs_diff_d1": float((d1 - b1).abs().max()), "max_abs_diff_d2": float((d2 - b2).abs().max()),
        "f_mem_fast": f_fast, "f_mem_broadcast": f_slow,
        "two_nearest_gflops": 2 * M * N * D / t_nn / 1e9,
    })
    res["fraction_of_matmul"] = res["two_nearest_gflops"] / res["matmul_gflops"]
    print(f"device {dev}, {res['threads']} threads; float32 matmul rate {res['matmul_gflops']:.1f} GFLOP/s")
    print(f"(a) {M} x {N} x {D}: two_nearest {t_nn * 1e3:.1f} ms, memorization_fraction {t_fm * 1e3:.1f} ms, "
          f"broadcast torch.norm {t_bc * 1e3:.0f} ms -> speed-up {res['speedup_two_nearest']:.0f}x "
          f"(f_mem {res['speedup_f_mem']:.0f}x; target >= 50x); f_mem {f_fast:.3f} = {f_slow:.3f}, "
          f"max |d1 - d1_broadcast| {res['max_abs_diff_d1']:.1e}")
    print(f"(b) two_nearest {res['two_nearest_gflops']:.1f} GFLOP/s = {100 * res['fraction_of_matmul']:.0f} % "
          f"of the matmul rate (target >= 50 %)")
    del X, s, b1, b2, d1, d2

    if args.big:
        M, N = args.big_m, args.big_n
        g = torch.Generator().manual_seed(1)
        Xb = torch.randn(N, D, generator=g).to(dev)
        sb = torch.randn(M, D, generator=g).to(dev)
        sb[: M // 10] = Xb[: M // 10] + 0.01 * torch.randn(M // 10, D, generator=g).to(dev)
        inputs = (Xb.numel() + sb.numel()) * 4
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
            base = torch.cuda.memory_allocated(dev)
        else:
            base = rss_now()
            reset_peak()
        t0 = time.perf_counter()
        r = memorization_fraction(sb, Xb, n_boot=1000)
        sync(dev)
        t_big = time.perf_counter() - t0
        peak = torch.cuda.max_memory_allocated(dev) if dev.type == "cuda" else rss_peak()
        res.update({"big_shape": [M, N, D], "big_s": t_big, "big_peak_bytes": peak,
                    "big_peak_over_start_bytes": peak - base, "big_inputs_bytes": inputs, "big_f_mem": r["f_mem"],
                    "big_gflops": 2 * M * N * D / t_big / 1e9})
        what = "GPU memory allocated" if dev.type == "cuda" else "process peak RSS"
        print(f"(c) {M} x {N} x {D}: memorization_fraction {t_big:.1f} s ({res['big_gflops']:.0f} GFLOP/s), "
              f"{what} {peak / 2**30:.2f} GiB (target <= 4 GB; inputs {inputs / 2**30:.2f} GiB, "
              f"+{(peak - base) / 2**30:.2f} GiB over the start), f_mem {r['f_mem']:.3f}")
    print(json.dumps(res))


if __name__ == "__main__":
    main()
