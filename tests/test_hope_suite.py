"""model=hope through memexp.run (in-process, tiny): the CMS periods, the schedules, EMA,
SGD, resume of the CMS gate, anomaly detection, and a loss that falls."""

from __future__ import annotations

import csv
import math

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from helpers import HOPE_TINY, QUIET, run_in_process

import memexp.run
import memexp.runs.drivers
from memexp.configs.rebuild import load_checkpoint

SHORT = [
    "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=2",
    "trainer.log_every_n_steps=1",
    "trainer.enable_checkpointing=true",
    "optim.warmup_steps=0",
    "optim.lr=1e-2",
]


class Probe(L.Callback):
    """Records, after every training batch: the optimizer step, the net's schedule values, the CMS levels' parameters."""

    def __init__(self):
        self.snapshots: dict[int, list[list[torch.Tensor]]] = {}  # global step -> per level, its parameters
        self.schedule: list[tuple[int, int, float, int]] = []  # (global step after the batch, net.step, surprise, mem_write)
        self.raw: list[dict[str, torch.Tensor]] = []  # the trained weights after each optimizer step
        self.gate_at_start = None

    def _snap(self, trainer, pl_module):
        self.snapshots[trainer.global_step] = [[p.detach().clone() for p in params] for params, _ in pl_module.cms_gate.schedule]

    def on_train_start(self, trainer, pl_module):
        self._snap(trainer, pl_module)
        self.gate_at_start = {k: v.clone() for k, v in pl_module.cms_gate._sums.items()}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        net = pl_module.net
        self.schedule.append((trainer.global_step, net.step, net.surprise_now, net.mem_write_now))
        if trainer.global_step not in self.snapshots:
            self._snap(trainer, pl_module)
            self.raw.append({k: v.detach().clone() for k, v in pl_module.state_dict().items() if k.startswith("net.")})


def run_probed(overrides, out, monkeypatch) -> tuple[dict, Probe]:
    """Run with `probe` among the trainer's callbacks (the train driver of memexp.runs.drivers gets it in its spec)."""
    probe = Probe()
    inner = memexp.runs.drivers.DRIVERS["train"]

    def with_probe(spec):
        return inner(spec.replace(extra_callbacks=[*spec.extra_callbacks, probe]))

    monkeypatch.setitem(memexp.runs.drivers.DRIVERS, "train", with_probe)
    return run_in_process(overrides, out), probe


def changed_levels(probe: Probe, step: int) -> list[bool]:
    before, after = probe.snapshots[step - 1], probe.snapshots[step]
    return [any(not torch.equal(a, b) for a, b in zip(lb, la)) for lb, la in zip(before, after)]


@pytest.mark.parametrize("accumulate", [1, 2])
def test_cms_levels_move_every_c_steps_and_schedules_ramp(accumulate, tiny_text, tmp_path, monkeypatch):
    periods, steps = [1, 2, 3], 7
    result, probe = run_probed(
        [
            "data=text",
            f"data.path={tiny_text}",
            *HOPE_TINY,
            *QUIET,
            *SHORT,
            f"model.cms_frequencies={periods}",
            f"trainer.max_steps={steps}",
            f"trainer.accumulate_grad_batches={accumulate}",
            "trainer.val_check_interval=100",
            "model.schedules={surprise_scale:{start:0.0,end:2.0,warmup_steps:4},mem_write:{start:32,end:8,warmup_steps:4}}",
        ],
        tmp_path,
        monkeypatch,
    )
    assert result["metrics"]["global_step"] == steps
    assert sorted(probe.snapshots) == list(range(steps + 1))
    for g in range(1, steps + 1):  # after optimizer step g (1-based), level l has moved iff g % C_l == 0
        assert changed_levels(probe, g) == [g % c == 0 for c in periods], g
    # Schedules follow the optimizer step (not the batch): ramp, then their endpoints from warmup_steps on.
    assert len(probe.schedule) == steps * accumulate
    for _, step, surprise, mem_write in probe.schedule:
        assert surprise == pytest.approx(2.0 * min(step, 4) / 4)
        assert mem_write == max(1, round(32 + (8 - 32) * min(step, 4) / 4))
    assert probe.schedule[0][2:] == (0.0, 32) and probe.schedule[-1][2:] == (2.0, 8)
    assert [s[1] for s in probe.schedule] == [i // accumulate for i in range(steps * accumulate)]


def _val_loss_of(ckpt, limit_batches: int) -> float:
    run = load_checkpoint(ckpt)
    run.datamodule.setup("fit")
    total, count = 0.0, 0
    with torch.no_grad():
        for i, batch in enumerate(run.datamodule.val_dataloader()):
            if i == limit_batches:
                break
            logits, _ = run.task.net(batch["input"], None)
            y = batch["target"]
            total += F.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), y.reshape(-1), ignore_index=-100, reduction="sum"
            ).item()
            count += int((y != -100).sum())
    return total / count


def _csv_losses(run_dir):
    with open(f"{run_dir}/csv/metrics.csv") as f:
        return [float(r["train/loss"]) for r in csv.DictReader(f) if r.get("train/loss")]


def test_ema_weights_are_what_validation_sees_and_what_is_saved(tiny_text, tmp_path, monkeypatch):
    decay, steps = 0.8, 30
    common = [
        "data=text",
        f"data.path={tiny_text}",
        *HOPE_TINY,
        *QUIET,
        *SHORT,
        f"trainer.max_steps={steps}",
        f"trainer.val_check_interval={steps}",
    ]
    plain, _ = run_probed([*common, "callbacks=default"], tmp_path / "plain", monkeypatch)
    ema, probe = run_probed(
        [*common, "callbacks=ema", f"callbacks.ema.decay={decay}", "callbacks.ema.update_starting_at_step=0"],
        tmp_path / "ema",
        monkeypatch,
    )
    # Without EMA the loss falls well below a uniform guess over the 66 characters.
    losses = _csv_losses(plain["run_dir"])
    assert losses[-1] < losses[0] - 0.8, losses
    assert plain["metrics"]["val/loss"] < math.log(66) - 0.9
    # Lightning's EMAWeightAveraging: the first update copies the weights, then avg <- decay avg + (1 - decay) w.
    avg = None
    for raw in probe.raw:
        avg = {k: v.clone() for k, v in raw.items()} if avg is None else {k: decay * avg[k] + (1 - decay) * raw[k] for k in raw}
    ck = torch.load(f"{ema['ckpt_dir']}/last.ckpt", map_location="cpu", weights_only=True)
    for k, v in avg.items():
        torch.testing.assert_close(ck["state_dict"][k], v, rtol=1e-5, atol=1e-6)
    assert any(not torch.allclose(probe.raw[-1][k], avg[k]) for k in avg)  # the average is not the last weights
    # Validation at the last step saw exactly those averaged weights; the plain run's differ.
    assert ema["metrics"]["val/loss"] == pytest.approx(_val_loss_of(f"{ema['ckpt_dir']}/last.ckpt", 2), rel=1e-4)
    assert ema["metrics"]["val/loss"] != pytest.approx(plain["metrics"]["val/loss"], abs=1e-5)


def test_sgd_trains(tiny_text, tmp_path):
    result = run_in_process(
        [
            "data=text",
            f"data.path={tiny_text}",
            *HOPE_TINY,
            *QUIET,
            *SHORT,
            "optim=sgd",
            "optim.warmup_steps=0",
            "optim.lr=0.1",
            "trainer.max_steps=25",
            "trainer.val_check_interval=25",
        ],
        tmp_path,
    )
    losses = _csv_losses(result["run_dir"])
    assert result["metrics"]["global_step"] == 25
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.3, losses


def test_resume_restores_the_cms_gate(tiny_text, tmp_path, monkeypatch):
    common = [
        "data=text",
        f"data.path={tiny_text}",
        *HOPE_TINY,
        *QUIET,
        *SHORT,
        "model.cms_frequencies=[1,4]",
        "trainer.val_check_interval=100",
        f"paths.checkpoint_root={tmp_path}/ck",
    ]
    first, _ = run_probed([*common, "trainer.max_steps=6"], tmp_path / "a", monkeypatch)
    saved = torch.load(f"{first['ckpt_dir']}/last.ckpt", map_location="cpu", weights_only=True)["memexp"]["cms_gate"]["sums"]
    assert all(s is None for s in saved[0]) and all(s is not None for s in saved[1])  # steps 5, 6 wait for step 8
    second, probe = run_probed([*common, "trainer.max_steps=9"], tmp_path / "b", monkeypatch)
    assert second["resumed_from_step"] == 6 and second["metrics"]["global_step"] == 9
    restored = list(probe.gate_at_start.values())
    assert len(restored) == len(saved[1])
    for got, want in zip(restored, saved[1]):
        torch.testing.assert_close(got, want)
    assert [changed_levels(probe, g) for g in (7, 8, 9)] == [[True, False], [True, True], [True, False]]


def test_hope_on_random_bytes_with_anomaly_detection(tmp_path):
    """model=hope data=random runs; trainer.detect_anomaly=true (the source's debug_anomaly) finds no
    in-place error, with several segments per window and the state carried across windows."""
    result = run_in_process(
        [
            "model=hope",
            "data=random",
            "model.dim=32",
            "model.depth=1",
            "model.heads=2",
            "model.max_len=16",
            "model.seq_len=16",
            "model.mem_write=8",
            "model.memory_capacity=4",
            "data.seq_len=24",
            "data.batch_size=2",
            "data.windows=stream",
            "trainer.detect_anomaly=true",
            "trainer.max_steps=3",
            "trainer.limit_val_batches=1",
            "trainer.limit_test_batches=1",
            *QUIET,
        ],
        tmp_path,
    )
    m = result["metrics"]
    assert m["global_step"] == 3
    assert abs(m["test/loss"] - math.log(256)) < 0.2  # random bytes: nothing to learn beyond a uniform guess
