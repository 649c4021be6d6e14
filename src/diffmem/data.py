"""Data sets: the embedded default, the BUBM25 Gaussian mixture, local images and arrays.

Every loader returns a :class:`Dataset`: a *pool* of training-eligible points,
a disjoint held-out *test* set, the per-sample ``shape`` and what is needed to
map model space back to pixels.  Training sets are nested prefixes of one
seeded shuffle of the pool (``subset(64, s)`` is ``subset(128, s)[:64]``), so a
sweep over n adds points rather than redrawing them.

Data specs (``RunConfig.data``, ``diffmem train data=...``)::

    digits                      scikit-learn's 8×8 digits (inside its wheel; no download)
    gmm[:d=8,mu=1,pool=16384,test=2048,seed=0]   ½N(μ1_d, I) + ½N(−μ1_d, I) with its exact score
    bdkos25-2d[?test=200]       BDKOS25's 20 2-D points numpy.random.seed(1); randn(20, 2) (pool = all 20)
    PATH/TO/FOLDER[?size=32&gray=1&test=0.1]     a local image folder (png/jpg/bmp/gif/tif/webp)
    PATH/TO/ARRAY.npy|.npz[?test=0.1&centre=1]   an array (N, d), (N, H, W), (N, C, H, W) or (N, H, W, C)
    rhm:v=8,m=4,s=2,L=3,nc=8,seed=0[,pool=P,test=T,sample_seed=K]   token sequences of a random hierarchy
                                (FSW25; :func:`diffmem.grammar.load_rhm`, ``meta["kind"] == "tokens"``)

Preprocessing (BUBM25 CelebA): grayscale (``gray=1``), resize the shorter side
to ``size`` and centre-crop to ``size × size``, scale to [−1, 1], then centre by
subtracting the per-pixel pool mean (``centre=1``; no std scaling).  The same
centring is applied to the test set; ``Dataset.to_pixels`` undoes it.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from .dataset import Dataset
from .errors import DiffmemError

__all__ = ["Dataset", "GaussianMixture", "load_dataset", "load_bdkos25_2d", "bdkos25_points", "load_digits", "load_gmm", "load_image_folder",
           "load_array_dataset", "load_array", "parse_spec", "IMAGE_SUFFIXES"]

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm"}


class GaussianMixture:
    """``½N(μ, I) + ½N(−μ, I)`` with exact VE quantities at noise level σ.

    At ``x = y + σ n`` the marginal is ``½N(±μ, v I)`` with ``v = 1 + σ²``;
    score ``s(x) = μ tanh(x·μ / v)/v − x/v`` (SPEC §1 in OU time: the same with
    ``m_t = e^{−t}μ`` after the VP↔VE rescaling), denoiser ``D = x + σ² s``.
    """

    def __init__(self, mu: torch.Tensor):
        self.mu = mu.to(torch.float32)
        self.d = mu.numel()

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        sign = torch.randint(0, 2, (n, 1), generator=generator).float() * 2 - 1
        return sign * self.mu + torch.randn((n, self.d), generator=generator)

    def _v(self, x, sigma):
        s = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).reshape(-1, 1)
        return 1.0 + s * s

    def score(self, x: torch.Tensor, sigma) -> torch.Tensor:
        v = self._v(x, sigma)
        mu = self.mu.to(x)
        return mu * torch.tanh((x @ mu)[:, None] / v) / v - x / v

    def denoise(self, x: torch.Tensor, sigma) -> torch.Tensor:
        s = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).reshape(-1, 1)
        return x + s * s * self.score(x, sigma)

    def log_prob(self, x: torch.Tensor, sigma=0.0) -> torch.Tensor:
        v = self._v(x, sigma)[:, 0]
        mu = self.mu.to(x)
        q = lambda m: -((x - m) ** 2).sum(1) / (2 * v)  # noqa: E731
        return torch.logaddexp(q(mu), q(-mu)) - math.log(2) - 0.5 * self.d * torch.log(2 * math.pi * v)


def _check_finite(name: str, x: np.ndarray) -> None:
    bad = ~np.isfinite(x.reshape(len(x), -1)).all(1)
    if bad.any():
        raise DiffmemError(f"data {name!r} contains NaN or inf values in {int(bad.sum())} of {len(x)} rows "
                           f"(first bad row {int(np.flatnonzero(bad)[0])})")


def _split(name: str, x: np.ndarray, test, seed: int = 0, labels=None):
    """Seeded split into pool and held-out test; ``test`` is a count (≥ 1) or a fraction."""
    n = len(x)
    n_test = int(round(float(test) * n)) if float(test) < 1 else int(test)
    n_test = max(n_test, 1)
    if n - n_test < 2:
        raise DiffmemError(f"data {name!r} has {n} points: need at least 2 training points plus "
                           f"{n_test} held-out test points")
    perm = np.random.default_rng(seed).permutation(n)
    te, po = perm[:n_test], np.sort(perm[n_test:])
    lab = None if labels is None else torch.as_tensor(np.asarray(labels)[po])
    return x[po], x[te], lab


def _finish(name, pool, test, labels=None, centre=True, meta=None) -> Dataset:
    pool = torch.as_tensor(np.ascontiguousarray(pool), dtype=torch.float32)
    test = torch.as_tensor(np.ascontiguousarray(test), dtype=torch.float32)
    mean = None
    if centre:
        mean = pool.mean(0)
        pool, test = pool - mean, test - mean
    return Dataset(name=name, pool=pool, test=test, labels=labels, mean=mean, meta=dict(meta or {}))


def load_digits(test: int = 297, centre: bool = True, seed: int = 0) -> Dataset:
    """scikit-learn's 1797 8×8 digits as (1, 8, 8) images in [−1, 1], centred; 297 held out."""
    from sklearn.datasets import load_digits as _ld

    b = _ld()
    x = (b.images.astype(np.float32) / 8.0 - 1.0)[:, None]
    pool, te, lab = _split("digits", x, test, seed, labels=b.target)
    return _finish("digits", pool, te, lab, centre, {"source": "sklearn.datasets.load_digits", "test": int(test)})


def load_gmm(d: int = 8, mu: float = 1.0, pool: int = 16384, test: int = 2048, seed: int = 0) -> Dataset:
    """BUBM25's mixture ``½N(μ1_d, I) + ½N(−μ1_d, I)`` (not centred: its mean is 0)."""
    if d < 1 or pool < 2 or test < 1:
        raise DiffmemError(f"gmm needs d ≥ 1, pool ≥ 2, test ≥ 1; got d={d}, pool={pool}, test={test}")
    gm = GaussianMixture(torch.full((int(d),), float(mu)))
    g = torch.Generator().manual_seed(int(seed))
    x = gm.sample(int(pool) + int(test), generator=g)
    return Dataset(name=f"gmm:d={d}", pool=x[:pool].contiguous(), test=x[pool:].contiguous(), exact=gm,
                   meta={"d": d, "mu": mu, "seed": seed})


BDKOS25_TEST_SEED = 2


def bdkos25_points() -> np.ndarray:
    """BDKOS25's 2-D toy training set: ``numpy.random.seed(1); numpy.random.randn(20, 2)`` (float64, [20, 2])."""
    return np.random.RandomState(1).randn(20, 2)


def load_bdkos25_2d(test: int = 200) -> Dataset:
    """BDKOS25's toy (SPEC §4): the pool is exactly the 20 points of :func:`bdkos25_points` (not centred,
    not shuffled away: a closed form uses all of them, ``n = 20``).

    The points are draws of N(0, I₂), so the held-out set is ``test`` further
    draws of N(0, I₂) from a separate generator, ``RandomState(2).randn(test, 2)``
    (not part of the authors' setup: it only serves the test-loss probe of a
    ``diffmem train`` run; the BDKOS25 metrics use the training points alone).
    """
    test = int(test)
    if test < 1:
        raise DiffmemError(f"bdkos25-2d needs test ≥ 1 held-out points, got {test}")
    te = np.random.RandomState(BDKOS25_TEST_SEED).randn(test, 2)
    return Dataset(name="bdkos25-2d", pool=torch.as_tensor(bdkos25_points(), dtype=torch.float32),
                   test=torch.as_tensor(te, dtype=torch.float32),
                   meta={"source": "numpy.random.seed(1); randn(20, 2) (BDKOS25)", "test": test,
                         "test_seed": BDKOS25_TEST_SEED})


def _read_image(path: Path, size: int, gray: bool) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im = im.convert("L" if gray else "RGB")
            w, h = im.size
            s = size / min(w, h)
            nw, nh = max(size, round(w * s)), max(size, round(h * s))
            im = im.resize((nw, nh), Image.BICUBIC)
            left, top = (nw - size) // 2, (nh - size) // 2
            im = im.crop((left, top, left + size, top + size))
            a = np.asarray(im, dtype=np.float32)
    except (UnidentifiedImageError, OSError) as e:
        raise DiffmemError(f"cannot read image {path}: {e}") from None
    a = a[None] if a.ndim == 2 else a.transpose(2, 0, 1)
    return a / 127.5 - 1.0


def load_image_folder(path, size: int = 32, gray: bool = True, test=0.1, centre: bool = True,
                      limit: int | None = None, seed: int = 0, progress: bool = False) -> Dataset:
    """All images under ``path`` (recursive, sorted): grayscale, resize, centre-crop, [−1, 1], centre."""
    root = Path(path)
    if not root.is_dir():
        raise DiffmemError(f"image folder not found: {root}")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if limit:
        files = files[: int(limit)]
    if len(files) < 3:
        raise DiffmemError(f"image folder {root} holds {len(files)} images ({', '.join(sorted(IMAGE_SUFFIXES))}); "
                           "need at least 3 (2 training + 1 test)")
    if size < 1:
        raise DiffmemError(f"image size must be positive, got {size}")
    it = files
    if progress:
        from tqdm import tqdm

        it = tqdm(files, desc=f"loading {root.name}", unit="img")
    x = np.stack([_read_image(p, int(size), gray) for p in it])
    pool, te, _ = _split(str(root), x, test, seed)
    return _finish(str(root), pool, te, None, centre,
                   {"source": str(root), "size": size, "gray": gray, "n_files": len(files)})


def _as_samples(name: str, a: np.ndarray) -> np.ndarray:
    """(N, d) | (N, H, W) | (N, C, H, W) | (N, H, W, C) → float32 (N, ...) in model layout."""
    if a.dtype == object or not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
        raise DiffmemError(f"array {name!r} has non-numeric dtype {a.dtype}")
    if a.ndim < 2:
        raise DiffmemError(f"array {name!r} must have shape (N, ...) with N samples, got shape {a.shape}")
    if a.dtype == np.uint8:
        a = a.astype(np.float32) / 127.5 - 1.0
    a = a.astype(np.float32)
    if a.ndim == 3:
        a = a[:, None]
    elif a.ndim == 4 and a.shape[-1] in (1, 3, 4) and a.shape[1] not in (1, 3, 4):
        a = a.transpose(0, 3, 1, 2)
    return a


_GENERIC_KEYS = ("arr_0", "x")
_LABEL_KEYS = ("y", "labels", "targets")


def _split_key(path) -> tuple[Path, str | None]:
    s = str(path)
    head, sep, query = s.partition("?")
    if sep:
        k, eq, v = query.partition("=")
        if k != "key" or not eq or not v or "&" in v:
            raise DiffmemError(f"{s}: the only array option is ?key=NAME")
        return Path(head), v
    h2, sep2, key = s.rpartition(":")
    if sep2 and h2.lower().endswith(".npz") and key and "/" not in key and "\\" not in key:
        raise DiffmemError(f"{s}: name an array of an .npz as {h2}?key={key} (the data-spec syntax)")
    return Path(s), None


def _check_dtype(a: np.ndarray, where: str) -> np.ndarray:
    if a.dtype.kind == "c":
        raise DiffmemError(f"{where} holds complex numbers ({a.dtype}); diffmem needs real-valued data")
    if a.dtype.kind not in "fiub":
        raise DiffmemError(f"{where} holds an array of dtype {a.dtype}; expected numbers")
    if a.ndim == 0:
        raise DiffmemError(f"{where} holds a scalar; expected an array of shape (N, ...)")
    if a.shape[0] == 0:
        raise DiffmemError(f"{where} holds no rows (shape {a.shape})")
    return a


def npz_pick(path, keys: list[str], key: str | None = None, role: str | None = None) -> str:
    """Which array of an ``.npz`` holding ``keys`` to read (the rule of :func:`load_array`)."""
    data_keys = [k for k in keys if k not in _LABEL_KEYS] or keys
    if not keys:
        raise DiffmemError(f"{path} holds no arrays")
    if key is not None:
        if key not in keys:
            raise DiffmemError(f"{path} has no array {key!r}; it holds: {', '.join(keys)}")
        return key
    if len(data_keys) == 1:
        return data_keys[0]
    if role is not None and role in keys:
        return role
    generic = [k for k in _GENERIC_KEYS if k in keys]
    if len(generic) != 1:
        raise DiffmemError(f"{path} holds several arrays ({', '.join(keys)}); say which with {path}?key=KEY")
    return generic[0]


def load_array(path, role: str | None = None, key: str | None = None, with_labels: bool = False):
    """Read a numeric array from ``.npy`` (memory-mapped, never loaded whole) or ``.npz`` (never pickles).

    ``FILE.npz?key=KEY`` (or ``key=``) picks an array of an archive; otherwise
    the only one (label arrays ``y``/``labels``/``targets`` aside), else the
    one named ``role`` (e.g. ``"train"``), else the single one of ``arr_0`` /
    ``x``.  Raises :class:`DiffmemError` for a missing, empty or non-NumPy
    file, object/string/complex arrays, an array without rows, or an
    ambiguous archive (the message lists its keys).  ``with_labels``: return
    ``(array, labels or None)``.
    """
    path, k2 = _split_key(path)
    key = key or k2
    if not path.exists():
        raise DiffmemError(f"file not found: {path}")
    if not path.is_file():
        raise DiffmemError(f"not a file: {path}")
    if path.stat().st_size == 0:
        raise DiffmemError(f"{path} is empty (0 bytes)")
    ext = path.suffix.lower()
    labels = None
    if ext == ".npy":
        with path.open("rb") as f:
            if f.read(6) != b"\x93NUMPY":
                raise DiffmemError(f"{path} is not a .npy file (no NumPy header); save arrays with numpy.save")
        try:
            a = np.load(path, mmap_mode="r", allow_pickle=False)
        except ValueError as e:
            if "allow_pickle" in str(e) or "object" in str(e):
                raise DiffmemError(f"{path} holds Python objects, not a numeric array (refused: loading it would "
                                   "unpickle)") from None
            raise DiffmemError(f"cannot read {path}: {str(e).splitlines()[0]}") from None
        except (OSError, EOFError) as e:
            raise DiffmemError(f"cannot read {path} as a .npy array (truncated?): {e}") from None
        a = _check_dtype(a, str(path))
    elif ext == ".npz":
        try:
            z = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as e:
            raise DiffmemError(f"cannot read {path} as a .npz archive: {str(e).splitlines()[0]}") from None
        with z:
            keys = list(z.files)
            pick = npz_pick(path, keys, key, role)
            try:
                a = z[pick]
                if with_labels:
                    labels = next((z[k] for k in _LABEL_KEYS if k in keys and k != pick), None)
            except (ValueError, OSError, EOFError) as e:
                raise DiffmemError(f"{path}?key={pick}: cannot read a numeric array ({str(e).splitlines()[0]})") \
                    from None
        a = _check_dtype(a, f"{path}?key={pick}")
    else:
        raise DiffmemError(f"{path}: expected a .npy or .npz file, got {ext or 'no extension'!r}")
    return (a, labels) if with_labels else a


def load_array_dataset(path, test=0.1, centre: bool = True, key: str | None = None, seed: int = 0) -> Dataset:
    """A ``.npy``/``.npz`` array of samples (uint8 images are mapped to [−1, 1]); optional labels in npz ``y``."""
    a, labels = load_array(path, key=key, with_labels=True)
    p = Path(path)
    a = _as_samples(str(p), np.asarray(a))
    _check_finite(str(p), a)
    if labels is not None and len(labels) != len(a):
        labels = None
    pool, te, lab = _split(str(p), a, test, seed, labels)
    return _finish(str(p), pool, te, lab, centre, {"source": str(p)})


def parse_spec(spec: str) -> tuple[str, str, dict]:
    """``"kind:arg?k=v&k=v"`` → (kind, arg, options); kind inferred from the path when absent."""
    if not isinstance(spec, str) or not spec.strip():
        raise DiffmemError("empty data spec; use 'digits', 'gmm:d=8', an image folder or an .npy/.npz path")
    spec = spec.strip()
    opts: dict = {}
    if spec == "digits" or spec.startswith("digits?"):
        kind, arg, rest = "digits", "", spec[7:] if "?" in spec else ""
    elif spec == "bdkos25-2d" or spec.startswith("bdkos25-2d?"):
        kind, arg, rest = "bdkos25-2d", "", spec[11:] if "?" in spec else ""
    elif spec == "gmm" or spec.startswith("gmm:"):
        kind, arg, rest = "gmm", "", spec[4:].replace(",", "&")
    else:
        path, _, rest = spec.partition("?")
        for k in ("folder:", "array:"):
            if path.startswith(k):
                path = path[len(k):]
        p = Path(path).expanduser()
        if p.suffix.lower() in (".npy", ".npz"):
            kind = "array"
        elif p.is_dir():
            kind = "folder"
        elif not p.exists():
            raise DiffmemError(f"data not found: {spec!r} is neither a known data set (digits, gmm, bdkos25-2d) nor an "
                               "existing image folder or .npy/.npz file")
        else:
            raise DiffmemError(f"data {spec!r}: unsupported file type {p.suffix!r} (use a folder, .npy or .npz)")
        arg = str(p)
    for kv in filter(None, rest.split("&")):
        k, eq, v = kv.partition("=")
        if not eq:
            raise DiffmemError(f"data option {kv!r} in {spec!r} is not key=value")
        opts[k.strip()] = v.strip()
    return kind, arg, opts


def _num(v: str):
    try:
        f = float(v)
    except ValueError:
        raise DiffmemError(f"data option value {v!r} is not a number") from None
    return int(f) if f.is_integer() and "." not in v else f


_OPTIONS = {"digits": {"test", "centre", "seed"}, "bdkos25-2d": {"test"}, "gmm": {"d", "mu", "pool", "test", "seed"},
            "folder": {"size", "gray", "test", "centre", "limit", "seed"},
            "array": {"test", "centre", "key", "seed"}}
_CACHE: dict[str, Dataset] = {}


def load_dataset(spec: str, progress: bool = False) -> Dataset:
    """Load a data set from its spec (see the module docstring); cached per process."""
    if spec in _CACHE:
        return _CACHE[spec]
    if isinstance(spec, str) and spec.strip().startswith("rhm:"):  # token sequences (its own option syntax)
        from .grammar import load_rhm

        _CACHE[spec] = load_rhm(spec)
        return _CACHE[spec]
    kind, arg, opts = parse_spec(spec)
    bad = set(opts) - _OPTIONS[kind]
    if bad:
        raise DiffmemError(f"data {kind!r} takes no option {', '.join(sorted(bad))}; options: "
                           f"{', '.join(sorted(_OPTIONS[kind]))}")
    kw = {k: (v if k == "key" else _num(v)) for k, v in opts.items()}
    for k in ("centre", "gray"):
        if k in kw:
            kw[k] = bool(kw[k])
    if kind == "digits":
        ds = load_digits(**kw)
    elif kind == "gmm":
        ds = load_gmm(**kw)
    elif kind == "bdkos25-2d":
        ds = load_bdkos25_2d(**kw)
    elif kind == "folder":
        ds = load_image_folder(arg, progress=progress, **kw)
    else:
        ds = load_array_dataset(arg, **kw)
    _CACHE[spec] = ds
    return ds
