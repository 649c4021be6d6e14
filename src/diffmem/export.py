"""Arrays and images out of a run, in the space a user's files live in (issue #12).

A run works in *model space*: the training images scaled to [−1, 1] and, for
image data, centred by the per-pixel pool mean (``Dataset.mean``).  A user's
image files live in *data space*: the same without the centring.  Samples
and training images compared in different spaces give wrong memorisation
fractions silently (an exact copy sits ``‖mean‖`` away from its original), so
every export says which space it is in:

* :func:`to_space` maps model-space rows of a run to ``"data"`` (uncentred) or
  leaves them in ``"model"`` space;
* :func:`run_training_set` is a run's training subset in either space;
* :func:`write_rows` writes rows to ``X.npy`` (float32) or to a folder of PNGs
  (data space, quantised to uint8 exactly as the loaders read them back:
  ``u8 = round((x + 1)·127.5)``), atomically; the PNGs are named by row
  (``000000.png``, ...) so a folder read back in sorted order keeps the rows
  in order.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import DiffmemError

__all__ = ["SPACES", "check_output", "to_space", "run_training_set", "write_rows"]

SPACES = ("data", "model")


def check_output(out, space: str | None, default: str, shape: tuple | None = None) -> tuple[Path, str, str]:
    """Check an output name before any work; returns ``(path, kind, space)`` with kind ``"npy"`` or ``"png"``.

    ``X.npy`` takes either space (default ``default``); any other name without
    a suffix is a folder of PNGs, which is always data space and needs rows of
    ``shape`` ``(C, H, W)`` with C = 1 or 3.
    """
    p = Path(out)
    if space is not None and space not in SPACES:
        raise DiffmemError(f"--space must be data or model, got {space!r}")
    if p.suffix.lower() == ".npy":
        kind = "npy"
        if p.is_dir():
            raise DiffmemError(f"--out {p} is a directory; give a file name")
    elif p.suffix == "" or p.is_dir():
        kind = "png"
        if space == "model":
            raise DiffmemError("PNG images are data space (uncentred [-1, 1] -> uint8); --space model needs --out X.npy")
        if p.exists() and (not p.is_dir() or any(p.iterdir())):
            raise DiffmemError(f"--out {p} exists and is not an empty folder; PNGs go into a new or empty folder")
        space = "data"
        if shape is not None:
            _png_shape(tuple(shape))
    else:
        raise DiffmemError(f"--out must end in .npy (a .npy file) or name a folder (for PNG images), got {p}")
    if not p.parent.is_dir():
        raise DiffmemError(f"--out {p}: folder {p.parent} does not exist")
    return p, kind, space or default


def _dataset(run):
    from .data import load_dataset

    cfg = run.load_config()
    return cfg, load_dataset(cfg.data)


def to_space(run, x: np.ndarray, space: str) -> np.ndarray:
    """Model-space rows ``x [N, ...]`` of ``run`` in ``space`` (``"data"``: the centring undone)."""
    x = np.asarray(x)
    if np.issubdtype(x.dtype, np.integer):  # token sequences: one space, the tokens themselves
        return x.astype(np.int64)
    if space == "model":
        return np.asarray(x, dtype=np.float32)
    import torch

    _, ds = _dataset(run)
    return ds.to_pixels(torch.as_tensor(np.asarray(x, dtype=np.float32))).numpy()


def run_training_set(run_dir, space: str = "data") -> tuple[np.ndarray, dict]:
    """A run's training subset ``[n, *shape]`` in ``space``, and what it is."""
    from .rundir import Run

    run = Run(run_dir)
    if not run.exists():
        raise DiffmemError(f"{run.path} is not a diffmem run directory")
    cfg, ds = _dataset(run)
    x = ds.subset(cfg.n, cfg.subset_seed, cfg.subset_offset)
    x = (ds.to_pixels(x) if space == "data" else x).numpy()
    return x, {"data": cfg.data, "n": cfg.n, "subset_seed": cfg.subset_seed, "space": space}


def _png_shape(shape: tuple) -> None:
    if len(shape) != 3 or shape[0] not in (1, 3):
        raise DiffmemError(f"PNG output needs images of shape (C, H, W) with 1 or 3 channels, got rows of shape "
                           f"{tuple(shape)}; write a .npy instead")


def write_rows(out: Path, kind: str, x: np.ndarray) -> Path:
    """Write rows ``x [N, ...]`` as ``.npy`` or as a folder of PNGs (``kind`` from :func:`check_output`)."""
    from .fileio import atomic_write_folder, atomic_write_npy

    if kind == "npy":
        return atomic_write_npy(out, x)
    from PIL import Image

    from .audit_sources import to_pixels_u8

    _png_shape(tuple(x.shape[1:]))
    u8 = to_pixels_u8(x)
    width = max(6, len(str(len(x) - 1)))

    def fill(tmp: Path) -> None:
        for i, im in enumerate(u8):
            Image.fromarray(im[..., 0] if im.shape[-1] == 1 else im).save(tmp / f"{i:0{width}d}.png")

    return atomic_write_folder(out, fill)
