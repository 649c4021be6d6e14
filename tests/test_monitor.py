"""The memorisation monitor (issue #12 item 4): a plain PyTorch loop, Lightning, diffmem's own train, resume.

A tiny EDM-preconditioned MLP trained full-batch (8 noise draws per image) on
n = 16 digits memorises within a few hundred Adam steps; f_mem (64 samples,
fixed seeds) first exceeds 0.2 around step 400.  Every step's noise comes from a generator seeded by the
step, so a restarted loop, a Lightning loop and the uninterrupted loop train
the same weights.
"""

import copy
import io
import json

import pytest
import torch

from diffmem.data import load_dataset
from diffmem.errors import DiffmemError
from diffmem.monitor import FmemAbove, MemorizationMonitor, StopAtTime

TOTAL, THRESHOLD, N, DRAWS = 800, 0.2, 16, 8


@pytest.fixture(scope="module")
def digits():
    torch.set_num_threads(1)
    ds = load_dataset("digits")
    return ds.subset(N, 0), ds.test[:64]


class Tiny(torch.nn.Module):
    """A user's own denoiser D(x, sigma): EDM preconditioning around a 2-layer MLP."""

    def __init__(self, d=64, width=256, sigma_data=0.5):
        super().__init__()
        torch.manual_seed(0)
        self.sd = sigma_data
        self.net = torch.nn.Sequential(torch.nn.Linear(d + 1, width), torch.nn.SiLU(), torch.nn.Linear(width, width),
                                       torch.nn.SiLU(), torch.nn.Linear(width, d))

    def forward(self, x, sigma):
        shape, x = x.shape, x.reshape(len(x), -1)
        s, sd = sigma.reshape(-1, 1).to(x.dtype), self.sd
        h = self.net(torch.cat([x / torch.sqrt(s * s + sd * sd), torch.log(s) / 4], 1))
        return (sd * sd / (s * s + sd * sd) * x + s * sd / torch.sqrt(s * s + sd * sd) * h).reshape(shape)


def edm_loss(model, y, step):
    g = torch.Generator().manual_seed(step)
    y = y.repeat(DRAWS, 1, 1, 1)  # 8 noise draws per image and step: memorises in a few hundred steps
    sigma = torch.exp(torch.randn(len(y), generator=g) * 1.2 - 1.2)
    noise = torch.randn(y.shape, generator=g)
    w = (sigma**2 + 0.25) / (sigma * 0.5) ** 2
    s = sigma.view(-1, 1, 1, 1)
    return (w.view(-1, 1, 1, 1) * (model(y + s * noise, sigma) - y) ** 2).mean()


def make(train, test, **kw):
    model = Tiny()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    mon = MemorizationMonitor(train, total_steps=TOTAL, per_decade=10, rules=[FmemAbove(THRESHOLD)], test=test,
                              gap_sigmas=8, **kw)
    return model, opt, mon


def loop(model, opt, monitors, train, start, end, snapshot_at=None):
    """A plain training loop; returns the step it stopped at and an optional snapshot (model, optimiser, monitor)."""
    snap = None
    if start == 0:
        for m in monitors:
            m.step(0, model)
    for step in range(start + 1, end + 1):
        loss = edm_loss(model, train, step)
        opt.zero_grad()
        loss.backward()
        opt.step()
        for m in monitors:
            m.step(step, model)
        if step == snapshot_at:
            buf = io.BytesIO()
            torch.save({"model": model.state_dict(), "optim": opt.state_dict(), "monitor": monitors[0].state_dict()},
                       buf)
            snap = buf.getvalue()
        if monitors[0].should_stop:
            return step, snap
    return end, snap


@pytest.fixture(scope="module")
def plain_run(digits):
    train, test = digits
    model, opt, mon = make(train, test)
    snap_step = min(s for s in mon.schedule if s >= 150)
    stop, snap = loop(model, opt, [mon], train, 0, TOTAL, snapshot_at=snap_step)
    return mon, stop, snap_step, snap


def test_plain_loop_stops_within_one_checkpoint_and_a_restart_continues_exactly(digits, plain_run):
    train, test = digits
    mon, stop, snap_step, snap = plain_run
    assert mon.should_stop and "f_mem" in mon.stop_reason and stop < TOTAL
    assert mon.history[-1]["step"] == stop and mon.history[-1]["f_mem"] > THRESHOLD
    assert all(h["f_mem"] <= THRESHOLD for h in mon.history[:-1])
    assert len(mon.history[-1]["gap_G"]) == 8 and mon.history[-1]["gap_peak"] > 0  # the per-σ gap history

    # restart from the snapshot (a killed loop), with a second monitor measuring at *every* step near the stop
    model, opt, mon2 = make(train, test)
    state = torch.load(io.BytesIO(snap), weights_only=True)  # plain numbers and tensors only
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optim"])
    mon2.load_state_dict(state["monitor"])
    i = mon.schedule.index(stop)
    dense = MemorizationMonitor(train, schedule=range(mon.schedule[i - 2] + 1, stop + 1), gap_sigmas=None)
    stop2, _ = loop(model, opt, [mon2, dense], train, snap_step, TOTAL)
    assert stop2 == stop
    assert mon2.history == mon.history  # the monitor's history continues exactly
    assert mon2.stop_reason == mon.stop_reason
    first = dense.first_above(THRESHOLD)  # the step at which f_mem first exceeds the threshold
    assert first is not None and mon.schedule[i - 1] < first <= stop, (first, mon.schedule[i - 2: i + 1])
    print(f"plain loop: f_mem first > {THRESHOLD} at step {first}; stopped at checkpoint {stop} "
          f"(previous checkpoint {mon.schedule[i - 1]}); monitor time {mon.seconds:.2f} s")


def test_lightning_callback_stops_at_the_same_step(digits, plain_run):
    pl = pytest.importorskip("lightning.pytorch", reason="PyTorch Lightning is not installed "
                             "(pip install 'diffmem[lightning]'; scripts/setup.sh installs it)")
    from diffmem.monitor_lightning import MemorizationCallback

    train, test = digits
    ref, stop, _, _ = plain_run

    class Module(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.model = Tiny()

        def forward(self, x, sigma):
            return self.model(x, sigma)

        def training_step(self, batch, batch_idx):
            return edm_loss(self.model, batch, self.global_step + 1)

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=3e-3)

    class FullBatch(torch.utils.data.IterableDataset):  # the whole training set as every batch
        def __iter__(self):
            while True:
                yield train

    _, _, mon = make(train, test)
    cb = MemorizationCallback(mon)
    trainer = pl.Trainer(max_steps=TOTAL, callbacks=[cb], logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, accelerator="cpu", devices=1)
    trainer.fit(Module(), train_dataloaders=torch.utils.data.DataLoader(FullBatch(), batch_size=None))
    assert trainer.global_step == stop
    assert mon.should_stop and mon.history[-1]["step"] == stop
    assert [h["step"] for h in mon.history] == [h["step"] for h in ref.history]
    for a, b in zip(mon.history, ref.history):
        assert a["n_flagged"] == b["n_flagged"]
    assert cb.state_dict()["history"] == mon.state_dict()["history"]
    assert float(trainer.callback_metrics["diffmem/f_mem"]) > THRESHOLD


def test_monitor_as_a_diffmem_callback_reads_the_evaluator_and_resumes(tmp_path):
    from diffmem.config import resolve_config
    from diffmem.train import train

    over = ["n=16", "steps=120", "threads=1", "eval.n_samples=32", "eval.quality=", "eval.n_boot=20",
            "eval.n_loss=32", "checkpoints_per_decade=6", "eval.gap_sigmas=4", "eval.n_gap=16",
            "model.width=32", "eval.sampler_steps=6"]
    cfg = resolve_config("digits", None, over)
    rule = StopAtTime(kappa=5.0, n=16)  # FSW25: stop at 0.5 * 5 * 16 = 40 steps
    full = MemorizationMonitor(rules=[rule])
    run = train(cfg, tmp_path / "full", callbacks=[full], progress=False)
    st = run.read_status()
    assert st["step"] == 40 and not st["finished"] and "FSW25" in st["stopped_by"]
    recs = [r for r in run.read_metrics() if r["metric"] == "f_mem"]
    assert [h["step"] for h in full.history] == [r["step"] for r in recs]
    assert [h["f_mem"] for h in full.history] == [r["value"] for r in recs]
    assert full.seconds == 0.0  # no second measurement: the evaluator's records are read
    assert len(full.history[-1]["gap_sigma"]) == 4

    killed = tmp_path / "killed"
    train(cfg, killed, callbacks=[MemorizationMonitor(rules=[rule])], progress=False, stop_after=20)
    again = MemorizationMonitor(rules=[rule])
    train(cfg, killed, callbacks=[again], progress=False)
    assert again.history == full.history and again.stop_reason == full.stop_reason
    before = (killed / "metrics.jsonl").read_bytes()
    train(cfg, killed, callbacks=[MemorizationMonitor(rules=[rule])], progress=False)  # a stopped run stays stopped
    assert (killed / "metrics.jsonl").read_bytes() == before
    assert json.loads((killed / "status.json").read_text())["step"] == 40


def test_bad_input_is_a_one_line_error(digits):
    train, _ = digits
    with pytest.raises(DiffmemError, match="no schedule"):
        MemorizationMonitor(train).step(1, Tiny())
    with pytest.raises(DiffmemError, match="threshold"):
        MemorizationMonitor(train, total_steps=10, threshold=0)
    with pytest.raises(DiffmemError, match="kappa"):
        StopAtTime(kappa=0, n=16)
    with pytest.raises(DiffmemError, match="expected"):
        MemorizationMonitor(train, schedule=[0]).step(0, lambda n: torch.zeros(n, 3))
    with pytest.raises(DiffmemError, match="other settings"):
        MemorizationMonitor(train, total_steps=10, n_samples=8).load_state_dict(
            MemorizationMonitor(train, total_steps=10).state_dict())
    m = MemorizationMonitor(train, schedule=[0], rules=[lambda step, h: "custom" if h[-1]["f_mem"] == 1 else None])
    e = m.step(0, lambda n: train[torch.arange(n) % len(train)])  # exact copies from any generator
    assert e["f_mem"] == 1.0 and e["wilson_low"] > 0.9 and m.stop_reason == "custom"
    assert copy.deepcopy(m.state_dict()) == m.state_dict()
