"""memexp.run in-process: loss falls for each model/data pair, resume continues at the right step."""

import csv
import math
from pathlib import Path

import pytest
from helpers import QUIET, TINY_MODEL, run_cli, run_in_process

from memexp.errors import CheckpointError, ConfigError

FAST = [
    "trainer.max_steps=60",
    "trainer.val_check_interval=30",
    "trainer.limit_val_batches=4",
    "trainer.limit_test_batches=4",
    "trainer.log_every_n_steps=1",
    "optim.lr=1e-2",
    "optim.warmup_steps=5",
]

PAIRS = {
    "transformer-text-char": ["model=transformer", "data=text", "data.tokenizer=char"],
    "transformer-text-byte": ["model=transformer", "data=text", "data.tokenizer=byte"],
    "transformer-jsonl": ["model=transformer", "data=jsonl", "data.tokenizer=char"],
}


@pytest.mark.parametrize("pair", sorted(PAIRS))
def test_loss_falls(pair, tiny_text, tiny_jsonl, tmp_path):
    path = tiny_jsonl if "jsonl" in pair else tiny_text
    result = run_in_process([*PAIRS[pair], f"data.path={path}", *TINY_MODEL, *QUIET, *FAST], tmp_path)
    m = result["metrics"]
    vocab = 256 if "byte" in pair else 66
    assert m["global_step"] == 60
    # A uniform guess scores ln(V); 60 steps must already be well below it.
    assert m["val/loss"] < math.log(vocab) - 0.9, m
    losses = _csv_losses(result["run_dir"])
    assert losses[-1] < losses[0] - 0.8, losses
    assert m["test/ppl"] == pytest.approx(math.exp(m["test/loss"]), rel=1e-4)
    assert m["test/bpc"] == pytest.approx(m["test/loss"] / math.log(2), rel=1e-4)
    assert 0 < m["test/acc"] <= m["test/top5"] <= m["test/top10"] <= 1


def _csv_losses(run_dir):
    with open(f"{run_dir}/csv/metrics.csv") as f:
        return [float(r["train/loss"]) for r in csv.DictReader(f) if r.get("train/loss")]


def _csv_steps(run_dir):
    with open(f"{run_dir}/csv/metrics.csv") as f:
        return [int(r["step"]) for r in csv.DictReader(f) if r.get("train/loss")]


def test_interrupted_run_resumes_at_the_right_step(tiny_text, tmp_path):
    common = [
        "data=text",
        f"data.path={tiny_text}",
        *TINY_MODEL,
        *QUIET,
        "trainer.val_check_interval=5",
        "trainer.limit_val_batches=2",
        "trainer.limit_test_batches=2",
        "trainer.log_every_n_steps=1",
    ]
    first = run_in_process([*common, "trainer.max_steps=6"], tmp_path / "a")
    # The same command (a longer budget does not change the run key) picks up last.ckpt.
    second = run_in_process([*common, "trainer.max_steps=12", f"paths.checkpoint_root={tmp_path}/a/checkpoints"], tmp_path / "b")
    assert first["ckpt_dir"] == second["ckpt_dir"]
    assert second["resumed_from_step"] == 6
    assert second["metrics"]["global_step"] == 12
    steps = _csv_steps(second["run_dir"])
    assert min(steps) >= 6 and max(steps) >= 11  # it trained steps 7..12 only
    fresh = run_in_process(
        [*common, "trainer.max_steps=3", "fresh=true", f"paths.checkpoint_root={tmp_path}/a/checkpoints"], tmp_path / "c"
    )
    assert fresh["resumed_from_step"] is None and fresh["metrics"]["global_step"] == 3


def test_changed_model_in_same_folder_is_refused(tiny_text, tmp_path):
    common = [
        "data=text",
        f"data.path={tiny_text}",
        *QUIET,
        "trainer.max_steps=2",
        "trainer.limit_val_batches=1",
        "trainer.limit_test_batches=1",
        f"ckpt_dir={tmp_path}/ck",
    ]
    run_in_process([*common, *TINY_MODEL], tmp_path)
    with pytest.raises(CheckpointError, match="trained with another model config"):
        run_in_process([*common, *TINY_MODEL, "model.depth=2"], tmp_path)


def test_model_data_kind_mismatch_stops_before_work():
    from memexp.runs.build import RunNames, check_pairing

    class Classifier:
        task_kind = "classification"

    class Text:
        task_kind = "causal_lm"

    with pytest.raises(
        ConfigError,
        match=r"model=bigru is a classification model and needs labelled documents.*data=shakespeare provides token sequences",
    ):
        check_pairing(Classifier, Text, RunNames(model="bigru", data="shakespeare"))


def test_carry_state_needs_a_stateful_model(tiny_text, tmp_path):
    with pytest.raises(ConfigError, match="task.carry_state=true needs a model that carries state"):
        run_in_process(
            ["data=text", f"data.path={tiny_text}", *TINY_MODEL, *QUIET, "data.windows=stream", "task.carry_state=true"], tmp_path
        )


def test_a_truncated_last_checkpoint_is_set_aside_and_the_run_resumes_from_the_newest_readable(tiny_text, tmp_path, capsys):
    common = [
        "data=text",
        f"data.path={tiny_text}",
        *TINY_MODEL,
        *QUIET,
        "trainer.val_check_interval=4",
        "trainer.limit_val_batches=1",
        "trainer.limit_test_batches=1",
        f"ckpt_dir={tmp_path}/ck",
        "callbacks.checkpoint.save_top_k=-1",  # keep best-step=4 and best-step=8 besides last.ckpt
    ]
    run_in_process([*common, "trainer.max_steps=8"], tmp_path / "a")
    last = tmp_path / "ck" / "last.ckpt"
    last.write_bytes(last.read_bytes()[:1000])  # a write cut short
    capsys.readouterr()
    resumed = run_in_process([*common, "trainer.max_steps=10"], tmp_path / "b")
    err = capsys.readouterr().err
    assert resumed["resumed_from_step"] == 8 and resumed["metrics"]["global_step"] == 10
    assert err.count("warning:") == 1 and "last.ckpt" in err and "resuming from best-step=8.ckpt (step 8)" in err
    assert (tmp_path / "ck" / "last.ckpt.unreadable").exists() and last.exists()  # rewritten by the resumed run

    for ckpt in (tmp_path / "ck").glob("*.ckpt"):
        ckpt.write_bytes(b"garbage")
    fresh = run_in_process([*common, "trainer.max_steps=3"], tmp_path / "c")
    assert fresh["resumed_from_step"] is None and fresh["metrics"]["global_step"] == 3
    assert "no readable checkpoint left, starting fresh" in capsys.readouterr().err


def test_a_debug_run_never_touches_a_real_runs_checkpoints(tiny_text, tmp_path, capsys):
    common = ["data=text", f"data.path={tiny_text}", *TINY_MODEL, *QUIET, f"paths.output_dir={tmp_path}"]
    real = run_in_process(
        [*common, "trainer.max_steps=6", "trainer.val_check_interval=3", "trainer.limit_val_batches=1.0"], tmp_path
    )
    last = Path(real["ckpt_dir"]) / "last.ckpt"
    before = last.read_bytes()
    proc = run_cli("memexp.run", *common, "debug=fast", cwd=tmp_path)  # the command line: Hydra knows the preset's name
    assert proc.returncode == 0, proc.stderr[-2000:]
    debug = {"ckpt_dir": next(line for line in proc.stdout.splitlines() if line.startswith("checkpoint:")).split()[1]}
    assert "resumed" not in proc.stdout and "-debug-fast-" in debug["ckpt_dir"]
    debug["ckpt_dir"] = str(Path(debug["ckpt_dir"]).parent)
    limited = run_in_process(
        [*common, "trainer.max_steps=6", "trainer.val_check_interval=3", "trainer.limit_val_batches=1"], tmp_path
    )
    assert limited["ckpt_dir"] not in (real["ckpt_dir"], debug["ckpt_dir"])  # one validation batch: its own folder too
    assert last.read_bytes() == before
    # The same command again: the run is finished; it says so and tests it without training.
    capsys.readouterr()
    again = run_in_process(
        [*common, "trainer.max_steps=6", "trainer.val_check_interval=3", "trainer.limit_val_batches=1.0"], tmp_path
    )
    assert again["resumed_from_step"] == 6 and again["metrics"]["global_step"] == 6
    # the final weights validated again: the last check's numbers (that check ran at step 6)
    assert again["metrics"]["val/loss"] == pytest.approx(real["metrics"]["val/loss"], abs=1e-6)
    assert again["metrics"]["test/loss"] == pytest.approx(real["metrics"]["test/loss"], abs=1e-6)
    out = capsys.readouterr().out
    assert "this run finished at step 6 (trainer.max_steps=6)" in out and again["retested"] is True
    assert "tested again at step 6: the run had finished, nothing was trained" in out and "resumed from" not in out


def test_the_training_speed_columns_count_tokens(tiny_text, tmp_path):
    """Lightning's ThroughputMonitor logs train/device/{batches,items}_per_sec: tokens per batch is the batch's
    input size (8 x 32), validation time left out."""
    import csv

    from helpers import QUIET, TINY_MODEL, run_in_process

    result = run_in_process(
        [
            "data=text",
            f"data.path={tiny_text}",
            *TINY_MODEL,
            *QUIET,
            "trainer.max_steps=24",
            "trainer.val_check_interval=12",
            "trainer.limit_val_batches=1",
            "trainer.limit_test_batches=1",
            "trainer.log_every_n_steps=1",
        ],  # fmt: skip
        tmp_path,
    )
    with open(f"{result['run_dir']}/csv/metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("train/device/batches_per_sec")]
    assert rows  # a full 20-step window was logged
    for r in rows:
        assert float(r["train/device/items_per_sec"]) / float(r["train/device/batches_per_sec"]) == pytest.approx(8 * 32)
