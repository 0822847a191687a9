"""The options of each config group in one line each, importable without torch or Lightning.

`--help` lists these (memexp.help) before anything heavy is imported; the store itself is filled by
groups.py, studies.py and classification.py, and tests/test_help.py checks that the two agree, so an
option added to the store without a line here fails a test. YAML presets (memexp/conf, ./conf) are
listed from their files' first comment line instead.
"""

from __future__ import annotations

# the MQAR study's models and widths (memexp.configs.mqar builds the `mqar` group from these)
MQAR_MODELS = ("transformer", "hope", "titans", "gated_deltanet", "hyperlstm", "lstm")
MQAR_WIDTHS = (64, 128, 256, 512)  # Zoology's Figure 2's model dimensions

GROUPS: dict[str, dict[str, str]] = {
    "model": {
        "transformer": "GPT-style causal transformer, the baseline (128 wide, 4 layers)",
        "hope": "HOPE / Nested Learning: test-time-updated memory, continuum memory, slot memory",
        "titans": "Titans (MAG): segment attention gated by HOPE's neural memory; HOPE minus CMS and slots",
        "hyperlstm": "HyperLSTM: a small LSTM generating the main LSTM's weight scalings",
        "lstm": "a plain multi-layer LSTM (torch.nn.LSTM), HyperLSTM's baseline",
        "gated_deltanet": "Gated DeltaNet: a decayed delta-rule linear-attention state, chunked training, O(1) steps",
        "hgd": "HGD-MemNet: gated thinking steps over dialogue history (data=lccc)",
        "qwen3": "a Qwen3 causal LM (tiny random, a local folder or a hub id)",
        "explicit_lm": "ExplicitLM: a frozen Qwen3 with an explicit, editable token memory bank",
        "bigru": "BiGRU fake-news classifier",
        "bigru_endef": "BiGRU with ENDEF entity debiasing",
        "hope_tiny": "the studies' HOPE (32 wide, 16-token attention segment)",
        "transformer_tiny": "the studies' transformer (32 wide, 72-token context)",
    },
    "data": {
        "shakespeare": "tiny-shakespeare, characters (fetched into data_dir when missing)",
        "text": "a UTF-8 text file: data.path=<file>",
        "jsonl": 'a JSONL file of {"text": ...} records: data.path=<file>',
        "random": "uniformly random bytes (a smoke test: nothing to learn)",
        "recall": "synthetic needle / multi-query associative recall, generated from data_seed",
        "mqar": "Zoology's multi-query associative recall (MQAR): 8192 ids, power-law query gaps, answer-position loss",
        "lccc": "LCCC dialogue toy sample (1,400 dialogues) for model=hgd",
        "lccc_full": "LCCC-base, about 6.8M dialogues (downloaded into data_dir)",
        "explicit_text": "ExplicitLM pretraining or SFT JSONL (+ a knowledge base for the bank)",
        "knowledge_qa": "ExplicitLM's generated world: sentences and questions",
        "endef": "news in ENDEF's schema: data.root=<folder with train/val/test.json>",
        "endef_ch": "Weibo21 (ENDEF_ch) unzipped into <data_dir>/endef_ch",
        "endef_en": "GossipCop (ENDEF_en) unzipped into <data_dir>/endef_en, data.tokenizer=<BERT vocab>",
        "news_synthetic": "a generated news corpus in ENDEF's schema with a temporal shift",
    },
    "optim": {
        "adamw": "AdamW with warmup and cosine decay (optim.lr, optim.weight_decay, optim.schedule)",
        "sgd": "SGD with the same schedules",
    },
    "trainer": {
        "default": "Lightning on the best accelerator, one device, 2000 steps",
        "cpu": "the same on the CPU",
        "cpu_bf16": "the CPU, bf16-mixed where it computes bf16 natively (else float32, said at the start)",
        "gpu": "one GPU, bf16-mixed",
        "ddp": "data parallel over trainer.devices (2)",
        "fsdp": "sharded data parallel over GPUs, bf16-mixed",
        "cluster": "every visible device, a plain progress bar for log files",
    },
    "logger": {
        "wandb": "W&B (offline unless logged in) + CSV",
        "csv": "CSV only",
        "tensorboard": "TensorBoard + CSV",
        "many": "W&B, TensorBoard and CSV",
    },
    "callbacks": {
        "default": "checkpoints (best by val/loss + last) and the learning-rate monitor",
        "minimal": "checkpoints only",
        "ema": "checkpoints, LR monitor and an EMA of the weights for evaluation",
    },
    "paths": {"default": "data_dir ($MEMEXP_DATA_DIR or ./data), output_dir (outputs)"},
    "debug": {
        "fast": "20 steps, 2 validation and test batches: a smoke run",
        "overfit": "200 steps on one batch: the loss must reach near zero",
        "limit": "100 steps, 10 validation and test batches",
    },
    "experiment": {
        "nanogpt_shakespeare": "the transformer at nanoGPT's CPU settings on tiny-shakespeare",
        "hope_nanogpt": "HOPE at the same budget as nanogpt_shakespeare",
        "hope_shakespeare": "the source document's example HOPE config, byte level",
        "hyperlstm_shakespeare": "HyperLSTM (~1M params) at the nanoGPT budget, in-order streams",
        "lstm_shakespeare": "the plain LSTM (~1M params) at hyperlstm_shakespeare's budget",
        "hgd_lccc": "HGD-MemNet on the LCCC toy sample (about 5 minutes on 2 cores)",
        "hgd_thinking": "study: HGD-MemNet with up to 4 thinking steps vs 1, 10,000 LCCC dialogues, 6 seeds (-m)",
        "hope_vs_baseline": "study: HOPE vs transformer, recall by gap (-m: both models)",
        "continual_abc": "study: continual A->B->C recall tasks, forgetting (-m: both models)",
        "continual_text": "study: continual learning on three parts of tiny-shakespeare",
        "meta_recall": "study: Reptile meta-training on recall (meta.use=true,false)",
        "explicit_knowledge": "study: ExplicitLM knowledge questions, empty bank, edits",
        "explicit_sft": "ExplicitLM supervised fine-tuning on conversations JSONL",
        "endef_vs_bigru": "study: ENDEF vs BiGRU on generated news, 6 seeds (-m)",
        "leaderboard": "every causal LM (board=...) x 3 seeds: text, recall and continual columns, one table (-m)",
        "mqar_zoology": "study: Zoology's MQAR Figure 2, 6 models x 4 widths x 3 cells x 4 rates (-m)",
        "mqar_cpu": "study: MQAR Figure 2 sized for a CPU, 6 models x 2 widths x 2 cells x 4 rates (-m)",
    },
    "mqar": {f"{m}_{w}": f"MQAR study arm: {m}, width {w}, 2 layers, 1 head" for m in MQAR_MODELS for w in MQAR_WIDTHS},
    "mqar_cell": {
        "64x4": "MQAR cell: 64 tokens, 4 pairs, vocabulary 8192, Zoology's budget (batch 512, 64 epochs)",
        "128x8": "MQAR cell: 128 tokens, 8 pairs, Zoology's budget (batch 512, 64 epochs)",
        "256x16": "MQAR cell: 256 tokens, 16 pairs, Zoology's budget (batch 256, 64 epochs)",
        "cpu_64x4": "MQAR cell: 64 tokens, 4 pairs, the CPU budget (Zoology's batches of 512, 5 epochs)",
        "cpu_128x8": "MQAR cell: 128 tokens, 8 pairs, the CPU budget (Zoology's batches of 512, 5 epochs)",
    },
    "board": {
        "transformer": "leaderboard entry: the transformer at nanoGPT's CPU budget (as nanogpt_shakespeare)",
        "hope": "leaderboard entry: HOPE at that budget (as hope_nanogpt)",
        "titans": "leaderboard entry: Titans (MAG) at HOPE's size and budget: HOPE minus CMS and slots",
        "hyperlstm": "leaderboard entry: HyperLSTM, in-order streams (as hyperlstm_shakespeare)",
        "lstm": "leaderboard entry: the plain LSTM, in-order streams (as lstm_shakespeare)",
        "gated_deltanet": "leaderboard entry: Gated DeltaNet, in-order streams with its state carried",
        **{
            f"{m}_{col}": f"leaderboard entry: {m}'s network trained on " + what
            for m in ("transformer", "hope", "titans", "hyperlstm", "lstm", "gated_deltanet")
            for col, what in (
                ("recall", "needle recall (the recall column)"),
                ("continual", "three text parts in sequence (the continual column)"),
                ("mqar", "MQAR (64, 4), vocabulary 8192 (the MQAR column)"),
                ("mqar_reassign", "MQAR with 2 of 4 keys reassigned (the reassignment column)"),
            )
        },
    },
}
