"""model=hyperlstm through the suite: training with carried state (truncated BPTT), generation
with a prime, evaluation in bits per character. Tiny sizes; in-process."""

import csv
import math

import pytest
import torch
from helpers import QUIET, run_in_process

from memexp.models.sampling import Sampling
from memexp.tasks.causal_lm import CausalLMTask

TINY = [
    "model=hyperlstm",
    "model.embedding_size=8",
    "model.hidden_size=24",
    "model.hyper_num_units=8",
    "model.hyper_embedding_size=4",
    "data=text",
    "data.seq_len=16",
    "data.batch_size=4",
    "data.windows=stream",
]
FAST = [
    "trainer.max_steps=40",
    "trainer.val_check_interval=20",
    "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=2",
    "trainer.log_every_n_steps=1",
    "optim.lr=1e-2",
    "optim.warmup_steps=5",
]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _train(tiny_text, out, monkeypatch, extra=()):
    """Run memexp.run in-process, recording per training step whether a carried state was fed."""
    seen = []
    original = CausalLMTask.training_step

    def recording(self, batch, batch_idx):
        seen.append((self.carry_state, self._train_state is not None))
        loss = original(self, batch, batch_idx)
        if self.carry_state:  # what the next step will be fed: detached, one (h, c, hh, hc) per layer
            assert all(not t.requires_grad for layer in self._train_state for t in layer)
        return loss

    monkeypatch.setattr(CausalLMTask, "training_step", recording)
    result = run_in_process([*TINY, f"data.path={tiny_text}", *QUIET, *FAST, *extra], out)
    monkeypatch.undo()
    return result, seen


def _losses(run_dir):
    with open(f"{run_dir}/csv/metrics.csv") as f:
        return [float(r["train/loss"]) for r in csv.DictReader(f) if r.get("train/loss")]


@pytest.fixture(scope="module")
def carried_run(tiny_text, tmp_path_factory):
    mp = pytest.MonkeyPatch()
    result, seen = _train(tiny_text, tmp_path_factory.mktemp("carried"), mp)
    return result, seen


def test_stream_training_carries_state_and_loss_falls(carried_run, tiny_text, tmp_path, monkeypatch):
    result, seen = carried_run
    m = result["metrics"]
    assert m["global_step"] == 40
    # task.carry_state=auto turned on by a stateful model on stream windows; fed from the 2nd step on
    assert all(carry for carry, _ in seen)
    assert seen[0][1] is False and all(fed for _, fed in seen[1:])
    losses = _losses(result["run_dir"])
    assert losses[-1] < losses[0] - 0.8, losses
    assert m["val/loss"] < math.log(66) - 0.9, m

    # the same run on independent windows (state reset every batch) trains differently
    independent, seen_ind = _train(tiny_text, tmp_path, monkeypatch, extra=["task.carry_state=false"])
    assert not any(carry or fed for carry, fed in seen_ind)
    other = _losses(independent["run_dir"])
    assert other[0] == pytest.approx(losses[0], rel=1e-6)  # same first batch, same init, no state yet
    assert max(abs(a - b) for a, b in zip(other[1:], losses[1:])) > 1e-3


def _checkpoint(result):
    from pathlib import Path

    return str(Path(result["ckpt_dir"]) / "last.ckpt")


def test_generate_feeds_the_prime_once_and_is_greedy_at_temperature_zero(carried_run):
    from memexp.configs.rebuild import load_checkpoint
    from memexp.generate import generate_text

    result, _ = carried_run
    loaded = load_checkpoint(_checkpoint(result))
    task, tok = loaded.task, loaded.datamodule.tokenizer
    prime = tok.encode("ROMEO:\nWhat")
    fed = []
    forward = task.net.forward

    def counting(idx, state=None):
        fed.append((idx.shape[1], state is not None))
        return forward(idx, state)

    task.net.forward = counting
    out = task.generate(prime, max_new_tokens=12, sampling=Sampling(greedy=True, seed=1))
    # the prime once, from a fresh state; then one token per call on the carried state
    assert fed[0] == (len(prime), False)
    assert all(call == (1, True) for call in fed[1:]) and len(fed) == 1 + 12
    assert sum(n for n, _ in fed) == len(prime) + 12
    task.net.forward = forward
    assert task.generate(prime, max_new_tokens=12, sampling=Sampling(greedy=True, seed=2)) == out  # deterministic
    # greedy: each token is the argmax after re-reading the whole sequence from a fresh state
    with torch.no_grad():
        logits, _ = task.net(torch.tensor([prime + out[:-1]]))
    assert logits[0, len(prime) - 1 :].argmax(-1).tolist() == out
    text = generate_text(_checkpoint(result), "ROMEO:\nWhat", max_new_tokens=12, sampling=Sampling(greedy=True, seed=0))
    assert text == "ROMEO:\nWhat" + tok.decode(out)


def test_evaluate_reports_bits_per_character(carried_run, tmp_path):
    from memexp.evaluate import evaluate_checkpoint

    result, _ = carried_run
    ev = evaluate_checkpoint(_checkpoint(result), out=str(tmp_path / "eval.json"), accelerator="cpu")
    m = ev["metrics"]
    assert m["test/bpc"] == pytest.approx(m["test/loss"] / math.log(2), rel=1e-5)
    assert m["val/bpc"] == pytest.approx(m["val/loss"] / math.log(2), rel=1e-5)
    assert m["test/loss"] < math.log(66)
