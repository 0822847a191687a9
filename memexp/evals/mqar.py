"""The MQAR table: memexp's models beside Zoology's Figure 2 (Arora et al., ICLR 2024).

Each run of `experiment=mqar_zoology` or `experiment=mqar_cpu` trains one model (`mqar=<model>_<width>`) on one
cell (`mqar_cell=<seq_len>x<num_kv_pairs>`) at one learning rate and seed. The table is built as the paper builds
its points, with one change: for each model, width and cell, the learning rate is the one with the best
*validation* answer accuracy at seed 0 (Zoology picks it on its test set; memexp's validation set is drawn apart
from the test set, so the test accuracy reported was never used to choose anything), and the cell reports the
test accuracy at that rate as mean and std over the seeds run at it (`experiments/mqar_zoology.py` runs seeds 1
and 2 there). The published accuracies (`zoology_figure2.json`, read off the figure, approximate) sit beside them.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from importlib import resources
from pathlib import Path

from memexp.errors import ConfigError, DataError
from memexp.evals.aggregate import run_config, stats
from memexp.files import write_json, write_text

PUBLISHED_MODELS = ("attention", "hyena", "rwkv", "h3", "base_conv")


def published() -> dict:
    """Zoology's Figure 2 (the package's `zoology_figure2.json`): source, how it was read, the protocol, the widths
    and per cell ("64x4", ...) each published model's accuracy at each width."""
    return json.loads(resources.files("memexp.evals").joinpath("zoology_figure2.json").read_text(encoding="utf-8"))


def mqar_point(run: dict) -> dict:
    """One run as a table point: model, width, cell ("64x4"), reassigned keys, budget (sequences per batch, most
    steps), learning rate, seed, val/test acc."""
    cfg = run_config(run)
    if cfg is None:
        path = Path(run["path"]) / ".hydra" / "config.yaml"
        raise ConfigError(f"{path} does not exist; an MQAR run folder keeps the config Hydra saved (.hydra/config.yaml)")
    model, data, trainer = cfg.get("model") or {}, cfg.get("data") or {}, cfg.get("trainer") or {}
    width = model.get("dim", model.get("hidden_size"))
    return {
        "model": run["names"]["model"],
        "width": int(width) if width is not None else None,
        "cell": f"{int(data['seq_len'])}x{int(data['num_kv_pairs'])}",
        "reassigned": int(data.get("num_reassigned", 0) or 0),
        "budget": (int(data["batch_size"]), int(trainer.get("max_steps") or -1)),
        "lr": float(cfg["optim"]["lr"]),
        "seed": int(run["names"]["seed"]),
        "val_acc": float(run["metrics"].get("val/acc", math.nan)),
        "test_acc": float(run["metrics"].get("test/acc", math.nan)),
        "steps": int(run["metrics"].get("global_step", 0)),
        "path": run["path"],
    }


def mqar_rows(points: list[dict]) -> list[dict]:
    """One row per (model, width, cell, reassigned, budget): the learning rate with the best seed-0 validation accuracy
    (ties: the smaller rate), that rate's test accuracy over its seeds, and every rate's seed-0 validation
    accuracy (the grid)."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for p in points:
        groups[(p["model"], p["width"], p["cell"], p["reassigned"], tuple(p["budget"]))].append(p)
    rows = []
    for (model, width, cell, reassigned, budget), pts in sorted(
        groups.items(), key=lambda kv: (kv[0][2], kv[0][0], kv[0][1] or 0, kv[0][4])
    ):
        grid = {p["lr"]: p["val_acc"] for p in pts if p["seed"] == 0}
        if not grid:
            continue
        best_lr = min(grid, key=lambda lr: (-(grid[lr] if grid[lr] == grid[lr] else -1.0), lr))
        at_best = [p for p in pts if p["lr"] == best_lr]
        rows.append(
            {
                "model": model,
                "width": width,
                "cell": cell,
                "reassigned": reassigned,
                "budget": {"batch": budget[0], "max_steps": budget[1]},
                "best_lr": best_lr,
                "grid_val_acc": {f"{lr:.3g}": grid[lr] for lr in sorted(grid)},
                "test_acc": stats([p["test_acc"] for p in at_best]),
                "seeds": sorted(p["seed"] for p in at_best),
                "steps": stats([p["steps"] for p in at_best]),
            }
        )
    return rows


def _budget(row: dict) -> str:
    """A row's budget as the table and the figure name it: sequences per batch x most steps."""
    return f"{row['budget']['batch']} x {row['budget']['max_steps']}"


def _fmt(s: dict) -> str:
    if not s.get("n"):
        return "-"
    return f"{s['mean']:.3f}" + (f" ± {s['std']:.3f} (n={s['n']})" if s["n"] > 1 else " (n=1)")


def mqar_markdown(rows: list[dict], pub: dict, sweep: str) -> str:
    """The table: per cell and width, each memexp model's test accuracy at its best rate and the published ones."""
    lines = [
        f"# MQAR (Zoology, Figure 2) - {sweep}",
        "",
        "Test accuracy (Zoology's: each sequence's right answers over its answers, averaged over sequences) at the "
        "learning rate with the best seed-0 *validation* accuracy, mean ± std over the seeds run at that rate. "
        f"Published: {pub['source']}; {pub['how_read']}.",
        "",
        "| cell (seq_len x kv pairs) | width | model | budget (batch x most steps) | best lr | test acc | steps run "
        "| published at this width |",
        "|---|---|---|---|---|---|---|---|",
    ]
    widths = pub["widths"]
    for r in rows:
        cell_pub = pub["cells"].get(r["cell"], {}) if not r["reassigned"] else {}
        at = widths.index(r["width"]) if r["width"] in widths else None
        shown = ", ".join(f"{m} {v[at]:.2f}" for m, v in cell_pub.items() if at is not None) or "-"
        cell = r["cell"] + (f", {r['reassigned']} reassigned" if r["reassigned"] else "")
        steps = f"{r['steps']['mean']:.0f}" if r["steps"].get("n") else "-"
        lines.append(
            f"| {cell} | {r['width']} | {r['model']} | {_budget(r)} | {r['best_lr']:.3g} | {_fmt(r['test_acc'])} | {steps} "
            f"| {shown} |"
        )
    lines += ["", "Validation accuracy of every learning rate at seed 0 (the grid the rate was chosen on):", ""]
    for r in rows:
        grid = ", ".join(f"{lr}: {v:.3f}" for lr, v in r["grid_val_acc"].items())
        lines.append(f"- {r['cell']} width {r['width']} {r['model']} ({_budget(r)}): {grid}")
    lines += ["", f"Protocol of the published numbers: {pub['protocol']}."]
    return "\n".join(lines) + "\n"


def plot_mqar(rows: list[dict], pub: dict, path: str | Path) -> Path:
    """Figure 2's form: one panel per cell, accuracy against width; memexp's models as lines (mean, min..max over
    seeds as error bars), the published models as hollow markers."""
    from memexp.evals.plots import plt, save_figure

    cells = sorted({r["cell"] for r in rows if not r["reassigned"]}, key=lambda c: int(c.split("x")[0]))
    fig, axes = plt.subplots(1, max(1, len(cells)), figsize=(4.2 * max(1, len(cells)), 3.6), squeeze=False)
    for ax, cell in zip(axes[0], cells):
        here = [r for r in rows if r["cell"] == cell and not r["reassigned"]]
        budgets = {_budget(r) for r in here}
        for model, budget in sorted({(r["model"], _budget(r)) for r in here}):
            line = [r for r in here if r["model"] == model and _budget(r) == budget]
            pts = sorted((r["width"], r["test_acc"]) for r in line if r["test_acc"].get("n"))
            if not pts:
                continue
            xs, mean = [w for w, _ in pts], [s["mean"] for _, s in pts]
            err = [[s["mean"] - s["min"] for _, s in pts], [s["max"] - s["mean"] for _, s in pts]]
            label = model if len(budgets) == 1 else f"{model} ({budget})"
            ax.errorbar(xs, mean, yerr=err, marker="o", capsize=3, label=label)
        for (name, vals), marker in zip(pub["cells"].get(cell, {}).items(), "D^vsP"):  # grey: the paper's models
            ax.plot(pub["widths"], vals, ls=":", c="0.55", marker=marker, mfc="none", label=f"{name} (Zoology)")
        seq, kv = cell.split("x")
        ax.set_title(f"seq_len {seq}, {kv} kv pairs")
        ax.set_xscale("log", base=2)
        ax.set_xticks(pub["widths"], [str(w) for w in pub["widths"]])
        ax.set_xlabel("model width")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("MQAR test accuracy")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)
    return save_figure(fig, path)


def write_mqar(runs: list[dict], out: Path, sweep: str) -> dict[str, Path]:
    """mqar_table.md, mqar_table.json and mqar_figure2.png in `out` from the MQAR runs among `runs`."""
    return write_points_table([mqar_point(r) for r in runs if r["names"].get("data") == "mqar"], out, sweep)


# A point's fields and their JSON types (mqar_point; "path", the run folder, is not needed to redraw a table)
POINT_FIELDS = {"model": str, "width": int, "cell": str, "reassigned": int, "budget": list, "lr": float, "seed": int}
POINT_FIELDS |= {"val_acc": float, "test_acc": float, "steps": int}


def read_points(path: Path) -> list[dict]:
    """The points of a saved MQAR table (a report's mqar_table.json, or any {"points": [...]} file), checked field by
    field: a table redrawn from files outlives the run folders it was measured in (docs/mqar_points.json)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as e:
        raise DataError(f"{path}: cannot be read ({e.strerror})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        where = f"line {e.lineno}: " if isinstance(e, json.JSONDecodeError) else ""
        raise DataError(f"{path}: {where}not a JSON file of MQAR points ({e})") from None
    points = data.get("points") if isinstance(data, dict) else None
    if not isinstance(points, list):
        raise DataError(f'{path}: no "points" list (a report\'s mqar_table.json has one)')
    for i, point in enumerate(points):
        for field in ("val_acc", "test_acc"):  # null: not measured (JSON has no NaN)
            if isinstance(point, dict) and field in point and point[field] is None:
                point[field] = math.nan
        for field, kind in POINT_FIELDS.items():
            value = point.get(field) if isinstance(point, dict) else None
            numeric = kind is float and isinstance(value, int) and not isinstance(value, bool)
            if not (isinstance(value, kind) or numeric) or (kind is int and isinstance(value, bool)):
                raise DataError(f"{path}: points[{i}].{field}: expected {kind.__name__}, got {value!r}")
    return points


def merge_points(files: list[Path]) -> list[dict]:
    """The points of several saved tables; one run (model, width, cell, reassigned, budget, rate, seed) given twice is
    an error naming both files, since the table would count it as two seeds."""
    seen: dict[tuple, Path] = {}
    merged = []
    for path in files:
        for p in read_points(path):
            key = (p["model"], p["width"], p["cell"], p["reassigned"], tuple(p["budget"]), float(p["lr"]), p["seed"])
            if key in seen:
                raise DataError(
                    f"{path}: the run {p['model']}_{p['width']} {p['cell']} lr {p['lr']} seed {p['seed']} is also in {seen[key]}"
                )
            seen[key] = path
            merged.append(p)
    return merged


def write_points_table(points: list[dict], out: Path, sweep: str) -> dict[str, Path]:
    """mqar_table.md, mqar_table.json and mqar_figure2.png in `out` from table points (mqar_point's dicts)."""
    if not points:
        return {}
    pub = published()
    rows = mqar_rows(points)
    written = {
        "mqar_table.json": write_json({"rows": rows, "points": points, "published": pub}, out / "mqar_table.json"),
        "mqar_table.md": write_text(mqar_markdown(rows, pub, sweep), out / "mqar_table.md"),
    }
    if any(r["test_acc"].get("n") for r in rows):
        written["mqar_figure2.png"] = plot_mqar(rows, pub, out / "mqar_figure2.png")
    return written
