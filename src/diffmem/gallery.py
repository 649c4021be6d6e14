"""Pictures of an audit: the most memorised samples beside their two nearest training points (issue #12).

:func:`gallery_png` renders, for the ``k`` samples with the smallest
``d1/d2``, the sample, its nearest and its second-nearest training image with
the ratio and the distances printed, and below them a histogram of ``d1/d2``
over all samples with the threshold marked.  :func:`gallery_html` is the same
as one self-contained HTML page (images embedded as base64 PNGs; no server,
no network).  Both return bytes; the caller writes them atomically.

Images are shown from the data-space rows (``[−1, 1]``, shape ``(C, H, W)``
with C = 1 or 3); anything else is drawn as a strip of its values.
"""

from __future__ import annotations

import base64
import html
import io

import numpy as np

__all__ = ["gallery_png", "gallery_html", "gallery_table", "histogram_png", "pick_gallery"]


def pick_gallery(ratio: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` samples with the smallest ``d1/d2`` (most memorised first; ties by index)."""
    return np.argsort(ratio, kind="stable")[: max(0, int(k))]


def _display(x: np.ndarray, shape: tuple) -> tuple[np.ndarray, dict]:
    """One row → something ``imshow`` can draw, and its keyword arguments."""
    if len(shape) == 3 and shape[0] in (1, 3):
        img = np.clip((x.reshape(shape) + 1.0) / 2.0, 0.0, 1.0)
        if shape[0] == 1:
            return img[0], {"cmap": "gray", "vmin": 0.0, "vmax": 1.0}
        return img.transpose(1, 2, 0), {}
    return x.reshape(1, -1), {"cmap": "coolwarm", "aspect": "auto"}


def _histogram(ax, ratio: np.ndarray, threshold: float) -> None:
    r = np.clip(ratio, 0, 1)
    ax.hist(r, bins=np.linspace(0, 1, 51), color="#4c72b0", edgecolor="white", linewidth=0.3)
    ax.axvline(threshold, color="#c44e52", linestyle="--", linewidth=1.5)
    k = int((ratio < threshold).sum())
    ax.set_xlabel("d1 / d2 (nearest / second-nearest training distance)")
    ax.set_ylabel("samples")
    ax.set_title(f"d1/d2 over {ratio.size} samples: {k} below the threshold {threshold:.3g} (memorised)",
                 fontsize=10)
    ax.set_xlim(0, 1)


def gallery_png(pick: np.ndarray, s_img: np.ndarray, t1_img: np.ndarray, t2_img: np.ndarray, r: dict,
                threshold: float, shape: tuple, title: str = "") -> bytes:
    """The gallery as PNG bytes.

    Args:
        pick: sample indices shown ``[k]``.
        s_img, t1_img, t2_img: their rows, nearest and second-nearest training rows ``[k, d]`` (data space).
        r: per-sample arrays ``ratio``, ``d1``, ``d2``, ``nearest``, ``second`` over all samples ``[M]``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = len(pick)
    per_row = 4 if k > 4 else max(k, 1)
    rows = -(-k // per_row) if k else 0
    fig = plt.figure(figsize=(3.3 * per_row, 1.35 * rows + 2.8))
    gs = fig.add_gridspec(rows + 1, per_row, height_ratios=[1.0] * rows + [1.9], hspace=0.55, wspace=0.12)
    for j, i in enumerate(pick):
        sub = gs[j // per_row, j % per_row].subgridspec(1, 3, wspace=0.04)
        mem = r["ratio"][i] < threshold
        cells = ((s_img[j], f"sample {i}"), (t1_img[j], f"1st: train {r['nearest'][i]}\nd1={r['d1'][i]:.3g}"),
                 (t2_img[j], f"2nd: train {r['second'][i]}\nd2={r['d2'][i]:.3g}"))
        for c, (x, label) in enumerate(cells):
            ax = fig.add_subplot(sub[0, c])
            img, kw = _display(x, shape)
            ax.imshow(img, interpolation="nearest", **kw)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_xlabel(label, fontsize=6.5, labelpad=1.5)
            if c == 0:
                for side in ax.spines.values():
                    side.set_color("#c44e52" if mem else "#999999")
                    side.set_linewidth(2.0 if mem else 0.8)
            if c == 1:
                ax.set_title(f"d1/d2 = {r['ratio'][i]:.3f}" + ("  memorised" if mem else ""), fontsize=8,
                             color="#c44e52" if mem else "black")
    _histogram(fig.add_subplot(gs[rows, :]), r["ratio"], threshold)
    if title:
        fig.suptitle(title, fontsize=10)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _img_tag(x: np.ndarray, shape: tuple) -> str:
    from PIL import Image

    img, _ = _display(x, shape)
    if img.ndim == 2 and img.shape[0] == 1:  # a vector: scale its values to grey levels
        lo, hi = float(img.min()), float(img.max())
        img = (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)
        img = np.repeat(img, 8, axis=0)
    u8 = np.clip(np.rint(img * 255), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(u8).save(buf, format="PNG")
    return f'<img src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def gallery_html(pick, s_img, t1_img, t2_img, r: dict, threshold: float, shape: tuple, summary: dict,
                 hist_png: bytes) -> bytes:
    """The gallery as one self-contained HTML page (UTF-8 bytes)."""
    esc = html.escape
    lo, hi = summary["ci95_wilson"]
    head = (f"<h1>diffmem audit</h1><p><b>f_mem = {summary['f_mem']:.4f}</b> ({summary['n_flagged']} of "
            f"{summary['n_samples']} samples with d1/d2 &lt; {threshold:.4g}); Wilson 95% [{lo:.4f}, {hi:.4f}], "
            f"bootstrap 95% [{summary['ci95'][0]:.4f}, {summary['ci95'][1]:.4f}]</p>"
            f"<p>samples: <code>{esc(str(summary.get('samples', '')))}</code> &middot; training set: "
            f"<code>{esc(str(summary.get('train', '')))}</code> ({summary['n_train']} rows) &middot; distances in "
            f"{esc(str(summary.get('space', 'pixels')))} space</p>")
    hist = f'<img class="hist" src="data:image/png;base64,{base64.b64encode(hist_png).decode()}">'
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>diffmem audit</title><style>
body{{font-family:sans-serif;margin:2em;max-width:70em}} {GALLERY_CSS} img.hist{{max-width:100%}}</style></head>
<body>{head}{hist}<h2>The {len(pick)} samples with the smallest d1/d2</h2>
{gallery_table(pick, s_img, t1_img, t2_img, r, threshold, shape)}</body></html>
"""
    return page.encode("utf-8")


GALLERY_CSS = ("table.gallery td{padding:4px 10px;text-align:center;font-size:0.85em} table.gallery th{font-size:0.85em}"
               " table.gallery td img{width:96px;image-rendering:pixelated;border:1px solid #bbb}"
               " table.gallery tr.mem td img{border:2px solid #c44e52}")


def gallery_table(pick, s_img, t1_img, t2_img, r: dict, threshold: float, shape: tuple) -> str:
    """The gallery's rows as one HTML ``<table class="gallery">`` (images embedded; style: :data:`GALLERY_CSS`)."""
    rows = []
    for j, i in enumerate(pick):
        mem = r["ratio"][i] < threshold
        rows.append(f"<tr class='{'mem' if mem else ''}'><td>{i}</td><td>{r['ratio'][i]:.4f}</td>"
                    f"<td>{_img_tag(s_img[j], shape)}</td><td>{_img_tag(t1_img[j], shape)}<br>train {r['nearest'][i]}"
                    f"<br>d1 = {r['d1'][i]:.4g}</td><td>{_img_tag(t2_img[j], shape)}<br>train {r['second'][i]}"
                    f"<br>d2 = {r['d2'][i]:.4g}</td></tr>")
    return ("<table class='gallery'><tr><th>sample</th><th>d1/d2</th><th>sample</th><th>nearest training image</th>"
            f"<th>second nearest</th></tr>{''.join(rows)}</table>")


def histogram_png(ratio: np.ndarray, threshold: float) -> bytes:
    """The d1/d2 histogram alone, as PNG bytes (for the HTML page)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 2.6))
    _histogram(ax, ratio, threshold)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()
