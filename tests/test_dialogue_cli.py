"""The dialogue entry points as a user types them: prepare, chat, evaluate, and a mismatched pair."""

import json
import re
from pathlib import Path

import pytest
from helpers import LCCC_TOY, run_cli

CJK = re.compile(r"[\u4e00-\u9fff]")


def _last_ckpt(hgd_run) -> Path:
    return Path(hgd_run["ckpt_dir"]) / "last.ckpt"


def test_prepare_writes_a_manifest_and_prints_counts(tmp_path):
    cache = tmp_path / "cache"
    proc = run_cli("memexp.prepare", "data=lccc", f"data.cache_dir={cache}", f"data.source={LCCC_TOY}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    manifest = json.loads((cache / "manifest.json").read_text())
    assert manifest["splits"]["train"]["dialogues"] == 1000 and manifest["splits"]["valid"]["pairs"] == 617
    assert re.search(r"train\s+1,000\s+2,887\s", proc.stdout), proc.stdout
    assert "dialogues/s" in proc.stdout and "0 empty, 0 of a single utterance (no reply), 0 malformed" in proc.stdout
    assert not (cache / "progress.json").exists()


def test_chat_answers_piped_lines_keeping_the_history(hgd_run):
    lines = "你好\n今天天气怎么样\n/reset\n今天天气怎么样\n"
    proc = run_cli("memexp.chat", f"ckpt={_last_ckpt(hgd_run)}", "verbose=true", "greedy=true", input=lines)
    assert proc.returncode == 0, proc.stderr[-3000:]
    replies = proc.stdout.splitlines()
    assert len(replies) == 3 and all(CJK.search(r) for r in replies), proc.stdout
    # Context of each reply: the first line alone, then line + reply + line, then (after /reset) one line again.
    contexts = re.findall(r"\[context: (\d+) utterances, (\d+) tokens\]", proc.stderr)
    assert [int(n) for n, _ in contexts] == [1, 3, 1], proc.stderr
    assert int(contexts[0][1]) == 3  # 你 好 <eos>: unsegmented input is cut into the vocabulary's characters
    assert int(contexts[2][1]) == 8  # 今 天 天 气 怎 么 样 <eos>
    assert "(history cleared)" in proc.stderr


def test_evaluate_of_an_hgd_checkpoint_writes_json(hgd_run, tmp_path):
    out = tmp_path / "eval.json"
    proc = run_cli("memexp.evaluate", f"ckpt={_last_ckpt(hgd_run)}", f"out={out}", "batch_size=256")
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["global_step"] == 30
    m = result["metrics"]
    assert {
        f"{s}/{k}" for s in ("val", "test") for k in ("loss", "ppl", "bleu2", "bleu4", "distinct1", "distinct2", "think_steps")
    } <= set(m)
    assert 0 < m["val/loss"] < 7.74  # below ln(2298), a uniform guess


def test_hgd_on_text_data_stops_with_one_sentence(tmp_path):
    proc = run_cli("memexp.run", "model=hgd", "data=shakespeare", f"paths.output_dir={tmp_path}")
    assert proc.returncode == 2
    assert "error: model=hgd is a dialogue model and needs (dialogue history -> reply) pairs" in proc.stderr
    assert "data=shakespeare provides token sequences" in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "checkpoints").exists()


def test_evaluate_a_dialogue_file_the_model_never_saw(hgd_run, tmp_path):
    """Another LCCC-format file is prepared with the checkpoint's own vocabulary (its unknown words to <unk>,
    counted) and evaluated whole; it used to be refused for a vocabulary of its own."""
    import math

    import torch

    from memexp.evaluate import evaluate_checkpoint

    ckpt = _last_ckpt(hgd_run)
    vocab = torch.load(ckpt, weights_only=True)["memexp"]["tokenizer"]
    words = [w for w in vocab["tokens"] if not w.startswith("<")][:40]
    lines = []
    for i in range(30):
        a = " ".join(words[(i + k) % len(words)] for k in range(4))
        b = " ".join(words[(i * 3 + k) % len(words)] for k in range(3)) + " 从未见过"  # one unknown word per reply
        lines.append(f"{a}\t{b}")
    src = tmp_path / "held_out.tsv"
    src.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = evaluate_checkpoint(str(ckpt), ["all"], data_dir=str(tmp_path), data_path=str(src), out=str(tmp_path / "e.json"))
    (manifest,) = (tmp_path / "prepared").glob("held_out-*-vocab-*/manifest.json")  # a cache named for the vocabulary
    assert manifest.is_file()
    assert math.isfinite(result["metrics"]["all/loss"]) and "all/bleu2" in result["metrics"]
    assert result["unk_tokens"] == 30 and result["tokens"] == 30 * 8


def test_generate_from_a_dialogue_checkpoint_points_to_chat(hgd_run):
    proc = run_cli("memexp.generate", f"ckpt={_last_ckpt(hgd_run)}", "prompt=hello")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and not proc.stdout.strip()
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: ckpt={_last_ckpt(hgd_run)} holds a dialogue model") and "python -m memexp.chat" in last


def test_a_binary_vocabulary_file_is_one_error_line(tmp_path):
    from memexp.data.dialogue.vocab import DialogueVocab
    from memexp.errors import DataError

    vocab = tmp_path / "vocab.txt"
    vocab.write_bytes(b"\x97\x00\xff binary")
    with pytest.raises(DataError, match=rf"{vocab}: not UTF-8 text \(byte 0\); expected a WordPiece vocab.txt"):
        DialogueVocab.from_wordpiece_file(vocab)
    state = tmp_path / "vocabulary.json"
    state.write_bytes(b"\xff\xfe{}")
    with pytest.raises(DataError, match="not UTF-8 text"):
        DialogueVocab.load(state)
