"""trainer=ddp on the CPU: two processes (gloo) reach the loss of one process at the same global batch.

Lightning starts the second rank by re-running the command line, so this goes through a subprocess.
"""

import json
from pathlib import Path

from conftest import QUIET, TINY_MODEL, run_cli

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
    assert "distributed_backend=gloo" in two.stderr + two.stdout
    a, b = _metrics(tmp_path / "one"), _metrics(tmp_path / "two")
    assert a["global_step"] == b["global_step"] == 40
    assert a["val/loss"] < 3.6 and b["val/loss"] < 3.6  # both learned (uniform is ln 66 = 4.19)
    assert abs(a["val/loss"] - b["val/loss"]) < 0.1, (a["val/loss"], b["val/loss"])
