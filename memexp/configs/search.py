"""Where Hydra finds YAML presets, and composing an app's config outside the command line.

Presets are YAML files in group folders (`experiment/foo.yaml` is `experiment=foo`). They are
looked up in these folders, first match wins (so a user's file overrides a shipped one):

    $MEMEXP_CONF_PATH      extra folders, separated by ':' (e.g. a lab's shared presets)
    ./conf/local/          the user's own presets, git-ignored in the repository
    ./conf/                presets of the project in the working directory
    memexp/conf/           the presets that ship with the package (found in any install)

"./" is the working directory at launch. The search path is set in each app's primary config
(`hydra.searchpath`), computed when the app starts, so it follows the directory a command runs in.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from hydra_zen import make_config, store
from omegaconf import DictConfig

PACKAGED_CONF = Path(__file__).resolve().parents[1] / "conf"


def preset_dirs(cwd: str | Path | None = None) -> list[Path]:
    """The preset folders that exist, in lookup order (see the module docstring)."""
    cwd = Path.cwd() if cwd is None else Path(cwd)
    extra = [Path(p) for p in os.environ.get("MEMEXP_CONF_PATH", "").split(os.pathsep) if p]
    candidates = [*extra, cwd / "conf" / "local", cwd / "conf", PACKAGED_CONF]
    seen, out = set(), []
    for p in candidates:
        p = p.resolve()
        if p.is_dir() and p not in seen:
            seen.add(p)
            out.append(p)
    return out


def store_with_search_path(config_name: str, cwd: str | Path | None = None) -> None:
    """Re-store the app config `config_name` with `hydra.searchpath` set to `preset_dirs(cwd)`."""
    base = store[None, config_name]
    base = getattr(base, "__memexp_base__", base)  # the app config as registered, not an earlier wrap
    searchpath = [p.as_uri() for p in preset_dirs(cwd)]
    wrapped = make_config(hydra=dict(searchpath=searchpath), bases=(base,), zen_dataclass={"cls_name": base.__name__})
    wrapped.__memexp_base__ = base
    store.delete_entry(None, config_name)
    store(wrapped, name=config_name)


def prepare_app(config_name: str, folder: str) -> None:
    """Fill Hydra's config store for one app: its outputs under outputs/<folder>/, its preset search path."""
    from memexp.configs import register_all
    from memexp.configs.apps import hydra_settings

    register_all()
    hydra_settings(folder)
    store_with_search_path(config_name)
    store.add_to_hydra_store(overwrite_ok=True)


def compose_config(config_name: str, overrides: Sequence[str] = (), folder: str = "runs") -> DictConfig:
    """The config an app would get from `overrides` on its command line (for tests, scripts, notebooks)."""
    from hydra import compose, initialize

    prepare_app(config_name, folder)
    with initialize(version_base="1.3", config_path=None):
        return compose(config_name, overrides=list(overrides))
