"""Logger factories that need a decision at run time (W&B online or offline)."""

from __future__ import annotations

import netrc
import os
from pathlib import Path

from lightning.pytorch.loggers import WandbLogger


def wandb_logged_in() -> bool:
    """True when W&B credentials exist (WANDB_API_KEY, or `wandb login`'s netrc entry)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    path = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        return path.exists() and any("wandb" in host for host in netrc.netrc(path).hosts)
    except (netrc.NetrcParseError, OSError):
        return False


def wandb_logger(
    save_dir: str,
    project: str = "memexp",
    entity: str | None = None,
    group: str | None = None,
    name: str | None = None,
    tags: list[str] | None = None,
    mode: str = "auto",
) -> WandbLogger:
    """A W&B logger: online when logged in, offline otherwise (mode="auto"), or as `mode` says
    ("online", "offline", "disabled"). Offline runs are uploaded later with `wandb sync`."""
    if mode == "auto":
        mode = os.environ.get("WANDB_MODE") or ("online" if wandb_logged_in() else "offline")
    return WandbLogger(
        save_dir=save_dir,
        project=project,
        entity=entity,
        group=group,
        name=name,
        tags=tags,
        offline=mode == "offline",
        mode=mode,
    )
