"""Issue #12: the audit reads both sides in one space, intervals honest at 0 and 1, inputs, outputs, bad input."""

import json

import numpy as np
import pytest
from PIL import Image

from diffmem.cli import main
from diffmem.metrics.memorization import binomial_interval, bootstrap_fraction

KEYS = {"f_mem", "stderr", "ci95", "boot_mean", "n_samples", "n_train", "threshold", "n_boot", "memorized",
        "nearest_train", "ratio_quantiles", "train", "samples"}
EMPIRICAL = ["--preset", "digits", "model.name=empirical", "n=16", "threads=1", "eval.n_samples=24",
             "eval.quality=fd_pixel", "eval.n_boot=20", "eval.n_loss=32", "eval.gap_sigmas=0", "eval.trajectory=0",
             "eval.fd_gap=false"]


def _cli(capsys, *argv):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def _audit(capsys, *argv):
    rc, out, err = _cli(capsys, "audit", *argv, "--json")
    assert rc == 0, err
    return json.loads(out)


def _one_line_error(rc, out, err, *needles):
    assert rc == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("diffmem: error: "), err
    for n in needles:
        assert n in lines[0], err


def _pngs(folder, u8):
    folder.mkdir(parents=True, exist_ok=True)
    for i, im in enumerate(u8):
        Image.fromarray(im[..., 0] if im.shape[-1] == 1 else im).save(folder / f"{i:04d}.png")
    return folder


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """40 random 8×8 RGB training images as uint8 (N, H, W, C), and in [-1, 1] (N, C, H, W)."""
    d = tmp_path_factory.mktemp("img")
    u8 = np.random.default_rng(0).integers(0, 256, size=(40, 8, 8, 3), dtype=np.uint8)
    f = (u8.astype(np.float32) / 127.5 - 1.0).transpose(0, 3, 1, 2)
    np.save(d / "train_pm1.npy", f)
    np.save(d / "copies_u8.npy", u8[:10])
    _pngs(d / "train_png", u8)
    _pngs(d / "copies_png", u8[5:15])
    return d


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    r = tmp_path_factory.mktemp("emp") / "run"
    assert main(["train", "--out", str(r), "--no-progress", *EMPIRICAL]) == 0
    return r


# ----------------------------------------------------------------------------- one space for both sides

def test_uint8_copies_against_pm1_training_data(images, capsys):
    r = _audit(capsys, "--train", images / "train_pm1.npy", "--samples", images / "copies_u8.npy")
    assert r["f_mem"] == 1.0 and r["nearest_train"] == list(range(10))
    assert KEYS <= set(r) and r["space_check"]["verdict"] == "ok"
    # PNG folders on either side, read as stored (RGB, 8x8)
    r = _audit(capsys, "--train", images / "train_png", "--samples", images / "copies_png")
    assert r["f_mem"] == 1.0 and r["nearest_train"] == list(range(5, 15))
    assert r["inputs"]["train"]["kind"] == "folder" and r["inputs"]["train"]["sample_shape"] == [3, 8, 8]
    r = _audit(capsys, "--train", images / "train_pm1.npy", "--samples", images / "copies_png")
    assert r["f_mem"] == 1.0


def test_scale_mismatch_is_refused_unless_allowed(images, tmp_path, capsys):
    x = np.load(images / "train_pm1.npy")
    np.save(tmp_path / "unit.npy", (x[:10] + 1) / 2)  # [0, 1] images against [-1, 1] ones
    out = tmp_path / "o" / "a.json"
    rc, so, err = _cli(capsys, "audit", "--train", images / "train_pm1.npy", "--samples", tmp_path / "unit.npy",
                       "--json", "--out", out)
    _one_line_error(rc, so, err, "different spaces", "range ratio 2", "--allow-space-mismatch")
    assert not out.parent.exists()
    r = _audit(capsys, "--train", images / "train_pm1.npy", "--samples", tmp_path / "unit.npy",
               "--allow-space-mismatch")
    assert r["space_check"]["verdict"] == "refuse"


def test_sample_in_data_space_against_exported_training_images(run, tmp_path, capsys):
    t = tmp_path / "train.npy"
    assert _cli(capsys, "export-train", "--run", run, "--out", t)[0] == 0
    assert _cli(capsys, "export-train", "--run", run, "--out", tmp_path / "train_png")[0] == 0
    assert _cli(capsys, "sample", "--run", run, "--space", "data", "--out", tmp_path / "s.npy")[0] == 0
    assert _cli(capsys, "sample", "--run", run, "--out", tmp_path / "s_png")[0] == 0
    assert len(list((tmp_path / "train_png").iterdir())) == 16 and len(list((tmp_path / "s_png").iterdir())) == 24
    for samples in ("s.npy", "s_png"):
        for train in ("train.npy", "train_png"):
            r = _audit(capsys, "--train", tmp_path / train, "--samples", tmp_path / samples)
            assert r["f_mem"] == 1.0 and r["n_train"] == 16 and r["n_samples"] == 24, (samples, train)
    r = _audit(capsys, "--samples", run)  # a run against its own training subset
    assert r["f_mem"] == 1.0 and r["samples"].endswith("@0")
    # model-space samples (the default of `diffmem sample` to .npy) against data-space images: refused
    assert _cli(capsys, "sample", "--run", run, "--out", tmp_path / "m.npy")[0] == 0
    rc, so, err = _cli(capsys, "audit", "--train", t, "--samples", tmp_path / "m.npy", "--json")
    _one_line_error(rc, so, err, "mean shift")
    r = _audit(capsys, "--train", t, "--samples", tmp_path / "m.npy", "--allow-space-mismatch")
    assert r["f_mem"] < 1.0  # the silent wrong answer the check prevents


def test_evaluator_records_wilson_keys(run):
    recs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    fm = next(r for r in recs if r["metric"] == "f_mem")
    assert fm["value"] == 1.0 and fm["n"] == 24 and fm["n_flagged"] == 24
    assert fm["wilson_low"] == pytest.approx(binomial_interval(24, 24)[0]) and fm["wilson_high"] == 1.0
    assert {"ci_low", "ci_high", "error"} <= set(fm)


# ----------------------------------------------------------------------------- intervals

def test_zero_of_200_has_an_honest_upper_bound(tmp_path, capsys):
    b = bootstrap_fraction(np.zeros(200, bool), n_boot=1000)
    assert b["ci95"] == [0.0, 0.0]  # the bootstrap collapses
    assert b["ci95_wilson"][0] == 0 and b["ci95_wilson"][1] == pytest.approx(0.01885, abs=5e-5)
    assert b["ci95_exact"][0] == 0 and b["ci95_exact"][1] == pytest.approx(0.01828, abs=5e-5)
    lo, hi = binomial_interval(200, 200, "exact")
    assert hi == 1.0 and lo == pytest.approx(1 - 0.01828, abs=5e-5)
    rng = np.random.default_rng(1)
    np.save(tmp_path / "t.npy", rng.normal(size=(300, 16)).astype(np.float32))
    np.save(tmp_path / "s.npy", rng.normal(size=(200, 16)).astype(np.float32))
    r = _audit(capsys, "--train", tmp_path / "t.npy", "--samples", tmp_path / "s.npy")
    assert r["f_mem"] == 0 and r["n_flagged"] == 0 and r["ci95_wilson"][1] == pytest.approx(0.0188, abs=1e-4)


def test_tau_mem_uses_the_wilson_bound(tmp_path):
    from diffmem.analysis import TauDefinitions, _estimate, load_run

    run = tmp_path / "r"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"n": 32, "eval": {"n_samples": 500}}))
    ks = [0, 0, 1, 2, 2, 3, 6, 20, 60]
    steps = [0, 10, 20, 40, 80, 160, 320, 640, 1280]
    lines = []
    for s, k in zip(steps, ks):
        f = k / 500
        boot = bootstrap_fraction(np.arange(500) < k, n_boot=400, seed=s)
        lines.append({"step": s, "metric": "f_mem", "value": f, "error": boot["stderr"], "ci_low": boot["ci95"][0],
                      "ci_high": boot["ci95"][1]})  # a run recorded before the Wilson keys existed
    (run / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    taus = {}
    for iv in ("bootstrap", "wilson"):
        r = load_run(run)
        _estimate(r, TauDefinitions(tau_mem_interval=iv), None)
        taus[iv] = r.tau_mem.value
    assert taus["wilson"] == 20  # k >= 1 at two consecutive checkpoints: the Wilson bound is > 0
    assert taus["bootstrap"] > taus["wilson"]  # the bootstrap bound stays 0 until k ~ 4


# ----------------------------------------------------------------------------- inputs and outputs

def test_npy_is_streamed_by_offset_and_npz_members_too(images, tmp_path):
    from diffmem.audit_sources import open_rows

    x = np.load(images / "train_pm1.npy")
    np.savez(tmp_path / "a.npz", x=x, labels=np.arange(40))
    for spec in (images / "train_pm1.npy", tmp_path / "a.npz"):
        rows = open_rows(str(spec), "train")
        assert rows.info["read"].startswith("by offset") and rows.shape == (40, 192)
        np.testing.assert_array_equal(rows[3:7], x[3:7].reshape(4, -1))
        np.testing.assert_array_equal(rows[np.array([9, 2])], x[[9, 2]].reshape(2, -1))


def test_embeddings_space_and_gallery(images, tmp_path, capsys):
    rng = np.random.default_rng(3)
    et = rng.normal(size=(40, 5)).astype(np.float32)
    np.save(tmp_path / "et.npy", et)
    np.save(tmp_path / "es.npy", et[5:15] + 1e-3)
    g, h, o = tmp_path / "g" / "gal.png", tmp_path / "g" / "gal.html", tmp_path / "g" / "a.json"
    rc, out, err = _cli(capsys, "audit", "--train", images / "train_png", "--samples", images / "copies_png",
                        "--space", "embeddings", "--train-emb", tmp_path / "et.npy", "--samples-emb",
                        tmp_path / "es.npy", "--json", "--gallery", g, "--gallery-html", h, "--out", o,
                        "--gallery-k", "6")
    assert rc == 0 and err == ""  # --json: no progress bar
    r = json.loads(out)
    assert r["space"] == "embeddings" and r["f_mem"] == 1.0 and json.loads(o.read_text()) == r
    assert KEYS <= set(r) and sum(r["ratios"]["histogram"]["counts"]) == 10
    assert Image.open(g).size[0] > 300
    page = h.read_text()
    assert page.count("data:image/png;base64") == 1 + 6 * 3 and "http" not in page.replace("http-equiv", "")
    assert sorted(p.name for p in g.parent.iterdir()) == ["a.json", "gal.html", "gal.png"]


def test_folder_preprocessing_matches_training(tmp_path, capsys):
    """Mixed sizes are an error as stored, and fine with ?size= (resize + centre-crop as data= does)."""
    rng = np.random.default_rng(2)
    folder = tmp_path / "mixed"
    folder.mkdir()
    for i in range(6):
        w = 12 if i % 2 else 10
        Image.fromarray(rng.integers(0, 256, size=(w, w, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    (folder / "README.txt").write_text("captions")
    rc, out, err = _cli(capsys, "audit", "--train", folder, "--samples", folder, "--json")
    _one_line_error(rc, out, err, "different sizes", "?size=")
    r = _audit(capsys, "--train", f"{folder}?size=8&gray=1", "--samples", f"{folder}?size=8&gray=1")
    assert r["f_mem"] == 1.0 and r["inputs"]["train"]["sample_shape"] == [1, 8, 8]
    assert r["inputs"]["train"]["skipped_non_image"] == 1


# ----------------------------------------------------------------------------- bad input

@pytest.fixture
def bad(tmp_path, images, run):
    (tmp_path / "empty").mkdir()
    junk = tmp_path / "junk"
    _pngs(junk, np.zeros((3, 8, 8, 3), np.uint8))
    (junk / "broken.png").write_bytes(b"not a png at all")
    np.save(tmp_path / "emb_short.npy", np.zeros((39, 4), np.float32))
    np.save(tmp_path / "emb_s.npy", np.zeros((10, 4), np.float32))
    nos = tmp_path / "nosamples"
    assert main(["train", "--out", str(nos), "--no-progress", *EMPIRICAL, "eval.save_samples=false"]) == 0
    return tmp_path


BAD = [
    (["--train", "{T}", "--samples", "{bad}/empty"], "holds no images"),
    (["--train", "{bad}/junk", "--samples", "{T}"], "cannot read image"),
    (["--train", "{T}", "--samples", "{S}", "--space", "embeddings", "--train-emb", "{bad}/emb_short.npy",
      "--samples-emb", "{bad}/emb_s.npy"], "have 39 rows but --train"),
    (["--samples", "{bad}/nosamples"], "has no saved samples"),
    (["--samples", "{run}@5"], "no samples at step 5"),
    (["--train", "{T}", "--samples", "{S}", "--gallery", "{bad}/g.jpg"], "--gallery must end in .png"),
    (["--samples", "{S}"], "--train is required"),
]


@pytest.mark.parametrize("argv,needle", BAD, ids=[b[1][:24] for b in BAD])
def test_bad_input_one_line_exit_2_nothing_written(bad, images, run, capsys, argv, needle):
    fill = {"T": images / "train_pm1.npy", "S": images / "copies_u8.npy", "bad": bad, "run": run}
    argv = [a.format(**fill) for a in argv]
    out = bad / "res"
    rc, so, err = _cli(capsys, "audit", *argv, "--json", "--out", out / "a.json", *(
        [] if "--gallery" in argv else ["--gallery", out / "g.png"]))
    _one_line_error(rc, so, err, needle)
    assert not out.exists()


def test_sample_and_export_refuse_bad_outputs(run, tmp_path, capsys):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x.png").write_bytes(b"")
    cases = [(["sample", "--run", run, "--space", "model", "--out", tmp_path / "png_dir"], "--space model"),
             (["export-train", "--run", run, "--out", tmp_path / "full"], "not an empty folder"),
             (["export-train", "--run", run, "--out", tmp_path / "x.csv"], "must end in .npy"),
             (["export-train", "--run", tmp_path, "--out", tmp_path / "t.npy"], "not a run directory")]
    for argv, needle in cases:
        _one_line_error(*_cli(capsys, *argv), needle)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["full"]
