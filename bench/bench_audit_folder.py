"""Audit at scale from image files and from a memory-mapped array (issue #12).

1. Writes a training folder of ``--n-train`` (50,000) 32×32 RGB PNGs and a
   sample folder of ``--n-samples`` (5,000) PNGs: fresh images plus planted
   copies of training images -- exact, with small Gaussian noise (σ = 4 grey
   levels), with a few pixels flipped (6 random pixels set to random colours)
   and with a brightness change (+12 grey levels) -- then audits folder
   against folder end to end (``diffmem audit ... --json --gallery``) in a
   child process: wall time, peak RSS, the fraction of time in the distance
   kernel, which planted copies are found in pixel space and which in an
   embedding space (4×4 average-pooled grey levels, 16 numbers per image,
   computed here as a stand-in for a user's SSCD/DINO embeddings).
2. Writes a ``--memmap-rows`` × 3,072 float32 ``.npy`` (200,000 rows = 2.4 GB)
   and audits ``--memmap-samples`` rows against it in a child process: wall
   time and peak RSS (goal ≤ 1.5 GB: the file is read block by block, never
   mapped or loaded whole).

    OMP_NUM_THREADS=1 python bench/bench_audit_folder.py [--quick] [--skip-memmap] [--workdir DIR]

Each audit runs in its own process (``os.wait4`` gives its own peak RSS).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

KINDS = ("exact", "noise", "flip", "bright")


def smooth_images(rng, n: int) -> np.ndarray:
    """``n`` 32×32 RGB uint8 images (N, H, W, C): random 4×4 colour patches upsampled ×8, plus fine noise."""
    base = rng.normal(0.0, 0.45, size=(n, 4, 4, 3))
    img = np.repeat(np.repeat(base, 8, axis=1), 8, axis=2) + rng.normal(0.0, 0.12, size=(n, 32, 32, 3))
    return np.clip(np.rint((np.tanh(img) + 1) * 127.5), 0, 255).astype(np.uint8)


def plant(rng, src: np.ndarray, kind: str) -> np.ndarray:
    x = src.astype(np.int16)
    if kind == "noise":
        x = x + np.rint(rng.normal(0, 4, size=x.shape)).astype(np.int16)
    elif kind == "flip":
        for im in x:
            ij = rng.integers(0, 32, size=(6, 2))
            im[ij[:, 0], ij[:, 1]] = rng.integers(0, 256, size=(6, 3))
    elif kind == "bright":
        x = x + 12
    return np.clip(x, 0, 255).astype(np.uint8)


def write_pngs(folder: Path, u8: np.ndarray, start: int = 0) -> None:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i, im in enumerate(u8):
        Image.fromarray(im).save(folder / f"{start + i:06d}.png", compress_level=1)


def embed(u8: np.ndarray) -> np.ndarray:
    """A stand-in embedding: 4×4 average-pooled grey levels in [−1, 1] (16 numbers per image)."""
    g = u8.astype(np.float32).mean(-1) / 127.5 - 1
    return g.reshape(len(g), 4, 8, 4, 8).mean((2, 4)).reshape(len(g), 16)


def make_folders(work: Path, n_train: int, n_samples: int, per_kind: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    train_dir, samp_dir = work / "train", work / "samples"
    if (work / "planted.json").exists():
        return json.loads((work / "planted.json").read_text())
    t0 = time.perf_counter()
    emb_t = np.zeros((n_train, 16), np.float32)
    keep = {}
    for a in range(0, n_train, 5000):
        u8 = smooth_images(rng, min(5000, n_train - a))
        write_pngs(train_dir, u8, a)
        emb_t[a : a + len(u8)] = embed(u8)
        keep.update({a + i: u8[i] for i in range(len(u8)) if (a + i) % max(1, n_train // (4 * per_kind)) == 0})
    src_idx = sorted(keep)[: 4 * per_kind]
    planted = []
    fresh = smooth_images(rng, n_samples - 4 * per_kind)
    samples = list(fresh)
    for j, kind in enumerate(KINDS):
        idx = src_idx[j * per_kind : (j + 1) * per_kind]
        copies = plant(rng, np.stack([keep[i] for i in idx]), kind)
        for i, c in zip(idx, copies):
            planted.append({"sample": len(samples), "train": int(i), "kind": kind})
            samples.append(c)
    samples = np.stack(samples)
    write_pngs(samp_dir, samples)
    np.save(work / "emb_train.npy", emb_t)
    np.save(work / "emb_samples.npy", embed(samples))
    info = {"planted": planted, "make_s": time.perf_counter() - t0, "n_train": n_train, "n_samples": n_samples}
    (work / "planted.json").write_text(json.dumps(info))
    return info


def measured(argv: list[str]) -> tuple[float, float, int, str, str]:
    """Run ``argv`` under a wrapper that reports its own child's peak RSS (ru_maxrss of exactly that child)."""
    wrapper = ("import resource, subprocess, sys, json\n"
               "p = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
               "r = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss\n"
               "sys.stderr.write(p.stderr)\n"
               "sys.stdout.write(json.dumps({'rc': p.returncode, 'maxrss_kb': r, 'out': p.stdout}))\n")
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", wrapper, *argv], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    w = json.loads(p.stdout)
    return wall, w["maxrss_kb"] / 1024, w["rc"], w["out"], p.stderr


def report_found(r: dict, planted: list[dict], label: str) -> dict:
    mem = dict(zip(r["memorized"], r["nearest_train"]))
    out = {}
    for kind in KINDS:
        ps = [p for p in planted if p["kind"] == kind]
        hit = sum(mem.get(p["sample"]) == p["train"] for p in ps)
        out[kind] = f"{hit}/{len(ps)}"
    novel_flagged = len(set(mem) - {p["sample"] for p in planted})
    print(f"  {label}: planted copies found {out}; fresh samples flagged {novel_flagged}; f_mem = {r['f_mem']:.4f} "
          f"Wilson [{r['ci95_wilson'][0]:.4f}, {r['ci95_wilson'][1]:.4f}]")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", default="/tmp/bench_audit")
    ap.add_argument("--n-train", type=int, default=50_000)
    ap.add_argument("--n-samples", type=int, default=5_000)
    ap.add_argument("--per-kind", type=int, default=25)
    ap.add_argument("--memmap-rows", type=int, default=200_000)
    ap.add_argument("--memmap-samples", type=int, default=1_000)
    ap.add_argument("--quick", action="store_true", help="5,000 training / 500 sample images, 20,000-row memmap")
    ap.add_argument("--skip-folder", action="store_true")
    ap.add_argument("--skip-memmap", action="store_true")
    a = ap.parse_args()
    if a.quick:
        a.n_train, a.n_samples, a.per_kind, a.memmap_rows, a.memmap_samples = 5000, 500, 10, 20_000, 200
    work = Path(a.workdir) / f"{a.n_train}_{a.n_samples}"
    work.mkdir(parents=True, exist_ok=True)
    diffmem = [sys.executable, "-m", "diffmem.cli"]
    print(f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, {os.cpu_count()} CPUs")

    if not a.skip_folder:
        info = make_folders(work, a.n_train, a.n_samples, a.per_kind)
        print(f"folders: {a.n_train} training + {a.n_samples} sample PNGs (32x32 RGB) in {work} "
              f"(made in {info.get('make_s', 0):.1f} s)")
        argv = [*diffmem, "audit", "--train", str(work / "train"), "--samples", str(work / "samples"), "--json",
                "--gallery", str(work / "gallery.png"), "--gallery-html", str(work / "gallery.html")]
        wall, rss, rc, out, err = measured(argv)
        assert rc == 0, err
        r = json.loads(out)
        t = r["timing"]
        print(f"  pixel space, end to end from PNG files: wall {wall:.1f} s, peak RSS {rss:.0f} MB; audit "
              f"{t['total_s']:.1f} s of which distance kernel {t['kernel_s']:.1f} s ({100 * t['kernel_fraction']:.0f} "
              f"%), PNG decoding inside the kernel pass {t['read_train_s']:.1f} s")
        report_found(r, info["planted"], "pixels")
        argv = [*diffmem, "audit", "--train", str(work / "train"), "--samples", str(work / "samples"), "--json",
                "--space", "embeddings", "--train-emb", str(work / "emb_train.npy"), "--samples-emb",
                str(work / "emb_samples.npy")]
        wall, rss, rc, out, err = measured(argv)
        assert rc == 0, err
        r = json.loads(out)
        print(f"  embedding space (4x4 pooled grey, 16-d): wall {wall:.1f} s, peak RSS {rss:.0f} MB")
        report_found(r, info["planted"], "embeddings")
        print(f"  gallery: {work / 'gallery.png'}, {work / 'gallery.html'}")

    if not a.skip_memmap:
        path = Path(a.workdir) / f"memmap_{a.memmap_rows}.npy"
        rng = np.random.default_rng(1)
        if not path.exists():
            mm = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(a.memmap_rows, 3072))
            for s in range(0, a.memmap_rows, 10_000):
                mm[s : s + 10_000] = rng.uniform(-1, 1, size=(min(10_000, a.memmap_rows - s), 3072))
            mm.flush()
            del mm
        src = np.load(path, mmap_mode="r")
        idx = rng.choice(a.memmap_rows, size=a.memmap_samples // 10, replace=False)
        samples = np.concatenate([src[np.sort(idx)] + rng.normal(0, 0.02, size=(len(idx), 3072)),
                                  rng.uniform(-1, 1, size=(a.memmap_samples - len(idx), 3072))]).astype(np.float32)
        del src
        np.save(Path(a.workdir) / "memmap_samples.npy", samples)
        print(f"memmap: {a.memmap_rows} x 3072 float32 ({path.stat().st_size / 2**30:.2f} GiB) against "
              f"{a.memmap_samples} samples ({len(idx)} noisy copies)")
        argv = [*diffmem, "audit", "--train", str(path), "--samples", str(Path(a.workdir) / "memmap_samples.npy"),
                "--json"]
        wall, rss, rc, out, err = measured(argv)
        assert rc == 0, err
        r = json.loads(out)
        t = r["timing"]
        print(f"  wall {wall:.1f} s, peak RSS {rss:.0f} MB (goal <= 1536 MB); kernel {t['kernel_s']:.1f} s "
              f"({100 * t['kernel_fraction']:.0f} %), reading blocks {t['read_train_s']:.1f} s; f_mem = "
              f"{r['f_mem']:.3f} (planted {len(idx) / a.memmap_samples:.3f})")


if __name__ == "__main__":
    main()
