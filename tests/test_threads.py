"""trainer.threads: honoured in a subprocess run, auto counts the cores other processes keep busy, a sweep whose runs
share the machine takes one thread each, and the setting's range is checked at composition."""

import json
import os
import subprocess
import sys
import time

import pytest
from helpers import QUIET, REPO, TINY_MODEL, shared_data_dir

from memexp.runs import threads


@pytest.mark.parametrize("n", [1, 2])
def test_the_thread_setting_is_honoured_in_a_subprocess_run(n, tiny_text, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"} | {"MEMEXP_DATA_DIR": str(shared_data_dir())}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "memexp.run",
            "data=text",
            f"data.path={tiny_text}",
            *TINY_MODEL,
            *QUIET,
            "trainer.max_steps=2",
            "trainer.val_check_interval=2",
            "trainer.limit_val_batches=1",
            "trainer.limit_test_batches=1",
            f"trainer.threads={n}",
            f"paths.output_dir={tmp_path}",
            f"hydra.run.dir={tmp_path / 'run'}",
        ],  # fmt: skip
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert any(
        line.startswith(f"threads: {n} (trainer.threads={n}); precision: 32-true (float32, the default)")
        for line in proc.stdout.splitlines()
    )
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["threads"] == n


def test_auto_counts_a_busy_core_and_leaves_it(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)
        assert threads.busy_cores() >= 1
        n, why = threads.plan_threads("auto")
        if threads.usable_cores() > 1:
            assert n < threads.usable_cores() and "busy" in why
    finally:
        spinner.kill()
        spinner.wait()


def test_auto_follows_omp_num_threads_and_parallel_sweeps_take_one(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert threads.plan_threads("auto") == (3, "OMP_NUM_THREADS=3")
    assert threads.plan_threads(2)[0] == 2  # an explicit setting wins over the environment
    monkeypatch.delenv("OMP_NUM_THREADS")
    n, why = threads.plan_threads("auto", parallel_runs=True)
    assert n == 1 and "share" in why


def test_a_thread_count_below_one_is_one_error_line():
    from helpers import run_cli

    proc = run_cli("memexp.run", "trainer.threads=0")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: trainer.threads=0")
