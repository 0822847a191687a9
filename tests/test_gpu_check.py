"""experiments/gpu_check.py's dry run on the CPU: the same script a GPU machine runs, so that it cannot rot."""

import json
import subprocess
import sys

from helpers import REPO, shared_data_dir


def test_the_gpu_check_runs_on_the_cpu_and_compares_with_the_fp32_run(tmp_path):
    env = {"MEMEXP_DATA_DIR": str(shared_data_dir()), "WANDB_MODE": "offline", "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            "experiments/gpu_check.py",
            "--device",
            "cpu",
            "--steps",
            "6",
            "--models",
            "transformer,hyperlstm",
            "--out",
            str(tmp_path),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = json.loads((tmp_path / "gpu_check.json").read_text())["rows"]
    assert [r["model"] for r in rows] == ["transformer", "hyperlstm"]
    for r in rows:
        assert r["ok"] and abs(r["diff"]) <= r["tolerance"] and r["tokens_per_s"] > 0 and r["peak_memory_mb"] > 0
        assert r["fp32_cpu_val_loss"] != r["bf16_val_loss"]  # two precisions really ran
    assert "native bf16:" in proc.stdout and "hyperlstm" in proc.stdout.splitlines()[-2]


def test_the_gpu_check_without_a_gpu_says_so_in_one_line():
    proc = subprocess.run(
        [sys.executable, "experiments/gpu_check.py", "--models", "transformer"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    import torch

    if torch.cuda.is_available():
        return
    assert proc.returncode == 2 and proc.stderr.strip().startswith("error: --device cuda: no CUDA device is visible")
