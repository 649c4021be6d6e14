"""What the audit compares: both sides read through one data space, in blocks (issue #12).

An audit input is any data spec, read as a :class:`Rows` -- a read-only
``[N, d]`` float32 view whose blocks are converted on demand, so the training
set can be larger than memory:

* ``X.npy``, ``X.npz[?key=K]`` -- arrays ``(N, d)``, ``(N, H, W)``, ``(N, C, H, W)`` or
  ``(N, H, W, C)``, uint8 mapped to [−1, 1] and channels-last moved first, exactly
  as ``data=`` does for training (:func:`diffmem.data.load_array_dataset`).
  ``.npy`` files and stored (uncompressed, ``numpy.savez``) ``.npz`` members are
  read by offset, block by block: never loaded whole and never memory-mapped
  whole, so the resident memory stays at a few blocks whatever the file size.
* ``FOLDER[?size=S&gray=0|1&limit=K]`` -- every image under the folder
  (recursive, sorted), decoded block by block.  With ``size``/``gray`` the
  images are preprocessed as ``data=FOLDER?size=S&gray=G`` preprocesses them
  for training (resize the shorter side, centre-crop, [−1, 1]); without them
  they are read at their stored size and colour (all sizes must agree; any
  colour image makes the whole side RGB).  Files without an image suffix are
  skipped and counted; a file with an image suffix that cannot be decoded is
  an error (a silently dropped training image could hide a copy of it).
* ``RUN[@STEP]`` -- a diffmem run directory: as samples, its saved samples at
  ``STEP`` (default: the last saved); as training data, its training subset.
  Both are mapped back to data space (uncentred [−1, 1] pixels).
* ``digits``, ``gmm:...``, ``bdkos25-2d`` -- the whole training pool of a named
  data set, in data space.

Everything is in *data space* (uncentred; images in [−1, 1]): the space of a
user's image files.  :func:`space_stats` and :func:`compare_spaces` implement
the check that both sides live in the same space.
"""

from __future__ import annotations

import os
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .data import IMAGE_SUFFIXES, _read_image, _split_key, load_array, load_dataset, npz_pick, parse_spec
from .errors import DiffmemError

__all__ = ["Rows", "ArrayRows", "FolderRows", "open_rows", "load_embeddings", "space_stats", "compare_spaces",
           "to_pixels_u8", "SPACE_REFUSE", "SPACE_WARN"]


class Rows:
    """A read-only ``[N, d]`` float32 view of N samples, converted block by block.

    Supports ``len``, ``rows[a:b]`` and ``rows[int_array]`` (numpy float32
    results), ``shape``, ``dtype`` and ``ndim``, which is all
    :func:`diffmem.metrics.nn.two_nearest` needs.  ``sample_shape`` is the
    per-sample layout (``(C, H, W)`` for images); ``read_seconds`` accumulates
    the time spent reading and decoding; ``finite`` says the values are finite
    by construction (decoded images).
    """

    dtype = np.dtype(np.float32)
    ndim = 2
    finite = False

    def __init__(self, n: int, sample_shape: tuple, name: str, kind: str, info: dict | None = None):
        self.n, self.sample_shape, self.name, self.kind = int(n), tuple(int(s) for s in sample_shape), name, kind
        self.d = int(np.prod(self.sample_shape))
        self.info = {"spec": name, "kind": kind, "rows": self.n, "sample_shape": list(self.sample_shape),
                     **(info or {})}
        self.read_seconds = 0.0
        self.run = None  # the diffmem Run these rows come from, if any

    @property
    def shape(self) -> tuple[int, int]:
        return (self.n, self.d)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, key) -> np.ndarray:
        t0 = time.perf_counter()
        if isinstance(key, slice):
            a, b, step = key.indices(self.n)
            out = self._read(a, max(a, b)) if step == 1 else self._take(np.arange(a, b, step))
        else:
            idx = np.asarray(key)
            if idx.ndim == 0:
                out = self._take(idx.reshape(1))[0]
            else:
                out = self._take(idx.astype(np.int64).ravel()).reshape(*idx.shape, self.d)
        self.read_seconds += time.perf_counter() - t0
        return out

    def images(self, idx) -> np.ndarray:
        """Rows ``idx`` in their per-sample layout ``[k, *sample_shape]``."""
        return self[np.asarray(idx, dtype=np.int64)].reshape(-1, *self.sample_shape)

    def _read(self, a: int, b: int) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def _take(self, idx: np.ndarray) -> np.ndarray:
        if idx.size == 0:
            return np.zeros((0, self.d), np.float32)
        if idx.min() < 0 or idx.max() >= self.n:
            raise IndexError(f"row index out of range for {self.n} rows")
        return np.stack([self._read(int(i), int(i) + 1)[0] for i in idx])


# ---------------------------------------------------------------------------- arrays


def _layout(raw_shape: tuple) -> tuple[tuple, bool]:
    """Per-sample shape in model layout and whether channels-last must move first (as ``data._as_samples``)."""
    s = tuple(raw_shape[1:])
    if len(s) == 2:
        return (1, *s), False
    if len(s) == 3 and s[-1] in (1, 3, 4) and s[0] not in (1, 3, 4):
        return (s[2], s[0], s[1]), True
    return s if s else (1,), False


def _convert(block: np.ndarray, channels_last: bool, d: int) -> np.ndarray:
    b = np.asarray(block)
    if b.dtype == np.uint8:
        b = b.astype(np.float32) / 127.5 - 1.0  # the training loader's mapping
    b = b.astype(np.float32, copy=False)
    if channels_last:
        b = b.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(b).reshape(len(b), d)


class ArrayRows(Rows):
    """Rows of an array: in memory, or read by offset from an ``.npy`` file / stored ``.npz`` member."""

    def __init__(self, array=None, *, file: Path | None = None, offset: int = 0, raw_dtype=None, raw_shape=None,
                 name: str = "array", kind: str = "array", info: dict | None = None):
        self.array, self.file, self.offset = array, file, int(offset)
        raw_shape = tuple(array.shape) if array is not None else tuple(raw_shape)
        self.raw_dtype = np.dtype(array.dtype if array is not None else raw_dtype)
        if self.raw_dtype.kind not in "fiub" or self.raw_dtype.hasobject:
            raise DiffmemError(f"{name} holds an array of dtype {self.raw_dtype}; expected numbers")
        if len(raw_shape) < 2:
            raise DiffmemError(f"{name} must have shape (N, ...) with N samples, got shape {raw_shape}")
        if raw_shape[0] == 0:
            raise DiffmemError(f"{name} holds no rows (shape {raw_shape})")
        self.raw_shape = raw_shape
        shape, self.channels_last = _layout(raw_shape)
        self.row_items = int(np.prod(raw_shape[1:]))
        info = {"dtype": str(self.raw_dtype), "read": "in memory" if array is not None else "by offset (streamed)",
                **(info or {})}
        if self.raw_dtype == np.uint8:
            info["mapping"] = "uint8 -> x/127.5 - 1 (as data=)"
        super().__init__(raw_shape[0], shape, name, kind, info)
        self._fd = None

    def _raw(self, a: int, b: int) -> np.ndarray:
        if self.array is not None:
            return self.array[a:b]
        if self._fd is None:
            self._fd = os.open(self.file, os.O_RDONLY)
        rb = self.row_items * self.raw_dtype.itemsize
        buf = bytearray((b - a) * rb)  # writeable: the kernel uses the block without another copy
        got = os.preadv(self._fd, [buf], self.offset + a * rb)
        if got != len(buf):
            raise DiffmemError(f"{self.name}: file is truncated (rows {a}..{b} of {self.n} cannot be read)")
        return np.frombuffer(buf, dtype=self.raw_dtype).reshape(b - a, *self.raw_shape[1:])

    def _read(self, a: int, b: int) -> np.ndarray:
        return _convert(self._raw(a, b), self.channels_last, self.d)

    def _take(self, idx: np.ndarray) -> np.ndarray:
        if self.array is not None and idx.size:
            return _convert(self.array[np.asarray(idx)], self.channels_last, self.d)
        return super()._take(idx)

    def __del__(self):
        if getattr(self, "_fd", None) is not None:
            os.close(self._fd)


def _npy_header(f) -> tuple[np.dtype, tuple, bool]:
    version = np.lib.format.read_magic(f)
    read = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}.get(version)
    if read is None:
        raise ValueError(f"unsupported .npy version {version}")
    shape, fortran, dtype = read(f)
    return dtype, shape, fortran


def _array_rows(spec: str, role: str) -> ArrayRows:
    """An ``.npy`` / ``.npz`` spec as rows read by offset where the format allows it."""
    path, key = _split_key(spec)
    name = str(spec)
    if path.suffix.lower() == ".npz" and path.is_file() and zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            members = {zi.filename[:-4]: zi for zi in z.infolist() if zi.filename.endswith(".npy")}
        pick = npz_pick(path, list(members), key, role)
        found = _stored_member(path, members[pick])
        if found is not None:
            offset, dtype, shape = found
            return ArrayRows(file=path, offset=offset, raw_dtype=dtype, raw_shape=shape, name=name,
                             info={"file": str(path), "member": pick})
    a = load_array(spec, role=role)  # every check of the shared reader (header, pickles, dtype, keys, rows)
    if isinstance(a, np.memmap) and not np.isfortran(a) and a.ndim >= 2:
        return ArrayRows(file=path, offset=int(a.offset), raw_dtype=a.dtype, raw_shape=a.shape, name=name,
                         info={"file": str(path)})
    note = {"note": "compressed .npz member: loaded whole"} if path.suffix.lower() == ".npz" else {}
    return ArrayRows(np.asarray(a), name=name, info={"file": str(path), **note})


def _stored_member(path: Path, zi: zipfile.ZipInfo):
    """``(data offset, dtype, shape)`` of an uncompressed, C-ordered ``.npz`` member, else None."""
    if zi.compress_type != zipfile.ZIP_STORED:
        return None
    with open(path, "rb") as f:
        f.seek(zi.header_offset)
        h = f.read(30)
        if h[:4] != b"PK\x03\x04":
            return None
        f.seek(zi.header_offset + 30 + int.from_bytes(h[26:28], "little") + int.from_bytes(h[28:30], "little"))
        try:
            dtype, shape, fortran = _npy_header(f)
        except ValueError:
            return None
        if fortran or dtype.hasobject:
            return None
        return f.tell(), dtype, tuple(shape)


# ---------------------------------------------------------------------------- image folders


def _image_mode(im) -> str:
    return "L" if im.mode in ("1", "L", "LA", "I", "I;16", "F") else "RGB"


class FolderRows(Rows):
    """Every image of a folder, decoded block by block (see the module docstring)."""

    finite = True

    def __init__(self, root: Path, size: int | None = None, gray: bool | None = None, limit: int | None = None,
                 name: str | None = None):
        from PIL import Image, UnidentifiedImageError

        if not root.is_dir():
            raise DiffmemError(f"image folder not found: {root}")
        everything = sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))
        files = [p for p in everything if p.suffix.lower() in IMAGE_SUFFIXES]
        skipped = len(everything) - len(files)
        if limit:
            files = files[: int(limit)]
        if not files:
            raise DiffmemError(f"image folder {root} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})"
                               + (f"; it holds {skipped} other files" if skipped else ""))
        sizes, modes = {}, set()
        for p in files:  # headers only: cheap, and every problem is found before any work
            try:
                with Image.open(p) as im:
                    sizes.setdefault(im.size, p)
                    modes.add(_image_mode(im))
            except (UnidentifiedImageError, OSError) as e:
                raise DiffmemError(f"cannot read image {p}: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
                                   f" (an unreadable image is an error, not skipped: remove it or fix it)") from None
        self.size, self.files = size, files
        self.mode = ("L" if gray else "RGB") if gray is not None else ("RGB" if "RGB" in modes else "L")
        if size is None:
            if len(sizes) > 1:
                (s1, p1), (s2, p2) = list(sizes.items())[:2]
                raise DiffmemError(f"images in {root} have different sizes ({s1[0]}x{s1[1]} in {p1.name}, "
                                   f"{s2[0]}x{s2[1]} in {p2.name}); give {root}?size=S to resize and centre-crop "
                                   "them as data= does")
            w, h = next(iter(sizes))
        else:
            if int(size) < 1:
                raise DiffmemError(f"image size must be positive, got {size}")
            w = h = int(size)
        c = 1 if self.mode == "L" else 3
        info = {"folder": str(root), "skipped_non_image": skipped, "mode": self.mode,
                "preprocessing": (f"resize shorter side to {size} + centre-crop" if size else "as stored")
                + ", [0, 255] -> [-1, 1]"}
        super().__init__(len(files), (c, h, w), name or str(root), "folder", info)

    def _one(self, p: Path) -> np.ndarray:
        if self.size is not None:
            return _read_image(p, int(self.size), self.mode == "L")
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(p) as im:
                a = np.asarray(im.convert(self.mode), dtype=np.float32)
        except (UnidentifiedImageError, OSError) as e:
            raise DiffmemError(f"cannot read image {p}: {e}") from None
        a = a[None] if a.ndim == 2 else a.transpose(2, 0, 1)
        if a.shape != self.sample_shape:
            raise DiffmemError(f"image {p} decodes to shape {a.shape}, not {self.sample_shape}")
        return a / 127.5 - 1.0

    def _read(self, a: int, b: int) -> np.ndarray:
        if b <= a:
            return np.zeros((0, self.d), np.float32)
        return np.stack([self._one(p) for p in self.files[a:b]]).reshape(b - a, self.d).astype(np.float32)


# ---------------------------------------------------------------------------- runs and named data sets


def _run_of(spec: str):
    """``(Run, step or None)`` if ``spec`` names a diffmem run directory (``RUN[@STEP]``), else None."""
    from .rundir import Run

    head, at, step = spec.rpartition("@")
    path, st = (head, step) if at and step.strip().lstrip("-").isdigit() else (spec, None)
    if "?" in path:
        return None
    run = Run(Path(path).expanduser())
    if not run.path.is_dir() or not run.exists():
        if st is not None and Path(path).exists():
            raise DiffmemError(f"{path} is not a diffmem run directory (no run config); RUN@STEP needs one")
        return None
    return run, None if st is None else int(st)


def _run_dataset(run):
    cfg = run.load_config()
    return cfg, load_dataset(cfg.data)


def _run_rows(run, step: int | None, role: str) -> Rows:
    cfg, ds = _run_dataset(run)
    if role == "train":
        if step is not None:
            raise DiffmemError(f"--train {run.path}@{step}: a run's training set has no step; give {run.path}")
        x = ds.to_pixels(ds.subset(cfg.n, cfg.subset_seed, cfg.subset_offset)).numpy()
        rows = ArrayRows(x, name=str(run.path), kind="run", info={"run": str(run.path), "data": cfg.data, "n": cfg.n,
                                                                   "what": "training subset, data space"})
        rows.run = run
        return rows
    have = run.sample_steps()
    if not have:
        raise DiffmemError(f"run {run.path} has no saved samples (eval.save_samples was off?); make some with "
                           f"`diffmem sample --run {run.path} --space data --out S.npy` and audit S.npy")
    st = have[-1] if step is None else step
    if st not in have:
        raise DiffmemError(f"run {run.path} has no samples at step {st} (it has {len(have)}, from {have[0]} to "
                           f"{have[-1]})")
    x = run.load_samples(st)
    x = ds.to_pixels(_torch(x)).numpy()
    rows = ArrayRows(x, name=f"{run.path}@{st}", kind="run",
                     info={"run": str(run.path), "step": int(st), "data": cfg.data, "what": "samples, data space"})
    rows.run = run
    return rows


def _torch(x):
    import torch

    return torch.as_tensor(np.asarray(x, dtype=np.float32))


_FOLDER_OPTS = {"size", "gray", "limit"}


def open_rows(spec: str, role: str) -> Rows:
    """An audit input (see the module docstring) as :class:`Rows`; ``role`` is ``"train"`` or ``"samples"``."""
    spec = str(spec).strip()
    if not spec:
        raise DiffmemError(f"--{role}: empty spec")
    ran = _run_of(spec)
    if ran is not None:
        return _run_rows(*ran, role)
    head = spec.partition("?")[0]
    if head.lower().rpartition(":")[0].endswith(".npz"):
        _split_key(spec)  # FILE.npz:KEY -> the one-line hint to write FILE.npz?key=KEY
    path = Path(head).expanduser()
    if path.suffix.lower() in (".npy", ".npz"):
        return _array_rows(spec, role)
    if path.is_file():
        raise DiffmemError(f"--{role} {spec}: expected a .npy or .npz file, an image folder or a run directory")
    kind, arg, opts = parse_spec(spec)
    if kind == "folder":
        bad = set(opts) - _FOLDER_OPTS
        if bad:
            raise DiffmemError(f"{spec}: the audit reads every image of a folder; it takes only "
                               f"{', '.join(sorted(_FOLDER_OPTS))}, not {', '.join(sorted(bad))}")
        num = {k: int(float(v)) for k, v in opts.items() if _isnum(v)}
        if len(num) != len(opts):
            raise DiffmemError(f"{spec}: folder options must be numbers")
        return FolderRows(Path(arg), num.get("size"), None if "gray" not in num else bool(num["gray"]),
                          num.get("limit"), name=spec)
    if kind == "array":
        return _array_rows(spec, role)
    ds = load_dataset(spec)
    x = ds.to_pixels(ds.pool).numpy()
    return ArrayRows(x, name=spec, kind="dataset", info={"what": "the whole training pool, data space"})


def _isnum(v: str) -> bool:
    try:
        float(v)
        return True
    except ValueError:
        return False


def load_embeddings(spec: str, rows: Rows, role: str) -> ArrayRows:
    """User embeddings for ``rows`` (one row per image, any width), checked for the row count."""
    e = _array_rows(spec, role)
    if len(e) != len(rows):
        raise DiffmemError(f"embeddings {spec} have {len(e)} rows but --{role} {rows.name} has {len(rows)} "
                           "images; compute one embedding per image, in the same order")
    e.sample_shape, e.d = (e.d,), e.d  # compared as flat vectors, whatever their layout
    e.channels_last = False
    return e


# ---------------------------------------------------------------------------- one space for both sides

SPACE_REFUSE = {"range_ratio": 1.8, "mean_shift": 1.0, "spread_ratio": 2.0}
SPACE_WARN = {"range_ratio": 1.3, "mean_shift": 0.5}


def space_stats(rows: Rows, max_rows: int = 2048) -> dict:
    """Value range, mean and spread of ``rows`` from at most ``max_rows`` evenly spaced rows.

    ``q_lo``/``q_hi``: 0.1 / 99.9 % quantiles of all values; ``spread``: the
    RMS distance of a row to the mean row; ``mean_row`` (numpy, not JSON).
    """
    n = len(rows)
    idx = np.unique(np.linspace(0, n - 1, min(n, max_rows)).round().astype(np.int64))
    x = rows[idx].astype(np.float64)
    if not np.isfinite(x).all():
        raise DiffmemError(f"{rows.name} contains NaN or infinite values")
    mu = x.mean(0)
    lo, hi = np.quantile(x, [0.001, 0.999])
    return {"min": float(x.min()), "max": float(x.max()), "q_lo": float(lo), "q_hi": float(hi),
            "mean": float(x.mean()), "spread": float(np.sqrt(((x - mu) ** 2).sum(1).mean())),
            "rows_used": int(idx.size), "mean_row": mu}


def compare_spaces(train: dict, samples: dict) -> dict:
    """Do the two sides live in one space?  Returns ``range_ratio``, ``mean_shift``, ``spread_ratio``, ``verdict``.

    * ``range_ratio``: the larger over the smaller width of the 0.1–99.9 %
      value ranges: [0, 1] against [−1, 1] images gives 2, [0, 255] gives 127.
    * ``mean_shift``: the distance between the two mean rows over the training
      spread (RMS distance of a training row to its mean).  Centred samples
      against uncentred digits give 1.2.
    * ``spread_ratio``: sample spread over training spread.

    ``verdict``: ``"refuse"`` when the ranges differ by more than 1.8× (a
    different scaling), or when the means are more than one spread apart
    while the spreads agree within 2× (a shifted copy of the same
    distribution: a different centring).  A generator collapsed onto one or a
    few training images also moves its mean by about one spread, but its
    spread collapses with it, so it is not refused -- it is exactly what the
    audit must see.  ``"warn"`` beyond 1.3× or half a spread; else ``"ok"``.
    """
    wt, ws = train["q_hi"] - train["q_lo"], samples["q_hi"] - samples["q_lo"]
    if min(wt, ws) <= 0:
        ratio = 1.0 if max(wt, ws) <= 0 else float("inf")
    else:
        ratio = max(wt, ws) / min(wt, ws)
    shift = float(np.linalg.norm(train["mean_row"] - samples["mean_row"]) / max(train["spread"], 1e-12))
    spread = samples["spread"] / max(train["spread"], 1e-12)
    verdict = "ok"
    if ratio > SPACE_WARN["range_ratio"] or shift > SPACE_WARN["mean_shift"]:
        verdict = "warn"
    lim = SPACE_REFUSE
    if ratio > lim["range_ratio"] or (shift > lim["mean_shift"] and 1 / lim["spread_ratio"] <= spread
                                      <= lim["spread_ratio"]):
        verdict = "refuse"
    return {"range_ratio": float(ratio), "mean_shift": shift, "spread_ratio": float(spread), "verdict": verdict,
            "train": {k: v for k, v in train.items() if k != "mean_row"},
            "samples": {k: v for k, v in samples.items() if k != "mean_row"}}


def to_pixels_u8(x: np.ndarray) -> np.ndarray:
    """Data-space images ``[..., C, H, W]`` in [−1, 1] → uint8 ``[..., H, W, C]`` (the inverse of the loaders)."""
    u = np.clip(np.rint((np.asarray(x, dtype=np.float64) + 1.0) * 127.5), 0, 255).astype(np.uint8)
    return np.moveaxis(u, -3, -1)
