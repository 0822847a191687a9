"""Writing facts at inference and reading them back: rewritten entries join retrieval's candidates by
content (and the cache of their embeddings follows every write, generate's included), similarity's two
spaces on hand-worked rows, bank files round-trip, and on a small trained knowledge-study model the
write-then-read protocol keeps its invariants and stated facts become answers."""

from __future__ import annotations

import pytest
import torch
from helpers import QUIET, run_in_process

from memexp.configs.rebuild import load_checkpoint, load_memory
from memexp.data.explicit.bank_cache import encode_entry
from memexp.data.hf_tokenizer import HFTokenizer
from memexp.data.knowledge_world import write_word_tokenizer
from memexp.errors import CheckpointError, DataError
from memexp.evals.write_read import write_then_read
from memexp.memory.backbone import build_explicit_lm
from memexp.memory.bank_file import load_bank_file
from memexp.memory.facts import IdentityExtractor
from memexp.memory.updates import BankUpdater

WORDS = ["the", "capital", "of", "zorvan", "kreo", "is", "belmar", "tuva", "was", "founded", "by", "."]


@pytest.fixture
def tiny(tmp_path):
    write_word_tokenizer(WORDS, tmp_path / "tok")
    tok = HFTokenizer(str(tmp_path / "tok"))
    torch.manual_seed(0)
    net = build_explicit_lm(len(tok.hf), pad_id=tok.pad_id, knowledge_num=16, knowledge_length=8, num_candidates=2).eval()
    return net, tok


def candidates(net, ids):
    net(torch.tensor([ids]))
    return {int(e) for f in net.fusions.values() for e in f.last_candidates[0][0, -1]}


def test_a_rewritten_entry_joins_the_candidates_and_the_cache_follows_each_write(tiny):
    net, tok = tiny
    prompt = tok.encode("the capital of zorvan is")
    assert not net.content_rows.any()
    row = torch.tensor([encode_entry(tok, "the capital of zorvan is belmar .", 8)[0]])
    net.write_entries(torch.tensor([9]), row, by_content=True)
    assert 9 in candidates(net, prompt)  # the only content-addressed entry is every query's content candidate
    # the backbone's own generate (no ExplicitLM.forward) after a write by the updater reads the new entry
    updater = BankUpdater.for_model(net, tok, "fifo")
    (change,) = updater.write(["kreo was founded by tuva ."])
    seen = []
    net.selection_listener = seen.append
    net.backbone.generate(input_ids=torch.tensor([prompt]), max_new_tokens=2, do_sample=False, pad_token_id=tok.pad_id)
    assert bool(net.content_rows[change.index])
    assert change.index in {int(e) for f in net.fusions.values() for e in f.last_candidates[0].flatten()}
    assert net.fusions["0"].last_candidates[0].shape[-1] == 2 + 2  # product keys' 2, then both rewritten entries
    net.content_candidates = 0  # the original's addressing: product keys alone
    net(torch.tensor([prompt]))
    assert net.fusions["0"].last_candidates[0].shape[-1] == 2


def test_token_similarity_is_the_cosine_of_token_sets(tiny):
    net, tok = tiny
    bank = torch.full((4, 8), tok.pad_id, dtype=torch.int32)
    for i, text in enumerate(["the capital of zorvan is belmar .", "the capital of kreo is belmar .", "tuva . tuva .", ""]):
        if text:
            bank[i] = torch.tensor(encode_entry(tok, text, 8)[0])
    frozen = torch.zeros(4, dtype=torch.bool)
    up = BankUpdater(bank, frozen, tok, tok.pad_id, strategy="similarity", similarity_threshold=0.8, token_similarity=True)
    new = torch.tensor(encode_entry(tok, "the capital of zorvan is tuva .", 8)[0])
    sims = up._token_cosine(new, bank)
    # 7 distinct tokens each: 6 shared with row 0, 5 with row 1; row 2 = {tuva, .}: 2 / sqrt(7 * 2); row 3 empty
    assert sims.tolist() == pytest.approx([6 / 7, 5 / 7, 2 / (14**0.5), 0.0])
    assert up.pick(new) == 0  # the restatement is replaced
    up.threshold = 0.9
    assert up.pick(new) in (0, 1, 2, 3) and up.pick(new) == up._lowest(up.last_used)  # below threshold: lru


def test_similarity_in_retrieval_space_replaces_a_restatement(tiny):
    net, tok = tiny
    up = BankUpdater.for_model(net, tok, "similarity", similarity_threshold=0.99)
    (first,) = up.write(["the capital of zorvan is belmar ."])
    (again,) = up.write(["the capital of zorvan is belmar ."])  # the same text: cosine 1 with its own entry
    assert again.index == first.index and not bool(net.freeze_mask[first.index])


def test_bank_files_round_trip_and_bad_ones_are_one_sentence(tiny, tmp_path):
    from memexp.memory.runtime import ExplicitMemory

    net, tok = tiny
    memory = ExplicitMemory(net, tok, tmp_path / "model.ckpt")
    memory.add(["the capital of zorvan is belmar ."])
    path = memory.save(tmp_path / "bank.pt")
    state = load_bank_file(path)
    assert torch.equal(state.tokens, net.memory_bank) and state.sources.count("add") == 1
    assert torch.equal(state.content_rows, net.content_rows) and int(state.usage["clock"]) == memory.updater.clock
    (tmp_path / "other.pt").write_bytes(b"not torch")
    with pytest.raises(DataError, match="other.pt: not a torch file"):
        load_bank_file(tmp_path / "other.pt")
    torch.save({"format": "something"}, tmp_path / "dict.pt")
    with pytest.raises(DataError, match="not a memexp bank file"):
        load_bank_file(tmp_path / "dict.pt")
    state.backbone_fingerprint = "0" * 16
    state.save(tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="another backbone"):
        memory.load(load_bank_file(tmp_path / "foreign.pt"), origin="foreign.pt")


@pytest.fixture(scope="module")
def study_model(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("write_read")
    result = run_in_process(
        [
            # the smallest study that learns to read its bank here: 75 s on one thread, full-bank accuracy 0.92
            "experiment=explicit_knowledge",
            f"paths.data_dir={root / 'data'}",
            "data.n_subjects=40",
            "data.n_objects=8",
            "model.knowledge_num=256",
            "study.backbone.steps=200",
            "study.edits=10",
            "trainer.max_steps=700",
            "trainer.val_check_interval=700",
            "trainer.limit_val_batches=1",
            "trainer.limit_test_batches=1",
            *QUIET,
        ],
        root,
    )
    return result["ckpt_dir"] + "/last.ckpt"


def test_training_leaves_the_knowledge_bank_in_the_checkpoint(study_model):
    run = load_checkpoint(study_model)
    run.datamodule.setup()
    # episodic batches rewrite entries during each step and put them back after it
    assert torch.equal(run.task.net.memory_bank, run.datamodule.bank.tokens)


def test_write_then_read_keeps_its_invariants(study_model):
    run, memory = load_memory(study_model)
    net, dm = run.task.net, run.datamodule
    before = net.memory_bank.clone()
    results = {
        s: write_then_read(net, dm, s, IdentityExtractor(), n_new=12, n_earlier=12, n_corrections=4, seed=1)
        for s in ("lru", "random", "similarity")
    }
    assert torch.equal(net.memory_bank, before) and not net.content_rows.any()  # the model is given back as it was
    for r in results.values():
        assert r["facts_written"] == 24 and r["landed_updatable"] == 1.0
        assert r["statistics"]["facts_written"] == 28  # + the 4 corrections
        assert 0.0 <= r["new_after"] <= 1.0 and r["corrections"] == 4
    assert results["lru"]["earlier_displaced"] == 0  # the earlier facts were just used; lru writes elsewhere
    assert results["lru"]["stale_left"] == 4  # lru never looks at content: every stale version stays
    # the effect, with a loose bound: facts stated through the dual path become answers (measured: +0.75)
    assert results["lru"]["new_gain"] >= 0.3 and results["lru"]["new_after_keys_only"] < results["lru"]["new_after"]
    empty = (net.memory_bank == net.pad_id).all(1).tolist()
    assert any(empty) and all((src == "") == e for src, e in zip(memory.sources, empty))  # kb:<uuid> for filled rows only
