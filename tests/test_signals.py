"""SIGTERM (what schedulers send before SIGKILL) during training: a checkpoint at the next step boundary, one line
naming it, exit status 143 within seconds; the same command continues from that step."""

import signal
import subprocess
import sys
import time

import torch
from conftest import REPO, TINY_MODEL, shared_data_dir


def _wait_for_steps(metrics_csv, n: int, proc, timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if metrics_csv.exists() and metrics_csv.read_text().count("\n") > n:
            return
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        time.sleep(0.2)
    raise AssertionError(f"no {n} logged steps in {timeout} s")


def test_sigterm_saves_a_checkpoint_at_a_step_boundary_and_the_same_command_continues(tiny_text, tmp_path):
    import os

    args = [
        "data=text",
        f"data.path={tiny_text}",
        *TINY_MODEL,
        "logger=csv",
        "trainer.enable_progress_bar=false",
        "sample_tokens=0",
        "trainer.log_every_n_steps=1",
        "trainer.val_check_interval=1000",
        "trainer.limit_val_batches=1",
        "trainer.limit_test_batches=1",
        f"paths.output_dir={tmp_path}",
    ]
    env = os.environ | {"MEMEXP_DATA_DIR": str(shared_data_dir()), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "memexp.run", *args]
    proc = subprocess.Popen(
        [*cmd, "trainer.max_steps=100000", f"hydra.run.dir={tmp_path / 'run1'}"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _wait_for_steps(tmp_path / "run1" / "csv" / "metrics.csv", 5, proc)
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    waited = time.monotonic() - sent
    assert proc.returncode == 143, err[-2000:]
    assert waited < 10, waited
    (line,) = [ln for ln in err.splitlines() if "stopped by SIGTERM" in ln]
    saved, step = line.split("saved ")[1].split(" at step ")
    step = int(step.split(";")[0])
    ck = torch.load(saved, map_location="cpu", weights_only=True)
    assert ck["global_step"] == step >= 5
    assert "Traceback" not in err
    # The same command with a budget a few steps further continues from the saved step.
    again = subprocess.run(
        [*cmd, f"trainer.max_steps={step + 3}", f"hydra.run.dir={tmp_path / 'run2'}"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"resumed from step {step}" in again.stdout
