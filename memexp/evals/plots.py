"""Report plots (matplotlib, Agg backend: no display needed). Each takes plain rows/dicts and a
path, writes one PNG and returns its path. Rows of several seeds are averaged per model,
with the spread (min..max over seeds) shaded or drawn as error bars."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from memexp.files import atomic_path  # noqa: E402

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def _by_model(rows: list[dict], x: str, y: str) -> dict[str, dict[float, list[float]]]:
    out: dict[str, dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        v = float(r[y])
        if v == v:  # skip NaN (empty bins)
            out[str(r.get("model", "model"))][float(r[x])].append(v)
    return out


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Lay out, write `fig` to `path` atomically (a reader never sees half a PNG), close it; the path."""
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight")  # a legend placed outside the axes is kept in the image
    plt.close(fig)
    return Path(path)


def plot_recall_curve(rows: list[dict], path: str | Path) -> Path:
    """recall_prob against gap (log-2 axis), one line per model, chance dashed."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for model, series in sorted(_by_model(rows, "gap", "recall_prob").items()):
        gaps = sorted(series)
        mean = np.array([np.mean(series[g]) for g in gaps])
        lo = np.array([np.min(series[g]) for g in gaps])
        hi = np.array([np.max(series[g]) for g in gaps])
        ax.plot(gaps, mean, marker="o", label=model)
        ax.fill_between(gaps, lo, hi, alpha=0.2)
    chances = [float(r["chance"]) for r in rows if r.get("chance") not in (None, "")]
    if chances:
        ax.axhline(chances[0], ls="--", c="gray", label="chance")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("gap (filler tokens between value and query)")
    ax.set_ylabel("recall_prob (p of the correct value)")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title("Long-context recall")
    return save_figure(fig, path)


def plot_binned_ppl(rows: list[dict], path: str | Path) -> Path:
    """Perplexity of each context-length bin, grouped bars per model."""
    data = _by_model(rows, "length", "ppl")
    models = sorted(data)
    lengths = sorted({L for s in data.values() for L in s})
    fig, ax = plt.subplots(figsize=(6, 4))
    width = 0.8 / max(len(models), 1)
    for i, m in enumerate(models):
        vals = [np.mean(data[m][L]) if L in data[m] else np.nan for L in lengths]
        ax.bar(np.arange(len(lengths)) + i * width, vals, width, label=m)
    ax.set_xticks(np.arange(len(lengths)) + width * (len(models) - 1) / 2, [f"<{L:g}" for L in lengths])
    ax.set_xlabel("context length bin (token position)")
    ax.set_ylabel("perplexity")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)  # beside the axes: never over a bar
    ax.set_title("Perplexity by context length")
    return save_figure(fig, path)


def _dataset_of(label: str) -> tuple[str, str]:
    """`model (data)` (a model trained on several datasets in one sweep) -> (data, model); else ("", label)."""
    if label.endswith(")") and " (" in label:
        model, data = label[:-1].rsplit(" (", 1)
        return data, model
    return "", label


def plot_compare_metrics(
    summary: dict,
    path: str | Path,
    keys: Sequence[str] = ("val/loss", "val/ppl", "val/acc", "val/top5"),
    title: str = "Validation metrics by model",
) -> Path:
    """summary: {model or `model (data)`: {metric: {"mean", "std"}}} -> one row of panels per dataset (text and recall
    runs are never on one axis), one panel per metric, a horizontal bar per model (names on the y axis: no overlap)."""
    groups: dict[str, list[str]] = defaultdict(list)
    for label in sorted(summary):
        groups[_dataset_of(label)[0]].append(label)
    rows = []
    for data, labels in sorted(groups.items()):
        present = [k for k in keys if any(k in summary[m] for m in labels)]
        present = present or sorted({k for m in labels for k in summary[m] if k.startswith("val/")})[:4]
        if present:
            rows.append((data, labels, present))
    ncols = max((len(r[2]) for r in rows), default=1)
    height = sum(0.6 + 0.35 * len(r[1]) for r in rows) or 2.0
    fig, axes = plt.subplots(max(len(rows), 1), ncols, figsize=(3.4 * ncols, height + 0.8), squeeze=False)
    for r, (data, labels, present) in enumerate(rows):
        names = [_dataset_of(m)[1] for m in labels]
        for c in range(ncols):
            ax = axes[r][c]
            if c >= len(present):
                ax.axis("off")
                continue
            k = present[c]
            means = [summary[m].get(k, {}).get("mean", np.nan) for m in labels]
            stds = [summary[m].get(k, {}).get("std", 0.0) for m in labels]
            y = np.arange(len(labels))
            ax.barh(y, means, xerr=stds, color=[f"C{i}" for i in range(len(labels))], capsize=3)
            ax.set_yticks(y, names if c == 0 else [""] * len(names))
            ax.invert_yaxis()
            ax.set_title(f"{k}" + (f" ({data})" if data else ""), fontsize=9)
            ax.tick_params(axis="both", labelsize=8)
    fig.suptitle(f"{title} (mean ± std over seeds)")
    return save_figure(fig, path)


def plot_continual_heatmap(
    matrices: dict[str, list[list[float]]], tasks: list[str], path: str | Path, metric: str = "accuracy"
) -> Path:
    """matrices: {model: R} with R[i][j] = metric on task j after training stage i."""
    models = sorted(matrices)
    fig, axes = plt.subplots(1, len(models), figsize=(3.6 * len(models), 3.4), squeeze=False)
    for ax, m in zip(axes[0], models):
        R = np.array(matrices[m], dtype=float)
        im = ax.imshow(R, vmin=0, vmax=1 if metric == "accuracy" else None, cmap="viridis")
        for i in range(R.shape[0]):
            for j in range(R.shape[1]):
                ax.text(j, i, f"{R[i, j]:.2f}", ha="center", va="center", color="w" if R[i, j] < 0.6 else "k")
        ax.set_xticks(range(len(tasks)), [f"eval {t}" for t in tasks])
        ax.set_yticks(range(len(tasks)), [f"after {t}" for t in tasks])
        ax.set_title(m)
        fig.colorbar(im, ax=ax, fraction=0.046)
    fig.suptitle(f"Continual A->B->C: {metric}")
    return save_figure(fig, path)


def plot_board(rows: list[dict], path: str | Path) -> Path | None:
    """The leaderboard's models: test bits per character (mean, std over seeds) against training tokens/s, and (when
    the board has its recall column) recall_prob against the gap, with the board's context and chance marked."""
    pts = [(r["model"], r["train_tok_s"]["mean"], r["test/bpc"]) for r in rows if "train_tok_s" in r and "test/bpc" in r]
    curves = {r["model"]: sorted((int(k.split("@")[1]), v) for k, v in r.items() if k.startswith("recall@")) for r in rows}
    curves = {m: c for m, c in curves.items() if c}
    if not pts and not curves:
        return None
    fig, axes = plt.subplots(1, 2 if pts and curves else 1, figsize=(11 if pts and curves else 6, 4), squeeze=False)
    axes = list(axes[0])
    if pts:
        ax = axes.pop(0)
        for model, speed, bpc in pts:
            ax.errorbar(speed, bpc["mean"], yerr=bpc["std"], fmt="o", capsize=3)
            ax.annotate(model, (speed, bpc["mean"]), textcoords="offset points", xytext=(6, 4))
        ax.set_xlabel("training tokens/s (one thread)")
        ax.set_ylabel("test bits per character")
        ax.set_title("Quality against speed")
        ax.grid(alpha=0.3)
    if curves:
        ax = axes.pop(0)
        for model, curve in sorted(curves.items()):
            gaps = [g for g, _ in curve]
            ax.errorbar(
                gaps, [v["mean"] for _, v in curve], yerr=[v["std"] for _, v in curve], marker="o", capsize=3, label=model
            )
        span = next((r["span"] for r in rows if r.get("span")), None)
        if span:
            ax.axvline(span, color="grey", ls=":", label=f"context ({span})")
        ax.axhline(1 / 8, color="grey", ls="--", label="chance")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("gap (filler tokens between the pair and the query)")
        ax.set_ylabel("recall_prob")
        ax.set_ylim(0, 1.02)
        ax.set_title("Long-context recall")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    return save_figure(fig, path)
