"""SIGTERM (what schedulers send before SIGKILL) during training: a checkpoint at the next step boundary, one line
naming it, exit status 143 within seconds; the same command continues from that step."""

import signal
import subprocess
import sys
import time

import torch
from helpers import REPO, TINY_MODEL, shared_data_dir


def _logged_steps(metrics_csv) -> int:
    """How many optimizer steps logged a training loss. Lightning's CSV logger writes several rows per step (the
    learning-rate monitor's, the throughput's, the loss's), so lines are not steps."""
    import csv

    try:
        rows = list(csv.DictReader(metrics_csv.read_text().splitlines()))
    except FileNotFoundError:
        return 0
    return len({row["step"] for row in rows if row.get("train/loss")})


def _wait_for_steps(metrics_csv, n: int, proc, timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if _logged_steps(metrics_csv) >= n:
            return
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        time.sleep(0.2)
    raise AssertionError(f"no {n} logged steps in {timeout} s")


def _long_run_args(tiny_text, tmp_path) -> list[str]:
    """A tiny text run that logs every step and validates rarely (add trainer.max_steps and hydra.run.dir)."""
    return [
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


def _assert_the_same_command_resumes(args: list[str], env: dict, step: int, max_steps: int, run_dir) -> None:
    """`memexp.run args` with trainer.max_steps=max_steps finishes and says it resumed from `step`."""
    again = subprocess.run(
        [sys.executable, "-m", "memexp.run", *args, f"trainer.max_steps={max_steps}", f"hydra.run.dir={run_dir}"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"resumed from step {step}" in again.stdout


def test_sigterm_saves_a_checkpoint_at_a_step_boundary_and_the_same_command_continues(tiny_text, tmp_path):
    import os

    args = _long_run_args(tiny_text, tmp_path)
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
    _assert_the_same_command_resumes(args, env, step, step + 3, tmp_path / "run2")


def _dialogue_source(path, n: int = 60_000) -> None:
    import random

    rng = random.Random(0)
    words = [f"w{i}" for i in range(300)]
    lines = ("\t".join(" ".join(rng.choices(words, k=rng.randint(2, 6))) for _ in range(rng.randint(2, 4))) for _ in range(n))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _chunk_sums(manifest_path) -> list[str]:
    import json

    manifest = json.loads(manifest_path.read_text())
    return [c["sha256"] for split in manifest["splits"].values() for c in split["chunks"]]


def test_stopping_a_preparation_then_the_rerun_writes_the_same_chunks(tmp_path):
    """SIGTERM, then SIGKILL, while memexp.prepare writes chunks: one line and status 143 for SIGTERM, nothing that
    looks finished, and the rerun's chunks are byte-identical (checksums) to an uninterrupted preparation's."""
    import os

    from memexp.data.dialogue.prepare import prepare_dialogues

    src = tmp_path / "dialogues.tsv"
    _dialogue_source(src)
    reference = prepare_dialogues(src, tmp_path / "reference", chunk_size=2000, splits=("train",), progress=False)
    expected = [c["sha256"] for c in reference["splits"]["train"]["chunks"]]
    env = os.environ | {"MEMEXP_DATA_DIR": str(shared_data_dir()), "OMP_NUM_THREADS": "1"}
    for sig, status in ((signal.SIGTERM, 143), (signal.SIGKILL, -9)):
        cache = tmp_path / f"cache-{sig.name}"
        cmd = [
            sys.executable,
            "-m",
            "memexp.prepare",
            "data=lccc",
            f"data.source={src}",
            f"data.cache_dir={cache}",
            "data.chunk_size=2000",
            f"paths.output_dir={tmp_path}",
        ]
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        end = time.monotonic() + 120
        while not list(cache.glob("train/chunk_*.pt")) and time.monotonic() < end and proc.poll() is None:
            time.sleep(0.02)
        assert proc.poll() is None, "the preparation ended before it could be stopped"
        sent = time.monotonic()
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
        assert time.monotonic() - sent < 10
        assert proc.returncode == status, err[-2000:]
        assert not (cache / "manifest.json").exists()
        if sig == signal.SIGTERM:
            assert err.strip().splitlines() == [
                "error: stopped by SIGTERM; files written so far are complete, the same command continues"
            ]
        again = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
        assert again.returncode == 0, again.stderr[-2000:]
        assert _chunk_sums(cache / "manifest.json") == expected


FAKE_SUBMITIT = """
import json, signal, sys, runpy
from pathlib import Path
import torch

marker = Path(sys.argv.pop(1))


def requeue(signum, frame):  # what submitit's handler does: checkpoint the submission, requeue, exit
    found = sorted(marker.parent.rglob("last.ckpt"))
    steps = [torch.load(f, map_location="cpu", weights_only=True)["global_step"] for f in found]
    marker.write_text(json.dumps({"signal": signum, "last_ckpt_steps": steps}))
    sys.exit(-1)


signal.signal(signal.SIGUSR2, requeue)
runpy.run_module("memexp.run", run_name="__main__")
"""


def test_slurm_preemption_saves_last_ckpt_at_a_step_boundary_before_submitit_requeues(tiny_text, tmp_path):
    """Under submitit, USR2 (preemption or time limit) is held until the step ends, last.ckpt is saved, and only
    then does submitit's requeue handler run; the requeued job (the same command) resumes from that step."""
    import json
    import os

    args = _long_run_args(tiny_text, tmp_path)
    (tmp_path / "fake_submitit.py").write_text(FAKE_SUBMITIT)
    marker = tmp_path / "requeued.json"
    env = os.environ | {"MEMEXP_DATA_DIR": str(shared_data_dir()), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            str(tmp_path / "fake_submitit.py"),
            str(marker),
            *args,
            "trainer.max_steps=100000",
            f"hydra.run.dir={tmp_path / 'run1'}",
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _wait_for_steps(tmp_path / "run1" / "csv" / "metrics.csv", 5, proc)
    proc.send_signal(signal.SIGUSR2)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 255, err[-2000:]  # submitit's handler exits with -1 after requeueing
    (line,) = [ln for ln in err.splitlines() if "stopped by SIGTERM" in ln]
    step = int(line.split(" at step ")[1].split(";")[0])
    assert json.loads(marker.read_text()) == {"signal": int(signal.SIGUSR2), "last_ckpt_steps": [step]}
    assert step >= 5 and "requeueing" in err and "Traceback" not in err
    _assert_the_same_command_resumes(args, env, step, step + 2, tmp_path / "run2")
