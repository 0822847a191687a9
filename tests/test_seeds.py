"""Seeds that mean something: data_seed follows seed, two models at one seed train on the same batches,
and the test reloads the best validation step (task.test_ckpt)."""

import csv

import pytest
import torch
from helpers import QUIET, TINY_MODEL, compose_run, record_batches, run_in_process

from memexp.tasks.causal_lm import CausalLMTask

STEPS = ["trainer.max_steps=4", "trainer.val_check_interval=4", "trainer.limit_val_batches=1", "trainer.limit_test_batches=1"]


@pytest.fixture
def seen_batches(monkeypatch):
    return record_batches(monkeypatch, CausalLMTask, "input")


def _train(models: list[str], extra: list[str], tmp_path, seen_batches) -> list[list[torch.Tensor]]:
    for i, model in enumerate(models):
        run_in_process([*model.split(), *extra, *QUIET, *STEPS], tmp_path / str(i))
    return seen_batches


@pytest.mark.parametrize(
    "data",
    [
        ["data=text", "data.tokenizer=char"],  # random windows
        ["data=recall", "data.seq_len=72", "data.batch_size=8"],  # generated sequences, shuffled
    ],
    ids=["text", "recall"],
)
def test_two_models_at_one_seed_draw_identical_batches(data, tiny_text, tmp_path, seen_batches):
    common = [*data, f"data.path={tiny_text}"] if "data=text" in data else data
    tiny = "model.dim=32 model.depth=1 model.heads=2"
    transformer = f"model=transformer {tiny} model.max_len=72"
    hope = f"model=hope {tiny} model.max_len=16 model.seq_len=16 model.mem_write=4"
    runs = _train(
        [transformer, hope, f"{transformer} seed=1", f"{transformer} seed=1 data_seed=0"], common, tmp_path, seen_batches
    )
    assert [len(r) for r in runs] == [4, 4, 4, 4]
    same_seed = [torch.equal(a, b) for a, b in zip(runs[0], runs[1], strict=True)]
    assert all(same_seed), "a transformer and HOPE at seed 0 trained on different batches"
    assert not torch.equal(runs[0][0], runs[2][0]), "seed=1 drew the same first batch as seed=0"
    assert all(torch.equal(a, b) for a, b in zip(runs[0], runs[3], strict=True)), "data_seed=0 did not fix the data"


def test_data_seed_follows_seed_in_every_data_group(tmp_path):
    for data in ("shakespeare", "recall", "lccc", "knowledge_qa", "random", "news_synthetic", "explicit_text"):
        cfg = compose_run([f"data={data}", "seed=7"], tmp_path)
        assert cfg.data.seed == 7, data
        assert compose_run([f"data={data}", "seed=7", "data_seed=3"], tmp_path).data.seed == 3, data


def test_test_ckpt_best_tests_the_best_validation_step(tiny_text, tmp_path):
    # Overfitting one batch at a high learning rate: validation loss falls, then rises.
    common = [
        "data=text",
        f"data.path={tiny_text}",
        *TINY_MODEL,
        *QUIET,
        "trainer.max_steps=60",
        "trainer.val_check_interval=6",
        "trainer.limit_val_batches=2",
        "trainer.limit_test_batches=2",
        "trainer.overfit_batches=1",
        "optim.lr=3e-2",
        "optim.warmup_steps=0",
        "optim.schedule=constant",
    ]
    best = run_in_process([*common, "task.test_ckpt=best"], tmp_path / "best")
    with open(f"{best['run_dir']}/csv/metrics.csv") as f:
        val = {int(r["step"]): float(r["val/loss"]) for r in csv.DictReader(f) if r.get("val/loss")}
    best_step = min(val, key=val.get) + 1  # the CSV step of a validation is the global step minus one
    assert best_step < 60, f"validation loss never rose, the test cannot tell best from last: {val}"
    assert best["metrics"]["tested_step"] == best_step
    last = run_in_process([*common, "task.test_ckpt=last"], tmp_path / "last")
    assert last["metrics"]["tested_step"] == 60
    assert best["metrics"]["test/loss"] < last["metrics"]["test/loss"]


@pytest.mark.parametrize(
    "data,stop",
    [
        (["data=text", "data.train_windows_per_epoch=40"], 7),  # random windows, 5 batches an epoch: stop mid-epoch
        (["data=text", "data.train_windows_per_epoch=40"], 5),  # stop at the end of an epoch
        (["data=text", "data.windows=stream", "data.batch_size=4"], 7),  # in-order streams (an iterable dataset)
        # HyperLSTM carrying its state across the streams' windows (TBPTT): the state is in the checkpoint too
        (
            [
                "data=text",
                "data.windows=stream",
                "data.batch_size=4",
                "model=hyperlstm",
                "model.hidden_size=32",
                "model.hyper_num_units=16",
                "model.embedding_size=16",
            ],
            7,
        ),
        (["data=recall", "data.seq_len=72", "data.batch_size=8", "data.train_size=40"], 7),
        (["data=random", "data.num_tokens=4000", "data.seq_len=32", "data.batch_size=8", "data.train_windows_per_epoch=24"], 4),
    ],
    ids=["text-mid-epoch", "text-epoch-end", "stream", "hyperlstm-stream", "recall", "random-bytes"],
)
def test_a_resumed_run_draws_the_batches_the_uninterrupted_run_drew(data, stop, tiny_text, tmp_path, seen_batches):
    tiny = "model=transformer model.dim=32 model.depth=1 model.heads=2 model.max_len=72".split()
    model = [] if "model=hyperlstm" in data else tiny
    common = [
        *model,
        *data,
        *QUIET,
        "trainer.val_check_interval=5",
        "trainer.limit_val_batches=1",
        "trainer.limit_test_batches=1",
    ]
    if "data=text" in data:
        common.append(f"data.path={tiny_text}")
    whole = run_in_process([*common, "trainer.max_steps=12"], tmp_path / "whole")
    cut = run_in_process([*common, f"trainer.max_steps={stop}"], tmp_path / "cut")
    resumed = run_in_process(
        [*common, "trainer.max_steps=12", f"paths.checkpoint_root={tmp_path}/cut/checkpoints"], tmp_path / "resumed"
    )
    assert resumed["resumed_from_step"] == stop
    uninterrupted = [b for run in seen_batches[:1] for b in run]
    continued = [b for run in seen_batches[1:] for b in run]
    assert len(uninterrupted) == 12 and len(continued) == 12
    same = [torch.equal(a, b) for a, b in zip(uninterrupted, continued, strict=True)]
    assert all(same), f"the resumed run drew other batches (per step: {same})"
    assert resumed["metrics"]["val/loss"] == pytest.approx(whole["metrics"]["val/loss"], abs=1e-4)
    assert cut["metrics"]["global_step"] == stop


def test_a_resumed_dialogue_run_draws_the_batches_the_uninterrupted_run_drew(lccc_cache, tmp_path, monkeypatch):
    from helpers import TINY_HGD

    from memexp.tasks.dialogue import DialogueTask

    seen = record_batches(monkeypatch, DialogueTask, "reply_out")
    common = [
        *TINY_HGD,
        f"data.cache_dir={lccc_cache}",
        *QUIET,
        "data.batch_size=256",  # about 11 batches an epoch: the 12 steps cross into the next
        "trainer.val_check_interval=5",
        "trainer.limit_val_batches=1",
        "trainer.limit_test_batches=1",
    ]
    run_in_process([*common, "trainer.max_steps=12"], tmp_path / "whole")
    run_in_process([*common, "trainer.max_steps=7"], tmp_path / "cut")
    resumed = run_in_process(
        [*common, "trainer.max_steps=12", f"paths.checkpoint_root={tmp_path}/cut/checkpoints"], tmp_path / "resumed"
    )
    assert resumed["resumed_from_step"] == 7
    whole, continued = seen[0], [b for run in seen[1:] for b in run]
    assert len(whole) == len(continued) == 12
    same = [torch.equal(a, b) for a, b in zip(whole, continued, strict=True)]
    assert all(same), f"the resumed run drew other batches (per step: {same})"
