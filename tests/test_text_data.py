import json

import pytest
import torch

from memexp.data.text import IGNORE_INDEX, TextDataModule
from memexp.data.tokenizers import ByteTokenizer, CharTokenizer, tokenizer_from_state
from memexp.errors import ConfigError, DataError


def test_splits_are_contiguous_and_cover_the_text(tiny_text):
    dm = TextDataModule(path=str(tiny_text), seq_len=16)
    text = tiny_text.read_text()
    tok = dm.spec.tokenizer
    joined = (
        tok.decode(dm.tokens("train").tolist()) + tok.decode(dm.tokens("val").tolist()) + tok.decode(dm.tokens("test").tolist())
    )
    assert joined == text
    assert len(dm.tokens("train")) == int(len(text) * 0.9)


def test_corpus_parts_share_one_vocabulary_and_split_each_part(tmp_path):
    # three parts whose letters differ: each part's splits come from its own third only
    path = tmp_path / "abc.txt"
    path.write_text("a" * 300 + "b" * 300 + "c" * 301)
    mods = [TextDataModule(path=str(path), seq_len=8, n_tasks=3, task_id=t, splits=(0.8, 0.1, 0.1)) for t in range(3)]
    assert len({m.spec.vocab_size for m in mods}) == 1 and mods[0].spec.vocab_size == 3  # a, b, c (train splits)
    for t, m in enumerate(mods):
        text = m.tokenizer.decode(m.tokens("train").tolist())
        assert text == "abc"[t] * 240  # int(0.8 * 300) and int(0.8 * 301)
        assert set(m.tokenizer.decode(m.tokens("val").tolist())) == {"abc"[t]}
    assert len(mods[0].tokens("test")) == 30 and len(mods[2].tokens("test")) == 31  # the last part takes the remainder
    with pytest.raises(ConfigError, match="data.task_id=3"):
        TextDataModule(path=str(path), n_tasks=3, task_id=3)


def test_eval_windows_score_every_target_once(tiny_text):
    dm = TextDataModule(path=str(tiny_text), seq_len=16, eval_batch_size=7)
    scored = []
    for batch in dm.val_dataloader():
        assert (batch["input"][:, 1:] == batch["target"][:, :-1])[batch["target"][:, :-1] != IGNORE_INDEX].all()
        scored.append(batch["target"][batch["target"] != IGNORE_INDEX])
    assert torch.equal(torch.cat(scored), dm.tokens("val")[1:])


def test_random_windows_are_shifted_pairs(tiny_text):
    dm = TextDataModule(path=str(tiny_text), seq_len=16, batch_size=4)
    batch = next(iter(dm.train_dataloader()))
    assert batch["input"].shape == (4, 16)
    assert torch.equal(batch["input"][:, 1:], batch["target"][:, :-1])


def test_stream_windows_continue_row_by_row(tiny_text):
    dm = TextDataModule(path=str(tiny_text), seq_len=16, batch_size=4, windows="stream")
    assert dm.spec.ordered_windows
    it = iter(dm.train_dataloader())
    a, b = next(it), next(it)
    assert torch.equal(a["target"][:, -1], b["input"][:, 0])
    tokens = dm.tokens("train")
    rows = torch.cat([a["input"], b["input"]], dim=1)  # each row is one contiguous stretch of the text
    for row in rows:
        start = int(torch.nonzero((tokens.unfold(0, len(row), 1) == row).all(1))[0])
        assert torch.equal(tokens[start : start + len(row)], row)


def test_char_and_byte_tokenizers_round_trip():
    char = CharTokenizer.fit("hello world")
    assert char.vocab_size == 8 and char.decode(char.encode("low")) == "low"
    assert tokenizer_from_state(char.state_dict()).encode("hello") == char.encode("hello")
    byte = ByteTokenizer()
    assert byte.decode(byte.encode("héllo €")) == "héllo €"
    with pytest.raises(DataError, match="'z' is not in the char vocabulary"):
        char.encode("z")


def test_jsonl_text(tmp_path):
    path = tmp_path / "docs.jsonl"
    path.write_text("\n".join(json.dumps({"text": t}) for t in ["first doc " * 20, "second doc " * 20]))
    dm = TextDataModule(path=str(path), format="jsonl", seq_len=8, tokenizer="byte")
    assert dm.spec.vocab_size == 256
    assert ByteTokenizer().decode(dm.tokens("train").tolist()).startswith("first doc")


def test_bad_jsonl_line_is_named(tmp_path):
    path = tmp_path / "docs.jsonl"
    path.write_text('{"text": "ok"}\n{"text": broken}\n')
    with pytest.raises(DataError, match=r"docs.jsonl, line 2: not valid JSON"):
        TextDataModule(path=str(path), format="jsonl").setup()


def test_missing_empty_and_non_utf8_files_are_named(tmp_path):
    with pytest.raises(DataError, match=r"nope.txt does not exist"):
        TextDataModule(path=str(tmp_path / "nope.txt")).setup()
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n")
    with pytest.raises(DataError, match=r"empty.txt is empty"):
        TextDataModule(path=str(empty)).setup()
    latin = tmp_path / "latin.txt"
    latin.write_bytes("line one\nline two caf\xe9\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin.txt is not valid UTF-8: byte 21 \(line 2\)"):
        TextDataModule(path=str(latin)).setup()


def test_bad_fields_are_named():
    with pytest.raises(ConfigError, match="data.windows"):
        TextDataModule(windows="sideways")
    with pytest.raises(ConfigError, match="data.splits"):
        TextDataModule(splits=[0.5, 0.1, 0.1])


def test_offline_download_error_says_where_to_put_the_file(tmp_path, monkeypatch):
    from memexp.data.sources import TINY_SHAKESPEARE, fetch

    monkeypatch.setattr("urllib.request.urlopen", lambda *a, **k: (_ for _ in ()).throw(OSError("network unreachable")))
    with pytest.raises(DataError, match=r"put the file \(1,115,394 bytes.*at .*tinyshakespeare/input.txt"):
        fetch(TINY_SHAKESPEARE, tmp_path / "data", mirrors=[])


def test_mirror_copy_is_verified(tmp_path, data_dir, capsys):
    from memexp.data.sources import TINY_SHAKESPEARE, fetch

    path = fetch(TINY_SHAKESPEARE, tmp_path / "data", mirrors=[data_dir])
    assert path.stat().st_size == 1_115_394
    (line,) = capsys.readouterr().out.splitlines()  # one line says where the data came from
    assert (
        line == f"data: copied tinyshakespeare/input.txt from the mirror {data_dir / 'tinyshakespeare' / 'input.txt'} to {path}"
    )
    fetch(TINY_SHAKESPEARE, tmp_path / "data", mirrors=[data_dir])
    assert capsys.readouterr().out == ""  # already there: nothing to say
    bad = tmp_path / "bad" / "tinyshakespeare"
    bad.mkdir(parents=True)
    (bad / "input.txt").write_text("not shakespeare")
    with pytest.raises(DataError, match="does not match the expected md5"):
        fetch(TINY_SHAKESPEARE, tmp_path / "data2", mirrors=[tmp_path / "bad"])
    assert not (tmp_path / "data2" / "tinyshakespeare" / "input.txt").exists()
