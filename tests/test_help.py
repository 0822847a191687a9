"""`--help` of every entry point: usage, groups and options, settings, examples and the other entry points,
answered without importing torch (so in well under the 3 s target; timing itself is left to the benchmarks)."""

import subprocess
import sys

import pytest
from helpers import REPO, run_cli
from hydra_zen import store

from memexp.configs import register_all
from memexp.configs.catalog import GROUPS
from memexp.help import APPS

ENTRY_POINTS = ["run", "evaluate", "generate", "prepare", "chat", "report", "memory"]


@pytest.mark.parametrize("name", ENTRY_POINTS)
def test_help_lists_usage_options_examples_and_the_other_entry_points(name):
    proc = run_cli(f"memexp.{name}", "--help", timeout=60)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert out.startswith(f"usage: python -m memexp.{name}")
    assert "Most used:" in out and out.count(f"python -m memexp.{name} ") >= 5
    for other in ENTRY_POINTS:
        assert f"python -m memexp.{other}" in out
    if name == "run":
        for group in ("model", "data", "optim", "trainer", "logger", "callbacks", "experiment", "debug", "launcher"):
            assert f"\n  {group} " in out, group
        assert "*transformer" in out and "hope_vs_baseline" in out and "transformer_optuna" in out and "slurm" in out
        assert "data_seed=${seed}" in out and "task.test_ckpt=best" in out


@pytest.mark.parametrize("name", ["run", "chat", "memory"])
def test_help_imports_neither_torch_nor_lightning(name):
    module = "memexp.memory_cli" if name == "memory" else f"memexp.{name}"
    code = (
        f"import sys; sys.argv = ['{name}', '--help']\n"
        f"import {module} as m\n"
        "try:\n    m.main()\nexcept SystemExit as e:\n    assert e.code == 0, e.code\n"
        "heavy = sorted(k for k in sys.modules if k.split('.')[0] in ('torch', 'lightning', 'transformers'))\n"
        "print('HEAVY', heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "HEAVY []" in out.stdout, out.stdout[-500:]


def test_the_catalog_lists_exactly_the_stored_options():
    register_all()
    for group, options in GROUPS.items():
        stored = {name for (g, name) in store[group] if g == group}
        assert stored == set(options), (
            f"{group}: stored but not in the catalog {stored - set(options)}, listed but not stored {set(options) - stored}"
        )
    assert {a.config for a in APPS.values()} == {name for (g, name) in store[None] if g is None and name.startswith("memexp_")}


def test_memory_help_answers_before_the_verb_check():
    proc = run_cli("memexp.memory", "-h", timeout=60)
    assert proc.returncode == 0 and proc.stdout.startswith("usage: python -m memexp.memory"), proc.stderr
