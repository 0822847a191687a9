"""Saved configs back into objects: the Hydra half of loading a checkpoint.

A checkpoint stores its run's resolved config; `load_checkpoint` here hands hydra-zen's
`instantiate` to `memexp.runs.checkpoints.load_checkpoint`, which does the rest (weights,
tokenizer, checks). Entry points, tests and notebooks call this one.
"""

from __future__ import annotations

from pathlib import Path

from hydra_zen import instantiate

from memexp.errors import CheckpointError
from memexp.memory.bank_file import read_bank_file
from memexp.memory.runtime import ExplicitMemory, knowledge_sources
from memexp.models.protocols import ExplicitBank
from memexp.runs.checkpoints import LoadedRun
from memexp.runs.checkpoints import load_checkpoint as _load_with


def load_checkpoint(
    path: str | Path,
    data_dir: str | None = None,
    expect_model: str | None = None,
    data_overrides: dict | None = None,
    data_path: str | None = None,
    checkpoint: dict | None = None,
) -> LoadedRun:
    """The task (weights loaded) and data module (tokenizer restored) of a memexp checkpoint (`checkpoint`: its
    dict, when already read)."""
    return _load_with(
        path,
        instantiate,
        data_dir=data_dir,
        expect_model=expect_model,
        data_overrides=data_overrides,
        data_path=data_path,
        checkpoint=checkpoint,
    )


def load_memory(
    path: str | Path,
    data_dir: str | None = None,
    strategy: str = "lru",
    similarity_threshold: float = 0.9,
    seed: int = 0,
) -> tuple[LoadedRun, ExplicitMemory]:
    """An ExplicitLM checkpoint, or a bank file (which names its checkpoint), as (run, its memory).

    From a checkpoint the bank is the one it was saved with and the sources come from its knowledge
    cache's mapping (or from the checkpoint, when its bank was rewritten in place); from a bank file,
    the saved bank, sources and usage counters replace them.
    """
    saved = read_bank_file(path)
    checkpoint = saved.checkpoint if saved is not None else str(Path(path).resolve())
    if saved is not None and not Path(checkpoint).is_file():
        raise CheckpointError(f"bank file {path} belongs to checkpoint {checkpoint}, which is not there any more")
    run = load_checkpoint(checkpoint, data_dir=data_dir)
    net = run.task.net
    if not isinstance(net, ExplicitBank):
        raise CheckpointError(
            f"checkpoint {checkpoint} holds a {run.model_name} model; an explicit memory needs model=explicit_lm"
        )
    spec = run.datamodule.spec
    bank = getattr(spec, "memory", None)
    memory = ExplicitMemory(
        net,
        run.datamodule.tokenizer,
        checkpoint,
        knowledge_sources(getattr(bank, "mapping_path", None), net.memory_bank.shape[0]),
        strategy=strategy,
        similarity_threshold=similarity_threshold,
        seed=seed,
    )
    if saved is not None:
        memory.load(saved, origin=path)
    elif "memory_bank" in run.checkpoint["memexp"]:  # a checkpoint whose bank was rewritten in place (memexp.memory inplace=true)
        record = run.checkpoint["memexp"]["memory_bank"]
        memory.sources = list(record["sources"])
        if record.get("usage") is not None:
            memory.updater.load_state(record["usage"])
    return run, memory
