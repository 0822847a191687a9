"""LCCC preparation into chunks and streaming of (context, reply) pairs, on the shipped toy data."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
import torch
from helpers import shared_data_dir
from torch.utils.data import DataLoader

import memexp.data.dialogue.prepare as prep
from memexp.data.dialogue import (
    ChunkWriter,
    DialogueStream,
    DialogueVocab,
    chunk_dialogues,
    collate_dialogues,
    download_lccc,
    prepare_dialogues,
    read_chunk,
    read_json,
)
from memexp.errors import DataError

torch.set_num_threads(1)  # the test machine is shared; tiny tensors gain nothing from threads

TOY = shared_data_dir() / "lccc_toy"
BERT_VOCAB = shared_data_dir() / "vocab" / "bert_chinese_vocab.txt"
pytestmark = pytest.mark.skipif(not (TOY / "toy_data.json").exists(), reason="shared LCCC toy data not present")


@pytest.fixture(scope="module")
def toy():
    data = json.loads((TOY / "toy_data.json").read_text(encoding="utf-8"))
    return {"train": data["train"][:120], "valid": data["valid"][:30], "test": data["test"][:30]}


@pytest.fixture(scope="module")
def toy_tsv_lines():
    with open(TOY / "toy_train.txt", encoding="utf-8") as f:
        return [next(f).rstrip("\n") for _ in range(150)]


def write_json(path: Path, obj) -> Path:
    path.write_text(json.dumps(obj, ensure_ascii=False, indent=1), encoding="utf-8")
    return path


def expected_pairs(dialogues, max_history):
    """(context utterances, reply) in the index order the stream numbers them."""
    return [(d[max(0, i - max_history) : i], d[i]) for d in dialogues for i in range(1, len(d))]


def streamed_pairs(root, split, vocab=None, max_history=4, **kw):
    ds = DialogueStream(
        root, split, vocab=vocab, max_history=max_history, max_context_len=10_000, max_reply_len=10_000, shuffle=False, **kw
    )
    out = {}
    for s in ds:
        ids = s["context"].tolist()
        assert ids[-1] == ds.eos_id
        utts, cur = [], []
        for i in ids:
            if i == ds.eos_id:
                utts.append(ds.vocab.decode(cur))
                cur = []
            else:
                cur.append(i)
        reply = s["reply"].tolist()
        assert reply[0] == ds.sos_id and reply[-1] == ds.eos_id
        out[s["index"]] = (utts, ds.vocab.decode(reply[1:-1]))
    return [out[i] for i in range(len(out))]


def bert_view(text, vocab):
    """What a text becomes through the BERT vocab: tokens kept, lower-cased, or [UNK]."""
    toks = []
    for t in text.split():
        toks.append(t if t in vocab.stoi else t.lower() if t.lower() in vocab.stoi else "[UNK]")
    return " ".join(toks)


# ----------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("vocab_kind", ["built", "bert"])
@pytest.mark.parametrize("fmt", ["json", "jsonl", "tsv"])
def test_round_trip_raw_chunks_samples(tmp_path, toy, toy_tsv_lines, fmt, vocab_kind):
    if vocab_kind == "bert" and not BERT_VOCAB.exists():
        pytest.skip("BERT vocab not present")
    if fmt == "json":  # the published {"train","valid","test"} object
        src, raw = write_json(tmp_path / "lccc.json", toy), toy
    elif fmt == "jsonl":  # mixes the three accepted line shapes
        src = tmp_path / "train.jsonl"
        with open(src, "w", encoding="utf-8") as f:
            for k, d in enumerate(toy["train"]):
                line = d if k % 3 == 0 else [{"text": u} for u in d] if k % 3 == 1 else {"dialog": d}
                f.write(json.dumps(line, ensure_ascii=False) + "\n")
        raw = {"train": toy["train"]}
    else:
        src = tmp_path / "toy_train.txt"
        src.write_text("\n".join(toy_tsv_lines) + "\n", encoding="utf-8")
        raw = {"train": [line.split("\t") for line in toy_tsv_lines]}
    vocab = BERT_VOCAB if vocab_kind == "bert" else None
    manifest = prepare_dialogues(src, tmp_path / "out", vocab=vocab, chunk_size=16, splits=tuple(raw))
    v = DialogueVocab.load(tmp_path / "out" / "vocabulary.json")
    # built vocabularies come from the training split: valid/test words it lacks read as <unk>
    view = (
        (lambda t: bert_view(t, v))
        if vocab_kind == "bert"
        else (lambda t: " ".join(w if w in v.stoi else "<unk>" for w in t.split()))
    )
    if vocab_kind == "bert":
        assert (v.pad_id, v.sos_id, v.eos_id, v.unk_id) == (0, 101, 102, 100)
    else:
        assert (v.pad_id, v.sos_id, v.eos_id, v.unk_id) == (0, 1, 2, 3)
    for split, dialogues in raw.items():
        info = manifest["splits"][split]
        assert info["dialogues"] == len(dialogues)
        assert info["utterances"] == sum(map(len, dialogues))
        assert info["pairs"] == sum(len(d) - 1 for d in dialogues)
        assert len(info["chunks"]) == -(-len(dialogues) // 16)
        # chunks decode back to the raw dialogues
        decoded = [
            [v.decode(u) for u in d]
            for rec in info["chunks"]
            for d in chunk_dialogues(read_chunk(tmp_path / "out" / split / rec["file"], rec["sha256"]))
        ]
        assert decoded == [[view(u) for u in d] for d in dialogues]
        if split == "train" and vocab_kind == "built":
            assert decoded == dialogues  # exact: every training word is in the vocabulary
        # and the streamed (context, reply) pairs are the raw history windows and replies
        want = [([view(u) for u in ctx], view(r)) for ctx, r in expected_pairs(dialogues, 4)]
        assert streamed_pairs(tmp_path / "out", split) == want


def test_json_streaming_parser_across_tiny_blocks(tmp_path, toy):
    """Values straddling buffer refills decode the same; line numbers point at the dialogue."""
    src = write_json(tmp_path / "arr.json", toy["valid"])
    recs = list(read_json(src, block=7))
    assert [r.utterances for r in recs] == toy["valid"]
    lines = src.read_text(encoding="utf-8").split("\n")
    for r in recs[:5]:
        assert lines[r.line - 1].strip() == "["  # indent=1 puts each dialogue's '[' on its own line


def test_gzip_is_read_transparently(tmp_path, toy):
    plain = tmp_path / "d.jsonl"
    plain.write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in toy["train"]), encoding="utf-8")
    gz = tmp_path / "g" / "d.jsonl.gz"
    gz.parent.mkdir()
    gz.write_bytes(gzip.compress(plain.read_bytes()))
    a = prepare_dialogues(plain, tmp_path / "a", chunk_size=50, splits=("train",))
    b = prepare_dialogues(gz, tmp_path / "b", chunk_size=50, splits=("train",))
    assert [c["sha256"] for c in a["splits"]["train"]["chunks"]] == [c["sha256"] for c in b["splits"]["train"]["chunks"]]


def test_built_vocab_min_freq_and_max_size(tmp_path):
    src = tmp_path / "d.tsv"
    src.write_text("a a a b\tb c\nc a\td\n", encoding="utf-8")  # a:4 b:2 c:2 d:1
    prepare_dialogues(src, tmp_path / "o1", min_freq=2, splits=("train",))
    v = DialogueVocab.load(tmp_path / "o1" / "vocabulary.json")
    assert v.tokens == ["<pad>", "<sos>", "<eos>", "<unk>", "a", "b", "c"]
    assert v.encode("a d zz") == [4, 3, 3]
    prepare_dialogues(src, tmp_path / "o2", max_size=5, splits=("train",))
    assert DialogueVocab.load(tmp_path / "o2" / "vocabulary.json").tokens[4:] == ["a"]
    assert DialogueVocab.from_state(v.state_dict()).checksum == v.checksum


# ----------------------------------------------------------------------------- sharding


@pytest.mark.parametrize("chunk_size", [7, 1000])  # many chunks (chunk sharding) / one chunk (stride)
def test_two_ranks_two_workers_see_every_sample_once(tmp_path, toy, chunk_size):
    src = write_json(tmp_path / "d.json", toy["train"])
    manifest = prepare_dialogues(src, tmp_path / "out", chunk_size=chunk_size, splits=("train",))
    total = manifest["splits"]["train"]["pairs"]
    seen, orders = [], {}
    for epoch in (0, 1):
        per_epoch = []
        for rank in range(2):
            ds = DialogueStream(tmp_path / "out", "train", rank=rank, world_size=2, buffer_size=32, seed=3)
            ds.set_epoch(epoch)
            got = [int(i) for b in DataLoader(ds, batch_size=5, num_workers=2, collate_fn=ds.collate_fn) for i in b["index"]]
            assert len(got) == len(ds)  # __len__ is this rank's share
            per_epoch += got
            orders[(epoch, rank)] = got
        assert sorted(per_epoch) == list(range(total))
        seen.append(per_epoch)
    assert orders[(0, 0)] != orders[(1, 0)]  # reshuffled per epoch
    ds = DialogueStream(tmp_path / "out", "train", rank=0, world_size=2, buffer_size=32, seed=3)
    again = [int(i) for b in DataLoader(ds, batch_size=5, num_workers=2, collate_fn=ds.collate_fn) for i in b["index"]]
    assert again == orders[(0, 0)]  # and reproducible


def test_collate_pads_and_masks():
    batch = [
        {"context": torch.tensor([5, 6, 2]), "reply": torch.tensor([1, 7, 2]), "index": 0},
        {"context": torch.tensor([8, 2]), "reply": torch.tensor([1, 9, 9, 9, 2]), "index": 1},
    ]
    b = collate_dialogues(batch, pad_id=0)
    assert b["context"].tolist() == [[5, 6, 2], [8, 2, 0]]
    assert b["context_mask"].tolist() == [[True, True, True], [True, True, False]]
    assert b["reply_in"].tolist() == [[1, 7, 0, 0], [1, 9, 9, 9]]
    assert b["reply_out"].tolist() == [[7, 2, 0, 0], [9, 9, 9, 2]]


def test_history_and_length_limits(tmp_path):
    src = tmp_path / "d.tsv"
    src.write_text("a b\tc d e\tf\tg h i j k l\n", encoding="utf-8")
    prepare_dialogues(src, tmp_path / "out", splits=("train",))
    ds = DialogueStream(tmp_path / "out", "train", max_history=2, max_context_len=4, max_reply_len=3, shuffle=False)
    v, samples = ds.vocab, list(ds)
    dec = lambda ids: v.decode(ids, skip_special=False)  # noqa: E731
    assert [dec(s["context"]) for s in samples] == ["a b <eos>", "c d e <eos>", "e <eos> f <eos>"]
    assert [dec(s["reply"]) for s in samples] == ["<sos> c d <eos>", "<sos> f <eos>", "<sos> g h <eos>"]


# ----------------------------------------------------------------------------- interruption


class Interrupt(Exception):
    pass


@pytest.mark.parametrize("where", ["chunk_write", "progress_write"])
def test_interrupted_preparation_completes_identically(tmp_path, toy, monkeypatch, where):
    src = write_json(tmp_path / "d.json", toy)
    clean = prepare_dialogues(src, tmp_path / "clean", chunk_size=10)

    calls = {"n": 0}
    if where == "chunk_write":  # die inside torch.save of the 5th chunk, leaving a .tmp behind
        real_save = torch.save

        def dying_save(obj, f, *a, **k):
            calls["n"] += 1
            if calls["n"] == 5:
                Path(f).write_bytes(b"half a chunk")
                raise Interrupt
            return real_save(obj, f, *a, **k)

        monkeypatch.setattr(torch, "save", dying_save)
    else:  # die after a chunk was renamed into place but before progress.json records it
        real_write = prep._write_json_atomic

        def dying_write(path, obj):
            if path.name == "progress.json":
                calls["n"] += 1
                if calls["n"] == 6:
                    raise Interrupt
            return real_write(path, obj)

        monkeypatch.setattr(prep, "_write_json_atomic", dying_write)
    with pytest.raises(Interrupt):
        prepare_dialogues(src, tmp_path / "run", chunk_size=10)
    monkeypatch.undo()
    assert not (tmp_path / "run" / "manifest.json").exists()
    with pytest.raises(DataError, match="not a finished"):
        DialogueStream(tmp_path / "run", "train")

    written = []
    real_flush = ChunkWriter.flush
    monkeypatch.setattr(ChunkWriter, "flush", lambda self: written.append(1) or real_flush(self))
    resumed = prepare_dialogues(src, tmp_path / "run", chunk_size=10)
    monkeypatch.undo()
    n_chunks = sum(len(s["chunks"]) for s in clean["splits"].values())
    assert 0 < sum(written) < n_chunks  # continued after the chunks already there
    assert resumed == clean
    for split, info in clean["splits"].items():
        for rec in info["chunks"]:
            assert (tmp_path / "run" / split / rec["file"]).read_bytes() == (
                tmp_path / "clean" / split / rec["file"]
            ).read_bytes()
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["manifest.json", "test", "train", "valid", "vocabulary.json"]
    assert not list((tmp_path / "run").rglob("*.tmp"))
    # a finished folder is returned as is
    assert prepare_dialogues(src, tmp_path / "run", chunk_size=10) == clean


# ----------------------------------------------------------------------------- errors


@pytest.fixture()
def prepared(tmp_path, toy):
    src = write_json(tmp_path / "d.json", toy["train"])
    prepare_dialogues(src, tmp_path / "out", chunk_size=40, splits=("train",))
    return tmp_path / "out"


def test_truncated_chunk_error_names_the_chunk(prepared):
    chunk = prepared / "train" / "chunk_00001.pt"
    chunk.write_bytes(chunk.read_bytes()[:300])
    with pytest.raises(DataError, match=r"chunk .*chunk_00001\.pt is corrupt or truncated"):
        list(DialogueStream(prepared, "train", shuffle=False))


def test_modified_chunk_fails_its_checksum(prepared):
    chunk = prepared / "train" / "chunk_00000.pt"
    c = read_chunk(chunk)
    c["tokens"][5] += 1  # still a well-formed chunk, but not the one the manifest describes
    torch.save(c, chunk)
    with pytest.raises(DataError, match=r"chunk_00000\.pt does not match the sha256"):
        list(DialogueStream(prepared, "train", shuffle=False))
    assert len(list(DialogueStream(prepared, "train", shuffle=False, verify_checksums=False))) > 0


class Payload:
    def __reduce__(self):
        return (print, ("this ran while loading a chunk",))


def test_chunk_with_pickled_objects_is_refused(prepared):
    chunk = prepared / "train" / "chunk_00002.pt"
    torch.save({"tokens": torch.zeros(3, dtype=torch.int32), "note": Payload()}, chunk)
    with pytest.raises(DataError, match=r"chunk_00002\.pt carries pickled Python objects.*weights_only"):
        read_chunk(chunk)
    with pytest.raises(DataError, match="pickled"):
        list(DialogueStream(prepared, "train", shuffle=False))


def test_vocab_mismatch_is_refused(prepared, tmp_path):
    other = DialogueVocab.build(__import__("collections").Counter("x y z".split()))
    with pytest.raises(DataError, match="is not the vocabulary .* was prepared with"):
        DialogueStream(prepared, "train", vocab=other)
    if BERT_VOCAB.exists():
        with pytest.raises(DataError, match="21128 tokens"):
            DialogueStream(prepared, "train", vocab=DialogueVocab.from_wordpiece_file(BERT_VOCAB))


@pytest.mark.parametrize(
    "name,text,line",
    [
        ("d.jsonl", '["a b", "c"]\n["d"]\n["e", 5]\n', 3),
        ("d.jsonl", '["a b", "c"]\n{"oops": \n', 2),
        ("d.tsv", "a b\tc\nd\t\te\n", 2),
        ("d.json", '[\n ["a", "b"],\n {"x": 1},\n ["c"]\n]\n', 3),
        ("d.json", '[\n ["a", "b"],\n ["c" "d"]\n]\n', 3),
    ],
)
def test_malformed_record_names_file_and_line(tmp_path, name, text, line):
    src = tmp_path / name
    src.write_text(text, encoding="utf-8")
    with pytest.raises(DataError, match=rf"{name}:{line}(: | \(dialogue \d+)"):
        prepare_dialogues(src, tmp_path / "out", splits=("train",))
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_skip_bad_counts_bad_empty_and_single_utterance_records(tmp_path):
    src = tmp_path / "d.jsonl"
    src.write_text('["a b", "c"]\n[]\n["x", 3]\nnot json\n[{"text": "d"}, {"text": "e f"}]\n["g"]\n', encoding="utf-8")
    m = prepare_dialogues(src, tmp_path / "out", skip_bad=True, splits=("train",))
    t = m["splits"]["train"]
    assert (t["dialogues"], t["skipped_bad"], t["skipped_empty"], t["skipped_single"], t["pairs"]) == (2, 2, 1, 1, 2)
    assert m["totals"]["skipped_bad"] == 2
    tsv = tmp_path / "d.tsv"
    tsv.write_text("a\tb\n\nc\t\td\ne\tf\n", encoding="utf-8")
    t = prepare_dialogues(tsv, tmp_path / "out2", skip_bad=True, splits=("train",))["splits"]["train"]
    assert (t["dialogues"], t["skipped_bad"], t["skipped_empty"]) == (2, 1, 1)


def test_download_failure_says_which_file_to_put_where(tmp_path, monkeypatch):
    def offline(*a, **k):
        raise OSError("network unreachable")

    monkeypatch.setattr(prep.urllib.request, "urlopen", offline)
    with pytest.raises(
        DataError,
        match=r"huggingface\.co/datasets/silver/lccc/resolve/main/lccc_base_train\.jsonl\.gz.*put it at .*raw/lccc_base_train\.jsonl\.gz",
    ):
        download_lccc(tmp_path / "raw", splits=("train",))
    assert not list((tmp_path / "raw").iterdir())  # no partial file left


def test_a_bad_dialogue_in_a_one_line_json_file_is_named_by_its_index(tmp_path):
    src = tmp_path / "d.json"
    src.write_text('{"train": [["a", "b"], ["c", "d"], ["e", 7]], "test": [["f", "g"]]}', encoding="utf-8")
    with pytest.raises(DataError, match=r"d\.json:1 \(dialogue 2 of 'train'\): utterance 1 should be a string"):
        prepare_dialogues(src, tmp_path / "out", splits=("train", "test"))


def test_a_read_only_data_root_gets_its_caches_elsewhere(tmp_path, monkeypatch):
    """A shared raw-data folder without write bits is left alone, even by root (whom os.access lets write)."""
    from memexp.data.dialogue.datamodule import _default_cache_root

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    shared = tmp_path / "shared"
    shared.mkdir()
    assert _default_cache_root(shared) == shared / "prepared"
    shared.chmod(0o555)
    try:
        assert _default_cache_root(shared) == tmp_path / "xdg" / "memexp" / "prepared"
    finally:
        shared.chmod(0o755)


def test_holdout_splits_the_tail_of_a_training_only_file(tmp_path):
    """data.holdout: the last n dialogues of a one-split file become valid (first half) and test; the folder is
    reused for the same file and redone when the file changes; a source that has splits already is refused."""
    from memexp.data.dialogue.readers import hold_out
    from memexp.errors import ConfigError

    src = tmp_path / "pairs.txt"
    src.write_text("".join(f"问 {i}\t答 {i}\n" for i in range(20)), encoding="utf-8")
    out = hold_out(src, tmp_path / "split", 6)
    lines = {s: (out / f"{s}.tsv").read_text(encoding="utf-8").splitlines() for s in ("train", "valid", "test")}
    assert [len(v) for v in lines.values()] == [14, 3, 3]
    assert lines["train"][-1] == "问 13\t答 13" and lines["valid"] == [f"问 {i}\t答 {i}" for i in (14, 15, 16)]
    assert lines["test"][-1] == "问 19\t答 19"
    stamp = (out / "holdout.json").stat().st_mtime_ns
    assert hold_out(src, out, 6) == out and (out / "holdout.json").stat().st_mtime_ns == stamp  # reused
    src.write_text("".join(f"问 {i}\t答 {i}\n" for i in range(10)), encoding="utf-8")
    hold_out(src, out, 6)
    assert len((out / "train.tsv").read_text(encoding="utf-8").splitlines()) == 4  # a changed file is split again
    with pytest.raises(ConfigError, match="holdout=10: expected 2 <= holdout < the 10 dialogues"):
        hold_out(src, tmp_path / "s2", 10)
    split_json = write_json(tmp_path / "has_splits.json", {"train": [["a", "b"]], "valid": [["c", "d"]]})
    with pytest.raises(ConfigError, match="already has a 'valid' split"):
        hold_out(split_json, tmp_path / "s3", 1 + 1)


def test_a_datamodule_with_holdout_serves_the_held_out_dialogues(tmp_path):
    from memexp.data.dialogue.datamodule import DialogueDataModule

    src = tmp_path / "pairs.txt"
    src.write_text("".join(f"问 {i}\t答 {i}\n" for i in range(40)), encoding="utf-8")
    dm = DialogueDataModule(source=str(src), holdout=10, data_dir=str(tmp_path), batch_size=4, eval_batch_size=4)
    counts = {s: v["dialogues"] for s, v in dm.prepare()["manifest"]["splits"].items()}
    assert counts == {"train": 30, "valid": 5, "test": 5}
