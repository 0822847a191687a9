"""DialogueTask: HGD-MemNet on the LCCC toy sample learns, and its metrics mean what they say."""

import csv
import math
import warnings
from collections import Counter

import pytest
import torch
from helpers import compose_run
from torch import nn

from memexp.data.dialogue import DialogueDataModule, DialogueStream, DialogueVocab
from memexp.data.spec import DataSpec
from memexp.tasks.dialogue import DialogueTask
from memexp.tasks.settings import DialogueSettings
from memexp.tasks.text_metrics import DistinctN


def _val_losses(run_dir):
    with open(f"{run_dir}/csv/metrics.csv") as f:
        return [(int(r["step"]), float(r["val/loss"])) for r in csv.DictReader(f) if r.get("val/loss")]


def test_val_loss_falls_and_metrics_are_in_range(hgd_run):
    m = hgd_run["metrics"]
    assert m["global_step"] == 30
    losses = _val_losses(hgd_run["run_dir"])
    assert [s for s, _ in losses] == [9, 19, 29]  # a validation every 10 steps
    # The same validation batches each time (evaluation does not shuffle): the loss must fall.
    assert losses[-1][1] < losses[0][1] - 0.3, losses
    assert m["val/loss"] < math.log(2298) - 0.5, m  # below a uniform guess over the toy vocabulary
    for stage in ("val", "test"):
        assert m[f"{stage}/ppl"] == pytest.approx(math.exp(m[f"{stage}/loss"]), rel=1e-4)
        assert 0.0 <= m[f"{stage}/bleu4"] <= m[f"{stage}/bleu2"] <= 1.0
        assert 0.0 < m[f"{stage}/distinct1"] <= 1.0 and 0.0 < m[f"{stage}/distinct2"] <= 1.0
        assert 1.0 <= m[f"{stage}/think_steps"] <= 3.0  # min_think=1, max_think=3
    assert 1.0 <= m["train/think_steps"] <= 3.0


def test_distinct_n_against_hand_counts():
    d1, d2 = DistinctN(1), DistinctN(2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchmetrics warns about compute() before update()
        assert float(d1.compute()) == 0.0  # nothing generated yet
    for metric in (d1, d2):
        metric.update([[1, 2, 3], [1, 2, 4]])
        metric.update([[7]])  # one unigram, no bigram
    # unigrams 1 2 3 1 2 4 7: 5 distinct of 7; bigrams (1,2) (2,3) (1,2) (2,4): 3 distinct of 4
    assert float(d1.compute()) == pytest.approx(5 / 7)
    assert float(d2.compute()) == pytest.approx(3 / 4)
    d2.reset()
    d2.update([torch.tensor([5, 5, 5, 5])])
    assert float(d2.compute()) == pytest.approx(1 / 3)


class EchoNet(nn.Module):
    """Generates exactly the reference replies it is given (to check the task's metric wiring)."""

    def __init__(self, vocab_size, replies):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(vocab_size))
        self.replies = replies

    def forward(self, context, context_mask, reply_in):
        B, L = reply_in.shape
        return {"logits": self.bias.expand(B, L, -1), "ponder_loss": self.bias.sum() * 0, "think_steps": torch.full((B,), 2.0)}

    def generate(self, context, context_mask, max_len, sos_id, eos_id, **kw):
        return self.replies


def test_bleu_of_identical_replies_is_one_and_distinct_counts_replies():
    vocab = DialogueVocab.build(Counter("你 好 呀 在 干 嘛 呢".split()))
    replies = [vocab.encode("你 好 呀 在 干 嘛"), vocab.encode("在 干 嘛 呢 你 好")]
    L = max(len(r) for r in replies) + 1
    reply_out = torch.tensor([r + [vocab.eos_id] + [vocab.pad_id] * (L - len(r) - 1) for r in replies])
    batch = {
        "context": torch.tensor([[5, 2], [6, 2]]),
        "context_mask": torch.ones(2, 2, dtype=torch.bool),
        "reply_in": torch.full_like(reply_out, vocab.sos_id),
        "reply_out": reply_out,
    }
    spec = DataSpec(task_kind="dialogue", vocab_size=vocab.vocab_size, tokenizer=vocab, pad_id=vocab.pad_id)
    task = DialogueTask(EchoNet(vocab.vocab_size, reply_out), spec, settings=DialogueSettings(max_eval_generate_batches=1))
    task.validation_step(batch, 0)
    task.validation_step(batch, 1)  # past max_eval_generate_batches: loss only
    assert float(task.val_bleu2.compute()) == pytest.approx(1.0)
    assert float(task.val_bleu4.compute()) == pytest.approx(1.0)
    assert float(task.val_distinct1.compute()) == pytest.approx(7 / 12)  # 7 distinct tokens of 12
    assert float(task.val_distinct2.compute()) == pytest.approx(7 / 10)  # 你好, 在干, 干嘛 twice
    assert float(task.val_think.compute()) == 2.0
    # A uniform distribution over V tokens has loss ln V whatever the targets.
    assert float(task.val_loss.compute()) == pytest.approx(math.log(vocab.vocab_size), rel=1e-5)


class FakeTrainer:
    def __init__(self, world_size, current_epoch):
        self.world_size, self.current_epoch = world_size, current_epoch


def test_ddp_ranks_get_equal_batches_and_epochs_reshuffle(lccc_cache, tmp_path, data_dir):
    # Small chunks of 150 dialogues: 7 train chunks, dealt 4 / 3 to two ranks, so their pair counts differ.
    dm = DialogueDataModule(
        source=str(data_dir / "lccc_toy" / "toy_data.json"),
        cache_dir=str(tmp_path / "c"),
        chunk_size=150,
        batch_size=16,
        buffer_size=64,
        data_dir=str(data_dir),
    )
    dm.prepare_data()
    stream = dm.stream("train")
    counts = [stream.samples_on_rank(r, 2) for r in range(2)]
    assert counts[0] != counts[1] and sum(counts) == stream.num_samples == 2887
    dm.trainer = FakeTrainer(world_size=2, current_epoch=0)
    loader = dm.train_dataloader()
    assert len(loader) == min(counts) // 16
    for rank in range(2):  # each rank's stream has at least that many full batches, so every rank stops at len(loader)
        per_rank = DialogueStream(dm.cache_dir, "train", max_history=4, rank=rank, world_size=2)
        assert len(per_rank) // 16 >= len(loader)
    # The loader numbers its epochs: the first from the trainer, then the next at each iteration.
    first = next(iter(loader))["index"].tolist()
    second = next(iter(loader))["index"].tolist()
    assert stream.epoch == 1 and first != second
    # A resumed run's loader gets its position from the checkpoint and reshuffles for that epoch.
    resumed = dm.train_dataloader()
    resumed.load_state_dict({"epoch": 3, "batches": 0})
    third = next(iter(resumed))["index"].tolist()
    assert resumed.stream.epoch == 3 and third not in (first, second)
    # A new loader at the trainer's epoch 0 draws the first epoch again.
    assert next(iter(dm.train_dataloader()))["index"].tolist() == first


def test_lccc_config_reads_the_toy_sample(lccc_cache, data_dir):
    cfg = compose_run(["model=hgd", "data=lccc"], data_dir)
    assert cfg.data.source == f"{cfg.paths.data_dir}/lccc_toy/toy_data.json"
    assert cfg.data._target_ == "memexp.data.dialogue.DialogueDataModule"
