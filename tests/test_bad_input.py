"""The bad-input suite: every case is one MemexpError (one `error:` line at the command line, no traceback) naming
the file, line, index or field and what was expected, and nothing half-written is left looking finished.

Cases run in-process (the command-line wrapper turns a MemexpError into exactly one line: tests/test_cli.py and
tests/test_ranges.py check that end to end); range and composition errors are in tests/test_ranges.py."""

import gzip

import pytest
import torch

from memexp.data.dialogue.prepare import prepare_dialogues
from memexp.data.text import TextDataModule, read_jsonl_text, read_utf8
from memexp.errors import CheckpointError, ConfigError, DataError, MemexpError
from memexp.runs.checkpoints import read_checkpoint

TEXT_CASES = {
    "missing": (None, "does not exist"),
    "folder": ("folder", "is a folder; expected a UTF-8 text file"),
    "empty": (b"", "is empty; expected UTF-8 text"),
    "blank": (b"  \n\n\t\n", "is empty; expected UTF-8 text"),
    "latin-1": (b"abc\ndef caf\xe9\n", "is not valid UTF-8: byte 11 (line 2)"),
    "binary": (bytes(range(128, 256)) * 4, "is not valid UTF-8: byte 0 (line 1)"),
    "gzip": (gzip.compress(b"hello world\n" * 100), "is not valid UTF-8"),
    "utf-16": ("hello world\n".encode("utf-16"), "is not valid UTF-8: byte 0 (line 1)"),
}


@pytest.mark.parametrize("case", sorted(TEXT_CASES))
def test_text_files(case, tmp_path):
    content, message = TEXT_CASES[case]
    path = tmp_path / f"{case}.txt"
    if content == "folder":
        path.mkdir()
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(DataError) as e:
        read_utf8(path)
    assert str(path) in str(e.value) and message in str(e.value)


JSONL_CASES = {
    "bad json": ('{"text": "a"}\n{"text": \n', "line 2: not valid JSON"),
    "no text field": ('{"text": "a"}\n{"body": "b"}\n', "line 2: expected an object with a string field 'text'"),
    "text not a string": ('{"text": 3}\n', "line 1: expected an object with a string field 'text'"),
    "a list": ('["a"]\n', "line 1: expected an object"),
    "only blanks": ("\n\n", "is empty"),
    "no records": ("\n \n", "is empty"),
}


@pytest.mark.parametrize("case", sorted(JSONL_CASES))
def test_jsonl_text(case, tmp_path):
    text, message = JSONL_CASES[case]
    path = tmp_path / "d.jsonl"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(DataError) as e:
        read_jsonl_text(path)
    assert str(path) in str(e.value) and message in str(e.value)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"format": "csv"}, "data.format='csv': expected 'text' or 'jsonl'"),
        ({"windows": "sliding"}, "data.windows='sliding': expected 'random' or 'stream'"),
        ({"splits": (0.5, 0.5)}, "data.splits=[0.5, 0.5]: expected three non-negative fractions"),
        ({"splits": (0.9, 0.2, -0.1)}, "expected three non-negative fractions"),
        ({"n_tasks": 3, "task_id": 3}, "data.task_id=3, data.n_tasks=3"),
        ({"unknown": "ignore"}, "data.unknown='ignore': expected 'error' or 'skip'"),
        ({"tokenizer": "words"}, "data.tokenizer='words': expected 'char', 'byte', 'qwen' or a path"),
    ],
)
def test_text_data_settings(kwargs, message, tiny_text):
    with pytest.raises(ConfigError) as e:
        TextDataModule(path=str(tiny_text), **kwargs).setup()
    assert message in str(e.value)


def test_a_text_shorter_than_one_window_says_so(tmp_path):
    path = tmp_path / "short.txt"
    path.write_text("hello there", encoding="utf-8")
    with pytest.raises(DataError, match=r"holds 11 characters, shorter than one training window of data.seq_len=64"):
        TextDataModule(path=str(path)).setup()


DIALOGUE_CASES = {
    "tsv empty utterance": ("d.tsv", "a\tb\nc\t\td\n", "d.tsv:2: utterance 1 is empty"),
    "jsonl bad json": ("d.jsonl", '["a", "b"]\n["c", \n', "d.jsonl:2: not valid JSON"),
    "jsonl number": ("d.jsonl", '["a", 7]\n', "d.jsonl:1: utterance 1 should be a string"),
    "jsonl object": ("d.jsonl", '{"x": ["a"]}\n', "d.jsonl:1: expected a list of utterances or an object with a 'dialog' list"),
    "json syntax": ("d.json", '[["a", "b"], ["c" "d"]]', "d.json:1"),
    "json one line index": ("d.json", '[["a", "b"], ["c", "d"], ["e", {"t": 1}]]', "d.json:1 (dialogue 2): utterance 1"),
    "json unknown split": ("d.json", '{"training": [["a", "b"]]}', "unknown split 'training'"),
    "json split twice": ("d.json", '{"train": [["a", "b"]], "train": [["c", "d"]]}', "split 'train' appears twice"),
    "json not a list": ("d.json", '{"train": {"a": 1}}', "a list of dialogues for split 'train'"),
    "json scalar": ("d.json", "42", "a JSON list of dialogues"),
    "json trailing": ("d.json", '[["a", "b"]] [', "end of file after the top-level value"),
    "unknown extension": ("d.csv", "a,b\n", "cannot tell the format from the name"),
    "latin-1 line": (
        "d.tsv",
        b"a\tb\nc\tcaf\xe9\n",
        "d.tsv:2: not valid UTF-8 (invalid continuation byte at byte 5 of the line)",
    ),
    "fake gzip": ("d.tsv.gz", b"not gzip at all", "d.tsv.gz: not a gzip file"),
    "truncated gzip": ("d.tsv.gz", gzip.compress(b"a\tb\n" * 1000)[:40], "d.tsv.gz: the gzip stream ends early"),
}


@pytest.mark.parametrize("case", sorted(DIALOGUE_CASES))
def test_dialogue_sources(case, tmp_path):
    name, content, message = DIALOGUE_CASES[case]
    src = tmp_path / name
    src.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    with pytest.raises(MemexpError) as e:
        prepare_dialogues(src, tmp_path / "out", splits=("train",))
    assert message in str(e.value), str(e.value)
    assert "\n" not in str(e.value)
    assert not (tmp_path / "out" / "manifest.json").exists()  # nothing looks finished


def test_a_missing_dialogue_source(tmp_path):
    with pytest.raises(DataError, match=r"no such file"):
        prepare_dialogues(tmp_path / "none.tsv", tmp_path / "out", splits=("train",))


CHECKPOINT_CASES = {
    "missing": (None, "does not exist"),
    "folder": ("folder", "is a folder; expected a .ckpt file"),
    "empty": (b"", "could not be read (an empty file)"),
    "garbage": (b"garbage bytes", "could not be read"),
    "truncated": ("truncated", "could not be read"),
    "a text file": (b"epoch=3\n", "could not be read"),
    "foreign torch file": ("foreign", "is not a memexp checkpoint"),
    "a tensor": ("tensor", "is not a memexp checkpoint"),
}


@pytest.mark.parametrize("case", sorted(CHECKPOINT_CASES))
def test_checkpoints(case, tmp_path):
    content, message = CHECKPOINT_CASES[case]
    path = tmp_path / "x.ckpt"
    if content == "folder":
        path.mkdir()
    elif content == "truncated":
        torch.save({"memexp": {}, "state_dict": {"w": torch.zeros(1000)}}, path)
        path.write_bytes(path.read_bytes()[:300])
    elif content == "foreign":
        torch.save({"weights": torch.zeros(2)}, path)
    elif content == "tensor":
        torch.save(torch.zeros(3), path)
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(CheckpointError) as e:
        read_checkpoint(path)
    assert str(path) in str(e.value) and message in str(e.value)
    assert "\n" not in str(e.value) and len(str(e.value)) < 300


def test_bank_files(tmp_path):
    from memexp.memory.bank_file import load_bank_file

    for name, content in {"empty.pt": b"", "garbage.pt": b"xx", "ckpt.pt": None}.items():
        path = tmp_path / name
        if content is None:
            torch.save({"state_dict": {}}, path)
        else:
            path.write_bytes(content)
        with pytest.raises(MemexpError) as e:
            load_bank_file(path)
        assert str(path) in str(e.value) and "\n" not in str(e.value)
