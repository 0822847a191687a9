"""The training bars count optimiser steps against max_steps, across epochs, in one bar."""

from __future__ import annotations

import lightning as L
import pytest
from lightning.pytorch.demos.boring_classes import BoringModel

from memexp.runs.progress import StepProgressBar, StepTQDMProgressBar


@pytest.mark.parametrize("bar_class", [StepTQDMProgressBar, StepProgressBar])
def test_the_bar_counts_steps_across_epochs(bar_class, tmp_path):
    bar = bar_class(refresh_rate=1) if bar_class is StepTQDMProgressBar else bar_class(leave=True)
    # BoringModel's epoch has 64 batches: 100 steps cross an epoch boundary
    trainer = L.Trainer(
        max_steps=100,
        callbacks=[bar],
        logger=False,
        enable_checkpointing=False,
        limit_val_batches=0,
        default_root_dir=tmp_path,
        enable_model_summary=False,
    )
    trainer.fit(BoringModel())
    assert trainer.current_epoch >= 1
    if bar_class is StepTQDMProgressBar:
        assert (bar.train_progress_bar.n, bar.train_progress_bar.total) == (100, 100)
        assert bar.train_progress_bar.desc.startswith("step")
    else:
        (task,) = [t for t in bar.progress.tasks if t.id == bar.train_progress_bar_id]
        assert (task.completed, task.total) == (100, 100) and task.description.strip().endswith("step")
        assert len([t for t in bar.progress.tasks if "step" in t.description]) == 1  # one bar, not one per epoch


def test_the_summary_leaves_out_flops_that_were_not_counted(tmp_path, capsys):
    from memexp.runs.progress import RunSummary

    trainer = L.Trainer(max_steps=1, callbacks=[RunSummary()], logger=False, enable_checkpointing=False, limit_val_batches=0)
    trainer.fit(BoringModel())
    out = capsys.readouterr().out
    assert "Params" in out and "layer" in out and "Linear" in out
    assert "FLOPs" not in out


def test_a_default_run_prints_its_run_and_no_noise(tmp_path):
    """The default logger (W&B, offline) and progress bar; what a user sees on the console."""
    from conftest import TINY_MODEL, run_cli

    proc = run_cli(
        "memexp.run", "debug=fast", *TINY_MODEL, "sample_tokens=10", f"paths.output_dir={tmp_path}", cwd=tmp_path, timeout=300
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    noises = ("litlogger", "anonymous", "weights_only", "LeafSpec", "FLOPs", "Epoch 0/", "already configured", "v_num")
    for noise in (*noises, "│ lr-", "│ train/"):  # the last two: rows of the final table (val/test only)
        assert noise not in out, f"{noise!r} on the console:\n{out[-3000:]}"
    assert "20/20" in out and "test/loss" in out and "val/loss" in out and "checkpoint:" in out


def test_the_bar_rate_is_the_logged_steps_per_second(tmp_path, monkeypatch):
    """The bar's rate is optimiser steps per second (and tokens per second), as the ThroughputMonitor logs it."""
    import csv

    from conftest import TINY_MODEL, run_in_process

    seen = {}
    original = StepProgressBar.on_train_end

    def spy(self, trainer, pl_module):
        seen["rates"], seen["text"] = self.rate.rates(), self.rate.text()
        return original(self, trainer, pl_module)

    monkeypatch.setattr(StepProgressBar, "on_train_end", spy)
    overrides = [*TINY_MODEL, "logger=csv", "sample_tokens=0", "trainer.max_steps=80", "trainer.log_every_n_steps=20"]
    result = run_in_process([*overrides, "trainer.val_check_interval=40", "trainer.limit_val_batches=2"], tmp_path)
    rows = list(csv.DictReader(open(next((tmp_path / "runs").glob("**/csv/metrics.csv")))))
    logged = [float(r["train/device/batches_per_sec"]) for r in rows if r.get("train/device/batches_per_sec")]
    steps, tokens = seen["rates"]
    assert result["metrics"]["global_step"] == 80 and logged
    assert 0.5 < steps / logged[-1] < 2.0, (steps, logged)  # the same window of 20 steps; the machine is shared
    assert tokens == pytest.approx(steps * 8 * 32, rel=1e-6)  # batch 8 x 32 tokens per step
    assert seen["text"].endswith("tok/s") and "steps/s" in seen["text"]
