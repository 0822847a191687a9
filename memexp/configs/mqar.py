"""Zoology's MQAR study (Arora et al., ICLR 2024, Figure 2) for the suite's causal LMs: the `mqar` group (a model at
a width), the `mqar_cell` group (sequence length x key-value pairs, with its training budget) and the presets
`experiment=mqar_zoology` (the paper's protocol) and `experiment=mqar_cpu` (two cells, two widths, sized for a CPU).

    python -m memexp.run -m experiment=mqar_cpu             # the learning-rate grid at seed 0 (one job per point)
    python experiments/mqar_zoology.py --preset mqar_cpu    # the grid, then seeds 1 and 2 at each best rate, the table

Each job trains `mqar=<model>_<width>` on `mqar_cell=<cell>` at one `optim.lr`; `memexp.evals.mqar` builds the
table. The models are the suite's own blocks (with their MLPs; Zoology's Figure 2 has none), 2 layers and one
attention head as Zoology's attention. HOPE and Titans attend within 64-token segments (the leaderboard's span), so
at sequence length 64 they see the whole sequence and at 128 they must carry the pairs through their memory.
"""

from __future__ import annotations

import math

from hydra_zen import store

from memexp.configs.catalog import MQAR_MODELS, MQAR_WIDTHS
from memexp.configs.groups import BOARD_ENTRIES

MQAR_CPU_WIDTHS = (64, 128)
MQAR_LRS = tuple(float(f"{10 ** (-4 + 2 * i / 3):.3g}") for i in range(4))  # numpy.logspace(-4, -2, 4): Zoology's grid
MQAR_VOCAB = 8192
# Zoology's Figure-2 cells (seq_len, num_kv_pairs) and batch sizes (512, 256 at sequence length 256)
MQAR_CELLS = {"64x4": (64, 4, 512), "128x8": (128, 8, 512), "256x16": (256, 16, 256)}
# The CPU preset's budget per job (the same for every model and rate): Zoology's data and batches, `epochs` epochs
# instead of 64 (the cosine decays over those), a validation each epoch on `num_test_examples` sequences, and
# Zoology's early stop at validation accuracy 0.99. Batches of 64 were tried first: the transformer stayed below 0.26
# after 6,000 steps (384,000 sequences), while at 512 it passed 0.98 in two epochs (docs/mqar.md).
MQAR_CPU_BUDGET = dict(epochs=5, num_test_examples=1_000)
MQAR_TRAIN_EXAMPLES = 100_000  # Zoology's training sequences per cell, on either budget


def arm(model: str, width: int) -> dict:
    """`mqar=<model>_<width>`: the model's leaderboard network (BOARD_ENTRIES: its block, segment, memory and MLP
    settings) at this width, with 2 layers and 1 head; the transformer sees the whole sequence."""
    if model in ("hyperlstm", "lstm"):
        at_width = dict(embedding_size=width, hidden_size=width, depth=2)
        at_width |= dict(hyper_num_units=width) if model == "hyperlstm" else {}
    else:
        at_width = dict(dim=width, depth=2, heads=1)
        at_width |= dict(max_len="${data.seq_len}") if model == "transformer" else {}
    return dict(defaults=["_self_", {"override /model": model}], model=BOARD_ENTRIES[model]["model"] | at_width)


def cell(name: str, cpu: bool) -> dict:
    """`mqar_cell=<seq_len>x<pairs>` (Zoology's budget: 100,000 training sequences, 64 epochs, validation each
    epoch) or `mqar_cell=cpu_<seq_len>x<pairs>` (MQAR_CPU_BUDGET: the same batches for fewer epochs)."""
    seq_len, pairs, batch = MQAR_CELLS[name]
    epochs, tests = (MQAR_CPU_BUDGET["epochs"], MQAR_CPU_BUDGET["num_test_examples"]) if cpu else (64, 3_000)
    epoch = math.ceil(MQAR_TRAIN_EXAMPLES / batch)
    data = dict(seq_len=seq_len, num_kv_pairs=pairs, vocab_size=MQAR_VOCAB, power_a=0.01, random_non_queries=False)
    data |= dict(batch_size=batch, num_examples=MQAR_TRAIN_EXAMPLES, num_test_examples=tests)
    return dict(data=data, trainer=dict(max_steps=epochs * epoch, val_check_interval=epoch))


def _preset(name: str, widths: tuple[int, ...], cells: list[str]) -> dict:
    arms = ",".join(f"{m}_{w}" for m in MQAR_MODELS for w in widths)
    return dict(
        defaults=["_self_", {"override /data": "mqar"}],
        # Zoology's optimiser: torch's AdamW at its default betas, weight decay 0.1, cosine decay to 0 over the budget,
        # no warm-up (Zoology steps the cosine once an epoch, memexp once a step)
        optim=dict(name="adamw", betas=[0.9, 0.999], warmup_steps=0, min_lr=0.0, weight_decay=0.1, schedule="cosine"),
        trainer=dict(gradient_clip_val=None),  # Zoology does not clip
        task=dict(stop_at_acc=0.99),
        hydra=dict(sweeper=dict(params={"mqar": arms, "mqar_cell": ",".join(cells), "optim.lr": ",".join(map(str, MQAR_LRS))})),
        sample_tokens=0,
        experiment_name=name,
    )


MQAR_PRESETS = {
    "mqar_zoology": _preset("mqar_zoology", MQAR_WIDTHS, list(MQAR_CELLS)),
    "mqar_cpu": _preset("mqar_cpu", MQAR_CPU_WIDTHS, ["cpu_64x4", "cpu_128x8"]),
}


def register_mqar() -> None:
    """The mqar and mqar_cell groups and the two presets."""
    arms = store(group="mqar", package="_global_")
    for m in MQAR_MODELS:
        for w in MQAR_WIDTHS:
            arms(arm(m, w), name=f"{m}_{w}")
    cells = store(group="mqar_cell", package="_global_")
    for name in MQAR_CELLS:
        cells(cell(name, cpu=False), name=name)
        if name != "256x16":
            cells(cell(name, cpu=True), name=f"cpu_{name}")
    experiment = store(group="experiment", package="_global_")
    for name, preset in MQAR_PRESETS.items():
        experiment(preset, name=name)
