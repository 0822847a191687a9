"""The ExplicitLM knowledge study (`experiment=explicit_knowledge`): two runs and the measurements.

1. Pretrain a small Qwen3 (`model=qwen3`) on the world's text: the training subjects' facts and sentences that only name each subject:
   it learns the templates and those facts, never the held-out ones.
2. Freeze it as ExplicitLM's backbone (`model.backbone=<stage 1's last.ckpt>`), fill the bank with
   the whole knowledge base, and train the memory on questions (data=knowledge_qa).
3. `memexp.evals.knowledge.knowledge_study`: held-out accuracy with the full bank, an empty bank and
   the backbone alone, hit rates, and editing; written to reports/knowledge_report.md and logged.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import lightning as L

from memexp.console import say
from memexp.data.text import TextDataModule
from memexp.errors import ConfigError
from memexp.evals.knowledge import knowledge_study
from memexp.files import write_json, write_text
from memexp.models.qwen3 import Qwen3LM
from memexp.runs.build import RunNames
from memexp.runs.loggers import log_to_wandb
from memexp.runs.precision import with_keywords
from memexp.runs.spec import KnowledgeStudy, RunResult, RunSpec
from memexp.runs.train import limited_batches, train_and_test
from memexp.tasks.optim import OptimizerSettings

BACKBONE_DEFAULTS = dict(dim=128, depth=2, heads=4, kv_heads=2, ff_mult=2, steps=600, lr=3e-3, batch_size=32, seq_len=32)


def backbone_stage(s: Mapping[str, Any], world_dir: Path, data_dir: str | None) -> tuple[dict, Callable, Callable]:
    """(config, model partial, data partial) of stage 1, from `BACKBONE_DEFAULTS`-shaped settings `s`."""
    model = dict(dim=s["dim"], depth=s["depth"], heads=s["heads"], kv_heads=s["kv_heads"], ff_mult=s["ff_mult"], max_len=64)
    data = dict(
        path=str(world_dir / "pretrain.txt"),
        tokenizer=str(world_dir / "tokenizer"),
        seq_len=s["seq_len"],
        batch_size=s["batch_size"],
        data_dir=data_dir,
    )
    cfg = {
        "model": {"_target_": f"{Qwen3LM.__module__}.Qwen3LM", "_partial_": True, **model},
        "data": {"_target_": f"{TextDataModule.__module__}.TextDataModule", "_partial_": True, **data},
        "optim": {"lr": s["lr"]},
        "task": {},
    }
    return cfg, functools.partial(Qwen3LM, **model), functools.partial(TextDataModule, **data)


def report_markdown(result: dict, names: RunNames) -> str:
    f, e, b = result["full_bank"], result["empty_bank"], result["backbone_alone"]
    lines = [
        f"# Knowledge study: {names.label}",
        "",
        f"Test subjects: {f['n']} questions about held-out subjects whose facts are only in frozen bank entries, "
        "disjoint from the held-out subjects validation asked about (the checkpoint was chosen there). "
        f"Accuracy picks among the relation's objects (chance {result['chance']:.3f}).",
        "",
        "| condition | accuracy | full-vocabulary accuracy | hit rate | hit rate on correct | hit rate on wrong |",
        "|---|---|---|---|---|---|",
    ]
    for name, s in (("full bank", f), ("empty bank", e), ("backbone alone", b)):
        hits = [s.get(k) for k in ("hit_rate", "hit_rate_correct", "hit_rate_wrong")]
        cells = " | ".join("-" if h is None else f"{h:.3f}" for h in hits)
        lines.append(f"| {name} | {s['accuracy']:.3f} | {s['accuracy_vocab']:.3f} | {cells} |")
    ed = result["edit"]
    lines += [
        "",
        f"Full bank minus empty bank: **{result['full_minus_empty']:+.3f}**.",
        f"Editing {ed['k']} test-subject entries (a new object, no training): {ed['follow_rate']:.3f} of the answers follow "
        f"the edit, {ed['old_answer_rate']:.3f} still give the old object.",
        f"Training subjects, full bank (knowledge base objects): accuracy {result['train_subjects_full_bank']['accuracy']:.3f}.",
    ]
    return "\n".join(lines) + "\n"


def knowledge_after_test(edits: int) -> Callable:
    """The after-test step of stage 2: measure, write the report, log it."""

    def after_test(
        task: L.LightningModule, datamodule: L.LightningDataModule, loggers: list, run_dir: Path, names: RunNames
    ) -> dict:
        result = knowledge_study(task.net, datamodule, edits=edits, seed=names.seed)
        reports = Path(run_dir) / "reports"
        write_json(result, reports / "knowledge_metrics.json")
        text = report_markdown(result, names)
        write_text(text, reports / "knowledge_report.md")
        flat = {
            "knowledge/full_bank_acc": result["full_bank"]["accuracy"],
            "knowledge/empty_bank_acc": result["empty_bank"]["accuracy"],
            "knowledge/backbone_acc": result["backbone_alone"]["accuracy"],
            "knowledge/full_minus_empty": result["full_minus_empty"],
            "knowledge/edit_follow": result["edit"]["follow_rate"],
            "knowledge/hit_rate_correct": result["full_bank"].get("hit_rate_correct", float("nan")),
            "knowledge/hit_rate_wrong": result["full_bank"].get("hit_rate_wrong", float("nan")),
        }
        for lg in loggers:
            lg.log_metrics(flat, step=int(task.global_step))
        log_to_wandb(loggers, {}, {}, flat)
        say(text)
        return {"knowledge": result, "metrics": flat}

    return after_test


def _backbone_spec(spec: RunSpec, study: KnowledgeStudy, world_dir: Path, data_dir: str) -> RunSpec:
    """Stage 1's run: a small Qwen3 on the world's text, cut like the run when the run is a smoke run."""
    if unknown := sorted(set(study.backbone) - set(BACKBONE_DEFAULTS)):
        raise ConfigError(f"study.backbone.{unknown[0]}: no such setting; expected {', '.join(BACKBONE_DEFAULTS)}")
    settings = BACKBONE_DEFAULTS | dict(study.backbone)
    bb_cfg, bb_model, bb_data = backbone_stage(settings, world_dir, data_dir)
    bb_cfg["seed"] = spec.names.seed
    run_trainer = spec.cfg.get("trainer") or {}
    bb_cfg["trainer"] = {"precision": run_trainer.get("precision")}  # a bf16 backbone has its own key
    steps, evals = int(settings["steps"]), 4
    if limits := limited_batches(spec.cfg):  # a smoke run (debug=fast, batch limits) cuts the backbone stage the same way
        steps = min(steps, int(run_trainer.get("max_steps") or steps))
        evals = min(evals, int(run_trainer.get("limit_val_batches") or evals))
        bb_cfg["run"] = {"choices": {"debug": limits["debug"]}} if "debug" in limits else {}  # its folder's name
        bb_cfg["trainer"] |= {"max_steps": steps, "limit_val_batches": evals, "limit_test_batches": evals}
    lr = bb_cfg["optim"]["lr"]
    return RunSpec(
        cfg=bb_cfg,
        names=RunNames(spec.names.experiment, "qwen3", "knowledge_text", spec.names.seed),
        model=bb_model,
        data=bb_data,
        optim=OptimizerSettings(lr=lr, warmup_steps=50, min_lr=lr / 10),
        trainer=with_keywords(
            spec.trainer, max_steps=steps, val_check_interval=steps, limit_val_batches=evals, limit_test_batches=evals
        ),
        run_dir=spec.run_dir / "backbone",
        checkpoint_root=spec.checkpoint_root,
        logger=spec.logger,
        callbacks=spec.callbacks,
        fresh=spec.fresh,
    )


def run_knowledge_study(spec: RunSpec) -> RunResult:
    """The knowledge driver: stage 1 (backbone), stage 2 (memory), then the measurements; returns stage 2's result
    with both."""
    study = spec.study if isinstance(spec.study, KnowledgeStudy) else KnowledgeStudy()
    probe = spec.data()
    probe.prepare_data()  # writes the world (sentences, knowledge base, tokenizer) once
    stage1 = train_and_test(_backbone_spec(spec, study, probe.world_dir, str(probe.data_dir)))
    backbone = str((Path(stage1.ckpt_dir) / "last.ckpt").resolve())
    say(f"backbone: {backbone} (val loss {stage1.metrics.get('val/loss', float('nan')):.3f})")
    stage2 = train_and_test(
        spec.replace(
            cfg=spec.cfg | {"model": dict(spec.cfg["model"], backbone=backbone)},
            model=functools.partial(spec.model, backbone=backbone),
            run_dir=spec.run_dir / "memory",
            after_test=knowledge_after_test(int(study.edits)),
        )
    )
    stage2.metrics |= (stage2.study or {}).get("metrics", {})
    stage2.backbone_run = {"ckpt": backbone, "metrics": stage1.metrics}
    write_json(stage2.as_dict(), spec.run_dir / "metrics.json")
    return stage2
