"""experiment=leaderboard: every board entry trains on debug=fast, and the sweep's report writes a row per model
with every column filled (losses, bits/char on a generated text of another domain, perplexity by context, recall by
gap, continual forgetting with the sign test against the transformer, tokens/s timed side by side, step memory); the
table is read from the runs (a changed number in a run changes it); a finished continual run is read back, not
retrained; the table of claims reads the same runs."""

import json
import random
from pathlib import Path

import pytest
from helpers import run_cli

from memexp.evals.leaderboard import board_markdown, board_rows

MODELS = ["gated_deltanet", "hope", "hyperlstm", "lstm", "titans", "transformer"]
# the text, recall and continual columns of every model (the MQAR columns have their own test below)
BOARD = ",".join(f"{m}{col}" for m in MODELS for col in ("", "_recall", "_continual"))


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
        f"board={BOARD}",
        "debug=fast",
        "seed=0",
        "logger=csv",
        f"study.extra_texts=[{other}]",
        "study.speed.rounds=1",
        "study.speed.train_steps=2",
        "study.speed.gen_tokens=20",
        "++study.n_samples=16",  # recall probes per gap (the board's 128 took half of each recall run's time)
        "trainer.threads=1",
        f"paths.output_dir={root}",
        f"hydra.sweep.dir={root / 'sweep'}",
        timeout=1500,  # 18 debug runs and the report: about 6 min on 2 quiet cores
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
    for row in data["rows"]:
        assert sorted(int(k[7:]) for k in row if k.startswith("recall@")) == [32, 64, 128, 256, 512, 1024]
        assert all(0 < row[f"recall@{g}"]["mean"] < 1 for g in (32, 1024)) and row["span"] == 64
        assert -1 < row["forgetting"]["mean"] < 1 and 0 < row["final_acc"]["mean"] < 1
        assert (row["model"] == "transformer") == ("forgetting_vs_transformer" not in row)
    # each column from its own runs: the parameter count is the text network's (the recall network has another vocabulary)
    from memexp.evals.aggregate import collect_runs
    from memexp.evals.leaderboard import run_kind

    runs = collect_runs(board)
    assert sorted(run_kind(r) for r in runs) == sorted(["text", "recall", "continual"] * len(MODELS))
    for row in data["rows"]:
        (text,) = [r for r in runs if r["names"]["model"] == row["model"] and run_kind(r) == "text"]
        assert row["params"]["mean"] == text["metrics"]["params/trainable"]
        assert row["test/loss"]["mean"] == text["metrics"]["test/loss"]


def test_the_table_is_read_from_the_runs(board):
    from memexp.evals.aggregate import collect_runs

    runs = [r for r in collect_runs(board) if (r.get("study") or {}).get("board")]
    rows, extra, lengths = board_rows(runs, {}, {})
    before = board_markdown(rows, extra, lengths, "x")
    lstm = next(r for r in runs if r["names"]["model"] == "lstm" and "binned_ppl" in r["study"])  # its text run
    lstm["metrics"]["test/bpc"] = 0.123
    rows, extra, lengths = board_rows(runs, {}, {})
    after = board_markdown(rows, extra, lengths, "x")
    assert before != after and "**0.123**" in after  # the new value, now the best of its column


def test_a_finished_continual_run_is_read_back_not_retrained(board):
    from memexp.evals.aggregate import collect_runs

    (before,) = [r for r in collect_runs(board) if r["names"]["model"] == "lstm" and "continual" in (r.get("study") or {})]
    root = board.parent
    proc = run_cli(
        "memexp.run",
        "experiment=leaderboard",
        "board=lstm_continual",
        "debug=fast",
        "seed=0",
        "logger=csv",
        "trainer.threads=1",
        f"paths.output_dir={root}",
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "finished: the continual study of this model, data and seed is in" in proc.stdout
    assert "Training" not in proc.stdout + proc.stderr  # no stage was trained again
    again = json.loads(Path(proc.stdout.split("run folder: ")[1].split(" (")[0], "metrics.json").read_text())
    assert again["study"]["continual"]["accuracy"] == before["study"]["continual"]["accuracy"]


def test_the_claims_table_reads_the_board_runs(board):
    from memexp.evals.aggregate import collect_runs
    from memexp.evals.claims import claim_rows, claims_markdown

    runs = collect_runs(board)
    rows = claim_rows(runs)
    hyper = next(r for r in rows if r["claim"].startswith("HyperLSTM"))
    forget = next(r for r in rows if r["claim"].startswith("HOPE forgets less"))
    text = {r["names"]["model"]: r for r in runs if "binned_ppl" in (r.get("study") or {})}
    assert hyper["difference"]["n"] == 1 and hyper["verdict"] == "inconclusive"  # one seed: the test cannot decide
    assert hyper["difference"]["mean"] == text["hyperlstm"]["metrics"]["test/bpc"] - text["lstm"]["metrics"]["test/bpc"]
    assert forget["difference"]["n"] == 1
    titans = next(r for r in rows if r["claim"].startswith("HOPE reaches lower bits per character than Titans"))
    assert titans["difference"]["mean"] == text["hope"]["metrics"]["test/bpc"] - text["titans"]["metrics"]["test/bpc"]
    deltanet = next(r for r in rows if r["claim"].startswith("Gated DeltaNet recalls"))
    recall = {r["names"]["model"]: r for r in runs if "recall" in (r.get("study") or {})}
    largest = {m: max(r["study"]["recall"], key=lambda x: x["gap"]) for m, r in recall.items()}
    assert largest["gated_deltanet"]["gap"] == 1024
    gdn_minus_tf = largest["gated_deltanet"]["recall_prob"] - largest["transformer"]["recall_prob"]
    assert deltanet["difference"]["n"] == 1 and deltanet["difference"]["mean"] == gdn_minus_tf
    before = claims_markdown(rows, "x")
    text["lstm"]["metrics"]["test/bpc"] += 1.0
    assert claims_markdown(claim_rows(runs), "x") != before


def test_the_board_is_logged_as_a_wandb_table(board, tmp_path, monkeypatch):
    from memexp.runs.report import write_reports

    monkeypatch.setenv("WANDB_MODE", "offline")
    written = write_reports(board, reports_dir=tmp_path, wandb_log=True)  # no timing: the columns from the runs
    assert "leaderboard.md" in written
    (table,) = tmp_path.rglob("offline-run-*/files/media/table/report/leaderboard_table_*.table.json")
    data = json.loads(table.read_text())
    assert sorted(r[data["columns"].index("model")] for r in data["data"]) == MODELS
    assert {"test/bpc", "recall@1024", "forgetting"} <= set(data["columns"])


def test_the_mqar_columns_fill_from_their_runs_and_feed_the_reassignment_claim(tmp_path):
    """board=<model>_mqar and <model>_mqar_reassign (debug=fast): each fills its own column of the model's row from
    its run's answer accuracy, and the reassignment claim's arms read the reassignment runs only."""
    from memexp.evals.aggregate import collect_runs
    from memexp.evals.claims import CLAIMS, arm_values

    boards = "hope_mqar,hope_mqar_reassign,transformer_mqar,transformer_mqar_reassign"
    proc = run_cli(
        "memexp.run",
        "-m",
        "experiment=leaderboard",
        f"board={boards}",
        "debug=fast",
        "seed=0",
        "logger=csv",
        "data.batch_size=8",  # the board's 64 and 256 made each debug run about 30 s
        "data.eval_batch_size=32",
        "trainer.threads=1",
        f"paths.output_dir={tmp_path}",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads((tmp_path / "sweep" / "reports" / "leaderboard.json").read_text())
    assert sorted(r["model"] for r in data["rows"]) == ["hope", "transformer"]
    runs = collect_runs(tmp_path / "sweep")
    for row in data["rows"]:
        for key, reassigned in (("mqar", 0), ("mqar_reassign", 2)):
            (run,) = [
                r
                for r in runs
                if r["names"]["model"] == row["model"]
                and f"num_reassigned: {reassigned}" in (Path(r["path"]) / ".hydra" / "config.yaml").read_text()
            ]
            assert row[key]["n"] == 1 and row[key]["mean"] == run["metrics"]["test/acc"]
    md = (tmp_path / "sweep" / "reports" / "leaderboard.md").read_text()
    assert "MQAR (64, 4) accuracy" in md and "MQAR, 2 of 4 keys reassigned, accuracy" in md
    (claim,) = [c for c in CLAIMS if c.claim.startswith("HOPE answers reassigned keys")]
    hope = [r for r in data["rows"] if r["model"] == "hope"][0]
    assert arm_values(runs, claim.a) == {0: hope["mqar_reassign"]["mean"]}
