"""Shared fixtures: the team's data folder, tiny text files, and a way to run memexp.run in-process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    """$MEMEXP_DATA_DIR, else the team's ../shared/data, else the repository's ./data."""
    env = os.environ.get("MEMEXP_DATA_DIR")
    if env:
        return Path(env).resolve()
    shared = (REPO.parent / "shared" / "data").resolve()
    return shared if shared.is_dir() else REPO / "data"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The data root, with tiny-shakespeare in it (downloaded once when missing)."""
    from memexp.data.sources import TINY_SHAKESPEARE, fetch

    d = shared_data_dir()
    fetch(TINY_SHAKESPEARE, d)
    return d


@pytest.fixture(scope="session")
def tiny_text(data_dir, tmp_path_factory) -> Path:
    """The first 60,000 characters of tiny-shakespeare: enough for a loss to fall in a few steps."""
    path = tmp_path_factory.mktemp("text") / "tiny.txt"
    path.write_text((data_dir / "tinyshakespeare" / "input.txt").read_text()[:60_000])
    return path


@pytest.fixture(scope="session")
def tiny_jsonl(tiny_text, tmp_path_factory) -> Path:
    """The tiny text as JSONL records, one paragraph each."""
    import json

    path = tmp_path_factory.mktemp("jsonl") / "docs.jsonl"
    paragraphs = [p for p in tiny_text.read_text().split("\n\n") if p.strip()]
    path.write_text("\n".join(json.dumps({"text": p}) for p in paragraphs))
    return path


TINY_MODEL = ["model.dim=32", "model.depth=1", "model.heads=2", "model.max_len=32", "data.seq_len=32", "data.batch_size=8"]
QUIET = ["logger=csv", "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false", "sample_tokens=0"]


def compose_run(overrides: list[str], output_dir: Path):
    """Compose the memexp.run config as the command line would."""
    from hydra import compose, initialize_config_dir
    from hydra_zen import store

    import memexp.configs  # noqa: F401
    from memexp.configs.apps import config_dir, hydra_settings

    hydra_settings("runs")
    store.add_to_hydra_store(overwrite_ok=True)
    with initialize_config_dir(version_base="1.3", config_dir=config_dir()):
        return compose("memexp_run", overrides=[f"paths.output_dir={output_dir}", *overrides])


def run_in_process(overrides: list[str], output_dir: Path) -> dict:
    from hydra_zen import zen

    from memexp.run import run

    return zen(run)(compose_run(overrides, output_dir))


def run_cli(module: str, *args: str, cwd: Path | None = None, env: dict | None = None, timeout: int = 300):
    """Run `python -m <module> args...` and return the CompletedProcess (text)."""
    full_env = os.environ.copy() | {"MEMEXP_DATA_DIR": str(shared_data_dir()), "WANDB_MODE": "offline", "PYTHONUNBUFFERED": "1"}
    full_env |= env or {}
    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=cwd or REPO, env=full_env, capture_output=True, text=True, timeout=timeout
    )
