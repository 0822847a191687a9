"""ExplicitLM through the suite: memexp.run trains only the memory on streamed JSONL with the Qwen tokenizer and
a knowledge base; its checkpoint holds the memory and the bank, names the backbone, and loads back in
evaluate and generate; the knowledge study's world, batches and measurements keep their promises."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import QUIET, run_cli, run_in_process

from memexp.configs import load_checkpoint
from memexp.data.knowledge_qa import KnowledgeQADataModule
from memexp.errors import ConfigError
from memexp.evals.knowledge import knowledge_study
from memexp.memory.backbone import build_explicit_lm

TINY_EXPLICIT = [
    "model=explicit_lm",
    "model.knowledge_num=64",
    "model.knowledge_length=8",
    "model.knowledge_dim=16",
    "model.num_candidates=4",
    "model.fusion_dim=32",
    "model.query_hidden=32",
    "model.tiny_dim=32",
    "data=explicit_text",
    "data.seq_len=24",
    "data.batch_size=4",
    "data.eval_batch_size=4",
    "data.eval_records=4",
    "data.shuffle_buffer=8",
    "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=2",
    "optim.lr=1e-2",
    "optim.warmup_steps=0",
    "optim.schedule=constant",
]


@pytest.fixture(scope="module")
def explicit_files(tmp_path_factory, tiny_text):
    root = tmp_path_factory.mktemp("explicit")
    paragraphs = [p for p in tiny_text.read_text().split("\n\n") if p.strip()][:120]
    (root / "train.jsonl").write_text("\n".join(json.dumps({"text": p}) for p in paragraphs) + "\n")
    facts = [{"sentence": p.splitlines()[0]} for p in paragraphs[:40]]
    (root / "kb.json").write_text(json.dumps(facts))
    return root


def explicit_args(files, steps: int) -> list[str]:
    return [
        *TINY_EXPLICIT,
        f"data.path={files / 'train.jsonl'}",
        f"data.knowledge_path={files / 'kb.json'}",
        f"data.data_dir={files}",  # the Qwen tokenizer and bank caches live beside the files
        f"trainer.max_steps={steps}",
        f"trainer.val_check_interval={steps}",
        *QUIET,
    ]


@pytest.fixture(scope="module")
def explicit_run(explicit_files, tmp_path_factory):
    torch.set_num_threads(1)
    first = run_in_process(explicit_args(explicit_files, 1), tmp_path_factory.mktemp("one"))
    trained = run_in_process(explicit_args(explicit_files, 40), tmp_path_factory.mktemp("forty"))
    return first, trained


def test_the_memory_trains_and_the_loss_falls(explicit_run):
    first, trained = explicit_run
    m = trained["metrics"]
    # a frozen random tiny backbone has tiny tied embeddings: its logits can move little (ln V = 11.93)
    assert m["val/loss"] < first["metrics"]["val/loss"] - 0.1
    assert 0 < m["params/trainable"] < m["params/frozen"]  # the tiny backbone embeds 151,669 tokens, frozen


def test_the_checkpoint_holds_memory_and_bank_and_loads_back(explicit_run, explicit_files):
    _, trained = explicit_run
    ckpt = f"{trained['ckpt_dir']}/last.ckpt"
    raw = torch.load(ckpt, weights_only=True)
    keys = list(raw["state_dict"])
    assert not any(k.startswith("net.backbone.") for k in keys) and "net.memory_bank" in keys
    assert raw["memexp"]["config"]["model"]["backbone"] == "tiny"
    bank = raw["state_dict"]["net.memory_bank"]
    assert bank.shape == (64, 8) and int((bank[:40] != bank[0, -1]).any(1).sum()) == 40  # 40 facts, the rest pad
    loaded = load_checkpoint(ckpt)
    assert torch.equal(loaded.task.net.memory_bank, bank)
    here = f"paths.data_dir={explicit_files}"  # the tokenizer and bank caches stay out of the shared data folder
    out = run_cli("memexp.evaluate", f"ckpt={ckpt}", "splits=[test]", f"out={explicit_files / 'eval.json'}", here)
    assert out.returncode == 0, out.stderr[-2000:]
    again = json.loads((explicit_files / "eval.json").read_text())["metrics"]["test/loss"]
    assert again == pytest.approx(trained["metrics"]["test/loss"], rel=1e-4)
    gen = run_cli("memexp.generate", f"ckpt={ckpt}", "prompt=ROMEO:", "max_new_tokens=5", "temperature=0", here)
    assert gen.returncode == 0 and gen.stdout.startswith("ROMEO:"), gen.stderr[-2000:]


def test_a_bank_size_that_is_not_a_square_is_one_error_line(explicit_files):
    args = [
        a if not a.startswith("model.knowledge_num") else "model.knowledge_num=1000" for a in explicit_args(explicit_files, 1)
    ]
    out = run_cli("memexp.run", *args, "paths.output_dir=/tmp/memexp-explicit-bad")
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1].startswith("error: model.knowledge_num=1000: must be a perfect square")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    dm = KnowledgeQADataModule(
        n_subjects=60,
        n_objects=8,
        knowledge_num=256,
        qa_per_batch=8,
        index_per_batch=8,
        data_dir=str(tmp_path_factory.mktemp("world")),
    )
    dm.setup()
    return dm


def test_held_out_facts_fill_the_frozen_entries_and_never_reach_the_backbone_text(world):
    held = [f for f in world.world.facts if f.held_out]
    assert len(held) == (int(256 * 0.2) // 4) * 4 and [f.entry for f in held] == list(range(len(held)))
    text = (world.world_dir / "pretrain.txt").read_text()
    assert not any(f.sentence() in text for f in held)
    assert all(f"{f.subject} is a country ." in text for f in held)  # named, never described
    assert all(f.sentence() in text for f in world.world.facts if not f.held_out)


def test_validation_and_test_ask_about_disjoint_held_out_subjects(world):
    """Model selection on validation never sees a test question: the held-out subjects are split in two."""

    def asked(split):  # (prompt tokens, answer) of every question the split's loader serves
        rows = set()
        for batch in world.eval_dataloader(split):
            for x, pos in zip(batch["input"], batch["memory_position"]):
                rows.add(tuple(x[: int(pos) + 2].tolist()))
        return rows

    val, test = asked("val"), asked("test")
    held = [f for f in world.world.facts if f.held_out]
    assert len(val) == 24 and len(test) == 24 and not val & test  # 12 held-out subjects: 6 + 6, 4 relations each
    subjects = {split: {world.world.facts[i].subject for i in world.split_facts(split)} for split in ("val", "test")}
    assert not subjects["val"] & subjects["test"]
    assert subjects["val"] | subjects["test"] == {f.subject for f in held}
    assert len(val | test) == len(held)


@pytest.mark.parametrize("val_subjects", [0, 12])
def test_a_split_that_leaves_validation_or_test_empty_is_refused(val_subjects, tmp_path):
    with pytest.raises(ConfigError, match=f"data.val_subjects={val_subjects} of data.held_out=12"):
        KnowledgeQADataModule(n_subjects=60, n_objects=8, knowledge_num=256, val_subjects=val_subjects, data_dir=str(tmp_path))


def test_episodic_batches_write_only_updatable_entries_with_the_batch_answer(world):
    batch = next(iter(world.train_dataloader()))
    assert bool((batch["bank_rows"] >= int(256 * 0.2)).all())
    tok = world.tokenizer
    for k in range(len(batch["bank_rows"])):
        pos = int(batch["memory_position"][k])
        answer = int(batch["target"][k, pos])
        row = [t for t in batch["bank_tokens"][k].tolist() if t != tok.pad_id]
        assert row[-2] == answer and batch["memory_target"][k] == batch["bank_rows"][k]
    index_rows = batch["target"][8:]
    assert bool((index_rows == -100).all())  # router-only rows predict nothing


def test_knowledge_measurements_restore_the_bank_and_count_edits(world):
    torch.manual_seed(0)
    net = build_explicit_lm(
        world.spec.vocab_size, pad_id=world.tokenizer.pad_id, knowledge_num=256, knowledge_dim=16, fusion_dim=32
    )
    result = knowledge_study(net, world, edits=10)
    assert torch.equal(net.memory_bank, world.bank.tokens) and net.memory_enabled
    assert result["edit"]["k"] == 10 and result["chance"] == 1 / 8
    assert result["full_minus_empty"] == pytest.approx(result["full_bank"]["accuracy"] - result["empty_bank"]["accuracy"])
    assert result["full_bank"]["n"] == 24 and 0 <= result["full_bank"]["hit_rate"] <= 1


def test_the_knowledge_study_runs_end_to_end(tiny_knowledge_study):
    result = tiny_knowledge_study["result"]  # experiment=explicit_knowledge debug=fast on a tiny world (conftest)
    report = (tiny_knowledge_study["root"] / "runs").glob("**/memory/reports/knowledge_report.md")
    text = next(report).read_text()
    assert "| full bank |" in text and "| empty bank |" in text and "Editing 10 test-subject entries" in text
    assert 0.0 <= result["metrics"]["knowledge/full_bank_acc"] <= 1.0
    assert result["backbone_run"]["ckpt"].endswith("last.ckpt") and result["metrics"]["global_step"] == 20
    # debug=fast cut the backbone stage too (600 steps otherwise); its folder is named for it on the command line
    # (Hydra's choices; tests/test_presets.py), and its run key holds the limits here
    assert result["backbone_run"]["metrics"]["global_step"] == 20


@pytest.mark.parametrize("stop", [7, 10], ids=["mid-epoch", "epoch-end"])
def test_a_resumed_explicit_run_draws_the_batches_the_uninterrupted_run_drew(stop, explicit_files, tmp_path, monkeypatch):
    """The JSONL stream has no length: a run resumed mid-epoch drops the batches already drawn, and one resumed at
    the end of an epoch (10 batches of 4 from 40 training records) goes on with the next epoch."""
    from helpers import record_batches

    from memexp.tasks.causal_lm import CausalLMTask

    lines = (explicit_files / "train.jsonl").read_text().splitlines()[:48]  # 8 carved for val/test, 40 to train
    (tmp_path / "train.jsonl").write_text("\n".join(lines) + "\n")
    (tmp_path / "kb.json").write_text((explicit_files / "kb.json").read_text())
    seen = record_batches(monkeypatch, CausalLMTask, "input")
    common = [*explicit_args(tmp_path, 12)[:-3], "trainer.val_check_interval=5", *QUIET]
    run_in_process([*common, "trainer.max_steps=12"], tmp_path / "whole")
    run_in_process([*common, f"trainer.max_steps={stop}"], tmp_path / "cut")
    resumed = run_in_process(
        [*common, "trainer.max_steps=12", f"paths.checkpoint_root={tmp_path}/cut/checkpoints"], tmp_path / "resumed"
    )
    assert resumed["resumed_from_step"] == stop
    whole, continued = seen[0], [b for run in seen[1:] for b in run]
    assert len(whole) == len(continued) == 12
    same = [torch.equal(a, b) for a, b in zip(whole, continued, strict=True)]
    assert all(same), f"the resumed run drew other batches (per step: {same})"
