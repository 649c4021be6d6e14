"""Training throughput of the BUBM25 U-Net preset (W = 32, batch 64, 1×32×32, SGD momentum 0.95).

Prints steps/s, model FLOPs per step (forward counted with FlopCounterMode;
backward ≈ 2× forward, also counted directly), the achieved FLOP/s and its
fraction of this machine's float32 matmul rate measured in the same run
(``torch.mm`` of 2048×2048), and the speed-up of ``F.scaled_dot_product_attention``
over an explicit ``softmax(QKᵀ/√d) V`` in the same network.

    python bench/bench_unet_train.py                  # CPU
    python bench/bench_unet_train.py --device cuda    # GPU (fp32, TF32 off unless --tf32)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
import types

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from diffmem.denoiser import EpsDenoiser
from diffmem.losses import DDPMSigmaSampler, dsm_loss
from diffmem.models import build_backbone, count_params
from diffmem.models.unet import Attention


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_rate(device, n=2048, reps=10):
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    for _ in range(3):
        a @ b
    best = math.inf
    for _ in range(reps):
        sync(device)
        t = time.perf_counter()
        torch.mm(a, b)
        sync(device)
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


def naive_attention_forward(self, x):
    """Explicit softmax(QKᵀ/√d)V: the reference that SDPA replaces."""
    B, C, H, W = x.shape
    h = self.norm(x).flatten(2).transpose(1, 2)
    q, k, v = self.qkv(h).view(B, H * W, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
    att = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)
    h = (att @ v).transpose(1, 2).reshape(B, H * W, C)
    return x + self.proj(h).transpose(1, 2).reshape(B, C, H, W)


def build(args, device, naive=False):
    torch.manual_seed(0)
    net = EpsDenoiser(build_backbone("bubm25", (1, args.size, args.size), width=args.width)).to(device)
    if naive:
        for m in net.modules():
            if isinstance(m, Attention):
                m.forward = types.MethodType(naive_attention_forward, m)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.95)
    return net, opt


def make_step(net, opt, y, sampler, g):
    def step():
        sigma = sampler(y.shape[0], generator=g).to(y.device)
        loss = dsm_loss(net, y, sigma).loss.mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def time_steps(step, device, seconds, warmup):
    for _ in range(warmup):
        step()
    sync(device)
    n, t0 = 0, time.perf_counter()
    while True:
        step()
        n += 1
        if n % 5 == 0 or device.type == "cpu":
            sync(device)
            if time.perf_counter() - t0 >= seconds and n >= 3:
                break
    sync(device)
    return n / (time.perf_counter() - t0), n


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, or auto")
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=15.0, help="timed wall-clock per variant")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: default)")
    ap.add_argument("--tf32", action="store_true", help="allow TF32 on CUDA (default: strict fp32)")
    ap.add_argument("--no-naive", action="store_true", help="skip the explicit-softmax attention reference")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available()
                          else "cpu" if args.device == "auto" else args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.backends.cuda.matmul.allow_tf32 = args.tf32
    torch.backends.cudnn.allow_tf32 = args.tf32

    g = torch.Generator().manual_seed(0)
    y = torch.randn(args.batch, 1, args.size, args.size, generator=g).to(device)
    sampler = DDPMSigmaSampler()
    net, opt = build(args, device)

    # FLOPs: matmuls, convolutions and attention (FlopCounterMode ignores elementwise ops)
    label = torch.rand(args.batch, device=device) * 999
    with FlopCounterMode(display=False) as fc:
        net.backbone(y, label)
    fwd = fc.get_total_flops()
    with FlopCounterMode(display=False) as fc:
        net.backbone(y, label).sum().backward()
    fwd_bwd = fc.get_total_flops()
    opt.zero_grad(set_to_none=True)

    peak = matmul_rate(device)
    sps, n = time_steps(make_step(net, opt, y, sampler, g), device, args.seconds, args.warmup)
    res = {
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        "threads": torch.get_num_threads(),
        "load_avg_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "params": count_params(net),
        "width": args.width, "batch": args.batch, "size": args.size, "tf32": args.tf32,
        "steps_timed": n,
        "steps_per_s": sps,
        "fwd_flops_per_step": fwd,
        "fwd_bwd_flops_counted": fwd_bwd,
        "flops_per_step_3x_fwd": 3 * fwd,
        "achieved_flop_s": 3 * fwd * sps,
        "matmul_fp32_flop_s": peak,
        "fraction_of_matmul_rate": 3 * fwd * sps / peak,
    }
    if not args.no_naive:
        net2, opt2 = build(args, device, naive=True)
        sps2, _ = time_steps(make_step(net2, opt2, y, sampler, g), device, args.seconds, args.warmup)
        res["naive_attention_steps_per_s"] = sps2
        res["sdpa_speedup_vs_naive"] = sps / sps2

    if args.json:
        print(json.dumps(res))
        return
    print(f"device              {res['device']}  (threads {res['threads']}, 1-min load {res['load_avg_1min']})")
    print(f"model               bubm25 W={args.width}, {res['params']:,} params, batch {args.batch}, "
          f"1x{args.size}x{args.size}, SGD momentum 0.95")
    print(f"steps/s             {sps:.3f}   ({n} timed steps)")
    print(f"FLOPs/step          {3 * fwd / 1e9:.2f} GFLOP (3x forward {fwd / 1e9:.2f}; "
          f"fwd+bwd counted {fwd_bwd / 1e9:.2f})")
    print(f"achieved            {res['achieved_flop_s'] / 1e9:.1f} GFLOP/s")
    print(f"fp32 matmul rate    {peak / 1e9:.1f} GFLOP/s (2048x2048 torch.mm, best of 10)")
    print(f"fraction of matmul  {res['fraction_of_matmul_rate']:.1%}")
    if "naive_attention_steps_per_s" in res:
        print(f"naive attention     {res['naive_attention_steps_per_s']:.3f} steps/s  -> SDPA speed-up "
              f"x{res['sdpa_speedup_vs_naive']:.2f}")


if __name__ == "__main__":
    main()
