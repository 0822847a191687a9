"""ExplicitLM's data: the offline Qwen3 tokenizer, the memory bank cache and its knowledge files,
streamed pretraining / SFT samples, their loss masks and their sharding."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from memexp.data.explicit import ExplicitLMDataModule
from memexp.data.explicit.bank_cache import build_bank_cache, encode_entry, load_bank_cache, read_knowledge
from memexp.data.explicit.stream import JSONLStream
from memexp.data.spec import IGNORE_INDEX
from memexp.data.tokenizers import build_tokenizer, tokenizer_from_state
from memexp.errors import ConfigError, DataError

SENTENCE = "今天天气很好，我们去公园散步吧。"


@pytest.fixture(scope="session")
def qwen_dir(tmp_path_factory):
    """A data root holding the converted tokenizer (built once per session, tiktoken's cache in tmp)."""
    root = tmp_path_factory.mktemp("qwen_data")
    old = os.environ.get("TIKTOKEN_CACHE_DIR")
    os.environ["TIKTOKEN_CACHE_DIR"] = str(tmp_path_factory.mktemp("tiktoken"))
    try:
        build_tokenizer("qwen", data_dir=root)
    finally:
        if old is None:
            os.environ.pop("TIKTOKEN_CACHE_DIR", None)
        else:
            os.environ["TIKTOKEN_CACHE_DIR"] = old
    return root


@pytest.fixture(scope="session")
def qwen(qwen_dir):
    return build_tokenizer("qwen", data_dir=qwen_dir)


def write_json(path, value):
    path.write_text(json.dumps(value, ensure_ascii=False), encoding="utf-8")
    return path


def write_jsonl(path, records):
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in records) + "\n", encoding="utf-8")
    return path


# ----------------------------------------------------------------------------- tokenizer


def test_qwen_special_ids_and_encoding(qwen, qwen_dir):
    assert [qwen.special_id(t) for t in ("<|endoftext|>", "<|im_start|>", "<|im_end|>")] == [151643, 151644, 151645]
    assert qwen.special_id("</think>") == 151668 and qwen.special_id("<|not_a_token|>") is None
    assert (qwen.pad_id, qwen.eos_id, len(qwen)) == (151643, 151645, 151669)
    assert qwen.encode(SENTENCE) == [100644, 104307, 101243, 3837, 97639, 85336, 102077, 111261, 100003, 1773]
    assert qwen.decode(qwen.encode(SENTENCE)) == SENTENCE
    chat = qwen.apply_chat([{"role": "user", "content": "hi"}], add_generation_prompt=True)
    assert qwen.hf.decode(chat) == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert qwen.state_dict() == {"name": "qwen"}
    again = tokenizer_from_state(qwen.state_dict(), data_dir=qwen_dir)  # from the cached folder
    assert again.encode(SENTENCE) == qwen.encode(SENTENCE)
    assert len(list((qwen_dir / "tokenizers" / "qwen3").iterdir())) == 1  # one finished folder, no temp left


def test_hf_tokenizer_without_pad_token_is_refused(qwen, tmp_path):
    tok = qwen.hf
    tok.save_pretrained(tmp_path / "nopad")
    cfg_path = tmp_path / "nopad" / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg.pop("pad_token", None)
    cfg_path.write_text(json.dumps(cfg))
    hf = build_tokenizer(str(tmp_path / "nopad"))
    assert hf.hf.pad_token_id is None and hf.pad_id == 151643  # falls back on <|endoftext|>, not on eos 151645
    hf.tok.add_special_tokens({"eos_token": "<|endoftext|>"})
    hf._special.clear()
    with pytest.raises(ConfigError, match="no pad token"):
        _ = hf.pad_id


# ----------------------------------------------------------------------------- memory bank


def test_encode_entry_pads_and_truncates(qwen):
    row, count, cut = encode_entry(qwen, SENTENCE, 16)
    assert row == qwen.encode(SENTENCE) + [151643] * 6 and (count, cut) == (10, False)
    row, count, cut = encode_entry(qwen, SENTENCE, 4)
    assert row == [100644, 104307, 101243, 3837] and (count, cut) == (10, True)


def knowledge(tmp_path, n=3):
    items = [
        {"target": [{"sentence": "Paris is in France.", "subject": "Paris", "predicate": "in", "object": "France", "uuid": "a"}]}
    ]
    items += [f"fact number {i}" for i in range(n - 1)]
    return write_json(tmp_path / "kb.json", items)


def test_bank_cache_build_and_mapping(qwen, tmp_path):
    kb = write_json(
        tmp_path / "kb.json",
        [
            {"target": [{"sentence": "Paris is in France.", "subject": "Paris", "predicate": "in", "object": "France", "uuid": "a"},
                        {"sentence": SENTENCE, "uuid": "b"}]},
            {"sentence": "a sentence"},
            {"text": "a text"},
            "bare",
        ],
    )  # fmt: skip
    bank = build_bank_cache(kb, qwen, 8, 6, tmp_path / "c" / "bank.pt")
    assert bank.tokens.dtype == torch.int32 and bank.tokens.shape == (8, 6) and bank.n_filled == 5
    assert bank.tokens[1].tolist() == qwen.encode(SENTENCE)[:6]
    assert bank.tokens[4].tolist() == qwen.encode("bare") + [151643] * (6 - len(qwen.encode("bare")))
    assert (bank.tokens[5:] == 151643).all()  # rows past the file's items are pad, never random
    mapping = json.loads(bank.mapping_path.read_text())
    assert bank.mapping_path.name == "bank_mapping.json"
    meta = mapping["metadata"]
    assert (meta["total_entries"], meta["knowledge_num"], meta["knowledge_length"]) == (5, 8, 6)
    assert meta["tokenizer"]["name"] == "qwen" and meta["tokenizer"]["vocab_size"] == 151669
    first, second = mapping["mappings"][:2]
    assert first == {"database_index": 0, "uuid": "a", "sentence": "Paris is in France.", "subject": "Paris",
                     "predicate": "in", "object": "France", "token_count": 5, "is_truncated": False}  # fmt: skip
    assert (second["token_count"], second["is_truncated"], second["subject"]) == (10, True, None)
    assert [m["sentence"] for m in mapping["mappings"][2:]] == ["a sentence", "a text", "bare"]
    loaded = load_bank_cache(bank.path)
    assert torch.equal(loaded.tokens, bank.tokens) and loaded.fingerprint == bank.fingerprint and loaded.n_filled == 5


def test_bank_cache_reused_or_rebuilt_by_fingerprint(qwen, tmp_path):
    kb = knowledge(tmp_path)
    cache = tmp_path / "bank.pt"
    build_bank_cache(kb, qwen, 4, 8, cache)
    stamp = cache.stat().st_mtime_ns
    build_bank_cache(kb, qwen, 4, 8, cache)
    assert cache.stat().st_mtime_ns == stamp  # same fingerprint: reused, not rewritten
    kb.unlink()
    assert build_bank_cache(kb, qwen, 4, 8, cache).n_filled == 3  # source gone, cache fresh: used as it is
    assert cache.stat().st_mtime_ns == stamp
    kb = knowledge(tmp_path, n=4)  # the source changes
    assert build_bank_cache(kb, qwen, 4, 8, cache).n_filled == 4
    stamp = cache.stat().st_mtime_ns
    assert build_bank_cache(kb, qwen, 4, 5, cache).tokens.shape == (4, 5)  # L changes
    assert build_bank_cache(kb, qwen, 2, 5, cache).tokens.shape == (2, 5)  # N changes
    stamp = cache.stat().st_mtime_ns
    build_bank_cache(kb, qwen, 2, 5, cache, recompute=True)
    assert cache.stat().st_mtime_ns != stamp
    kb.unlink()
    with pytest.raises(DataError, match="no such file"):  # other settings and no source to rebuild from
        build_bank_cache(kb, qwen, 3, 5, cache)


def test_half_written_cache_is_rebuilt_not_used(qwen, tmp_path):
    kb = knowledge(tmp_path)
    cache = tmp_path / "bank.pt"
    torch.save(torch.zeros(4, 8, dtype=torch.int32), cache)  # a .pt with no mapping: an interrupted build
    bank = build_bank_cache(kb, qwen, 4, 8, cache)
    assert bank.n_filled == 3 and bank.tokens[0].tolist()[:3] == qwen.encode("Paris is in France.")[:3]
    (tmp_path / "other.pt").write_bytes(b"x")
    with pytest.raises(DataError, match="no finished mapping"):
        load_bank_cache(tmp_path / "other.pt")
    cache.write_bytes(cache.read_bytes()[:100])  # truncated after it was finished
    with pytest.raises(DataError, match=re.escape(str(cache))):
        load_bank_cache(cache)
    assert build_bank_cache(kb, qwen, 4, 8, cache).n_filled == 3  # and a build repairs it


@pytest.mark.parametrize(
    "text, match",
    [
        (None, "no such file"),
        ('{"sentence": "a"}', "expected a JSON array"),
        ('[{"sentence": "a"},\n {"sentence": "b"', r"kb.json:2: .*not valid JSON"),
        ('[{"sentence": "a"},\n "b",\n {"title": "c"}]', r"kb.json:3: knowledge item 2 .*keys \['title'\].*bare string"),
        ('[\n{"target": [{"sentence": "a"}, {"object": "b"}]}]', r"kb.json:2: knowledge item 0 .*target entry 1"),
        ("[1]", r"kb.json:1: knowledge item 0 .*it is int\); expected"),
    ],
)
def test_bad_knowledge_names_index_and_line(tmp_path, text, match):
    path = tmp_path / "kb.json"
    if text is not None:
        path.write_text(text)
    with pytest.raises(DataError, match=match):
        list(read_knowledge(path, 10))


def test_read_knowledge_stops_at_limit(tmp_path):
    path = tmp_path / "kb.json"
    path.write_text('["a", {"target": [{"sentence": "b"}, {"sentence": "c"}]}, "d", this is not JSON')
    assert [k.sentence for k in read_knowledge(path, 3)] == ["a", "b", "c"]  # never reads past the limit


MILLION_ROWS = """
import resource, sys
from memexp.data.explicit.bank_cache import build_bank_cache

class Words:  # a stand-in tokenizer: one id per word; the memory measured is the bank's, not a vocabulary's
    name, vocab_size, pad_id = "words", 1000, 0
    def encode(self, text):
        return [1 + len(w) for w in text.split()]

before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
bank = build_bank_cache(sys.argv[1], Words(), 1 << 20, 16, sys.argv[2])
grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
print(grown // 1024, bank.n_filled, *bank.tokens.shape, int((bank.tokens[bank.n_filled:] == 0).all()))
"""


def test_million_row_bank_in_bounded_memory(tmp_path):
    import subprocess
    import sys

    kb = knowledge(tmp_path, n=50)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    out = subprocess.run(
        [sys.executable, "-c", MILLION_ROWS, str(kb), str(tmp_path / "big.pt")], capture_output=True, text=True, env=env
    )
    assert out.returncode == 0, out.stderr
    grown_mib, *result = map(int, out.stdout.split())
    assert result == [50, 1 << 20, 16, 1]  # 50 rows filled, the rest all pad
    assert grown_mib < 400, f"peak RSS grew by {grown_mib} MiB building a 64 MiB bank"
    assert (tmp_path / "big.pt").stat().st_size < 70 << 20  # int32: 64 MiB of rows


# ----------------------------------------------------------------------------- JSONL samples


def test_pretrain_sample_masks_padding_and_keeps_the_end_token(qwen, tmp_path):
    path = write_jsonl(tmp_path / "pre.jsonl", [{"text": "hello world"}])
    sample = next(iter(JSONLStream(path, qwen, "pretrain", seq_len=10)))
    ids = [151644] + qwen.encode("user\nhello world") + [151645]  # 6 tokens
    assert sample["input"].tolist() == ids + [151643] * (10 - len(ids))
    assert sample["target"].tolist() == ids[1:] + [IGNORE_INDEX] * (10 - len(ids) + 1)
    assert sample["target"][len(ids) - 2].item() == 151645  # the end token is a target
    short = next(iter(JSONLStream(path, qwen, "pretrain", seq_len=3)))
    assert short["target"].tolist() == ids[1:4]  # cut: every position a target


def test_sft_targets_cover_assistant_tokens_exactly(qwen, tmp_path):
    turns = [
        {"role": "system", "content": "你是助手。"},
        {"role": "user", "content": "1+1?"},
        {"role": "assistant", "content": "2"},
        {"role": "user", "content": "and 2+2?"},
        {"role": "assistant", "content": "4, of course"},
    ]
    path = write_jsonl(tmp_path / "sft.jsonl", [{"conversations": turns}])
    sample = next(iter(JSONLStream(path, qwen, "sft", seq_len=64)))
    ids = qwen.apply_chat(turns)
    predicted = [(t, i) for t, i in zip(sample["target"].tolist(), range(1, 65)) if t != IGNORE_INDEX]
    assert [t for t, _ in predicted] == qwen.encode("2") + [151645] + qwen.encode("4, of course") + [151645]
    assert all(ids[i] == t for t, i in predicted)
    assert qwen.hf.decode([t for t, _ in predicted]) == "2<|im_end|>4, of course<|im_end|>"
    opening = next(iter(JSONLStream(write_jsonl(tmp_path / "a.jsonl", [{"conversations": turns[2:]}]), qwen, "sft", 32)))
    assert qwen.hf.decode([t for t in opening["target"].tolist() if t != IGNORE_INDEX]) == "2<|im_end|>4, of course<|im_end|>"


def test_each_record_once_across_two_ranks_and_two_workers(qwen, tmp_path):
    path = write_jsonl(tmp_path / "pre.jsonl", [{"text": f"record {i}"} for i in range(23)])
    seen = []
    for rank in (0, 1):
        stream = JSONLStream(path, qwen, "pretrain", seq_len=8, start=3, shuffle_buffer=4, seed=1, rank=rank, world_size=2)
        for batch in DataLoader(stream, batch_size=2, num_workers=2):
            for row in batch["input"]:
                seen.append(int(re.search(r"record (\d+)", qwen.decode(row.tolist())).group(1)))
    assert sorted(seen) == list(range(3, 23))  # 20 records, each exactly once, the first 3 skipped
    assert seen != sorted(seen)  # shuffled within the buffer


@pytest.mark.parametrize(
    "fmt, line, match",
    [
        ("pretrain", "not json", "line 2: not valid JSON"),
        ("pretrain", "[1, 2]", "line 2: a JSON list, not an object"),
        ("pretrain", '{"txt": "a"}', 'line 2: no string "text"'),
        ("sft", '{"text": "a"}', 'line 2: no non-empty "conversations"'),
        (
            "sft",
            '{"conversations": [{"role": "user", "content": "a"}, {"role": "bot", "content": "b"}]}',
            "line 2, turn 1: role 'bot'",
        ),
        ("sft", '{"conversations": [{"role": "user", "content": "a"}]}', "line 2: the conversation has no assistant turn"),
    ],
)
def test_bad_jsonl_names_file_and_line(qwen, tmp_path, fmt, line, match):
    turns = [{"role": "user", "content": "ok"}, {"role": "assistant", "content": "yes"}]
    good = {"text": "ok"} if fmt == "pretrain" else {"conversations": turns}
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(good) + "\n" + line + "\n")
    with pytest.raises(DataError, match=re.escape(str(path)) + ".*" + match):
        list(JSONLStream(path, qwen, fmt, seq_len=8))


def test_data_module_splits_spec_and_errors(qwen, qwen_dir, tmp_path):
    path = write_jsonl(tmp_path / "pre.jsonl", [{"text": f"record {i}"} for i in range(9)])
    kb = knowledge(tmp_path)
    dm = ExplicitLMDataModule(path=str(path), eval_records=2, seq_len=8, batch_size=3, shuffle_buffer=1,
                              knowledge_path=str(kb), knowledge_num=4, knowledge_length=8, data_dir=str(qwen_dir))  # fmt: skip
    dm.prepare_data()
    dm.setup("fit")
    spec = dm.spec
    assert (spec.task_kind, spec.vocab_size, spec.pad_id, spec.seq_len) == ("causal_lm", 151669, 151643, 8)
    assert spec.memory.tokens.shape == (4, 8) and spec.memory.path == qwen_dir / "explicit" / "kb_N4_L8.pt"

    def records(loader):
        return [int(re.search(r"record (\d+)", qwen.decode(r.tolist())).group(1)) for b in loader for r in b["input"]]

    assert records(dm.val_dataloader()) == [0, 1] and records(dm.test_dataloader()) == [2, 3]
    assert records(dm.train_dataloader()) == [4, 5, 6, 7, 8]
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(DataError, match=re.escape(str(empty)) + " is empty"):
        ExplicitLMDataModule(path=str(empty), data_dir=str(qwen_dir)).setup()
    with pytest.raises(DataError, match="leaves none to train on"):
        ExplicitLMDataModule(path=str(path), eval_records=5, data_dir=str(qwen_dir)).setup()
    with pytest.raises(ConfigError, match="data.format='chat'"):
        ExplicitLMDataModule(format="chat")
    with pytest.raises(ConfigError, match="data.seq_len=0"):
        ExplicitLMDataModule(seq_len=0)


def test_an_empty_knowledge_base_is_refused_not_trained_as_padding(qwen, tmp_path):
    kb = write_json(tmp_path / "kb.json", [])
    with pytest.raises(DataError, match=rf"{kb}: the knowledge base holds no entries"):
        build_bank_cache(kb, qwen, 8, 6, tmp_path / "c" / "bank.pt")
    assert not (tmp_path / "c" / "bank.pt").exists()
