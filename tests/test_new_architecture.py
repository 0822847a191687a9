"""Adding a seventh architecture as docs/architecture.md says: a plain nn.Module with the causal-LM
contract, one store entry, and nothing else. It trains through `memexp.run`, its loss falls,
and its checkpoint loads back with `memexp.configs.load_checkpoint`."""

from __future__ import annotations

import torch
from conftest import QUIET, run_in_process
from hydra_zen import builds, store
from torch import nn

from memexp.configs import load_checkpoint


class BigramLM(nn.Module):
    """The throwaway seventh model: next-token logits from the current token alone."""

    task_kind = "causal_lm"  # which task trains it (memexp.tasks.TASKS)
    carries_state = False
    max_len = None  # any context length

    def __init__(self, vocab_size: int, dim: int = 16):
        super().__init__()
        self.emb = nn.Embedding(vocab_size, dim)
        self.head = nn.Linear(dim, vocab_size)

    def forward(self, idx: torch.Tensor, state: None = None) -> tuple[torch.Tensor, None]:
        return self.head(self.emb(idx)), None  # (B, T) -> (B, T, V)


def test_a_new_model_needs_one_class_and_one_store_entry(tiny_text, tmp_path):
    store(
        builds(BigramLM, populate_full_signature=True, zen_partial=True, zen_exclude=["vocab_size"]),
        group="model",
        name="bigram_test",
    )
    steps = [
        "trainer.max_steps=60",
        "trainer.val_check_interval=30",
        "trainer.limit_val_batches=2",
        "trainer.limit_test_batches=2",
        "optim.lr=3e-2",
        "optim.warmup_steps=0",
        "data.seq_len=32",
        "data.batch_size=8",
    ]
    first = run_in_process(
        [
            "model=bigram_test",
            "model.dim=8",
            "data=text",
            f"data.path={tiny_text}",
            *QUIET,
            "trainer.max_steps=1",
            "trainer.val_check_interval=1",
            *steps[2:],
        ],
        tmp_path / "a",
    )
    result = run_in_process(
        ["model=bigram_test", "model.dim=8", "data=text", f"data.path={tiny_text}", *QUIET, *steps], tmp_path / "b"
    )
    assert result["metrics"]["val/loss"] < first["metrics"]["val/loss"] - 0.5
    loaded = load_checkpoint(f"{result['ckpt_dir']}/last.ckpt")
    assert isinstance(loaded.task.net, BigramLM) and loaded.task.net.emb.embedding_dim == 8
    assert loaded.config["model"]["_target_"].endswith("BigramLM")
