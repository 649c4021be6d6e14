"""Screenshot diffmem's self-contained HTML report with headless Chromium (issue #12 item 6).

    python experiments/report_html_screenshot.py [--out results/report_html] [--sweep DIR]

Trains (unless --sweep names an existing sweep) a small digits sweep that
memorises, n = 8 and 16 at 150 steps per sample, writes its report with
`diffmem report --gallery-steps tau_mem,last`, then opens
``report.html`` from disk in headless Chromium (``apt-get install chromium``;
no server, no network: ``--no-proxy-server`` and a file:// URL) and saves a
tall screenshot plus two crops (the top: title, τ table, fit; then the
galleries) under ``--out`` (``results/`` is untracked).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DIFFMEM = [sys.executable, "-m", "diffmem.cli"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "results" / "report_html"))
    ap.add_argument("--sweep", help="an existing sweep directory (default: train one into OUT/sweep)")
    ap.add_argument("--height", type=int, default=14000, help="page height to render, pixels")
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    sweep = Path(a.sweep) if a.sweep else out / "sweep"
    t0 = time.time()
    if not a.sweep:
        subprocess.run([*DIFFMEM, "sweep", "--preset", "digits", "--n", "8,16", "--steps-per-n", "150", "--workers", "2",
                        "--out", str(sweep), "eval.n_samples=128", "eval.quality=fd_pixel", "eval.n_boot=200",
                        "checkpoints_per_decade=10", "--quality-metric", "quality/fd_pixel", "--gallery-steps", "none"],
                       check=True)
    t1 = time.time()
    subprocess.run([*DIFFMEM, "report", "--sweep", str(sweep), "--quality-metric", "quality/fd_pixel",
                    "--gallery-steps", "tau_mem,last", "--gallery-k", "6"], check=True)
    page = sweep / "report" / "report.html"
    t2 = time.time()
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        print("no chromium: apt-get install -y chromium", file=sys.stderr)
        return 2
    full = out / "report_full.png"
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-proxy-server",
                    f"--window-size=1280,{a.height}", f"--screenshot={full}", page.resolve().as_uri()],
                   check=True, capture_output=True, timeout=120)
    from PIL import Image

    img = Image.open(full)
    img.crop((0, 0, 1280, 1300)).save(out / "report_top.png")  # title, τ table, fit
    img.crop((0, 1100, 1280, 3300)).save(out / "report_gallery.png")  # the galleries come before the figures
    print(f"sweep {t1 - t0:.0f} s, report {t2 - t1:.1f} s, page {page.stat().st_size / 1e6:.2f} MB, screenshot "
          f"{img.size[0]}x{img.size[1]} -> {full}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
