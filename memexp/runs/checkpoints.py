"""A checkpoint back into a usable module: its task (with weights) and its data (with tokenizer).

Every task writes a `memexp` entry into its Lightning checkpoints (`memexp.tasks.record`):
the run's resolved config, the tokenizer's state and the task kind. `load_checkpoint`
rebuilds the model, data and optimiser settings from that config and loads the weights.

The config sections are Hydra configs (`_target_` plus arguments); turning one into an
object is the config layer's job, so the caller passes `build` (the entry points and
`memexp.configs.load_checkpoint` pass hydra-zen's `instantiate`). That keeps Hydra out of
this layer, as DESIGN.md asks, and lets a test pass any builder.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch

from memexp.errors import CheckpointError, ConfigError
from memexp.files import atomic_path
from memexp.memory.bank_file import BankState
from memexp.runs.build import build_task
from memexp.runs.keys import changed_defaults
from memexp.tasks.optim import OptimizerSettings

Builder = Callable[[dict], Any]  # a saved config section (with `_target_`) -> the object it describes


def read_checkpoint(path: Path) -> dict:
    """The checkpoint dict (weights_only=True), or a CheckpointError naming the path and the fault."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(
            f"checkpoint {path} does not exist; expected a .ckpt written by memexp.run (see outputs/checkpoints/)"
        )
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path} is a folder; expected a .ckpt file (last.ckpt or best-step=N.ckpt in it?)")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} could not be read (an empty file); expected a .ckpt written by memexp.run")
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated file, not a torch file, pickled objects
        first = next((ln.strip() for ln in str(e).splitlines() if ln.strip()), "")
        if "Weights only load failed" in first:  # torch's long explanation: the file is no plain torch checkpoint
            first = "not a torch checkpoint, or one holding pickled objects, which weights_only=True refuses"
        reason = f"{type(e).__name__}: {first[:120]}" if first else type(e).__name__
        raise CheckpointError(f"checkpoint {path} could not be read ({reason})") from None
    if not isinstance(ck, dict) or "memexp" not in ck or "state_dict" not in ck:
        raise CheckpointError(
            f"checkpoint {path} is not a memexp checkpoint (no 'memexp' entry); expected a .ckpt written by memexp.run"
        )
    return ck


def checked_resume(last: Path, cfg: dict, ck: dict | None = None) -> int:
    """The step to resume from, after checking that the checkpoint holds this run's model."""
    ck = read_checkpoint(last) if ck is None else ck
    saved = (ck["memexp"].get("config") or {}).get("model")
    if isinstance(saved, dict) and isinstance(cfg.get("model"), dict):
        changed, other = changed_defaults(saved, cfg["model"])
        if other:
            k, (was, now) = next(iter(other.items()))
            raise CheckpointError(
                f"checkpoint {last} was trained with another model config than this run's (model.{k}: {was!r} there, "
                f"{now!r} here); pass fresh=true to start over or ckpt_dir=<another folder>"
            )
        if changed:  # an upgrade changed a default this run leaves alone: the model is not the one saved
            said = ", ".join(f"model.{k} was {was!r}, is {now!r} now" for k, (was, now) in changed.items())
            keep = " ".join(f"model.{k}={json.dumps(was)}" for k, (was, _) in changed.items())
            print(
                f"warning: {last}: a default changed since this run was saved ({said}); it goes on with the new "
                f"value; to keep the saved one, run again with {keep}",
                file=sys.stderr,
                flush=True,
            )
    return int(ck.get("global_step", 0))


def stopped_at_threshold(ck: dict) -> bool:
    """Whether an EarlyStopping callback (`task.stop_at_acc`) ended the fit of this checkpoint at its threshold, as
    the callback's own state in the checkpoint says (a stop by trainer.max_time or a signal is not one)."""
    from lightning.pytorch.callbacks.early_stopping import EarlyStoppingReason

    states = (ck.get("callbacks") or {}).items()
    return any(
        k.startswith("EarlyStopping") and v.get("stopping_reason") == EarlyStoppingReason.STOPPING_THRESHOLD.value
        for k, v in states
        if isinstance(v, dict)
    )


def resume_point(ckpt_dir: Path, cfg: dict) -> tuple[Path | None, int | None, bool]:
    """(checkpoint, step, stopped early) a run in `ckpt_dir` resumes from: last.ckpt, else the newest other readable
    checkpoint; `stopped early`: its fit was ended by an early stop (`stopped_at_threshold`).

    A checkpoint that cannot be read (a write killed half-way by an older writer, a disk fault) is moved aside to
    `<name>.unreadable`, with one line on stderr saying so and what the run does instead; with none readable left
    the run starts fresh. A readable checkpoint of another model still stops the run (CheckpointError).
    """
    last = ckpt_dir / "last.ckpt"
    others = sorted((p for p in ckpt_dir.glob("*.ckpt") if p != last), key=lambda p: p.stat().st_mtime, reverse=True)
    bad: list[str] = []
    for path in ([last] if last.exists() else []) + others:
        try:
            ck = read_checkpoint(path)
        except CheckpointError as e:
            aside = path.with_name(path.name + ".unreadable")
            path.replace(aside)
            bad.append(f"{path.name} ({str(e).split(' could not be read ')[-1].strip('()')}) moved to {aside.name}")
            continue
        step = checked_resume(path, cfg, ck)
        if bad:
            print(f"warning: {ckpt_dir}: {'; '.join(bad)}; resuming from {path.name} (step {step})", file=sys.stderr, flush=True)
        return path, step, stopped_at_threshold(ck)
    if bad:
        print(f"warning: {ckpt_dir}: {'; '.join(bad)}; no readable checkpoint left, starting fresh", file=sys.stderr, flush=True)
    return None, None, False


@dataclass
class LoadedRun:
    """A checkpoint rebuilt: its task (weights loaded), data module (tokenizer restored), config and raw dict."""

    task: L.LightningModule
    datamodule: L.LightningDataModule
    config: dict
    checkpoint: dict

    @property
    def model_name(self) -> str:
        """The `model=` choice the run was trained with ("model" when unknown)."""
        return (self.config.get("names") or {}).get("model") or "model"

    @property
    def seed(self) -> int:
        return int((self.config.get("names") or {}).get("seed", 0))


def load_checkpoint(
    path: str | Path,
    build: Builder,
    data_dir: str | None = None,
    expect_model: str | None = None,
    data_overrides: dict | None = None,
    data_path: str | None = None,
    checkpoint: dict | None = None,
) -> LoadedRun:
    """Rebuild the task (with its weights) and the data module (with its tokenizer) of a checkpoint.

    build: turns a saved config section into its object (hydra-zen's `instantiate`).
    expect_model: the `model=` choice the caller asked for; another one is an error.
    data_path: other data to evaluate on, set as whichever of the data config's `path` (text)
    or `source` (dialogues) it has.
    checkpoint: the dict `read_checkpoint(path)` returned, when the caller has read it already.
    """
    path = Path(path)
    ck = read_checkpoint(path) if checkpoint is None else checkpoint
    meta = ck["memexp"]
    cfg = meta["config"]
    saved_model = cfg.get("names", {}).get("model")
    if expect_model is not None and saved_model is not None and expect_model != saved_model:
        raise CheckpointError(f"checkpoint {path} holds a model={saved_model} model, not model={expect_model}")
    data_cfg = dict(cfg["data"]) | (data_overrides or {})
    if data_dir is not None:
        data_cfg["data_dir"] = data_dir
    if data_path is not None:
        field = next((f for f in ("path", "source") if f in data_cfg), None)
        if field is None:
            raise ConfigError(
                f"data_path: the data of checkpoint {path} is not read from a file (its config has no path or source)"
            )
        data_cfg[field] = data_path
        if field == "source":
            data_cfg["cache_dir"] = None  # another source: its own cache (prepared with the checkpoint's vocabulary)
    try:
        datamodule = build(data_cfg)()
    except TypeError as e:  # an override this kind of data does not have (e.g. a text setting on dialogue data)
        unknown = [k for k in data_overrides or {} if f"'{k}'" in str(e)]
        if not unknown:
            raise
        raise ConfigError(
            f"{unknown[0]}: the data of checkpoint {path} ({str(cfg['data'].get('_target_', '?')).rsplit('.', 1)[-1]}) "
            f"has no such setting"
        ) from None
    datamodule.restore_tokenizer(meta["tokenizer"])
    optim = build(cfg["optim"]) if cfg.get("optim") else OptimizerSettings()
    model_factory = build(cfg["model"])
    # the run's task settings, less what only training reads (an evaluation carries no state between batches)
    section = dict(cfg.get("task") or {}) | {"carry_state": False}
    task = build_task(model_factory, datamodule.spec, optim, section, strict=False)
    try:
        task.load_state_dict(ck["state_dict"])
    except RuntimeError as e:
        raise CheckpointError(f"checkpoint {path} does not fit its own model config: {str(e).splitlines()[0]}") from None
    task.run_config = cfg
    return LoadedRun(task=task, datamodule=datamodule, config=cfg, checkpoint=ck)


BANK_BUFFERS = ("memory_bank", "freeze_mask", "content_rows")  # ExplicitLM's bank, saved as net.<name> in state_dict


def write_bank_into_checkpoint(path: str | Path, state: BankState) -> Path:
    """Replace the bank of an ExplicitLM checkpoint with `state`, atomically (the rest of the file stays as it was).

    The bank buffers in `state_dict` get the new tokens, frozen and content masks; the entries' sources and the
    updater's usage counters go into the checkpoint's `memexp` entry (`memory_bank`), where `load_memory` reads them.
    """
    path = Path(path)
    ck = read_checkpoint(path)
    new = {"memory_bank": state.tokens, "freeze_mask": state.freeze_mask, "content_rows": state.content_rows}
    for name in BANK_BUFFERS:
        key = f"net.{name}"
        if key not in ck["state_dict"]:
            raise CheckpointError(f"checkpoint {path} has no {key} in its state_dict; expected an ExplicitLM checkpoint")
        old = ck["state_dict"][key]
        if tuple(old.shape) != tuple(new[name].shape):
            raise CheckpointError(f"checkpoint {path}: {key} has shape {tuple(old.shape)}, the bank {tuple(new[name].shape)}")
        ck["state_dict"][key] = new[name].to(old.dtype).clone()
    ck["memexp"]["memory_bank"] = {"sources": list(state.sources), "usage": state.usage}
    with atomic_path(path) as tmp:
        torch.save(ck, tmp)
    return path
