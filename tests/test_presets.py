"""YAML presets are found from any working directory, in a non-editable install, and a user's
own presets (./conf/local, ./conf, $MEMEXP_CONF_PATH) win over the shipped ones."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import REPO, run_cli

USER_PRESET = "# @package _global_\ndefaults:\n  - override /model: transformer\nmodel:\n  dim: {dim}\n"


def job_config(result: subprocess.CompletedProcess) -> dict:
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def test_shipped_preset_is_found_from_a_foreign_directory(tmp_path):
    cfg = job_config(run_cli("memexp.run", "experiment=quick_byte", "--cfg", "job", cwd=tmp_path))
    assert cfg["model"]["dim"] == 96 and cfg["data"]["tokenizer"] == "byte"


def test_user_presets_override_shipped_ones_in_lookup_order(tmp_path):
    (tmp_path / "conf" / "experiment").mkdir(parents=True)
    (tmp_path / "conf" / "local" / "experiment").mkdir(parents=True)
    (tmp_path / "conf" / "experiment" / "quick_byte.yaml").write_text(USER_PRESET.format(dim=48))
    (tmp_path / "conf" / "experiment" / "mine.yaml").write_text(USER_PRESET.format(dim=40))
    (tmp_path / "conf" / "local" / "experiment" / "mine.yaml").write_text(USER_PRESET.format(dim=24))
    lab = tmp_path / "lab"
    (lab / "experiment").mkdir(parents=True)
    (lab / "experiment" / "shared.yaml").write_text(USER_PRESET.format(dim=16))
    env = {"MEMEXP_CONF_PATH": str(lab)}
    assert job_config(run_cli("memexp.run", "experiment=quick_byte", "--cfg", "job", cwd=tmp_path))["model"]["dim"] == 48
    assert job_config(run_cli("memexp.run", "experiment=mine", "--cfg", "job", cwd=tmp_path))["model"]["dim"] == 24
    assert job_config(run_cli("memexp.run", "experiment=shared", "--cfg", "job", cwd=tmp_path, env=env))["model"]["dim"] == 16


def test_a_user_preset_without_experiment_name_files_its_runs_under_its_own_name(tmp_path):
    from helpers import QUIET, TINY_MODEL

    (tmp_path / "conf" / "experiment").mkdir(parents=True)
    (tmp_path / "conf" / "experiment" / "mine.yaml").write_text(USER_PRESET.format(dim=32))
    out = run_cli("memexp.run", "experiment=mine", *TINY_MODEL, *QUIET, "debug=fast", "trainer.max_steps=2", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert [p.name for p in (tmp_path / "outputs" / "checkpoints").iterdir()] == ["mine"]


def test_non_editable_install_keeps_its_presets(tmp_path):
    target = tmp_path / "site"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target", str(target), str(REPO)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if build.returncode != 0:
        pytest.skip(f"could not build a wheel here: {build.stderr.strip().splitlines()[-1:]}")
    assert (target / "memexp" / "conf" / "experiment" / "quick_byte.yaml").is_file()
    away = tmp_path / "elsewhere"
    away.mkdir()
    env = {"PYTHONPATH": str(target) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    where = subprocess.run(
        [sys.executable, "-c", "import memexp; print(memexp.__file__)"],
        cwd=away,
        env=os.environ | env,
        capture_output=True,
        text=True,
    )
    assert Path(where.stdout.strip()).is_relative_to(target), where
    cfg = job_config(run_cli("memexp.run", "experiment=quick_byte", "--cfg", "job", cwd=away, env=env))
    assert cfg["model"]["dim"] == 96


def _presets() -> list[list[str]]:
    from memexp.configs.catalog import GROUPS as CATALOG

    boards = [["experiment=leaderboard", f"board={b}"] for b in CATALOG["board"]]
    return [[f"experiment={e}"] for e in CATALOG["experiment"] if e != "leaderboard"] + boards + [["experiment=quick_byte"]]


@pytest.mark.parametrize("preset", _presets(), ids=lambda p: "-".join(a.split("=")[1] for a in p))
def test_every_preset_honours_debug_fast_with_a_checkpoint_folder_of_its_own(preset, tmp_path):
    """debug=fast cuts every preset to 20 steps and 2 evaluation batches, and files its checkpoints apart (the
    knowledge study's backbone stage: tests/test_explicit_runs.py)."""
    from helpers import compose_run
    from omegaconf import OmegaConf

    from memexp.runs.build import RunNames
    from memexp.runs.train import checkpoint_dir

    folders = {}
    for debug in ([], ["debug=fast"]):
        cfg = compose_run([*preset, *debug], tmp_path)
        if debug:
            t = cfg.trainer
            assert (t.max_steps, t.limit_val_batches, t.limit_test_batches) == (20, 2, 2), OmegaConf.to_yaml(t)
        plain = OmegaConf.to_container(cfg, resolve=True)
        plain["run"] = {"choices": {"debug": "fast"} if debug else {}}  # what memexp.run reads from Hydra's choices
        names = RunNames(cfg.experiment_name or "preset", "model", "data", 0)
        folders[bool(debug)] = checkpoint_dir(plain, names, tmp_path)
    assert "-debug-fast-" in folders[True].name and "-debug-" not in folders[False].name
