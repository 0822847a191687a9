"""trainer=ddp on the CPU: two processes (gloo) reach the loss of one process at the same global batch.

Lightning starts the second rank by re-running the command line, so this goes through a subprocess.
"""

import json
from pathlib import Path

from helpers import QUIET, TINY_MODEL, run_cli

COMMON = [
    *TINY_MODEL,
    *QUIET,
    "trainer.max_steps=40",
    "trainer.val_check_interval=20",
    "trainer.limit_val_batches=8",
    "trainer.limit_test_batches=8",
    "optim.lr=1e-2",
    "optim.warmup_steps=5",
    "trainer.accelerator=cpu",
]


def _metrics(output_dir: Path) -> dict:
    (path,) = output_dir.glob("runs/*/*/metrics.json")
    return json.loads(path.read_text())["metrics"]


def test_ddp_two_processes_match_one(tiny_text, tmp_path):
    data = ["data=text", f"data.path={tiny_text}"]
    one = run_cli("memexp.run", *data, *COMMON, "data.batch_size=8", f"paths.output_dir={tmp_path}/one")
    assert one.returncode == 0, one.stderr[-3000:]
    two = run_cli(
        "memexp.run", *data, *COMMON, "trainer=ddp", "trainer.devices=2", "data.batch_size=4", f"paths.output_dir={tmp_path}/two"
    )
    assert two.returncode == 0, two.stderr[-3000:]
    (log,) = (tmp_path / "two").glob("runs/*/*/memexp.log")  # Lightning's lines are in the run's log, not the console
    assert "distributed_backend=gloo" in log.read_text() and "distributed_backend" not in two.stdout + two.stderr
    a, b = _metrics(tmp_path / "one"), _metrics(tmp_path / "two")
    assert a["global_step"] == b["global_step"] == 40
    assert a["val/loss"] < 3.6 and b["val/loss"] < 3.6  # both learned (uniform is ln 66 = 4.19)
    assert abs(a["val/loss"] - b["val/loss"]) < 0.1, (a["val/loss"], b["val/loss"])


def test_the_dialogue_stream_under_two_process_ddp(lccc_cache, tmp_path):
    """Two gloo processes over the LCCC toy sample: validation reads every pair exactly once across the ranks;
    training gives both ranks the same number of batches and no pair twice within an epoch."""
    from helpers import HGD_STEPS, REPO, TINY_HGD

    from memexp.data.dialogue import DialogueDataModule

    out = tmp_path / "seen"
    proc = run_cli(
        "memexp.run",
        *TINY_HGD,
        *QUIET,
        *[a for a in HGD_STEPS if not a.startswith(("trainer.max_steps", "trainer.val_check_interval", "trainer.limit_val"))],
        f"data.cache_dir={lccc_cache}",
        "data.batch_size=128",  # 2,887 pairs: about 11 batches per rank and epoch
        "trainer.max_steps=14",
        "trainer.val_check_interval=14",
        "trainer.limit_val_batches=1.0",
        "trainer=ddp",
        "trainer.devices=2",
        "trainer.accelerator=cpu",
        "+callbacks.recorder._target_=ddp_recorder.IndexRecorder",
        f"+callbacks.recorder.out={out}",
        f"paths.output_dir={tmp_path}",
        env={"PYTHONPATH": f"{REPO / 'tests'}:{REPO}"},
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {r: [json.loads(line) for line in (out / f"rank{r}.jsonl").read_text().splitlines()] for r in (0, 1)}
    dm = DialogueDataModule(cache_dir=str(lccc_cache), batch_size=128)
    n_val = dm.stream("val").num_samples
    val = [i for r in (0, 1) for row in rows[r] if row["stage"] == "val" for i in row["index"]]
    assert sorted(val) == list(range(n_val)), "validation did not read every pair exactly once across the ranks"
    for epoch in {row["epoch"] for r in (0, 1) for row in rows[r] if row["stage"] == "train"}:
        per_rank = [[row["index"] for row in rows[r] if row["stage"] == "train" and row["epoch"] == epoch] for r in (0, 1)]
        assert len(per_rank[0]) == len(per_rank[1])  # the same number of steps on both ranks
        seen = [i for batches in per_rank for batch in batches for i in batch]
        assert len(seen) == len(set(seen)), f"epoch {epoch}: a pair was drawn twice"
