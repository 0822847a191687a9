"""task.compile=true compiles the network in place: the same losses as eager within 1e-4, and a checkpoint whose keys
are the eager network's (a compiled run and an eager one resume each other)."""

import csv

import pytest
import torch
from helpers import QUIET, TINY_MODEL, run_in_process

STEPS = ["trainer.max_steps=4", "trainer.val_check_interval=4", "trainer.limit_val_batches=1", "trainer.limit_test_batches=1",
         "trainer.log_every_n_steps=1", "trainer.threads=1"]  # fmt: skip


def _train_losses(run_dir) -> list[float]:
    with open(f"{run_dir}/csv/metrics.csv") as f:
        return [float(r["train/loss"]) for r in csv.DictReader(f) if r.get("train/loss")]


def test_compiled_training_matches_eager(tiny_text, tmp_path):
    common = ["data=text", f"data.path={tiny_text}", "data.tokenizer=char", *TINY_MODEL, *QUIET, *STEPS]
    eager = run_in_process([*common, "task.compile=false"], tmp_path / "eager")
    torch._dynamo.reset()
    compiled = run_in_process([*common, "task.compile=true", "ckpt_dir=" + str(tmp_path / "ck-compiled")], tmp_path / "compiled")
    assert eager["ckpt_dir"] != compiled["ckpt_dir"]
    a, b = _train_losses(eager["run_dir"]), _train_losses(compiled["run_dir"])
    assert len(a) == len(b) == 4
    assert a == pytest.approx(b, abs=1e-4)
    assert compiled["metrics"]["val/loss"] == pytest.approx(eager["metrics"]["val/loss"], abs=1e-4)
    keys = set(torch.load(f"{compiled['ckpt_dir']}/last.ckpt", weights_only=True)["state_dict"])
    assert keys == set(torch.load(f"{eager['ckpt_dir']}/last.ckpt", weights_only=True)["state_dict"])
    assert not any("_orig_mod" in k for k in keys)
