"""Config groups. Models and data modules are stored as partials: the run fills in what
only the data knows (vocab_size) and where files go (data_dir, checkpoint folder)."""

from __future__ import annotations

from hydra_zen import builds, make_config, store
from lightning import Trainer
from lightning.pytorch.callbacks import EMAWeightAveraging, LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from memexp.data.dialogue import DialogueDataModule
from memexp.data.explicit import ExplicitLMDataModule
from memexp.data.knowledge_qa import KnowledgeQADataModule
from memexp.data.mqar import MQARDataModule
from memexp.data.text import RandomBytesDataModule, TextDataModule
from memexp.memory.backbone import build_explicit_lm
from memexp.models.explicit_lm import ExplicitLM
from memexp.models.gated_deltanet import GatedDeltaNetLM
from memexp.models.hgd import HGDMemNet
from memexp.models.hope import HOPE
from memexp.models.hyperlstm import HyperLSTM
from memexp.models.lstm import LSTMLM
from memexp.models.qwen3 import Qwen3LM
from memexp.models.titans import Titans
from memexp.models.transformer import Transformer
from memexp.runs.loggers import wandb_logger
from memexp.runs.progress import RunSummary, StepProgressBar, StepTQDMProgressBar
from memexp.tasks.optim import OptimizerSettings

# -- model ----------------------------------------------------------------------------------
TransformerConf = builds(Transformer, populate_full_signature=True, zen_partial=True, zen_exclude=["vocab_size"], max_len=64)
# pad_id comes from the data's vocabulary, like vocab_size.
HGDConf = builds(HGDMemNet, populate_full_signature=True, zen_partial=True, zen_exclude=["vocab_size", "pad_id"])

HOPEConf = builds(HOPE, populate_full_signature=True, zen_partial=True, zen_exclude=["vocab_size"])
TitansConf = builds(Titans, populate_full_signature=True, zen_partial=True, zen_exclude=["vocab_size"])
HyperLSTMConf = builds(HyperLSTM, populate_full_signature=True, zen_partial=True, zen_exclude=["vocab_size"])
LSTMConf = builds(LSTMLM, populate_full_signature=True, zen_partial=True, zen_exclude=["vocab_size"])
GatedDeltaNetConf = builds(GatedDeltaNetLM, populate_full_signature=True, zen_partial=True, zen_exclude=["vocab_size"])
Qwen3Conf = builds(Qwen3LM, populate_full_signature=True, zen_partial=True, zen_exclude=["vocab_size", "pad_id"])
# ExplicitLM's fields are its constructor's (the memory) plus the loader's: `backbone` (tiny, a Qwen3 folder,
# a hub id, or a model=qwen3 checkpoint) and the size of the tiny one (memexp.memory.backbone).
ExplicitLMConf = builds(
    build_explicit_lm,
    populate_full_signature=True,
    zen_partial=True,
    zen_exclude=["vocab_size", "pad_id"],
    builds_bases=(builds(ExplicitLM, populate_full_signature=True, zen_exclude=["backbone", "pad_id"]),),
)

# -- data -----------------------------------------------------------------------------------
# seed: the data seed (synthetic data, shuffles, random windows), `data_seed` of the run, which follows `seed`
# unless set: `seed=0,1,2 data_seed=0` trains three model seeds on the same batches.
DATA_SEED = "${oc.select:data_seed,0}"
_text = dict(populate_full_signature=True, zen_partial=True, data_dir="${paths.data_dir}", seed=DATA_SEED)
ShakespeareConf = builds(TextDataModule, **_text)
TextFileConf = builds(TextDataModule, **_text, path="???")
JsonlConf = builds(TextDataModule, **_text, path="???", format="jsonl")
RandomBytesConf = builds(RandomBytesDataModule, **_text, builds_bases=(ShakespeareConf,), tokenizer="byte")
# The LCCC toy sample (1,400 dialogues; copied from ../shared/data or downloaded when missing),
# and the full LCCC-base (downloaded into <data_dir>/lccc_base/, about 6.8M dialogues).
LCCCConf = builds(DialogueDataModule, **_text, source="${paths.data_dir}/lccc_toy/toy_data.json")
LCCCFullConf = builds(
    DialogueDataModule,
    **_text,
    source=None,
    min_freq=3,
    max_size=50_000,
    max_history=6,
    max_context_len=192,
    buffer_size=8192,
    num_workers=2,
)

# Zoology's multi-query associative recall, generated from the run's data seed (memexp.data.mqar)
MQARConf = builds(
    MQARDataModule, populate_full_signature=True, zen_partial=True, data_dir="${paths.data_dir}", data_seed=DATA_SEED
)

# ExplicitLM's data: streamed pretraining JSONL or SFT conversations (+ a knowledge base for the bank), and
# the knowledge study's generated questions. The bank's shape is the model's (its defaults with another model).
_bank = dict(knowledge_num="${oc.select:model.knowledge_num,1024}", knowledge_length="${oc.select:model.knowledge_length,16}")
ExplicitTextConf = builds(ExplicitLMDataModule, **_text, path="???", **_bank)
KnowledgeQAConf = builds(
    KnowledgeQADataModule,
    **_text,
    **_bank,
    freeze_ratio="${oc.select:model.freeze_ratio,0.2}",
    world_seed=DATA_SEED,  # the world: subjects, objects, which subjects are held out (seed: the training batches)
)

# -- optim ----------------------------------------------------------------------------------
AdamWConf = builds(OptimizerSettings, populate_full_signature=True)
SGDConf = builds(OptimizerSettings, populate_full_signature=True, name="sgd", lr=0.05, weight_decay=0.0)

# -- trainer --------------------------------------------------------------------------------
# The progress bar belongs to the trainer preset: rich on a terminal, a plain bar on clusters.
_trainer = dict(
    populate_full_signature=True,
    zen_partial=True,
    max_steps=2000,
    val_check_interval=500,
    check_val_every_n_epoch=None,
    log_every_n_steps=25,
    gradient_clip_val=1.0,
    num_sanity_val_steps=0,
    callbacks=[builds(StepProgressBar, leave=True), builds(RunSummary)],
    # CPU threads (memexp.runs.threads): auto = the free cores, one when other processes keep cores busy
    zen_meta={"threads": "auto"},
)
DefaultTrainer = builds(Trainer, **_trainer, accelerator="auto", devices=1)
CPUTrainer = builds(Trainer, **_trainer, accelerator="cpu", devices=1)
# bf16 autocast where the CPU computes bf16 natively (AVX512-BF16, AMX), float32 elsewhere (memexp.runs.precision)
CPUBf16Trainer = builds(Trainer, **_trainer, accelerator="cpu", devices=1, precision="auto")
GPUTrainer = builds(Trainer, **_trainer, accelerator="gpu", devices=1, precision="bf16-mixed")
DDPTrainer = builds(Trainer, **_trainer, accelerator="auto", devices=2, strategy="ddp")
# Sharded parameters, gradients and optimiser state (FSDP) for models that do not fit one GPU; bf16 on GPUs.
FSDPTrainer = builds(Trainer, **_trainer, accelerator="gpu", devices=2, strategy="fsdp", precision="bf16-mixed")
ClusterTrainer = builds(
    Trainer,
    **{**_trainer, "callbacks": [builds(StepTQDMProgressBar, refresh_rate=100), builds(RunSummary)]},
    accelerator="auto",
    devices="auto",
)

# -- logger (a dict name -> partial; save_dir is the run's output folder; CSV is always added) --
CSVConf = builds(CSVLogger, zen_partial=True, name="csv", version="")
WandbConf = builds(wandb_logger, populate_full_signature=True, zen_partial=True)
TensorBoardConf = builds(TensorBoardLogger, zen_partial=True, name="tensorboard", version="")

# -- callbacks (dirpath of the checkpoint callback is the run's stable checkpoint folder) ----
# Written at the end of each validation (trainer.val_check_interval): the best by `monitor` and last.ckpt.
# (With every_n_train_steps Lightning would save at a training step, before that step's validation, so the
# "best" file would hold later weights than the score it was kept for.)
CheckpointConf = builds(
    ModelCheckpoint,
    zen_partial=True,
    filename="best-{step}",
    monitor="val/loss",
    mode="min",
    save_top_k=1,
    save_last=True,
)
LRMonitorConf = builds(LearningRateMonitor, logging_interval="step")
# An exponential moving average of the weights, swapped in for validation, test and the final checkpoint.
EMAConf = builds(EMAWeightAveraging, decay=0.999, update_starting_at_step=100)

# -- paths ----------------------------------------------------------------------------------
PathsConf = make_config(
    data_dir="${oc.env:MEMEXP_DATA_DIR,data}",
    output_dir="outputs",
    checkpoint_root="${.output_dir}/checkpoints",
)


# The recurrent models' budget (hyperlstm_shakespeare, lstm_shakespeare): nanoGPT's 2000 steps of 12 x 64 chars,
# read as in-order streams with the state carried across windows; one optimiser, so the two compare directly.
_RECURRENT_BUDGET = dict(
    data=dict(seq_len=64, batch_size=12, tokenizer="char", windows="stream"),
    task=dict(carry_state="auto"),
    optim=dict(lr=2e-3, warmup_steps=100, min_lr=2e-4, weight_decay=0.01, betas=[0.9, 0.999]),
    trainer=dict(max_steps=2000, val_check_interval=500, gradient_clip_val=1.0),
)


_NANOGPT_BUDGET = dict(
    data=dict(seq_len=64, batch_size=12, tokenizer="char"),
    optim=dict(lr=1e-3, warmup_steps=100, min_lr=1e-4, weight_decay=0.1, betas=[0.9, 0.99]),
    trainer=dict(max_steps=2000, val_check_interval=250, gradient_clip_val=1.0),
)

# The causal language models at nanoGPT's CPU budget on tiny-shakespeare (2000 steps of 12 x 64 characters), each
# about 0.8-1M parameters: the `experiment` presets nanogpt_shakespeare, hope_nanogpt, hyperlstm_shakespeare and
# lstm_shakespeare, and the `board` entries of experiment=leaderboard.
BOARD_ENTRIES: dict[str, dict] = {
    # nanoGPT's CPU configuration (the quality target): 4 layers, 4 heads, width 128, context 64, no dropout
    "transformer": dict(
        defaults=["_self_", {"override /model": "transformer"}, {"override /data": "shakespeare"}],
        model=dict(dim=128, depth=4, heads=4, ff_mult=4, max_len=64, dropout=0.0),
        **_NANOGPT_BUDGET,
    ),
    # HOPE with the transformer's width, depth, heads, MLP multiple, context (one 64-token segment) and optimiser,
    # so the two compare directly (experiments/hope_vs_transformer.py; docs/hope.md)
    "hope": dict(
        defaults=["_self_", {"override /model": "hope"}, {"override /data": "shakespeare"}],
        model=dict(
            dim=128, depth=4, heads=4, ff_mult=4, max_len=64, seq_len=64, dropout=0.0, mem_write=32, cms_frequencies=[1, 4, 16]
        ),
        **_NANOGPT_BUDGET,
    ),
    # Titans (MAG) = HOPE minus CMS and slot memory, at HOPE's entry's width, depth, heads, MLP multiple, segment, chunk
    # and optimiser: the ablation of HOPE's CMS levels and slot memory (docs/hope.md); ~0.83M params
    "titans": dict(
        defaults=["_self_", {"override /model": "titans"}, {"override /data": "shakespeare"}],
        model=dict(dim=128, depth=4, heads=4, ff_mult=4, max_len=64, seq_len=64, dropout=0.0, mem_write=32, persistent_tokens=4),
        **_NANOGPT_BUDGET,
    ),
    # HyperLSTM trained as the paper trains: in-order streams with the state carried across windows (truncated
    # BPTT). ~0.99M params (H=352, N=128, Z=16); the optimiser settings of experiments/hyperlstm_quality.py
    "hyperlstm": dict(
        defaults=["_self_", {"override /model": "hyperlstm"}, {"override /data": "shakespeare"}],
        model=dict(
            embedding_size=64,
            hidden_size=352,
            depth=1,
            hyper_num_units=128,
            hyper_embedding_size=16,
            use_layer_norm=True,
            use_recurrent_dropout=False,
            dropout=0.0,
        ),
        **_RECURRENT_BUDGET,
    ),
    # The plain LSTM the HyperNetworks paper compares HyperLSTM with, at the same budget, data and optimiser:
    # ~0.99M params (H=456, E=64), in-order streams with the state carried across windows
    "lstm": dict(
        defaults=["_self_", {"override /model": "lstm"}, {"override /data": "shakespeare"}],
        model=dict(embedding_size=64, hidden_size=456, depth=1, dropout=0.0),
        **_RECURRENT_BUDGET,
    ),
    # Gated DeltaNet (a delta-rule linear-recurrent memory): it carries its state, so it trains as the recurrent
    # models do, on in-order streams with the state carried; ~0.81M params (width 128, 3 blocks, 4 heads, expand_v=2)
    "gated_deltanet": dict(
        defaults=["_self_", {"override /model": "gated_deltanet"}, {"override /data": "shakespeare"}],
        model=dict(dim=128, depth=3, heads=4, ff_mult=4, expand_v=2, conv_size=4, chunk_size=64, dropout=0.0),
        **_RECURRENT_BUDGET,
    ),
}


# HGD-MemNet on the LCCC toy sample, sized for a laptop CPU (about 5 minutes on 2 cores). The toy
# sample has 2,887 training pairs: past ~400 steps the model overfits it (validation perplexity rises).
_HGD_LCCC = dict(
    defaults=["_self_", {"override /model": "hgd"}, {"override /data": "lccc"}],
    model=dict(embedding_dim=96, hidden_dim=192, static_dim=96, min_think=1, max_think=4, dropout=0.2),
    data=dict(batch_size=32, eval_batch_size=64, max_history=4, max_context_len=96, max_reply_len=32),
    optim=dict(lr=3e-3, warmup_steps=50, min_lr=3e-4, weight_decay=0.01),
    trainer=dict(max_steps=400, val_check_interval=50, limit_val_batches=5, limit_test_batches=5, gradient_clip_val=1.0),
    task=dict(max_eval_generate_batches=2),
    sample_tokens=30,
    sample_prompt="你 好 ， 在 干 嘛 呢 ？",
    experiment_name="hgd_lccc",
)


# The source document's example HOPE config (configs/example.yaml in its terms), at a size a
# CPU trains in minutes: byte-level tiny-shakespeare, the memory and schedule keys set as
# the document describes them. Key-by-key mapping: docs/hope.md.
_HOPE_SHAKESPEARE = dict(
    defaults=["_self_", {"override /model": "hope"}, {"override /data": "shakespeare"}, {"override /callbacks": "ema"}],
    model=dict(
        dim=128,
        depth=4,
        heads=4,
        ff_mult=4,
        max_len=128,
        seq_len=128,
        dropout=0.0,
        memory_capacity=64,
        top_k=4,
        error_decay=0.9,
        surprise_scale=1.0,
        base_momentum=0.9,
        mem_write=64,
        error_update=1,
        cms_frequencies=[1, 4, 16],
        schedules=dict(
            surprise_scale=dict(start=0.0, end=1.0, warmup_steps=200), mem_write=dict(start=128, end=64, warmup_steps=200)
        ),
    ),
    data=dict(seq_len=128, batch_size=16, tokenizer="byte", num_workers=0, pin_memory=False),
    optim=dict(name="adamw", lr=1e-3, warmup_steps=100, min_lr=1e-4),
    trainer=dict(max_steps=1000, val_check_interval=250, gradient_clip_val=1.0, accumulate_grad_batches=1),
    callbacks=dict(ema=dict(decay=0.999, update_starting_at_step=100)),
    experiment_name="hope_shakespeare",
)


def _entry(model: str, experiment_name: str) -> dict:
    return BOARD_ENTRIES[model] | {"experiment_name": experiment_name}


def register_groups() -> None:
    _register_components()
    _register_debug()
    _register_experiments()


def _register_components() -> None:
    """The groups each run picks one of: model, data, optim, trainer, logger, callbacks, paths."""
    model = store(group="model")
    model(TransformerConf, name="transformer")
    model(HOPEConf, name="hope")
    model(TitansConf, name="titans")
    model(HyperLSTMConf, name="hyperlstm")
    model(LSTMConf, name="lstm")
    model(GatedDeltaNetConf, name="gated_deltanet")
    model(HGDConf, name="hgd")
    model(Qwen3Conf, name="qwen3")
    model(ExplicitLMConf, name="explicit_lm")

    data = store(group="data")
    data(ShakespeareConf, name="shakespeare")
    data(TextFileConf, name="text")
    data(JsonlConf, name="jsonl")
    data(RandomBytesConf, name="random")
    data(LCCCConf, name="lccc")
    data(LCCCFullConf, name="lccc_full")
    data(ExplicitTextConf, name="explicit_text")
    data(KnowledgeQAConf, name="knowledge_qa")
    data(MQARConf, name="mqar")

    optim = store(group="optim")
    optim(AdamWConf, name="adamw")
    optim(SGDConf, name="sgd")

    trainer = store(group="trainer")
    trainer(DefaultTrainer, name="default")
    trainer(CPUTrainer, name="cpu")
    trainer(CPUBf16Trainer, name="cpu_bf16")
    trainer(GPUTrainer, name="gpu")
    trainer(DDPTrainer, name="ddp")
    trainer(ClusterTrainer, name="cluster")
    trainer(FSDPTrainer, name="fsdp")

    logger = store(group="logger")
    logger(dict(csv=CSVConf), name="csv")
    logger(dict(wandb=WandbConf), name="wandb")
    logger(dict(tensorboard=TensorBoardConf), name="tensorboard")
    logger(dict(csv=CSVConf, wandb=WandbConf, tensorboard=TensorBoardConf), name="many")

    callbacks = store(group="callbacks")
    callbacks(dict(checkpoint=CheckpointConf, lr_monitor=LRMonitorConf), name="default")
    callbacks(dict(checkpoint=CheckpointConf), name="minimal")
    callbacks(dict(checkpoint=CheckpointConf, lr_monitor=LRMonitorConf, ema=EMAConf), name="ema")

    store(PathsConf, group="paths", name="default")


def _register_debug() -> None:
    debug = store(group="debug", package="_global_")
    # Global presets are plain dicts: they merge into the run config rather than replace it.
    debug(
        dict(
            trainer=dict(max_steps=20, val_check_interval=10, limit_val_batches=2, limit_test_batches=2, log_every_n_steps=5),
            sample_tokens=40,
        ),
        name="fast",
    )
    debug(
        dict(trainer=dict(max_steps=200, overfit_batches=1, val_check_interval=50, limit_val_batches=1, limit_test_batches=1)),
        name="overfit",
    )
    debug(
        dict(trainer=dict(max_steps=100, val_check_interval=50, limit_val_batches=10, limit_test_batches=10)),
        name="limit",
    )


def _register_experiments() -> None:
    """The `experiment` presets and the leaderboard's `board` entries."""
    experiment = store(group="experiment", package="_global_")
    experiment(_entry("transformer", "nanogpt_shakespeare"), name="nanogpt_shakespeare")
    board = store(group="board", package="_global_")
    for name, entry in BOARD_ENTRIES.items():
        board(entry, name=name)
    experiment(_HGD_LCCC, name="hgd_lccc")

    experiment(_entry("hyperlstm", "hyperlstm_shakespeare"), name="hyperlstm_shakespeare")
    experiment(_entry("lstm", "lstm_shakespeare"), name="lstm_shakespeare")
    experiment(_entry("hope", "hope_nanogpt"), name="hope_nanogpt")
    experiment(_HOPE_SHAKESPEARE, name="hope_shakespeare")
