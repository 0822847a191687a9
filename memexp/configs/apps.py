"""Top-level configs of the entry points and Hydra's own settings (job name, output folders).
The search path for YAML presets is `memexp.configs.search`'s."""

from __future__ import annotations

from hydra.conf import HydraConf, JobConf, RunDir, SweepDir
from hydra_zen import MISSING, builds, make_config, store

from memexp.configs.sweep_report import SweepReport
from memexp.tasks.settings import task_section_defaults

RunConfig = make_config(
    hydra_defaults=[
        "_self_",
        {"model": "transformer"},
        {"data": "shakespeare"},
        {"optim": "adamw"},
        {"trainer": "default"},
        {"logger": "wandb"},
        {"callbacks": "default"},
        {"paths": "default"},
        {"experiment": None},
        {"board": None},
        {"mqar": None},
        {"mqar_cell": None},
        {"hparams_search": None},
        {"launcher": None},
        {"debug": None},
    ],
    model=None,
    data=None,
    optim=None,
    trainer=None,
    logger=None,
    callbacks=None,
    paths=None,
    # each task's settings (memexp.tasks: CausalLMSettings, DialogueSettings, ClassificationSettings, TaskSettings)
    task=make_config(**task_section_defaults()),
    seed=0,
    # the data's seed (synthetic data, shuffles, training windows); set it to keep the data fixed across model seeds
    data_seed="${seed}",
    fresh=False,
    ckpt_dir=None,
    experiment_name=None,  # None: the experiment preset chosen (a user preset files under its own name), else "default"
    sample_tokens=300,
    sample_prompt="\n",
    # Studies (memexp.configs.studies): evaluations after the test, or a continual A->B->C driver.
    study=None,
    # First-order Reptile outer loop on held-out validation batches (memexp.tasks.meta).
    meta=make_config(use=False, inner_steps=5, outer_steps=1, outer_frequency=50, inner_lr=1e-2, outer_lr=0.5),
    # W&B tags of the run (with logger.wandb.tags), e.g. tags=[baseline,ablation]; also in every logger's hyperparameters
    tags=[],
    # the metric the run returns as a number (Hydra's Optuna sweeper minimises it; hparams_search presets set it)
    optimized_metric=None,
    zen_dataclass={"cls_name": "RunConfig"},
)

# `model=NAME` on an evaluate/generate command line picks the model group, as in memexp.run;
# the checkpoint must hold that model (the choice is read back from Hydra's runtime choices).
EvaluateConfig = make_config(
    hydra_defaults=["_self_", {"paths": "default"}, {"optional model": None}],
    paths=None,
    ckpt=MISSING,
    model=None,
    splits=["val", "test"],  # or [all]: the whole file (with data_path: another file of the checkpoint's kind)
    data_path=None,
    unknown=None,  # text: characters outside the checkpoint's char vocabulary, error | skip (None: the run's setting)
    batch_size=None,
    out=None,
    accelerator="auto",
    precision=None,  # None: the precision the checkpoint trained in (trainer.precision's values)
    eval="metrics",  # metrics | recall | binned_ppl (memexp.evals)
    gap=None,
    gaps=None,
    lengths=[64, 128, 256, 512],
    split="test",
    n_samples=256,
    reports_dir=None,
    zen_dataclass={"cls_name": "EvaluateConfig"},
)

GenerateConfig = make_config(
    hydra_defaults=["_self_", {"paths": "default"}, {"optional model": None}],
    paths=None,
    ckpt=MISSING,
    model=None,
    prompt="\n",
    max_new_tokens=300,
    temperature=0.8,
    top_k=0,
    top_p=1.0,
    seed=0,
    zen_dataclass={"cls_name": "GenerateConfig"},
)


PrepareConfig = make_config(
    hydra_defaults=["_self_", {"data": "lccc"}, {"paths": "default"}],
    data=None,
    paths=None,
    zen_dataclass={"cls_name": "PrepareConfig"},
)

# `ckpt`: a dialogue checkpoint (model=hgd), an explicit_lm checkpoint or a bank file saved from one.
# `max_len`: the most tokens of a reply (None: the data's max_reply_len; explicit_lm: 64, at most half the window).
# `history`: utterances kept as context (None: the data's max_history; explicit_lm: all that fit); sampling as in generate.
# explicit_lm only: dual-path chat, facts of each user turn written into the bank every `fact_update_frequency`
# turns by `extractor` (identity: whole sentences; llmlingua: LLMLingua-2 with `fact_extractor`), placed by
# `update_strategy` (memexp.memory.updates); `save_bank`: a bank file written on exit; `system`: a system prompt.
ChatConfig = make_config(
    hydra_defaults=["_self_", {"paths": "default"}, {"optional model": None}],
    paths=None,
    ckpt=MISSING,
    model=None,
    max_len=None,
    temperature=0.8,
    top_k=0,
    top_p=0.9,
    greedy=False,
    seed=0,
    history=None,
    verbose=False,
    extractor="identity",
    fact_extractor=make_config(
        model="microsoft/llmlingua-2-bert-base-multilingual-cased-meetingbank", rate=0.4, force_tokens=None, chunk_end_tokens=None
    ),
    update_strategy="lru",
    similarity_threshold=0.9,
    fact_update_frequency=1,
    include_output=False,
    save_bank=None,
    system=None,
    zen_dataclass={"cls_name": "ChatConfig"},
)

# python -m memexp.memory <verb> ...: memexp.memory_cli.main passes the verb on as verb=<verb>. `out`: the new bank
# file a write goes to (or export's JSONL); inplace=true rewrites ckpt= instead; force=true writes frozen entries.
MemoryConfig = make_config(
    hydra_defaults=["_self_", {"paths": "default"}],
    paths=None,
    verb=MISSING,  # show | search | edit | delete | add | export | import
    ckpt=MISSING,  # an ExplicitLM checkpoint or a bank file
    out=None,
    inplace=False,
    force=False,
    start=0,  # show: the first entry and how many
    count=20,
    query=None,  # search: the text, and how many entries per memory layer
    top=5,
    index=None,  # edit, delete: the entry
    text=None,  # edit, add: the fact (add: a list adds each)
    src=None,  # import: the JSONL file
    strategy="lru",  # add: fifo | lru | random | similarity | importance (memexp.memory.updates)
    similarity_threshold=0.9,
    seed=0,
    format="table",  # table | json
    zen_dataclass={"cls_name": "MemoryConfig"},
)

# python -m memexp.report: aggregates a sweep (memexp.runs.report).
ReportConfig = make_config(
    hydra_defaults=["_self_", {"paths": "default"}],
    paths=None,
    dir=None,  # a multirun (or run) folder; None = the newest under ${paths.output_dir}/multirun
    reports_dir=None,  # None = <dir>/reports
    hf_model=None,  # a local Hugging Face causal LM folder to compare with (skipped with a note when absent)
    hf_text=None,  # the text it is scored on (bits per character); None = tiny-shakespeare's test split
    wandb=False,  # also log the aggregated tables and plots to one W&B run (offline unless logged in)
    zen_dataclass={"cls_name": "ReportConfig"},
)


def _hydra_conf(folder: str) -> HydraConf:
    # memexp.run's sweeps report themselves when they end (memexp.configs.sweep_report)
    callbacks = {"sweep_report": builds(SweepReport)} if folder == "runs" else {}
    from memexp.console import JOB_LOGGING

    return HydraConf(
        callbacks=callbacks,
        job_logging=JOB_LOGGING,
        job=JobConf(name="memexp", chdir=False),
        run=RunDir(dir=f"${{paths.output_dir}}/{folder}/${{now:%Y-%m-%d}}/${{now:%H-%M-%S}}"),
        sweep=SweepDir(dir="${paths.output_dir}/multirun/${now:%Y-%m-%d}/${now:%H-%M-%S}", subdir="${hydra.job.num}"),
    )


def register_apps() -> None:
    store(RunConfig, name="memexp_run")
    store(EvaluateConfig, name="memexp_evaluate")
    store(GenerateConfig, name="memexp_generate")
    store(PrepareConfig, name="memexp_prepare")
    store(ChatConfig, name="memexp_chat")
    store(MemoryConfig, name="memexp_memory")
    store(ReportConfig, name="memexp_report")


def hydra_settings(folder: str) -> None:
    """Store Hydra's settings for one entry point (runs land in outputs/<folder>/...)."""
    if ("hydra", "config") in store:
        store.delete_entry("hydra", "config")
    store(_hydra_conf(folder), name="config", group="hydra")
