"""Adding a seventh architecture as docs/architecture.md says: a plain nn.Module with the causal-LM
contract, one store entry, and nothing else. It trains through `memexp.run`, its loss falls,
and its checkpoint loads back with `memexp.configs.load_checkpoint`."""

from __future__ import annotations

import torch
from helpers import QUIET, run_in_process
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


def test_a_user_adds_a_model_and_a_dataset_without_editing_memexp(tiny_text, tmp_path):
    """The walkthrough in docs/configuration.md: a module of your own and two YAML presets in ./conf, nothing in memexp."""
    import json
    import math

    from helpers import run_cli

    (tmp_path / "my_models.py").write_text(
        "import torch\nfrom torch import nn\n\n\n"
        "class Bigram(nn.Module):\n"
        "    task_kind = 'causal_lm'\n    carries_state = False\n    max_len = None\n\n"
        "    def __init__(self, vocab_size: int, dim: int = 16):\n"
        "        super().__init__()\n        self.emb = nn.Embedding(vocab_size, dim)\n        self.head = nn.Linear(dim, vocab_size)\n\n"
        "    def forward(self, idx, state=None):\n        return self.head(self.emb(idx)), None\n"
    )
    (tmp_path / "conf" / "model").mkdir(parents=True)
    (tmp_path / "conf" / "model" / "bigram.yaml").write_text("_target_: my_models.Bigram\n_partial_: true\ndim: 16\n")
    (tmp_path / "conf" / "data").mkdir()
    (tmp_path / "conf" / "data" / "my_text.yaml").write_text(
        f"_target_: memexp.data.text.TextDataModule\n_partial_: true\npath: {tiny_text}\ntokenizer: char\nseq_len: 32\nbatch_size: 8\n"
    )
    proc = run_cli(
        "memexp.run",
        "model=bigram",
        "data=my_text",
        "model.dim=24",
        "optim.lr=1e-2",
        "optim.warmup_steps=0",
        "trainer.max_steps=60",
        "trainer.val_check_interval=60",
        "trainer.limit_val_batches=2",
        "trainer.limit_test_batches=2",
        *QUIET,
        cwd=tmp_path,
        env={"PYTHONPATH": str(tmp_path)},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (metrics,) = tmp_path.glob("outputs/runs/*/*/metrics.json")
    run = json.loads(metrics.read_text())
    assert run["names"]["model"] == "bigram" and run["names"]["data"] == "my_text"
    params = int(run["metrics"]["params/trainable"])
    assert params % (2 * 24 + 1) == 0  # its own class (embedding V x 24, head 24 x V + V) with the override applied
    vocab = params // (2 * 24 + 1)
    assert run["metrics"]["test/loss"] < 0.8 * math.log(vocab)  # learned well beyond chance
