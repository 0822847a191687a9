"""python -m memexp.memory on a tiny trained ExplicitLM (the knowledge study's world): show and search read the bank
as the model does, writes go to a new bank file (or in place when asked) and change only what they name, export and
import round-trip byte for byte, and every bad input is one `error:` line that leaves the files as they were."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from helpers import run_cli

from memexp.configs.rebuild import load_checkpoint, load_memory
from memexp.data.explicit.bank_cache import encode_entry
from memexp.entry import one_line_errors
from memexp.files import file_digest
from memexp.memory.bank_file import load_bank_file
from memexp.memory_cli import memory_command

N, L, FROZEN = 256, 16, 51  # knowledge_num, knowledge_length, floor(256 * 0.2)


@pytest.fixture(scope="module")
def trained(tiny_knowledge_study) -> dict:
    """The tiny knowledge study's ExplicitLM (conftest): its checkpoint, data folder, bank, digest and tokenizer."""
    ckpt, data_dir = tiny_knowledge_study["ckpt"], str(tiny_knowledge_study["data_dir"])
    bank = torch.load(ckpt, weights_only=True)["state_dict"]["net.memory_bank"]
    tok = load_checkpoint(ckpt, data_dir=data_dir).datamodule.tokenizer
    return {"ckpt": ckpt, "data_dir": data_dir, "bank": bank, "digest": file_digest(ckpt), "tok": tok}


def command(trained: dict, verb: str, **options) -> dict:
    """memory_command as the entry point runs it: a MemexpError becomes one `error:` line and exit 2."""
    options.setdefault("ckpt", str(trained["ckpt"]))
    return one_line_errors(memory_command)(verb, data_dir=trained["data_dir"], **options)


def refused(trained: dict, capsys: pytest.CaptureFixture, verb: str, **options) -> str:
    """The one error line of a refused command (exit status 2)."""
    with pytest.raises(SystemExit) as stop:
        command(trained, verb, **options)
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def cli(trained: dict, tmp_path: Path, verb: str, *args: str):
    return run_cli(
        "memexp.memory",
        verb,
        f"ckpt={trained['ckpt']}",
        f"paths.data_dir={trained['data_dir']}",
        f"paths.output_dir={tmp_path / 'outputs'}",
        *args,
    )


def text_of(trained: dict, row: torch.Tensor) -> str:
    tok = trained["tok"]
    return tok.decode([t for t in row.tolist() if t != tok.pad_id])


# ----------------------------------------------------------------------------- reading


def test_show_prints_entries_decoded_with_frozen_flag_usage_and_source(trained, tmp_path):
    out = cli(trained, tmp_path, "show", "start=49", "count=4")
    assert out.returncode == 0, out.stderr[-2000:]
    header, *rows = out.stdout.strip().splitlines()
    assert header.split() == ["index", "frozen", "uses", "content", "source", "text"] and len(rows) == 4
    first_updatable = rows[2].split()  # entry 51: the first one past the frozen 51
    assert first_updatable[:3] == ["51", "0", "kb:f51"] and " ".join(first_updatable[3:]) == text_of(trained, trained["bank"][51])
    assert rows[1].split()[:2] == ["50", "yes"]  # the last frozen entry


def test_show_as_json_lines_counts_the_frozen_region(trained, capsys):
    result = command(trained, "show", start=40, count=20, format="json")
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert lines == result["entries"] and [e["index"] for e in lines] == list(range(40, 60))
    assert sum(e["frozen"] for e in lines) == FROZEN - 40
    assert lines[-1]["source"] == "kb:f59" and lines[-1]["text"] == text_of(trained, trained["bank"][59])
    assert not any(e["by_content"] for e in lines) and all(e["uses"] == 0 for e in lines)


def test_search_lists_the_candidates_of_the_model_and_the_entry_it_selects(trained, capsys):
    query = "the capital of padan is"
    found = command(trained, "search", query=query, top=3)["entries"]
    run = load_checkpoint(trained["ckpt"], data_dir=trained["data_dir"])
    net, tok = run.task.net.eval(), run.datamodule.tokenizer
    with torch.no_grad():
        net(torch.tensor([tok.encode(query)]))
    layers = sorted(int(k) for k in net.fusions)
    for layer in layers:
        shown = [e for e in found if e["layer"] == layer]
        chosen = int(net.last_selection[layer][0, -1])  # what this model reads after the query's last token
        assert [e["index"] for e in shown if e["selected"]] == [chosen]
        cosines = [e["cosine"] for e in shown[:3]]
        assert cosines == sorted(cosines, reverse=True)
        assert len(shown) == 3 + (chosen not in [e["index"] for e in shown[:3]])  # the selected one, when it ranks lower
    # top=1: the best candidate of each layer and, when another, the selected one (what the model reads is always shown)
    narrow = command(trained, "search", query=query, top=1)["entries"]
    assert {e["index"] for e in narrow if e["selected"]} == {e["index"] for e in found if e["selected"]}
    assert all(1 <= sum(e["layer"] == layer for e in narrow) <= 2 for layer in layers)


# ----------------------------------------------------------------------------- writing


def test_edit_writes_one_entry_to_a_new_bank_file_and_leaves_the_checkpoint(trained, tmp_path, capsys):
    out = tmp_path / "edited.pt"
    result = command(trained, "edit", index=60, text="the capital of padan is balus .", out=str(out))
    printed = capsys.readouterr().out
    old = text_of(trained, trained["bank"][60])
    assert f"entry 60: {old!r} -> 'the capital of padan is balus .'" in printed and f"bank saved to {out}" in printed
    assert file_digest(trained["ckpt"]) == trained["digest"]
    saved = load_bank_file(out)
    changed = (saved.tokens != trained["bank"]).any(1).nonzero().flatten().tolist()
    assert changed == [60] and result["changes"] == [{"index": 60, "old": old, "new": "the capital of padan is balus ."}]
    _, memory = load_memory(out, data_dir=trained["data_dir"])  # the bank file names its checkpoint
    assert memory.entry(60) | {"uses": 0} == {
        "index": 60,
        "text": "the capital of padan is balus .",
        "frozen": False,
        "uses": 0,
        "source": "edit",
        "by_content": True,
    }
    assert memory.sources[59] == "kb:f59" and int(memory.net.content_rows.sum()) == 1
    row = encode_entry(memory.tok, "the capital of padan is balus .", L)[0]
    assert memory.net.memory_bank[60].tolist() == row


def test_editing_a_frozen_entry_is_one_error_line_and_writes_nothing(trained, tmp_path):
    out = cli(trained, tmp_path, "edit", "index=3", "text=the capital of trostel is padan .", f"out={tmp_path / 'b.pt'}")
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == ["error: index=3 is a frozen entry (the first 51); edit it with force=true"]
    assert not (tmp_path / "b.pt").exists() and file_digest(trained["ckpt"]) == trained["digest"]


def test_force_writes_a_frozen_entry_and_keeps_the_frozen_region(trained, tmp_path):
    out = tmp_path / "forced.pt"
    command(trained, "edit", index=3, text="the capital of trostel is padan .", out=str(out), force=True)
    saved = load_bank_file(out)
    assert (saved.tokens != trained["bank"]).any(1).nonzero().flatten().tolist() == [3]
    assert int(saved.freeze_mask.sum()) == FROZEN and bool(saved.freeze_mask[3]) and saved.sources[3] == "edit"


def test_bad_indices_and_destinations_are_one_error_line(trained, tmp_path, capsys):
    out = str(tmp_path / "b.pt")
    assert refused(trained, capsys, "edit", index=256, text="x", out=out) == "error: index=256: the bank has entries 0..255"
    assert refused(trained, capsys, "delete", index=-1, out=out) == "error: index=-1: the bank has entries 0..255"
    assert refused(trained, capsys, "show", start=300) == "error: start=300: the bank has entries 0..255"
    assert refused(trained, capsys, "edit", text="x", out=out).startswith("error: index: this verb needs index=N")
    assert refused(trained, capsys, "edit", index=60, text="x").startswith("error: out: a write goes to a new bank file")
    assert refused(trained, capsys, "edit", index=60, text="x", out=str(trained["ckpt"])).startswith(
        f"error: out={trained['ckpt']} is the input file; pass inplace=true"
    )
    assert refused(trained, capsys, "add", text="x", out=out, strategy="newest").startswith("error: strategy='newest'")
    assert not Path(out).exists() and file_digest(trained["ckpt"]) == trained["digest"]


def test_an_unknown_verb_is_one_error_line_listing_the_verbs(trained, tmp_path):
    out = cli(trained, tmp_path, "rename")
    assert out.returncode == 2 and out.stderr.strip().splitlines() == [
        "error: the first argument is the verb, one of show, search, edit, delete, add, export, import (got 'rename')"
    ]


def test_delete_empties_the_entry(trained, tmp_path, capsys):
    out = tmp_path / "deleted.pt"
    result = command(trained, "delete", index=70, out=str(out))
    saved = load_bank_file(out)
    pad = int(trained["bank"][0, -1])  # the facts are shorter than L: every row ends in pad
    assert saved.tokens[70].tolist() == [pad] * L and saved.sources[70] == "" and not bool(saved.content_rows[70])
    assert (saved.tokens != trained["bank"]).any(1).nonzero().flatten().tolist() == [70]
    assert result["changes"][0]["new"] == "" and result["changes"][0]["old"] == text_of(trained, trained["bank"][70])


def test_add_goes_where_the_strategy_puts_it_and_never_into_a_frozen_entry(trained, tmp_path, capsys):
    fifo = tmp_path / "fifo.pt"
    result = command(trained, "add", text=["a fact .", "another fact .", "a third ."], out=str(fifo), strategy="fifo")
    assert [c["index"] for c in result["changes"]] == [51, 52, 53]  # the updatable entries in turn, from the first
    assert load_bank_file(fifo).sources[51:54] == ["add"] * 3
    # similarity: a copy of frozen entry 0 is most like entry 0 itself, which it may not replace
    similar = tmp_path / "similar.pt"
    copy = text_of(trained, trained["bank"][0])
    result = command(trained, "add", text=copy, out=str(similar), strategy="similarity", similarity_threshold=0.0)
    (index,) = [c["index"] for c in result["changes"]]
    saved = load_bank_file(similar)
    assert index >= FROZEN and torch.equal(saved.tokens[:FROZEN], trained["bank"][:FROZEN])
    assert torch.equal(saved.tokens[index], trained["bank"][0])


def test_a_fact_longer_than_an_entry_is_cut_with_a_warning_and_still_written(trained, tmp_path, capsys):
    long = " ".join(["the capital of padan is balus ."] * 3)  # 21 tokens, L = 16
    out = tmp_path / "long.pt"
    command(trained, "edit", index=61, text=long, out=str(out))
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["warning: the text has 21 tokens; a bank entry holds 16 (knowledge_length), the rest is cut off"]
    _, memory = load_memory(out, data_dir=trained["data_dir"])
    assert memory.net.memory_bank[61].tolist() == memory.tok.encode(long)[:L]


def test_inplace_rewrites_a_bank_file_and_a_checkpoint_copy(trained, tmp_path, capsys):
    bank = tmp_path / "bank.pt"
    command(trained, "edit", index=60, text="the capital of padan is balus .", out=str(bank))
    command(trained, "delete", index=61, ckpt=str(bank), inplace=True)
    _, memory = load_memory(bank, data_dir=trained["data_dir"])
    assert memory.text(60) == "the capital of padan is balus ." and memory.text(61) == "" and memory.sources[60] == "edit"
    assert memory.checkpoint == str(trained["ckpt"].resolve()) and not list(tmp_path.glob(".*tmp*"))
    # a checkpoint in place: its bank buffers change (and its sources are kept in it), the weights do not
    copy = tmp_path / "copy.ckpt"
    shutil.copy(trained["ckpt"], copy)
    command(trained, "edit", index=62, text="the capital of padan is balus .", ckpt=str(copy), inplace=True)
    before, after = torch.load(trained["ckpt"], weights_only=True), torch.load(copy, weights_only=True)
    a, b = before["state_dict"], after["state_dict"]
    moved = [k for k in a if (not torch.equal(a[k], b[k]) if torch.is_tensor(a[k]) else a[k] != b[k])]
    assert sorted(moved) == ["net.content_rows", "net.memory_bank"]
    _, memory = load_memory(copy, data_dir=trained["data_dir"])
    assert memory.entry(62)["source"] == "edit" and memory.text(62) == "the capital of padan is balus ."
    assert memory.sources[63] == "kb:f63" and file_digest(trained["ckpt"]) == trained["digest"]


# ----------------------------------------------------------------------------- export and import


def test_export_import_export_is_byte_identical(trained, tmp_path, capsys):
    edited = tmp_path / "edited.pt"
    command(trained, "edit", index=60, text="the capital of padan is balus .", out=str(edited))
    command(trained, "delete", index=61, ckpt=str(edited), inplace=True)
    first, second = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    command(trained, "export", ckpt=str(edited), out=str(first))
    lines = [json.loads(x) for x in first.read_text(encoding="utf-8").splitlines()]
    assert len(lines) == N and list(lines[60]) == ["index", "text", "tokens", "frozen", "source", "by_content"]
    assert lines[60]["source"] == "edit" and lines[60]["by_content"] and lines[3]["frozen"] and not lines[51]["frozen"]
    imported = tmp_path / "imported.pt"
    result = command(trained, "import", src=str(first), out=str(imported))  # into the checkpoint's own bank
    assert [c["index"] for c in result["changes"]] == [60, 61]  # only the entries that differ
    command(trained, "export", ckpt=str(imported), out=str(second))
    assert first.read_bytes() == second.read_bytes()
    a, b = load_bank_file(edited), load_bank_file(imported)
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.content_rows, b.content_rows) and a.sources == b.sources


def test_an_import_line_with_only_text_is_encoded_like_a_knowledge_entry(trained, tmp_path, capsys):
    src = tmp_path / "facts.jsonl"
    long = " ".join(["people in padan speak balus ."] * 4)
    src.write_text(
        json.dumps({"index": 70, "text": "the capital of padan is balus ."})
        + "\n\n"
        + json.dumps({"index": 71, "text": long})
        + "\n"
    )
    out = tmp_path / "facts.pt"
    result = command(trained, "import", src=str(src), out=str(out))
    assert capsys.readouterr().err.strip().splitlines() == [
        f"warning: {src}, line 3: the text has 24 tokens; a bank entry holds 16 (knowledge_length), the rest is cut off"
    ]
    _, memory = load_memory(out, data_dir=trained["data_dir"])
    assert memory.net.memory_bank[70].tolist() == encode_entry(memory.tok, "the capital of padan is balus .", L)[0]
    assert memory.net.memory_bank[71].tolist() == memory.tok.encode(long)[:L]
    assert memory.sources[70:72] == ["import", "import"] and memory.net.content_rows[70:72].tolist() == [True, True]
    assert [c["index"] for c in result["changes"]] == [70, 71]


def good_line(trained: dict, index: int) -> dict:
    return {"index": index, "tokens": trained["bank"][index].tolist(), "source": f"kb:f{index}", "by_content": False}


BAD_LINES = {
    "not json": ('{"index": 70, "text": "x"', "not JSON (Expecting ',' delimiter at column 26)"),
    "not an object": ("[70]", "expected a JSON object with index and tokens or text, got list"),
    "no index": ('{"text": "x"}', "missing field 'index' (the entry the line writes)"),
    "index out of range": ('{"index": 256, "text": "x"}', "index 256 is out of range (the bank has entries 0..255)"),
    "no text or tokens": ('{"index": 70}', "missing field 'tokens' or 'text' (what entry 70 holds)"),
    "short tokens": (
        '{"index": 70, "tokens": [1, 2, 3]}',
        "tokens has 3 ids; a bank entry holds exactly 16 (knowledge_length, pad included)",
    ),
    "unknown field": (
        '{"index": 70, "txt": "x"}',
        "unknown field 'txt' (expected index, text, tokens, frozen, source, by_content)",
    ),
    "twice": ('{"index": 52, "text": "x"}', "index 52 was already given on line 2"),
    "frozen flag": ('{"index": 70, "text": "x", "frozen": true}', "frozen is true but entry 70 is not frozen in this bank"),
}


@pytest.mark.parametrize("case", sorted(BAD_LINES))
def test_a_bad_import_line_is_one_error_naming_the_line(trained, tmp_path, capsys, case):
    bad, message = BAD_LINES[case]
    src = tmp_path / "bank.jsonl"
    src.write_text("\n".join([json.dumps(good_line(trained, 51)), json.dumps(good_line(trained, 52)), bad]) + "\n")
    out = tmp_path / "out.pt"
    line = refused(trained, capsys, "import", src=str(src), out=str(out))
    assert line.startswith(f"error: {src}, line 3: {message}"), line
    assert not out.exists()


def test_importing_over_a_frozen_entry_needs_force(trained, tmp_path, capsys):
    src = tmp_path / "frozen.jsonl"
    src.write_text(json.dumps({"index": 60, "text": "a fact ."}) + "\n" + json.dumps({"index": 3, "text": "a fact ."}) + "\n")
    out = tmp_path / "out.pt"
    line = refused(trained, capsys, "import", src=str(src), out=str(out))
    assert (
        line
        == f"error: {src}, line 2: entry 3 is frozen (the first 51 entries are) and the file changes it; import it with force=true"
    )
    assert not out.exists()
    result = command(trained, "import", src=str(src), out=str(out), force=True)
    assert [c["index"] for c in result["changes"]] == [60, 3] and load_bank_file(out).sources[3] == "import"
    # unchanged frozen entries are no change: the checkpoint's own export imports without force
    same = tmp_path / "same.jsonl"
    command(trained, "export", out=str(same))
    assert command(trained, "import", src=str(same), out=str(tmp_path / "same.pt"))["changes"] == []
