"""The leaderboard: every causal language model of a sweep on the same tests, one row per model.

Each job of `python -m memexp.run -m experiment=leaderboard` trains one board entry (`board=transformer|hope|
hyperlstm|lstm`: memexp.configs.groups.BOARD_ENTRIES, each ~0.8-1M parameters at nanoGPT's CPU budget) at one
seed, tests it, and after the test measures (memexp.runs.studies.StudyEvaluations) perplexity by context length
and bits per character on every `study.extra_texts` file (a text of another domain; characters outside the
model's vocabulary are skipped and counted). `board=<model>_recall` trains the same network on needle recall and
scores recall_prob at gaps up to 16x the board's context; `board=<model>_continual` trains it on three parts of
tiny-shakespeare in sequence and measures forgetting (memexp.configs.studies.board_columns; one budget for all
models). The sweep's report then times every model's text network side by side: per round,
each model in turn (its seed-0 checkpoint) trains `train_steps` steps on a batch of its training shape and
generates `gen_tokens` tokens, on one thread; the median round is reported. Memory is how far one training
step raises the resident set's high-water mark, in a fresh process that loaded the checkpoint.

`board_rows` turns runs and speeds into rows of mean, std and n over seeds; `board_markdown` writes the table with
the best value of each column in bold and where each column comes from, and the sign test of each model's
forgetting against the transformer's; `memexp.evals.plots.plot_board` draws bits per character against training
tokens/s and the recall curves.
"""

from __future__ import annotations

import math
import statistics
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from memexp.evals.aggregate import paired_difference, run_kind, run_setting, stats
from memexp.models.protocols import context_limit

LN2 = math.log(2)


@torch.no_grad()
def extra_text_bpc(net: torch.nn.Module, tokenizer: Any, path: str | Path, window: int, device: Any = "cpu") -> dict:
    """Bits per character of `net` on the text file `path`, in non-overlapping windows of `window` characters run
    from an empty state (characters outside the tokenizer's vocabulary are dropped and counted)."""
    from memexp.data.text import drop_unknown_chars, read_utf8
    from memexp.evals.binned_ppl import binned_perplexity

    text = read_utf8(Path(path))
    known, unknown = drop_unknown_chars(tokenizer, text)
    kept = tokenizer.encode(known)
    window = min(window, context_limit(net) or window)
    if len(kept) < window + 1:
        return {"path": str(path), "chars": len(text), "unknown": unknown, "bpc": float("nan"), "note": "shorter than one window"}
    (row,) = binned_perplexity(net, torch.tensor(kept), [window], device=device)
    return {"path": str(path), "chars": len(text), "unknown": unknown, "tokens": row["tokens"], "bpc": row["nll"] / LN2}


def training_batch(datamodule: Any) -> dict:
    batch = next(iter(datamodule.train_dataloader()))
    return {k: v for k, v in batch.items() if isinstance(v, torch.Tensor)}


def train_step_seconds(task: Any, batch: dict, steps: int) -> float:
    """Seconds per step of forward + backward + optimiser step on `batch` (the net's own loss)."""
    import torch.nn.functional as F

    net = task.net
    net.train()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4, fused=True)
    x, y = batch["input"], batch["target"]

    def step() -> None:
        logits, _ = net(x, None)
        loss = F.cross_entropy(logits.flatten(0, 1), y.flatten(), ignore_index=-100)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()  # warm-up (kernel builds, allocator)
    t = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - t) / steps


# -- the table ---------------------------------------------------------------------------------
# (key, header, lower is better (None: not a score), format): the columns of leaderboard.md, in order
MQAR_COLUMNS = {"mqar": "MQAR (64, 4) accuracy", "mqar_reassign": "MQAR, 2 of 4 keys reassigned, accuracy"}


def columns(
    extra_names: list[str],
    lengths: list[int],
    gaps: list[int] = (),
    span: int | None = None,
    continual: bool = False,
    mqar: tuple[str, ...] = (),
) -> list[tuple[str, str, bool | None, str]]:
    cols = [
        ("params", "parameters", None, "{:,.0f}"),
        ("val/loss", "val loss (nats)", True, "{:.3f}"),
        ("test/loss", "test loss (nats)", True, "{:.3f}"),
        ("test/bpc", "test bits/char", True, "{:.3f}"),
    ]
    cols += [(f"extra/{n}", f"bits/char on {n}", True, "{:.3f}") for n in extra_names]
    cols += [(f"ppl@{n}", f"ppl, context < {n}", True, "{:.2f}") for n in lengths]
    cols += [
        (f"recall@{g}", f"recall, gap {g}" + (f" ({g // span}x)" if span and g >= span else ""), False, "{:.3f}") for g in gaps
    ]
    cols += [(key, MQAR_COLUMNS[key], False, "{:.3f}") for key in MQAR_COLUMNS if key in mqar]
    if continual:
        cols += [
            ("forgetting", "forgetting A->B->C (acc)", True, "{:.4f}"),
            ("final_acc", "final accuracy A,B,C", False, "{:.3f}"),
            ("forgetting_vs_transformer", "forgets less than the transformer", None, "{}"),
        ]
    cols += [
        ("train_tok_s", "train tokens/s", False, "{:,.0f}"),
        ("gen_tok_s", "generate tokens/s", False, "{:,.0f}"),
        ("peak_rss_mb", "training step memory (MB)", True, "{:,.0f}"),
    ]
    return cols


def _scalars(run: dict) -> dict[str, float]:
    """The columns one run fills: the text run its losses, parameters, extra texts and binned perplexity; the recall
    run its recall by gap; the continual run its forgetting."""
    m, study, kind = run["metrics"], run.get("study") or {}, run_kind(run)
    if kind == "recall":
        return {f"recall@{r['gap']}": float(r["recall_prob"]) for r in study["recall"]}
    if kind == "continual":
        c = study["continual"]
        return {"forgetting": float(c["avg_forgetting"]), "final_acc": float(c["avg_final_accuracy"])}
    if kind == "mqar":  # Zoology's answer accuracy; the reassignment column is the run with reassigned keys
        key = "mqar_reassign" if (run_setting(run, "data.num_reassigned") or 0) > 0 else "mqar"
        return {key: float(m["test/acc"])} if isinstance(m.get("test/acc"), (int, float)) else {}
    out = {k: float(m[k]) for k in ("val/loss", "test/loss", "test/bpc") if isinstance(m.get(k), (int, float))}
    if isinstance(m.get("params/trainable"), (int, float)):
        out["params"] = float(m["params/trainable"])
    for e in study.get("extra_texts", []):
        out[f"extra/{Path(e['path']).name}"] = float(e["bpc"])
    for b in study.get("binned_ppl", []):
        out[f"ppl@{b['length']}"] = float(b["ppl_upto"])
    return out


def board_runs(runs: list[dict]) -> list[dict]:
    return [r for r in runs if (r.get("study") or {}).get("board")]


def board_rows(runs: list[dict], speeds: dict, peaks: dict) -> tuple[list[dict], list[str], list[int]]:
    """(rows: {"model", "seeds", key: stats...}, extra text names, binned lengths) of the board's runs (text, recall
    and continual runs of one model make one row)."""
    by_model: dict[str, list[dict]] = defaultdict(list)
    for r in runs:
        by_model[r["names"]["model"]].append(r)
    extra = sorted({Path(e["path"]).name for r in runs for e in (r.get("study") or {}).get("extra_texts", [])})
    lengths = sorted({int(b["length"]) for r in runs for b in (r.get("study") or {}).get("binned_ppl", [])})
    forgetting = {
        m: {r["names"]["seed"]: _scalars(r)["forgetting"] for r in rs if run_kind(r) == "continual"} for m, rs in by_model.items()
    }
    rows = []
    for model, rs in sorted(by_model.items()):
        scal = [_scalars(r) for r in rs]
        row: dict[str, Any] = {"model": model, "seeds": sorted({r["names"]["seed"] for r in rs})}
        for key in {k for s in scal for k in s}:
            row[key] = stats([s[key] for s in scal if key in s])
        if model != "transformer" and forgetting[model] and forgetting.get("transformer"):
            # per seed, this model's forgetting minus the transformer's (the same data_seed: the same parts and batches)
            row["forgetting_vs_transformer"] = paired_difference(forgetting[model], forgetting["transformer"])
        if spans := {int((r.get("study") or {})["span"]) for r in rs if (r.get("study") or {}).get("span")}:
            row["span"] = max(spans)
        for key in ("train_tok_s", "gen_tok_s"):
            if model in speeds:
                row[key] = stats([statistics.median(speeds[model][key])]) | {"rounds": speeds[model][key]}
        if model in peaks:
            row["peak_rss_mb"] = stats([peaks[model]])
        rows.append(row)
    return rows, extra, lengths


def _best(rows: list[dict], key: str, lower: bool | None) -> float | None:
    if lower is None:  # a column that is not a score
        return None
    vals = [r[key]["mean"] for r in rows if key in r and r[key]["mean"] == r[key]["mean"]]
    if len(vals) < 2:
        return None
    return min(vals) if lower else max(vals)


def _cell(s: dict, key: str, fmt: str) -> str:
    if key == "forgetting_vs_transformer":  # a paired difference over seeds, not a mean
        return f"lower at {s['a_lower']} of {s['n']} seeds, sign test p = {s['sign_p']:.2f}"
    return fmt.format(s["mean"]) + (f" ± {fmt.format(s['std'])}" if s["n"] > 1 and s["std"] > 0 else "")


def board_markdown(rows: list[dict], extra: list[str], lengths: list[int], sweep: str) -> str:
    gaps = sorted({int(k.split("@")[1]) for r in rows for k in r if k.startswith("recall@")})
    span = next((r["span"] for r in rows if r.get("span")), None)
    mqar = tuple(k for k in MQAR_COLUMNS if any(k in r for r in rows))
    cols = columns(extra, lengths, gaps, span, continual=any("forgetting" in r for r in rows), mqar=mqar)
    lines = [
        "# Leaderboard",
        "",
        f"Sweep: `{sweep}`. Mean ± std over the seeds (n in the seeds column); the best of each column in bold.",
        "",
        "| model | seeds | " + " | ".join(h for _, h, _, _ in cols) + " |",
        "|---|---|" + "---|" * len(cols),
    ]
    for r in rows:
        cells = []
        for key, _, lower, fmt in cols:
            if key == "forgetting_vs_transformer" and r["model"] == "transformer" and "forgetting" in r:
                cells.append("(the reference)")
                continue
            if key not in r or r[key]["n"] == 0:
                cells.append("-")
                continue
            text = _cell(r[key], key, fmt)
            cells.append(f"**{text}**" if r[key]["mean"] == _best(rows, key, lower) else text)
        lines.append(f"| {r['model']} | {','.join(map(str, r['seeds']))} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Columns and where they come from:",
        "- parameters, val/test loss, test bits/char: each run's `metrics.json` "
        "(`python -m memexp.run -m experiment=leaderboard`); the test reloads the best validation checkpoint.",
        "- bits/char on a text: the model on that file (`study.extra_texts=[...]`) in windows of its context from an "
        "empty state; characters outside its vocabulary skipped.",
        "- ppl, context < n: perplexity of the test split's targets predicted from fewer than n characters of "
        "context (`memexp.evals.binned_ppl`).",
        "- recall, gap g: `recall_prob` (the probability given to the stored value) of the network trained on needle "
        f"recall (`board=<model>_recall`: {span or '?'}-token sequences, gaps 4 to {(span or 64) - 8}, the same for "
        "every model) when asked g filler tokens after the pair; gaps from 1x the board's context are beyond what the "
        "transformer and HOPE's attention see (the transformer is given the last max_len tokens); chance 1/8.",
        "- MQAR: Zoology's answer accuracy on multi-query associative recall (`board=<model>_mqar`: 64-token "
        "sequences, 4 key-value pairs, vocabulary 8192, the same budget for every model); with 2 of the 4 keys given a "
        "new value later in the context (`board=<model>_mqar_reassign`) a right answer is the latest value "
        "(docs/mqar.md).",
        "- forgetting A->B->C: the network trained on three consecutive parts of tiny-shakespeare in sequence "
        "(`board=<model>_continual`), mean over earlier parts of the drop of next-character accuracy from its best to "
        "the end; final accuracy: the mean over A, B, C after C. Forgets less than the transformer: per seed, this "
        "model's forgetting below the transformer's, two-sided sign test (`memexp.evals.aggregate.paired_difference`).",
        "- train / generate tokens/s: timed side by side in this report, one thread, median of the rounds "
        "(`python -m memexp.report dir=<sweep>`).",
        "- training step memory: how far a training step (batch of the training shape) raises the resident set's "
        "high-water mark above the resident set before it, in a fresh process that loaded the checkpoint and data.",
    ]
    return "\n".join(lines) + "\n"


def write_leaderboard(root: str | Path, runs: list[dict], out: Path, measure: Callable | None = None) -> dict[str, Path]:
    """leaderboard.md, leaderboard.json and leaderboard.png of the board's runs under `root`, into `out`.

    measure(checkpoints {model: seed-0 last.ckpt}, settings) -> (speeds, step memory): the side-by-side timing,
    which needs the checkpoints rebuilt (memexp.configs.board.measure_board); without it those columns stay empty."""
    from memexp.files import write_json, write_text

    board = board_runs(runs)
    text = [r for r in board if run_kind(r) == "text"]
    settings = (text[0].get("study") or {}).get("speed", {}) if text else {}
    first = {}
    for r in sorted(text, key=lambda r: r["names"]["seed"]):  # the text runs' networks are timed
        ckpt = Path(r.get("ckpt_dir") or "") / "last.ckpt"
        if ckpt.is_file():
            first.setdefault(r["names"]["model"], str(ckpt))
    speeds, peaks = measure(first, settings) if measure and first else ({}, {})
    rows, extra, lengths = board_rows(board, speeds, peaks)
    written = {"leaderboard.json": write_json({"rows": rows, "speed_settings": settings}, out / "leaderboard.json")}
    from memexp.evals.plots import plot_board

    png = plot_board(rows, out / "leaderboard.png")
    if png:
        written["leaderboard.png"] = png
    md = out / "leaderboard.md"
    write_text(board_markdown(rows, extra, lengths, str(root)), md)
    written["leaderboard.md"] = md
    return written
