"""Dual-path inference: generation through the backbone's own cached generate, reading the bank, and fact
writes every `fact_update_frequency` calls into updatable entries only, with statistics."""

from __future__ import annotations

import pytest
import torch
from helpers import recording_extractor

from memexp.data.hf_tokenizer import HFTokenizer
from memexp.data.knowledge_world import write_word_tokenizer
from memexp.memory.backbone import build_explicit_lm
from memexp.memory.dual_path import DualPathInference
from memexp.memory.facts import IdentityExtractor
from memexp.memory.updates import BankUpdater

WORDS = ["the", "capital", "of", "zorvan", "is", "belmar", "kreo", "was", "founded", "by", "tuva", "."]


def setup(tmp_path, frequency):
    write_word_tokenizer(WORDS, tmp_path / "tok")
    tok = HFTokenizer(str(tmp_path / "tok"))
    torch.manual_seed(0)
    net = build_explicit_lm(len(tok.hf), pad_id=tok.pad_id, knowledge_num=16, knowledge_length=8, num_candidates=2)
    updater = BankUpdater(net.memory_bank, net.freeze_mask, tok, tok.pad_id, strategy="lru")
    return net, tok, DualPathInference(net, tok, IdentityExtractor(), updater, fact_update_frequency=frequency)


def test_facts_are_written_every_nth_call_into_updatable_entries(tmp_path):
    net, tok, dp = setup(tmp_path, frequency=2)
    frozen_before = net.memory_bank[net.freeze_mask].clone()
    first = dp.generate("the capital of zorvan is belmar . kreo was founded by tuva .", max_new_tokens=5)
    assert first["facts"] == [] and first["changes"] == []
    second = dp.generate("the capital of zorvan is belmar . kreo was founded by tuva .", max_new_tokens=5)
    assert second["facts"] == ["the capital of zorvan is belmar .", "kreo was founded by tuva ."]
    written = [c["index"] for c in second["changes"]]
    assert len(set(written)) == 2 and min(written) >= 3  # updatable entries only (16 * 0.2 = 3 frozen)
    assert tok.decode([t for t in net.memory_bank[written[0]].tolist() if t != tok.pad_id]) == "the capital of zorvan is belmar ."
    assert torch.equal(net.memory_bank[net.freeze_mask], frozen_before)
    stats = dp.statistics()
    assert stats["calls"] == 2 and stats["facts_written"] == 2 and stats["updatable_filled"] == pytest.approx(2 / 13)
    assert stats["retrieval_selections"] > 0 and int(dp.updater.uses.sum()) > 0  # retrieval counted usage


def test_cached_generation_equals_a_greedy_loop_without_cache(tmp_path):
    net, tok, dp = setup(tmp_path, frequency=1)
    prompt = "the capital of zorvan is"
    reply = dp.generate(prompt, max_new_tokens=6)["text"]
    ids = torch.tensor([tok.encode(prompt)])
    with torch.no_grad():
        for _ in range(6):
            nxt = net(ids)[0][:, -1:].argmax(-1)
            if int(nxt) == tok.eos_id:
                break
            ids = torch.cat([ids, nxt], 1)
    assert reply.split() == tok.decode(ids[0, len(tok.encode(prompt)) :].tolist()).split()


def test_generation_reads_the_prompt_ids_and_facts_come_from_the_text_once_per_update(tmp_path):
    net, tok, dp = setup(tmp_path, frequency=1)
    dp.extractor, dp.include_output = recording_extractor(), True
    prompt = tok.encode("kreo was founded by")
    out = dp.generate("the capital of zorvan is belmar .", max_new_tokens=4, prompt_ids=prompt)
    # one extraction per update, over the input and the reply together
    assert dp.extractor.texts == ["the capital of zorvan is belmar .\n" + out["text"]]
    assert out["facts"][0] == "the capital of zorvan is belmar ."
    # the reply continues the prompt ids, not the text: the same as generating from that text
    _, _, alone = setup(tmp_path, frequency=5)
    assert out["text"] == alone.generate("kreo was founded by", max_new_tokens=4)["text"]
    # the entries retrieved at the prompt's last token are the ones a forward over the prompt selects
    # (`alone` wrote nothing, its bank is the one `out` read)
    alone.net(torch.tensor([prompt]))
    assert out["retrieved"] == {layer: int(sel[0, -1]) for layer, sel in sorted(alone.net.last_selection.items())}
    assert len(out["retrieved"]) == len(net.fusions)
    assert dp.statistics()["fact_updates"] == 1


def test_a_char_tokenizer_is_refused_with_the_setting_to_change(tmp_path):
    from memexp.data.tokenizers import CharTokenizer
    from memexp.errors import ConfigError

    net, tok, dp = setup(tmp_path, frequency=1)
    chars = CharTokenizer.fit("the capital")
    with pytest.raises(ConfigError, match=r"trained with a CharTokenizer, whose ids are not its backbone's.*data.tokenizer=qwen"):
        DualPathInference(net, chars, IdentityExtractor(), dp.updater)
