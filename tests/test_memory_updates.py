"""Bank updates: every strategy writes only updatable entries (a property over random fact streams),
and each one picks the entry it promises."""

from __future__ import annotations

import random

import pytest
import torch

from memexp.data.explicit.bank_cache import encode_entry
from memexp.data.hf_tokenizer import HFTokenizer
from memexp.data.knowledge_world import write_word_tokenizer
from memexp.errors import ConfigError
from memexp.memory.updates import STRATEGIES, BankUpdater

WORDS = [f"w{i}" for i in range(200)]
N, L, FROZEN = 64, 6, 16


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tok") / "tokenizer"
    write_word_tokenizer(WORDS, folder)
    return HFTokenizer(str(folder))


def bank_of(tok, seed=0):
    rng = random.Random(seed)
    rows = [encode_entry(tok, " ".join(rng.sample(WORDS, 4)), L)[0] for _ in range(N)]
    return torch.tensor(rows, dtype=torch.int32), torch.arange(N) < FROZEN


def updater(tok, strategy, bank, frozen, **kw):
    weights = torch.randn(len(tok.hf), 32, generator=torch.Generator().manual_seed(1))

    def embed(rows):
        return torch.nn.functional.embedding_bag(rows, weights, mode="mean", padding_idx=tok.pad_id)

    return BankUpdater(bank, frozen, tok, tok.pad_id, strategy=strategy, embed=embed, **kw)


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_no_strategy_ever_writes_a_frozen_entry(tok, strategy, seed):
    bank, frozen = bank_of(tok, seed)
    before = bank.clone()
    up = updater(tok, strategy, bank, frozen, similarity_threshold=0.5, seed=seed)
    rng = random.Random(seed)
    latest = {}
    for _ in range(30):
        if rng.random() < 0.5:  # retrieval touches any entry, frozen ones too
            up.record_usage(torch.randint(0, N, (rng.randint(1, 8),)))
        facts = [" ".join(rng.sample(WORDS, rng.randint(1, 8))) for _ in range(rng.randint(1, 5))]
        for change in up.write(facts):
            assert change.index >= FROZEN
            latest[change.index] = change.new
    assert torch.equal(bank[:FROZEN], before[:FROZEN])
    for index, text in latest.items():  # each entry holds the last fact written into it, tokenised as the cache does
        assert bank[index].tolist() == encode_entry(tok, text, L)[0]
    if strategy != "random":  # the deterministic strategies spread a batch over distinct entries
        assert len(latest) >= min(30, N - FROZEN) or strategy == "similarity"


def test_fifo_cycles_through_the_updatable_region(tok):
    bank, frozen = bank_of(tok)
    up = updater(tok, "fifo", bank, frozen)
    first = [c.index for c in up.write([f"w{i}" for i in range(N - FROZEN + 2)])]
    assert first == list(range(FROZEN, N)) + [FROZEN, FROZEN + 1]


def test_lru_and_importance_follow_retrieval(tok):
    bank, frozen = bank_of(tok)
    lru, imp = updater(tok, "lru", bank.clone(), frozen), updater(tok, "importance", bank.clone(), frozen)
    for up in (lru, imp):
        up.record_usage(torch.arange(FROZEN, N))  # everything used once ...
        up.record_usage(torch.tensor([40, 40, 41]))  # ... then 40 and 41 again
    assert lru.write(["w1"])[0].index == FROZEN  # used longest ago (ties: lowest index)
    imp.record_usage(torch.arange(FROZEN, 30))
    assert [c.index for c in imp.write(["w1", "w2"])] == [30, 31]  # the least selected; a new fact is not next


def test_similarity_replaces_a_restatement_and_else_the_least_recently_used(tok):
    bank, frozen = bank_of(tok)
    up = updater(tok, "similarity", bank, frozen, similarity_threshold=0.99)
    held = tok.decode([t for t in bank[50].tolist() if t != tok.pad_id])
    change = up.write([held])[0]
    assert change.index == 50 and change.old == held
    up.record_usage(torch.arange(FROZEN, N))
    up.record_usage(torch.tensor([FROZEN]))
    assert up.write(["w199 w198 w197"])[0].index == FROZEN + 1  # nothing similar: the least recently used


def test_bad_settings_are_one_sentence(tok):
    bank, frozen = bank_of(tok)
    with pytest.raises(ConfigError, match="update_strategy='newest'"):
        updater(tok, "newest", bank, frozen)
    with pytest.raises(ConfigError, match="nothing an update may write"):
        updater(tok, "lru", bank, torch.ones(N, dtype=torch.bool))
