"""Aggregate the runs of a study (a multirun or run folder) into `reports/`, and optionally into W&B.

The numbers and the markdown come from `memexp.evals.aggregate` (see its docstring for the
files); this module collects the runs, writes every file atomically, draws the plots and,
with `wandb_log=True`, logs the tables and plots to one W&B run of job type "report".
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from memexp.evals.aggregate import (
    collect_runs,
    compare_continual,
    continual_markdown,
    experiment_markdown,
    run_scalars,
    summarize,
    summarize_continual,
)
from memexp.evals.binned_ppl import write_binned_csv
from memexp.evals.compare import classification_markdown, compare_models
from memexp.evals.plots import plot_binned_ppl, plot_compare_metrics, plot_continual_heatmap, plot_recall_curve
from memexp.evals.recall import write_recall_csv
from memexp.files import write_json, write_text
from memexp.runs.loggers import sweep_group, wandb_mode, wandb_payload


def runs_used_wandb(root: str | Path) -> bool:
    """Whether any run under `root` (a sweep folder) logged to W&B (it holds a W&B run folder)."""
    return any(Path(root).glob("*/wandb/*run-*"))


def write_reports(
    root: str | Path,
    reports_dir: str | Path | None = None,
    hf_note: str | None = None,
    wandb_log: bool = False,
    measure_board: Callable | None = None,
) -> dict:
    """Aggregate the runs under `root` into `reports_dir` (default <root>/reports); returns the paths written.
    measure_board: the leaderboard's side-by-side timing (memexp.configs.board.measure_board)."""
    runs = collect_runs(root)
    out = Path(reports_dir) if reports_dir else Path(root) / "reports"
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    summary = summarize(runs)
    if summary:
        report_text = _write_summary(summary, runs, hf_note, out, written)
    classified = [r for r in runs if "test/macro_f1" in r["metrics"]]
    pairs_cls: list[dict] = []
    if classified:  # classifiers: paired comparison of models over seeds on test macro F1, AUC, spAUC
        pairs_cls = compare_models(classified)
        written["classification_comparison.json"] = write_json(pairs_cls, out / "classification_comparison.json")
        md = out / "classification_report.md"
        write_text(classification_markdown(classified, pairs_cls), md)
        written["classification_report.md"] = md
    recall = [x for r in runs for x in (r.get("study") or {}).get("recall", [])]
    if recall:
        written["long_context.csv"] = write_recall_csv(recall, out / "long_context.csv")
        written["recall_curve.png"] = plot_recall_curve(recall, out / "recall_curve.png")
    binned = [x for r in runs for x in (r.get("study") or {}).get("binned_ppl", [])]
    if binned:
        written["binned_ppl.csv"] = write_binned_csv(binned, out / "binned_ppl.csv")
        written["binned_ppl.png"] = plot_binned_ppl(binned, out / "binned_ppl.png")
    if any((r.get("study") or {}).get("board") for r in runs):  # experiment=leaderboard
        from memexp.evals.leaderboard import write_leaderboard

        written |= write_leaderboard(root, runs, out, measure_board)
    if any(r["names"].get("data") == "mqar" for r in runs):  # experiment=mqar_zoology / mqar_cpu
        from memexp.evals.mqar import write_mqar

        written |= write_mqar(runs, out, str(root))
    cont = summarize_continual(runs)
    pairs = compare_continual(cont)
    if cont:
        _write_continual(cont, pairs, out, written)
    if summary:
        others = ", ".join(name for name in written if name != "experiment_report.md")
        write_text(report_text + f"\nWritten with this report (in {out}): {others}.\n", written["experiment_report.md"])
    if wandb_log:
        tables = _wandb_tables(cont, pairs, pairs_cls, written)
        experiment = next((r["names"].get("experiment") for r in runs if r.get("names")), None) or "default"
        _log_report_to_wandb(sweep_group(experiment, root), out, written, summary, recall, binned, tables)
    return {k: str(v) for k, v in written.items()}


def _write_summary(summary: dict, runs: list[dict], hf_note: str | None, out: Path, written: dict[str, Path]) -> str:
    """metrics.json and the comparison plot; returns the report's text (experiment_report.md is written last)."""
    written["metrics.json"] = write_json(
        {
            "models": summary,
            "runs": [
                {"model": r["names"]["model"], "seed": r["names"]["seed"], "run_dir": r["path"], "metrics": run_scalars(r)}
                for r in runs
                if "continual" not in (r.get("study") or {})
            ],
        },
        out / "metrics.json",
    )
    report_text = experiment_markdown(summary, runs, hf_note)
    written["experiment_report.md"] = out / "experiment_report.md"  # written last, with the files it comes with
    written["compare_metrics.png"] = plot_compare_metrics(summary, out / "compare_metrics.png")
    return report_text


def _write_continual(cont: dict, pairs: list[dict], out: Path, written: dict[str, Path]) -> None:
    """The continual-learning study's metrics, report and accuracy heatmap."""
    written["continual_metrics.json"] = write_json({"models": cont, "comparisons": pairs}, out / "continual_metrics.json")
    md = out / "continual_report.md"
    write_text(continual_markdown(cont, pairs), md)
    written["continual_report.md"] = md
    tasks = next(iter(cont.values()))["tasks"]
    written["continual_heatmap.png"] = plot_continual_heatmap(
        {m: c["accuracy_mean"] for m, c in cont.items()}, tasks, out / "continual_heatmap.png"
    )


def _wandb_tables(cont: dict, pairs: list[dict], pairs_cls: list[dict], written: dict[str, Path]) -> dict[str, list[dict]]:
    """The report's tables for W&B besides the summary, recall and binned perplexity."""
    continual_matrix = [
        {"model": m, "trained_through": c["tasks"][i], "evaluated_on": c["tasks"][j], "accuracy": acc}
        for m, c in cont.items()
        for i, row in enumerate(c["accuracy_mean"])
        for j, acc in enumerate(row)
    ]
    tables = {
        "report/continual_comparison": _comparison_rows(pairs),
        "report/continual_accuracy": continual_matrix,
        "report/classification_comparison": _comparison_rows(pairs_cls),
    }
    if "leaderboard.json" in written:  # one row per model: the mean over seeds of every column
        board = json.loads(Path(written["leaderboard.json"]).read_text())["rows"]
        tables["report/leaderboard_table"] = [  # "report/leaderboard" is its figure
            {"model": r["model"]} | {k: v["mean"] for k, v in sorted(r.items()) if isinstance(v, dict) and "mean" in v}
            for r in board
        ]
    return tables


def _comparison_rows(pairs: list[dict]) -> list[dict]:
    """Paired comparisons over seeds (compare_continual, compare_models) as flat rows: one per pair and metric."""
    return [
        {"a": pr["a"], "b": pr["b"], "metric": k, "mean_diff": d["mean"], "std_diff": d["std"]}
        | {x: d[x] for x in ("a_lower", "n", "sign_p")}
        for pr in pairs
        for k, d in pr["metrics"].items()
    ]


def _log_report_to_wandb(group: str, out: Path, written: dict, summary: dict, recall: list, binned: list, tables: dict) -> None:
    import wandb  # only when asked for: importing wandb costs about a second

    run = wandb.init(project="memexp", group=group, name=f"{group}/report", dir=str(out), mode=wandb_mode(), job_type="report")
    rows = [
        {"model": m, "metric": k, "mean": s["mean"], "std": s["std"], "n": s["n"]}
        for m, ks in summary.items()
        for k, s in ks.items()
    ]
    tables = {"report/summary": rows, "report/recall": recall, "report/binned_ppl": binned} | tables
    images = {f"report/{name[:-4]}": path for name, path in written.items() if name.endswith(".png")}
    payload = wandb_payload(tables, images)
    run.log(payload)
    run.finish()
