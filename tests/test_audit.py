"""`diffmem audit`: array loading, the audit dict, and the command end to end (exit codes, files)."""

import json

import numpy as np
import pytest

from diffmem import audit as audit_mod
from diffmem.audit import audit, load_array
from diffmem.errors import DiffmemError

REQUIRED = {"f_mem", "stderr", "ci95", "n_samples", "n_train", "memorized"}


@pytest.fixture
def files(tmp_path):
    rng = np.random.default_rng(0)
    train = rng.normal(size=(300, 2, 4, 4)).astype(np.float32)
    samples = np.concatenate([train[:25] + 1e-3 * rng.normal(size=(25, 2, 4, 4)),
                              rng.normal(size=(75, 2, 4, 4))]).astype(np.float32)
    p = {"train": tmp_path / "train.npy", "samples": tmp_path / "samples.npz"}
    np.save(p["train"], train)
    np.savez(p["samples"], samples=samples, labels=np.arange(100))
    bad = samples.copy()
    bad[7, 1, 2, 3] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    np.save(tmp_path / "dims.npy", samples[:, :1])
    np.save(tmp_path / "one.npy", train[:1])
    np.savez(tmp_path / "ambiguous.npz", a=samples, b=samples)
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    (tmp_path / "samples.txt").write_text("1 2 3\n")
    p["dir"] = tmp_path
    return p


# ----------------------------------------------------------------------------- load_array

def test_load_array_variants(tmp_path):
    x = np.arange(12.0).reshape(3, 4)
    np.save(tmp_path / "a.npy", x)
    np.savez(tmp_path / "single.npz", whatever=x)
    np.savez(tmp_path / "generic.npz", x=x, labels=np.arange(3))
    np.savez(tmp_path / "roles.npz", train=x, samples=x + 1)
    np.testing.assert_array_equal(load_array(tmp_path / "a.npy"), x)
    np.testing.assert_array_equal(load_array(tmp_path / "single.npz"), x)
    np.testing.assert_array_equal(load_array(tmp_path / "generic.npz"), x)
    np.testing.assert_array_equal(load_array(tmp_path / "roles.npz", role="samples"), x + 1)
    np.testing.assert_array_equal(load_array(f"{tmp_path / 'roles.npz'}?key=train"), x)
    np.testing.assert_array_equal(load_array(tmp_path / "roles.npz", key="samples"), x + 1)
    with pytest.raises(DiffmemError, match="several arrays .*train, samples"):
        load_array(tmp_path / "roles.npz")
    with pytest.raises(DiffmemError, match="no array 'zz'"):
        load_array(f"{tmp_path / 'roles.npz'}?key=zz")


@pytest.mark.parametrize("name,match", [
    ("missing.npy", "file not found"),
    ("samples.txt", "expected a .npy or .npz file"),
    ("objects.npy", "Python objects"),
    ("ambiguous.npz", "several arrays"),
])
def test_load_array_errors(files, name, match):
    with pytest.raises(DiffmemError, match=match):
        load_array(files["dir"] / name)


def test_load_array_rejects_strings(tmp_path):
    np.save(tmp_path / "s.npy", np.array(["a", "b"]))
    with pytest.raises(DiffmemError, match="expected numbers"):
        load_array(tmp_path / "s.npy")


# ----------------------------------------------------------------------------- audit()

def test_audit_dict(files):
    train, samples = load_array(files["train"]), load_array(files["samples"], role="samples")
    r = audit(train, samples, n_boot=500, seed=1)
    assert REQUIRED <= set(r)
    assert r["f_mem"] == pytest.approx(0.25) and r["memorized"] == list(range(25))
    assert r["nearest_train"] == list(range(25))
    assert r["n_samples"] == 100 and r["n_train"] == 300
    assert r["ci95"][0] < 0.25 < r["ci95"][1]
    assert set(r["ratio_quantiles"]) == {"p5", "p25", "p50", "p75", "p95"}
    json.dumps(r)  # serialisable


# ----------------------------------------------------------------------------- the command

def _run_direct(argv, capsys):
    rc = audit_mod.main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


def _run_cli(argv, capsys):
    from diffmem.cli import main

    rc = main(["audit", *argv])
    out, err = capsys.readouterr()
    return rc, out, err


RUNNERS = {"direct": _run_direct, "cli": _run_cli}


@pytest.mark.parametrize("runner", list(RUNNERS))
def test_audit_command_json_and_out(files, capsys, runner):
    out_file = files["dir"] / "res" / "audit.json"
    rc, out, err = RUNNERS[runner](["--train", str(files["train"]), "--samples", str(files["samples"]),
                                    "--json", "--n-boot", "200", "--seed", "3", "--out", str(out_file)], capsys)
    assert rc == 0, err
    r = json.loads(out)
    assert REQUIRED <= set(r)
    assert r["f_mem"] == pytest.approx(0.25) and len(r["ci95"]) == 2 and r["memorized"] == list(range(25))
    assert json.loads(out_file.read_text()) == r
    assert sorted(p.name for p in out_file.parent.iterdir()) == ["audit.json"]  # no temporary left
    # human summary without --json; threshold option honoured
    rc, out, err = RUNNERS[runner](["--train", str(files["train"]), "--samples", str(files["samples"]),
                                    "--threshold", "0.25"], capsys)
    assert rc == 0 and "f_mem = 0.2500" in out and "d1/d2 < 0.25" in out


@pytest.mark.parametrize("runner", list(RUNNERS))
@pytest.mark.parametrize("case,match", [
    ("nan.npy", "NaN"),
    ("dims.npy", "features per row"),
    ("one.npy|train", "at least 2 training points"),
    ("missing.npy", "file not found"),
    ("samples.txt", "expected a .npy or .npz"),
    ("ambiguous.npz", "several arrays"),
    ("objects.npy", "Python objects"),
])
def test_audit_command_bad_input(files, capsys, runner, case, match):
    name, _, role = case.partition("|")
    train, samples = str(files["train"]), str(files["samples"])
    if role == "train":
        train = str(files["dir"] / name)
    else:
        samples = str(files["dir"] / name)
    out_file = files["dir"] / "out" / "r.json"
    rc, out, err = RUNNERS[runner](["--train", train, "--samples", samples, "--json", "--out", str(out_file)], capsys)
    assert rc == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("diffmem: error: ") and match in lines[0], err
    assert not out_file.exists() and not (files["dir"] / "out").exists()


def test_audit_command_bad_threshold(files, capsys):
    rc, out, err = _run_direct(["--train", str(files["train"]), "--samples", str(files["samples"]),
                                "--threshold", "0"], capsys)
    assert rc == 2 and err.startswith("diffmem: error: threshold")
