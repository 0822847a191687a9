"""Shared fixtures: the team's data folder, tiny text files, runs made once per session (helpers: tests/helpers)."""

from __future__ import annotations

import inspect
import os
from pathlib import Path

import pytest
from helpers import HGD_STEPS, LCCC_TOY, QUIET, TINY_HGD, run_in_process, shared_data_dir

# Configs resolve ${paths.data_dir} from MEMEXP_DATA_DIR: point it at the same folder the fixtures use.
os.environ.setdefault("MEMEXP_DATA_DIR", str(shared_data_dir()))

# The test files that take longest, longest first (summed --durations of a CI run, 2026-12-07). CI runs two workers
# with `--dist loadfile --no-loadscope-reorder`, which hands files out in collection order: the long ones start at
# once and the short ones fill both workers' ends. By default xdist orders files by their number of tests, which put
# the leaderboard's (5 tests, 4-8 minutes) near the end, where one worker could sit idle while the other ran it.
LONGEST_FIRST = [
    "test_leaderboard.py",
    "test_cli.py",
    "test_explicit_runs.py",
    "test_progress.py",
    "test_write_read.py",
    "test_signals.py",
    "test_presets.py",
    "test_precision.py",
    "test_snapshot.py",
    "test_dialogue_cli.py",
    "test_ddp.py",
    "test_task_settings.py",
    "test_studies.py",
]


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


@pytest.fixture(scope="session")
def tiny_knowledge_study(tmp_path_factory) -> dict:
    """The ExplicitLM knowledge study on 60 subjects, debug=fast (20 steps per stage: about 10 s), run once per
    session for the tests that need a trained ExplicitLM checkpoint (chat, the memory CLI):
    {"result": memexp.run's result, "root": its output folder, "ckpt": the ExplicitLM last.ckpt, "data_dir": the data root}."""
    import torch

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("knowledge")
    result = run_in_process(
        [
            "experiment=explicit_knowledge",
            "debug=fast",
            f"paths.data_dir={root / 'data'}",
            "data.n_subjects=60",
            "data.n_objects=8",
            "model.knowledge_num=256",
            "study.edits=10",
            *QUIET,
        ],
        root,
    )
    return {"result": result, "root": root, "ckpt": Path(result["ckpt_dir"]) / "last.ckpt", "data_dir": root / "data"}


@pytest.fixture(scope="session")
def lccc_cache(tmp_path_factory) -> Path:
    """One prepared cache of the toy sample for every test that trains on it (prepared on first use)."""
    if not LCCC_TOY.exists():
        pytest.skip(f"{LCCC_TOY} (the LCCC toy sample) is not in the shared data folder")
    return tmp_path_factory.mktemp("lccc") / "cache"


@pytest.fixture(scope="session")
def hgd_run(lccc_cache, tmp_path_factory) -> dict:
    """memexp.run of the tiny HGD-MemNet, in-process; its result dict (metrics, run_dir, ckpt_dir)."""
    import torch

    torch.set_num_threads(1)  # the test machine is shared; these tensors are tiny
    out = tmp_path_factory.mktemp("hgd_run")
    return run_in_process([*TINY_HGD, f"data.cache_dir={lccc_cache}", *QUIET, *HGD_STEPS], out)


# A test is `slow` when it runs memexp (in-process or as a command) or needs a fixture that trained something:
# `pytest -m "not slow"` is the quick suite, CI runs everything. The rule is read from the test's source, so a new
# test is classified without anyone remembering to mark it.
TRAINED = {"tiny_knowledge_study", "hgd_run", "board", "carried_run", "explicit_run", "study", "study_model"}
TRAINED |= {"study_sweep", "trained", "prepared", "model_data", "lccc_cache"}
RUNS = ("run_cli(", "run_in_process(", "subprocess.run(")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: runs memexp or needs a trained fixture (deselect: -m 'not slow')")


def pytest_collection_modifyitems(config, items):
    for item in items:
        fn = getattr(item, "function", None)
        source = inspect.getsource(fn) if fn is not None else ""
        if set(getattr(item, "fixturenames", ())) & TRAINED or any(r in source for r in RUNS):
            item.add_marker(pytest.mark.slow)
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: a file's tests keep their order
