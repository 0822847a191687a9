"""Run keys survive upgrades: a model that gains a defaulted argument resumes its folder; a changed default is said
in one line; folders named by the previous key scheme are still resumed."""

from __future__ import annotations

import importlib
import sys
import textwrap

import pytest
from helpers import QUIET, run_in_process
from hydra_zen import builds, store

from memexp.runs.keys import legacy_run_key, run_key

TOY = """
import torch
from torch import nn


class Toy(nn.Module):
    task_kind = "causal_lm"
    carries_state = False
    max_len = None

    def __init__(self, vocab_size: int, dim: int = 16{extra}):
        super().__init__()
        self.emb, self.head = nn.Embedding(vocab_size, dim), nn.Linear(dim, vocab_size)
        self.scale = {scale}

    def forward(self, idx, state=None):
        return self.head(self.emb(idx)) * self.scale, None
"""


def register(tmp_path, extra: str = "", scale: str = "1.0"):
    """(Re)write the module `toy_upgrade` and store it as model=toy_upgrade, every argument in its config."""
    (tmp_path / "toy_upgrade.py").write_text(textwrap.dedent(TOY.format(extra=extra, scale=scale)))
    module = (
        importlib.reload(sys.modules["toy_upgrade"]) if "toy_upgrade" in sys.modules else importlib.import_module("toy_upgrade")
    )
    if ("model", "toy_upgrade") in store:
        store.delete_entry("model", "toy_upgrade")
    store(builds(module.Toy, populate_full_signature=True, zen_partial=True), group="model", name="toy_upgrade")


@pytest.fixture
def toy(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    if ("model", "toy_upgrade") in store:
        store.delete_entry("model", "toy_upgrade")
    sys.modules.pop("toy_upgrade", None)


def test_a_new_defaulted_argument_keeps_the_folder_and_a_changed_default_is_said(toy, capfd):
    common = ["model=toy_upgrade", "data.seq_len=16", "data.batch_size=4", *QUIET, "trainer.val_check_interval=2"]
    common += ["trainer.limit_val_batches=1", "trainer.limit_test_batches=1"]
    register(toy)
    first = run_in_process([*common, "trainer.max_steps=2"], toy / "out")
    register(toy, extra=", dropout: float = 0.0")  # the upgrade: one more argument, at a default
    second = run_in_process([*common, "trainer.max_steps=4"], toy / "out")
    assert second["ckpt_dir"] == first["ckpt_dir"] and second["resumed_from_step"] == 2
    assert "warning" not in capfd.readouterr().err
    register(toy, extra=", dropout: float = 0.5")  # a changed default: same folder, one line says so
    third = run_in_process([*common, "trainer.max_steps=6"], toy / "out")
    assert third["ckpt_dir"] == first["ckpt_dir"] and third["resumed_from_step"] == 4
    (line,) = [ln for ln in capfd.readouterr().err.splitlines() if ln.startswith("warning:")]
    assert "model.dropout was 0.0, is 0.5 now" in line and "model.dropout=0.0" in line


def test_a_folder_of_the_previous_key_scheme_is_resumed(tmp_path):
    from memexp.runs.build import RunNames
    from memexp.runs.train import checkpoint_dir

    cfg = {"model": {"_target_": "memexp.models.lstm.LSTMLM", "dim": 64, "depth": 1}, "optim": {}, "seed": 0, "data": {}}
    names = RunNames("e", "lstm", "shakespeare", 0)
    assert run_key(cfg) != legacy_run_key(cfg)
    new = checkpoint_dir(cfg, names, tmp_path)
    old = new.with_name(new.name.rsplit("-", 1)[0] + f"-{legacy_run_key(cfg)}")
    old.mkdir(parents=True)
    assert checkpoint_dir(cfg, names, tmp_path) == old  # the folder the previous scheme named is found
    new.mkdir()
    assert checkpoint_dir(cfg, names, tmp_path) == new  # once a folder of the new scheme exists, it is the one


def test_arguments_at_their_default_are_not_in_the_key():
    base = {"model": {"_target_": "memexp.models.lstm.LSTMLM"}, "optim": {}, "seed": 0, "data": {}}
    from memexp.runs.keys import defaults_of

    defaults = defaults_of(base["model"])
    full = base | {"model": base["model"] | defaults}
    assert run_key(full) == run_key(base)
    some = next(k for k, v in defaults.items() if isinstance(v, int) and not isinstance(v, bool))
    assert run_key(full | {"model": full["model"] | {some: defaults[some] + 1}}) != run_key(base)
