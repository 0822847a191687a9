"""`optimized_metric` is checked before a run trains, against the names the run's task logs."""

from __future__ import annotations

import time

import pytest
from helpers import QUIET, TINY_MODEL, check_names, run_cli


def test_the_knowledge_study_logs_the_names_known_before_it_ran(tiny_knowledge_study):
    check_names(tiny_knowledge_study["result"], "knowledge_qa", "knowledge")


def test_a_dialogue_run_logs_the_names_known_before_it_ran(hgd_run):
    check_names(hgd_run, "lccc")


@pytest.mark.parametrize(
    "args, named",
    [
        (["optimized_metric=val/nosuch"], "optimized_metric=val/nosuch: a run on data=shakespeare logs no such metric"),
        (["optimized_metric=val_loss"], "pick one of val/loss, val/ppl, val/bpc, val/acc"),
        (["experiment=continual_abc", "optimized_metric=val/loss"], "pick one of continual/avg_forgetting"),
    ],
    ids=["unknown", "lightning-style", "continual-study"],
)
def test_an_unknown_optimized_metric_is_one_error_line_before_training(args, named, tmp_path):
    start = time.time()
    out = run_cli("memexp.run", *TINY_MODEL, *QUIET, *args, "trainer.max_steps=100000", f"paths.output_dir={tmp_path}")
    assert out.returncode == 2, out.stderr[-2000:]
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and named in last, out.stderr[-2000:]
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "checkpoints").exists()  # nothing trained
    assert time.time() - start < 120
