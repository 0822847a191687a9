"""Build a run's LightningModule: check that the model fits the data, then pair them in a task.

`RunNames` are the names a run is filed under (experiment, model and data choices, seed);
`check_pairing` stops a model/data pair whose task kinds differ before any work is done;
`build_task` turns a model factory and the data's `DataSpec` into the task's LightningModule.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import lightning as L

from memexp.data.spec import KIND_DESCRIPTIONS, DataSpec
from memexp.errors import ConfigError
from memexp.models.protocols import CausalLM, ExplicitBank, context_limit, missing_members
from memexp.tasks import TASKS
from memexp.tasks.explicit import ExplicitMemoryTask
from memexp.tasks.optim import OptimizerSettings


@dataclass
class RunNames:
    """The names a run is filed under: experiment, model and data choices, seed."""

    experiment: str = "default"
    model: str = "model"
    data: str = "data"
    seed: int = 0

    @property
    def label(self) -> str:
        """`<model>-<data>-seed<seed>`: the run's name in loggers and checkpoint folders."""
        return f"{self.model}-{self.data}-seed{self.seed}"


def task_kind_of(factory: Callable) -> str | None:
    """The `task_kind` a model or data class (or a partial of one) declares, if any."""
    target = getattr(factory, "func", factory)
    return getattr(target, "task_kind", None)


def check_pairing(model_factory: Callable, data_factory: Callable, names: RunNames) -> None:
    """Stop before any work when the model's task kind differs from the data's."""
    needs, provides = task_kind_of(model_factory), task_kind_of(data_factory)
    if needs is None or provides is None or needs == provides:
        return
    raise ConfigError(
        f"model={names.model} is a {needs} model and needs {KIND_DESCRIPTIONS.get(needs, needs)}, "
        f"but data={names.data} provides {KIND_DESCRIPTIONS.get(provides, provides)}; pick a data option of kind {needs}"
    )


# what a study adds to the run's metrics (memexp.runs.continual, memexp.runs.knowledge)
STUDY_METRICS = {
    "continual": [
        f"continual/{k}"
        for k in ("avg_forgetting", "backward_transfer", "avg_final_accuracy", "avg_loss_forgetting", "avg_final_loss")
    ],
    "knowledge": [
        f"knowledge/{k}"
        for k in (
            "full_bank_acc",
            "empty_bank_acc",
            "backbone_acc",
            "full_minus_empty",
            "edit_follow",
            "hit_rate_correct",
            "hit_rate_wrong",
        )
    ],
}
RUN_METRICS = ["global_step", "tested_step", "params/trainable", "params/frozen"]


def metric_names(data_factory: Callable, study_kind: str | None = None) -> list[str]:
    """The names in a run's `metrics` (what `optimized_metric` may name), known before the run starts."""
    if study_kind == "continual":  # the study's summary is all its result holds
        return STUDY_METRICS["continual"]
    kind = task_kind_of(data_factory)
    names = TASKS[kind].metric_names() if kind in TASKS else []
    return names + RUN_METRICS + STUDY_METRICS.get(study_kind or "", [])


def check_metric_name(metric: str, data_factory: Callable, data_name: str, study_kind: str | None = None) -> None:
    """Stop before any work when `optimized_metric` names a metric this run will not log."""
    known = metric_names(data_factory, study_kind)
    if metric.startswith(("train/", "lr-")) and study_kind != "continual":
        return  # training diagnostics depend on the model (auxiliary losses, one learning rate per parameter group)
    if known and metric not in known:
        shown = [k for k in known if k.startswith(("val/", "continual/", "knowledge/"))] or known
        tail = " (or their test/ counterparts)" if any(k.startswith("test/") for k in known) else ""
        raise ConfigError(
            f"optimized_metric={metric}: a run on data={data_name} logs no such metric; pick one of {', '.join(shown)}{tail}"
        )


def _takes(factory: Callable, name: str) -> bool:
    try:
        return name in inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return False


def pretrained_pieces(model_factory: Callable) -> dict[str, Any]:
    """Modules a model starts from that live in files, loaded here so models stay free of file I/O:
    the BERT embeddings of `model.embedding=bert` (from `model.bert_path`)."""
    keywords = getattr(model_factory, "keywords", {})
    if not _takes(model_factory, "embeddings") or keywords.get("embedding") != "bert":
        return {}
    if not keywords.get("bert_path"):
        raise ConfigError("model.embedding=bert needs model.bert_path=<a BERT folder> (config.json and weights)")
    from memexp.data.news.bert import load_bert_embeddings

    return {"embeddings": load_bert_embeddings(keywords["bert_path"])}


def build_task(
    model_factory: Callable,
    spec: DataSpec,
    optim: OptimizerSettings,
    task_section: Mapping[str, Any] | None = None,
    strict: bool = True,
) -> L.LightningModule:
    """The LightningModule for this model on this data, with the task's settings read from the run config's `task`
    section (`memexp.tasks.base.BaseTask.settings_from`, `strict` as there; None: the task's defaults)."""
    model_kwargs: dict[str, Any] = {"vocab_size": spec.vocab_size}
    if spec.pad_id is not None and _takes(model_factory, "pad_id"):
        model_kwargs["pad_id"] = spec.pad_id
    model_kwargs |= pretrained_pieces(model_factory)
    net = model_factory(**model_kwargs)
    if spec.task_kind == "causal_lm" and not isinstance(net, CausalLM):
        missing = missing_members(net, CausalLM)
        raise ConfigError(
            f"{type(net).__name__} does not implement memexp.models.protocols.CausalLM (missing: {', '.join(missing)}); "
            "a causal LM declares task_kind, max_len and carries_state and has forward(idx, state) -> (logits, state)"
        )
    if spec.memory is not None and isinstance(net, ExplicitBank):  # an explicit memory filled from the data's knowledge
        net.load_bank(spec.memory.tokens)
    max_len = context_limit(net)
    if max_len is not None and spec.seq_len is not None and spec.seq_len > max_len:
        raise ConfigError(
            f"data.seq_len={spec.seq_len} is longer than model.max_len={max_len}; raise model.max_len or lower data.seq_len"
        )
    task_cls = ExplicitMemoryTask if isinstance(net, ExplicitBank) else TASKS[spec.task_kind]
    return task_cls.create(net, spec, optim, task_cls.settings_from(task_section, strict))
