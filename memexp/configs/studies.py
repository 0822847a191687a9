"""Store entries of the memory studies: synthetic recall data, study-sized models, the study
presets (hope_vs_baseline, continual_abc, meta_recall).

Kept apart from groups.py so the studies can grow without touching the core groups.

    python -m memexp.run -m experiment=hope_vs_baseline seed=0,1,2     # 2 models x 3 seeds
    python -m memexp.run -m experiment=continual_abc seed=0,1          # A->B->C, both models
    python -m memexp.report dir=outputs/multirun/<date>/<time>         # tables, plots, report
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hydra_zen import builds, store

from memexp.configs.groups import BOARD_ENTRIES, DATA_SEED
from memexp.configs.mqar import cell
from memexp.data.recall import RecallDataModule
from memexp.models.hope import HOPE
from memexp.models.transformer import Transformer

# -- data -----------------------------------------------------------------------------------
RecallConf = builds(
    RecallDataModule, populate_full_signature=True, zen_partial=True, data_dir="${paths.data_dir}", seed=DATA_SEED
)

# -- study-sized models: a HOPE whose attention segment (seq_len=16) is far shorter than the
# recall gaps, and a transformer of the same width/depth whose context covers the training
# sequences (max_len=72) but nothing longer. Both ~30k parameters: minutes on a CPU.
HOPETinyConf = builds(
    HOPE,
    populate_full_signature=True,
    zen_partial=True,
    zen_exclude=["vocab_size"],
    dim=32,
    depth=2,
    heads=2,
    ff_mult=2,
    seq_len=16,
    max_len=16,
    mem_write=4,
    memory_capacity=8,
    top_k=2,
    memory_read_init=1.0,  # recall lives in the memory: read it at full strength from the start (as measured)
)
TransformerTinyConf = builds(
    Transformer,
    populate_full_signature=True,
    zen_partial=True,
    zen_exclude=["vocab_size"],
    dim=32,
    depth=2,
    heads=2,
    ff_mult=2,
    max_len=72,
)

# -- the `study` section of a run (read by memexp.run) ----------------------------------------
# data=recall's defaults are the study's: needle, seq_len=72, gaps drawn from [4, 64], 16+8+8 ids, batch 32.
# The compare presets set no data fields, so `data=shakespeare` swaps in text (binned perplexity).
_recall_data = dict(kind="needle", seq_len=72, gap=[4, 64], n_filler=16, n_keys=8, n_values=8, batch_size=32)
_study_trainer = dict(max_steps=600, val_check_interval=200, limit_val_batches=2, limit_test_batches=4, log_every_n_steps=20)
_continual = dict(
    trainer=dict(_study_trainer, max_steps=300, val_check_interval=300),
    study=dict(kind="continual", tasks=["A", "B", "C"]),
)


def _study_preset(name: str, data_group: str, both_models: bool = True, **fields) -> dict:
    """A study preset: hope_tiny on `data_group`, the studies' optimiser and trainer (unless `fields`
    set them), no samples; `both_models` sweeps hope_tiny and transformer_tiny under -m."""
    preset = dict(
        defaults=["_self_", {"override /data": data_group}, {"override /model": "hope_tiny"}],
        optim=dict(lr=3e-3, warmup_steps=20, weight_decay=0.0),
        trainer=_study_trainer,
        sample_tokens=0,
        experiment_name=name,
    )
    if both_models:
        preset["hydra"] = dict(sweeper=dict(params={"model": "hope_tiny,transformer_tiny"}))
    return preset | fields


# The leaderboard (memexp.evals.leaderboard): each job trains one `board` entry at one seed. `board=<model>`
# (memexp.configs.groups.BOARD_ENTRIES: model, data, optimiser and budget) trains on tiny-shakespeare, then measures
# binned perplexity and the extra texts; `board=<model>_recall` trains the same network on needle recall and scores
# it at gaps of 1x-16x the board's context; `board=<model>_continual` trains it on three parts of tiny-shakespeare in
# sequence (A -> B -> C) and measures forgetting.
BOARD_SPAN = 64  # the board's context: the transformer's max_len, HOPE's attention segment, the recurrent models' window
BOARD_RECALL_GAPS = [BOARD_SPAN // 2] + [BOARD_SPAN * m for m in (1, 2, 4, 8, 16)]
_BOARD_RECALL = dict(
    # every model sees the same sequences (data_seed), whole, in its context: 64 tokens, gaps drawn from [4, 56]
    data=dict(kind="needle", seq_len=BOARD_SPAN, gap=[4, BOARD_SPAN - 8], n_filler=16, n_keys=8, n_values=8, batch_size=16),
    trainer=dict(max_steps=600, val_check_interval=300, limit_val_batches=4, limit_test_batches=4, gradient_clip_val=1.0),
    study=dict(gaps=BOARD_RECALL_GAPS, n_samples=128, span=BOARD_SPAN),
)
_BOARD_CONTINUAL = dict(
    trainer=dict(max_steps=300, val_check_interval=300, limit_val_batches=10, gradient_clip_val=1.0),
    study=dict(kind="continual", tasks=["A", "B", "C"]),
)


# MQAR (memexp.data.mqar): the CPU preset's (64, 4) cell (64 = BOARD_SPAN, vocabulary 8192, its data, batches and
# epochs), the same budget for every model; `_reassign`: 2 of the 4 keys get a new value later in the context
# (Zoology's forgetting MQAR)
_CPU_64x4 = cell("64x4", cpu=True)
_BOARD_MQAR = dict(
    data=_CPU_64x4["data"],
    trainer=_CPU_64x4["trainer"] | dict(gradient_clip_val=1.0),
    task=dict(stop_at_acc=0.99),
)


def board_columns() -> dict[str, dict]:
    """The `board` entries of the recall and continual columns, `<model>_recall` and `<model>_continual`: each board
    model's network and optimiser at one budget shared by all models."""
    out = {}
    for name, entry in BOARD_ENTRIES.items():
        model_choice = next(d for d in entry["defaults"] if isinstance(d, dict) and "override /model" in d)
        out[f"{name}_recall"] = dict(
            defaults=["_self_", model_choice, {"override /data": "recall"}],
            model=entry["model"],
            optim=entry["optim"],
            **_BOARD_RECALL,
        )
        for suffix, reassigned in (("mqar", 0), ("mqar_reassign", 2)):
            mqar = _BOARD_MQAR | dict(data=_BOARD_MQAR["data"] | dict(num_reassigned=reassigned))
            out[f"{name}_{suffix}"] = dict(
                defaults=["_self_", model_choice, {"override /data": "mqar"}], model=entry["model"], optim=entry["optim"], **mqar
            )
        out[f"{name}_continual"] = dict(
            defaults=["_self_", model_choice, {"override /data": "shakespeare"}],
            model=entry["model"],
            optim=entry["optim"],
            data=entry["data"] | dict(n_tasks=3),
            **_BOARD_CONTINUAL,
        )
    return out


BOARD_COLUMNS = ("", "_recall", "_continual", "_mqar", "_mqar_reassign")
BOARD_SWEEP = ",".join(f"{name}{col}" for name in BOARD_ENTRIES for col in BOARD_COLUMNS)
_LEADERBOARD = dict(
    study=dict(
        board=True,
        lengths=[8, 16, 32, 64],
        split="test",
        extra_texts=[],
        speed=dict(rounds=3, train_steps=20, gen_tokens=200),
    ),
    hydra=dict(sweeper=dict(params={"board": BOARD_SWEEP, "seed": "0,1,2"})),
    sample_tokens=0,
    experiment_name="leaderboard",
)


def register_studies() -> None:
    store(RecallConf, group="data", name="recall")
    store(HOPETinyConf, group="model", name="hope_tiny")
    store(TransformerTinyConf, group="model", name="transformer_tiny")

    experiment = store(group="experiment", package="_global_")
    experiment(_LEADERBOARD, name="leaderboard")
    board = store(group="board", package="_global_")
    for name, entry in board_columns().items():
        board(entry, name=name)
    # HOPE vs the transformer baseline: same data, steps, optimiser; each job evaluates recall
    # by gap (data=recall) or binned perplexity (text data) after its test.
    experiment(
        _study_preset(
            "hope_vs_baseline",
            "recall",
            study=dict(gaps=[16, 32, 64, 128, 256], lengths=[16, 32, 64], n_samples=256),
        ),
        name="hope_vs_baseline",
    )
    # Continual learning: tasks A, B, C are needle recall whose answer is a task-specific
    # permutation of the stored value (a map the weights must hold), with a cue token before the
    # query naming the task, so the three can be known at once (data.disjoint_values=true gives
    # each task its own value tokens instead); trained in sequence, trainer.max_steps per stage.
    experiment(
        _study_preset(
            "continual_abc",
            "recall",
            **_continual,
            data=dict(_recall_data, gap=[4, 32], seq_len=40, remap_values=True, task_cue=True),
        ),
        name="continual_abc",
    )
    # Continual learning on text, the source document's protocol: tiny-shakespeare cut into three
    # contiguous parts (A, B, C), trained in sequence; next-character accuracy and loss on each.
    experiment(
        _study_preset("continual_text", "shakespeare", **_continual, data=dict(n_tasks=3, seq_len=64, batch_size=16)),
        name="continual_text",
    )
    # Meta-training (Reptile outer loop on held-out validation tasks), compared with meta.use=false:
    #   python -m memexp.run -m experiment=meta_recall meta.use=true,false
    experiment(
        _study_preset(
            "meta_recall",
            "recall",
            both_models=False,
            meta=dict(use=True),
            study=dict(gaps=[16, 32, 64], n_samples=256),
        ),
        name="meta_recall",
    )

    _register_model_claims(experiment)


def _register_model_claims(experiment: Callable[..., Any]) -> None:
    """The studies of one model's own claims: HGD-MemNet's thinking steps, ExplicitLM's knowledge study and SFT."""
    # HGD-MemNet's design claim: gated thinking steps (up to 4) against the same network held to one step, on the
    # 10,000-dialogue LCCC sample (its last 1,000 held out: 500 validation, 500 test), 6 seeds each:
    #   python -m memexp.run -m experiment=hgd_thinking          # 12 runs; reply perplexity, BLEU, distinct
    experiment(
        dict(
            defaults=["_self_", {"override /model": "hgd"}, {"override /data": "lccc"}],
            model=dict(embedding_dim=64, hidden_dim=128, static_dim=64, min_think=1, max_think=4, dropout=0.2),
            data=dict(
                source="${paths.data_dir}/lccc_toy/toy_train.txt",
                holdout=1000,
                batch_size=32,
                eval_batch_size=64,
                max_history=4,
                max_context_len=64,
                max_reply_len=32,
            ),
            optim=dict(lr=3e-3, warmup_steps=30, min_lr=3e-4, weight_decay=0.01),
            trainer=dict(max_steps=300, val_check_interval=100, limit_val_batches=8, gradient_clip_val=1.0),
            task=dict(max_eval_generate_batches=8),  # BLEU and distinct of greedy replies to all 500 test dialogues
            sample_tokens=0,
            experiment_name="hgd_thinking",
            hydra=dict(sweeper=dict(params={"model.max_think": "1,4", "seed": "0,1,2,3,4,5"})),
        ),
        name="hgd_thinking",
    )
    # ExplicitLM's knowledge study (memexp.runs.knowledge): pretrain a small Qwen3 on a generated world's
    # sentences, freeze it, train the memory on questions, then measure held-out accuracy with the full
    # bank, an empty bank and the backbone alone, hit rates and editing.
    experiment(
        dict(
            defaults=["_self_", {"override /model": "explicit_lm"}, {"override /data": "knowledge_qa"}],
            model=dict(knowledge_num=1024, knowledge_length=16, knowledge_dim=64, num_candidates=8, fusion_dim=128),
            data=dict(qa_per_batch=32, index_per_batch=128),
            optim=dict(lr=3e-3, warmup_steps=50, schedule="constant", weight_decay=0.0),
            # no clipping: the router's gradient (160 rows) would scale down the fusion's (32 answers)
            trainer=dict(max_steps=4000, val_check_interval=1000, log_every_n_steps=50, gradient_clip_val=None),
            study=dict(kind="knowledge", edits=100, backbone=dict(dim=128, depth=2, heads=4, steps=600, lr=3e-3)),
            sample_tokens=0,
            experiment_name="explicit_knowledge",
        ),
        name="explicit_knowledge",
    )
    # ExplicitLM supervised fine-tuning on {"conversations": [...]} JSONL (loss on assistant tokens only):
    #   python -m memexp.run experiment=explicit_sft data.path=sft.jsonl data.knowledge_path=kb.json model.backbone=<Qwen3 folder>
    experiment(
        dict(
            defaults=["_self_", {"override /model": "explicit_lm"}, {"override /data": "explicit_text"}],
            data=dict(format="sft", seq_len=512, batch_size=4),
            optim=dict(lr=2e-4, warmup_steps=100, min_lr=2e-5, weight_decay=0.1, betas=[0.9, 0.95]),
            trainer=dict(max_steps=2000, val_check_interval=500, accumulate_grad_batches=8),
            sample_tokens=0,
            experiment_name="explicit_sft",
        ),
        name="explicit_sft",
    )
