"""experiment=leaderboard: every board entry trains on debug=fast, and the sweep's report writes a row per model
with every column filled (losses, bits/char on a generated text of another domain, perplexity by context, tokens/s
timed side by side, step memory); the table is read from the runs (a changed number in a run changes it)."""

import json
import random

import pytest
from conftest import run_cli

from memexp.evals.leaderboard import board_markdown, board_rows

MODELS = ["hope", "hyperlstm", "lstm", "transformer"]


@pytest.fixture(scope="module")
def board(tmp_path_factory):
    root = tmp_path_factory.mktemp("board")
    rng = random.Random(0)
    other = root / "other.txt"  # another "domain": shuffled words of a made-up language, mostly in-vocabulary chars
    words = ["".join(rng.choice("aeioubcdfgklmnprst") for _ in range(rng.randint(2, 7))) for _ in range(300)]
    other.write_text(" ".join(rng.choice(words) for _ in range(1500)) + "\n~~~\n", encoding="utf-8")
    proc = run_cli(
        "memexp.run",
        "-m",
        "experiment=leaderboard",
        "debug=fast",
        "seed=0",
        "logger=csv",
        f"study.extra_texts=[{other}]",
        "study.speed.rounds=1",
        "study.speed.train_steps=2",
        "study.speed.gen_tokens=20",
        "trainer.threads=1",
        f"paths.output_dir={root}",
        f"hydra.sweep.dir={root / 'sweep'}",
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root / "sweep"


def test_the_debug_board_fills_every_column_for_every_model(board):
    md = (board / "reports" / "leaderboard.md").read_text()
    rows = [ln for ln in md.splitlines() if ln.startswith("| ") and not ln.startswith("| model")]
    assert sorted(r.split("|")[1].strip() for r in rows) == MODELS
    for r in rows:
        cells = [c.strip() for c in r.strip("|").split("|")]
        assert "-" not in cells, r  # every column measured
    data = json.loads((board / "reports" / "leaderboard.json").read_text())
    for row in data["rows"]:
        assert row["train_tok_s"]["mean"] > 0 and row["gen_tok_s"]["mean"] > 0 and row["peak_rss_mb"]["mean"] > 0
        assert 0 < row["extra/other.txt"]["mean"] < 10  # bits per character of a character model
    assert (board / "reports" / "leaderboard.png").stat().st_size > 1000


def test_the_table_is_read_from_the_runs(board):
    from memexp.evals.aggregate import collect_runs

    runs = [r for r in collect_runs(board) if (r.get("study") or {}).get("board")]
    rows, extra, lengths = board_rows(runs, {}, {})
    before = board_markdown(rows, extra, lengths, "x")
    lstm = next(r for r in runs if r["names"]["model"] == "lstm")
    lstm["metrics"]["test/bpc"] = 0.123
    rows, extra, lengths = board_rows(runs, {}, {})
    after = board_markdown(rows, extra, lengths, "x")
    assert before != after and "**0.123**" in after  # the new value, now the best of its column
