"""The training bars count optimiser steps against max_steps, across epochs, in one bar."""

from __future__ import annotations

import csv

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


def test_the_summary_is_one_line_without_flops_that_were_not_counted(tmp_path, capsys):
    from memexp.runs.progress import RunSummary

    trainer = L.Trainer(
        max_steps=1,
        callbacks=[RunSummary()],
        logger=False,
        enable_checkpointing=False,
        limit_val_batches=0,
        enable_progress_bar=False,
    )
    trainer.fit(BoringModel())
    out = capsys.readouterr().out
    assert out.splitlines() == [
        "model: Linear, 66 trainable and 0 frozen parameters (0.000 MB), 1 modules in train mode, 0 in eval mode"
    ]


def test_a_default_run_prints_its_run_and_no_noise(tmp_path):
    """The default logger (W&B, offline) and progress bar; what a user sees on the console, and what the log holds."""
    from helpers import TINY_MODEL, run_cli

    proc = run_cli(
        "memexp.run", "debug=fast", *TINY_MODEL, "sample_tokens=10", f"paths.output_dir={tmp_path}", cwd=tmp_path, timeout=300
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    noises = ("litlogger", "anonymous", "weights_only", "LeafSpec", "FLOPs", "Epoch 0/", "already configured", "v_num")
    lightning = ("GPU available", "TPU available", "Restoring states", "`Trainer.fit` stopped")
    wandb = ("wandb:", "Run summary", "Run history")
    for noise in (*noises, *lightning, *wandb, "│ lr-", "│ train/"):  # the last two: rows of the final table
        assert noise not in out, f"{noise!r} on the console:\n{out[-3000:]}"
    assert "20/20" in out and "test/loss" in out and "val/loss" in out and "checkpoint:" in out
    assert "steps/s" in out and "tok/s" in out and "it/s" not in out
    # besides the progress bars, the final table and the sample: at most about 15 lines
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    table = [ln for ln in lines if ln[:1] in "┏┃┡│└" or "metrics" in ln]
    bars = [ln for ln in lines if "━" in ln or ln.startswith(" ")]
    rest = [ln for ln in lines if ln not in table and ln not in bars]
    assert len(rest) <= 15, "\n".join(rest)
    (log,) = (tmp_path / "runs").glob("*/*/memexp.log")  # what the console said, and Lightning's lines
    text = log.read_text()
    for line in ("threads: ", "model: Transformer", "W&B: offline run", "checkpoint:", "run folder:", "GPU available"):
        assert line in text, f"{line!r} not in memexp.log:\n{text}"
    assert "test/loss" in text


def test_a_failed_run_and_read_only_commands_leave_no_run_folder(tmp_path):
    from helpers import QUIET, TINY_MODEL, run_cli

    failed = run_cli("memexp.run", "model=hgd", f"paths.output_dir={tmp_path}")  # the pairing check fails in the run
    assert failed.returncode == 2 and failed.stderr.strip().splitlines()[-1].startswith("error: model=hgd")
    typo = run_cli("memexp.run", "model.dimm=3", f"paths.output_dir={tmp_path}")  # composition fails before Hydra runs
    assert typo.returncode == 2 and typo.stderr.strip().splitlines()[-1].startswith("error: model.dimm")
    assert not (tmp_path / "runs").exists(), sorted(tmp_path.rglob("*"))
    trained = run_cli("memexp.run", "debug=fast", *TINY_MODEL, *QUIET, f"paths.output_dir={tmp_path}")
    assert trained.returncode == 0, trained.stderr[-2000:]
    (ckpt,) = (tmp_path / "checkpoints").glob("*/*/last.ckpt")
    gen = run_cli("memexp.generate", f"ckpt={ckpt}", "max_new_tokens=5", f"paths.output_dir={tmp_path}")
    ev = run_cli("memexp.evaluate", f"ckpt={ckpt}", "splits=[test]", f"paths.output_dir={tmp_path}")
    assert gen.returncode == 0 and ev.returncode == 0, gen.stderr[-2000:] + ev.stderr[-2000:]
    assert not (tmp_path / "generate").exists() and not (tmp_path / "evaluate").exists()
    report = run_cli("memexp.evaluate", f"ckpt={ckpt}", "eval=binned_ppl", "lengths=[16,32]", f"paths.output_dir={tmp_path}")
    assert report.returncode == 0, report.stderr[-2000:]
    assert len(list((tmp_path / "evaluate").glob("*/*/reports/binned_ppl.csv"))) == 1  # it wrote: the folder stays


def test_the_bar_rate_is_the_logged_steps_per_second(tmp_path, monkeypatch):
    """The bar's rate is optimiser steps per second (and tokens per second), as the ThroughputMonitor logs it."""

    from helpers import TINY_MODEL, run_in_process

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


def test_a_resumed_run_logs_what_the_uninterrupted_run_logs_and_keeps_its_csv_history(tmp_path):
    """The same command with a longer budget continues from the run's checkpoint in the same run folder, twice: after
    3 steps (within the first epoch of 4 batches, a validation on its last step) and after 4 (at the epoch's end, no
    validation on its last step). Its csv/metrics.csv is the uninterrupted run's: every training step once, with the
    same step, epoch and loss (the same batches), and the validations at the same steps and epochs. The console says
    "resumed from step N", not Lightning's warnings that the checkpoint and log folders are not empty, nor its advice
    about an epoch shorter than the logging interval, which it counts in global steps anyway."""
    from helpers import QUIET, run_cli

    tiny = ["model=lstm", "model.hidden_size=16", "model.embedding_size=16", "data=mqar", "data.vocab_size=16"]
    tiny += ["data.seq_len=16", "data.num_kv_pairs=2", "data.num_examples=256", "data.num_test_examples=32"]
    tiny += ["trainer.val_check_interval=3", "trainer.log_every_n_steps=1", *QUIET]

    def run(steps: int, name: str) -> tuple[str, list, list, int]:
        proc = run_cli(
            "memexp.run", *tiny, f"trainer.max_steps={steps}", f"paths.output_dir={tmp_path / name}",
            f"hydra.run.dir={tmp_path / name / 'run'}", timeout=300,
        )  # fmt: skip
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0, out[-3000:]
        rows = list(csv.DictReader(open(tmp_path / name / "run" / "csv" / "metrics.csv")))
        train = [(int(r["step"]), r["epoch"], r["train/loss"]) for r in rows if r.get("train/loss")]
        val = [(int(r["step"]), r["epoch"]) for r in rows if r.get("val/acc")]
        return out, train, val, sum(1 for r in rows if r.get("test/acc"))

    logged = {}
    for steps in (3, 4, 8):
        out, train, val, tests = run(steps, "resumed")
        assert "exists and is not empty" not in out and "logging interval" not in out, out[-3000:]
        assert tests == 1  # the earlier run's test row went with its steps after the checkpoint
        logged[steps] = train
        if steps > 3:
            assert f"resumed from step {3 if steps == 4 else 4}" in out
    assert logged[8][:3] == logged[3] and logged[8][:4] == logged[4]  # the earlier runs' rows, kept as they were
    _, whole, whole_val, _ = run(8, "whole")
    assert [s for s, _, _ in whole] == list(range(8))
    # Lightning resumed the state saved after a fit by replaying the end of its last batch: the later steps were
    # logged one higher and, at an epoch's end, the next epoch was cut to one batch (memexp's FinalStateAsLastBatch)
    assert logged[8] == whole and val == whole_val
