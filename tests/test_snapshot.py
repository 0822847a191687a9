"""A mistyped override is answered from the store's snapshot, without importing Lightning, and the snapshot composes
exactly what the real store composes."""

from __future__ import annotations

import pytest
from helpers import QUIET, TINY_MODEL, run_cli
from hydra import compose, initialize
from omegaconf import OmegaConf

from memexp.configs import snapshot
from memexp.configs.overrides import check_command_line
from memexp.configs.search import prepare_app
from memexp.errors import ConfigError

LINES = [
    [],
    ["model=hope", "model.num_heads=2"],
    ["experiment=explicit_knowledge", "debug=fast"],
    ["experiment=leaderboard", "board=hope_recall"],
    ["model=hgd", "data=lccc", "model.max_think=3"],
    ["trainer=cpu_bf16", "logger=csv"],
    ["experiment=endef_vs_bigru", "seed=3"],
    ["experiment=quick_byte"],
    ["hparams_search=transformer_optuna"],
    ["model.dimm=3"],
    ["model.dim=abc"],
    ["optim.lr=-1"],
    ["model=nosuch"],
    ["trainer.max_steps=1.5"],
    ["model.heads=null"],
]


def _outcome(line: list[str]) -> tuple[str, str]:
    try:
        with initialize(version_base="1.3", config_path=None):
            composed = OmegaConf.to_yaml(compose("memexp_run", overrides=line))
    except Exception as e:  # noqa: BLE001 - the failure itself is compared
        composed = f"{type(e).__name__}: {e}"
    try:
        check_command_line("memexp_run", line)
        checked = "ok"
    except ConfigError as e:
        checked = f"error: {e}"
    return composed, checked


def test_the_snapshot_composes_what_the_store_composes(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    prepare_app("memexp_run", "runs")
    assert snapshot.save_snapshot("memexp_run").is_file()
    real = [_outcome(line) for line in LINES]
    saved = snapshot.load_snapshot("memexp_run")
    assert saved is not None
    try:
        from_snapshot = [_outcome(line) for line in LINES]
    finally:
        snapshot.restore(saved)
    for line, a, b in zip(LINES, real, from_snapshot, strict=True):
        assert a == b, line
    assert sum(c.startswith("error: ") for _, c in real) == 6  # the last six lines are refused, the others compose


def test_no_snapshot_of_other_sources_is_read(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert snapshot.load_snapshot("memexp_run") is None  # none written here yet
    other = snapshot.snapshot_path("memexp_run", digest="0" * 16)
    other.parent.mkdir(parents=True)
    other.write_text('{"format": 1, "entries": []}')
    assert snapshot.load_snapshot("memexp_run") is None  # another digest: other sources or library versions


@pytest.mark.parametrize("typo", ["model.dimm=3", "trainer.max_stepz=3"])
def test_a_typo_is_answered_without_importing_lightning(typo, tmp_path):
    env = {"XDG_CACHE_HOME": str(tmp_path)}
    first = run_cli("memexp.run", typo, env=env)  # fills the store and writes its snapshot
    second = run_cli("memexp.run", typo, env=env | {"PYTHONPROFILEIMPORTTIME": "1"})
    for out in (first, second):
        assert out.returncode == 2 and out.stderr.strip().splitlines()[-1].startswith(f"error: {typo.split('=')[0]}: ")
    imported = [line.rsplit("|", 1)[-1].strip() for line in second.stderr.splitlines() if line.startswith("import time:")]
    assert imported and not any(m.split(".")[0] in ("lightning", "torch") for m in imported), "imported the training stack"
    assert len(list((tmp_path / "memexp" / "store").glob("memexp_run-*.json"))) == 1
    # a command line checked against the snapshot then runs on the real store (Hydra's plugins' schemas included)
    ok = run_cli("memexp.run", *TINY_MODEL, *QUIET, "debug=fast", "trainer.max_steps=2", f"paths.output_dir={tmp_path}", env=env)
    assert ok.returncode == 0, ok.stdout[-2000:] + ok.stderr[-2000:]


def test_hydras_plugin_schemas_are_never_snapshotted(tmp_path, monkeypatch):
    """A process that composed before filling the store (several entry points in one process) holds Hydra's plugin
    schemas; a snapshot saved there once made every later `memexp.report` lose hydra/sweeper/basic."""
    from hydra.core.config_store import ConfigStore

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    prepare_app("memexp_report", "report")
    ConfigStore.instance().store(group="hydra/sweeper", name="plugin_in_test", node={"x": 1}, provider="some_plugin")
    path = snapshot.save_snapshot("memexp_report")
    import json

    paths = {e["path"] for e in json.loads(path.read_text())["entries"]}
    assert "hydra/sweeper/plugin_in_test.yaml" not in paths
    assert "memexp_report.yaml" in paths and "hydra/config.yaml" in paths  # memexp's own Hydra settings are kept
    saved = snapshot.load_snapshot("memexp_report")
    try:
        assert "plugin_in_test.yaml" in ConfigStore.instance().repo["hydra"]["sweeper"]  # the process's own stays
    finally:
        snapshot.restore(saved)
    assert "plugin_in_test.yaml" in ConfigStore.instance().repo["hydra"]["sweeper"]
