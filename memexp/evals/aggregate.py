"""Aggregate the runs of a study (a multirun folder) into reports.

Every job of `python -m memexp.run -m experiment=...` writes `metrics.json` into its run
folder (metrics, names, and a "study" section: recall by gap, binned perplexity, or the
continual matrices). This module turns them into numbers and markdown; `memexp.runs.report.write_reports(folder)`
gathers them and writes, into `reports/`:

    metrics.json            per model: mean, std (over seeds, ddof=1), min, max, n of every metric
                            (train/val/test loss, ppl, acc, top-5, top-10, recall_prob@gap, ...)
    experiment_report.md    the same as tables, plus recall by gap and the optional HF comparison
    long_context.csv        recall rows of every model, seed and gap
    binned_ppl.csv          binned perplexity rows (text runs)
    continual_metrics.json  {"models": accuracy/loss matrices per model and seed, their means, forgetting,
                            BWT; "comparisons": per-seed paired differences of forgetting between models}
    continual_report.md
    recall_curve.png, binned_ppl.png, compare_metrics.png, continual_heatmap.png
"""

from __future__ import annotations

import itertools
import json
import math
from collections import defaultdict
from pathlib import Path

from scipy.stats import binomtest, ttest_rel

from memexp.errors import ConfigError

HEADLINE = [
    "train/loss",
    "val/loss",
    "val/ppl",
    "val/acc",
    "val/top5",
    "val/top10",
    "test/loss",
    "test/ppl",
    "test/acc",
    "test/top5",
    "test/top10",
    "val/macro_f1",
    "test/macro_f1",
    "test/auc",
    "test/spauc",
]


def collect_runs(root: str | Path) -> list[dict]:
    """Every job's metrics.json under `root` (skipping report folders), sorted by model and seed."""
    root = Path(root)
    if not root.exists():
        raise ConfigError(f"dir={root} does not exist; expected a multirun folder of memexp.run (outputs/multirun/<date>/<time>)")
    runs = []
    for path in sorted(root.rglob("metrics.json")):
        if "reports" in path.relative_to(root).parts:
            continue
        try:
            r = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:  # memexp writes it whole (temporary name, then rename): it was damaged since
            raise ConfigError(
                f"{path} line {e.lineno}: not valid JSON ({e.msg}); run that job again or remove its folder, so the "
                "report does not count its seed as missing"
            ) from None
        except UnicodeDecodeError:
            raise ConfigError(f"{path}: not UTF-8 text; run that job again or remove its folder") from None
        if "metrics" in r and "names" in r:
            r["path"] = str(path.parent)
            runs.append(r)
    if not runs:
        raise ConfigError(
            f"no run results (metrics.json with names) under {root}; run `python -m memexp.run -m experiment=...` first"
        )
    return sorted(runs, key=lambda r: (r["names"]["model"], r["names"]["seed"]))


def stats(values: list[float]) -> dict:
    vals = [float(v) for v in values if v == v]
    n = len(vals)
    if not n:
        return {"mean": float("nan"), "std": float("nan"), "min": float("nan"), "max": float("nan"), "n": 0}
    mean = sum(vals) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (n - 1)) if n > 1 else 0.0
    return {"mean": mean, "std": std, "min": min(vals), "max": max(vals), "n": n, "values": vals}


def run_scalars(run: dict) -> dict[str, float]:
    """Headline metrics of one run plus recall_prob@gap / recall_acc@gap."""
    out = {k: v for k, v in run["metrics"].items() if isinstance(v, (int, float))}
    for r in (run.get("study") or {}).get("recall", []):
        out[f"recall_prob@{r['gap']}"] = r["recall_prob"]
        out[f"recall_acc@{r['gap']}"] = r["accuracy"]
    return out


def run_kind(run: dict) -> str:
    """What a run measured: "continual" (a task-by-task matrix), "recall" (recall by gap), "mqar" (answer accuracy
    on data=mqar) or "text" (the leaderboard's columns and the claims' arms are told apart by it)."""
    study = run.get("study") or {}
    if "continual" in study:
        return "continual"
    if "recall" in study:
        return "recall"
    return "mqar" if run["names"].get("data") == "mqar" else "text"


def run_config(run: dict) -> dict | None:
    """The run's composed config as Hydra saved it (.hydra/config.yaml, read as plain YAML: Hydra stays in
    configs/); None when the folder has none."""
    import yaml

    path = Path(run["path"]) / ".hydra" / "config.yaml"
    return (yaml.safe_load(path.read_text(encoding="utf-8")) or {}) if path.is_file() else None


def run_setting(run: dict, key: str) -> object:
    """A dotted key of the run's composed config (`run_config`); None when absent."""
    value = run_config(run)
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def summary_labels(runs: list[dict]) -> dict[int, str]:
    """id(run) -> its column in the summary: the model, or `model (data)` for a model trained on more than one dataset
    in the sweep."""
    datas: dict[str, set] = defaultdict(set)
    for r in runs:
        datas[r["names"]["model"]].add(r["names"].get("data"))
    return {
        id(r): r["names"]["model"]
        if len(datas[r["names"]["model"]]) == 1
        else f"{r['names']['model']} ({r['names'].get('data')})"
        for r in runs
    }


def summarize(runs: list[dict]) -> dict:
    """Mean and spread over seeds per model; a model trained on more than one dataset in the sweep (the leaderboard's
    text and recall columns) is one entry per dataset, `model (data)`."""
    labels = summary_labels(runs)
    by_model: dict[str, list[dict]] = defaultdict(list)
    for r in runs:
        if "continual" not in (r.get("study") or {}):
            by_model[labels[id(r)]].append(run_scalars(r))
    summary = {}
    for model, scalars in sorted(by_model.items()):
        keys = sorted({k for s in scalars for k in s})
        summary[model] = {k: stats([s[k] for s in scalars if k in s]) for k in keys}
    return summary


FORGETTING = ("avg_forgetting", "avg_loss_forgetting")  # the continual metrics models are compared on


def summarize_continual(runs: list[dict]) -> dict:
    by_model: dict[str, list[dict]] = defaultdict(list)
    for r in runs:
        c = (r.get("study") or {}).get("continual")
        if c:
            by_model[r["names"]["model"]].append(c | {"seed": r["names"]["seed"]})
    out = {}
    for model, cs in sorted(by_model.items()):
        T = len(cs[0]["tasks"])
        # cs and T bound as defaults: the lambda belongs to this model's iteration (ruff B023).
        mean = lambda key, cs=cs, T=T: [[sum(c[key][i][j] for c in cs) / len(cs) for j in range(T)] for i in range(T)]  # noqa: E731
        out[model] = {
            "tasks": cs[0]["tasks"],
            "seeds": [c["seed"] for c in cs],
            "accuracy_mean": mean("accuracy"),
            "loss_mean": mean("loss"),
            "per_seed": [{k: c[k] for k in ("seed", "accuracy", "loss", *FORGETTING) if k in c} for c in cs],
            **{
                k: stats([c[k] for c in cs])
                for k in ("avg_forgetting", "backward_transfer", "avg_final_accuracy", "avg_loss_forgetting", "avg_final_loss")
                if k in cs[0]
            },
            "steps_per_stage": cs[0].get("steps_per_stage"),
            "optimizer": cs[0].get("optimizer"),
        }
    return out


def _fmt(s: dict) -> str:
    if not s or s.get("n", 0) == 0:
        return "-"
    return f"{s['mean']:.4f} ± {s['std']:.4f}" if s["n"] > 1 else f"{s['mean']:.4f}"


def paired_table_header(direction: str) -> list[str]:
    """The header of a paired-comparison table; `direction` is the count column: "lower" or "higher"."""
    return [
        f"| a vs b | metric | a - b (mean ± std) | a {direction} in | sign test p (two-sided) | paired t (two-sided p) |",
        "|---|---|---|---|---|---|",
    ]


def paired_table_rows(pair: dict, direction: str) -> list[str]:
    """One row per metric of a paired comparison (`compare_continual` / `compare_models` entries)."""
    rows = []
    for key, d in pair["metrics"].items():
        t = "-" if d["t"] is None else f"{d['t']:.2f} (p = {d['t_p']:.3f})"
        rows.append(
            f"| {pair['a']} vs {pair['b']} | {key} | {d['mean']:+.4f} ± {d['std']:.4f} | "
            f"{d[f'a_{direction}']} of {d['n']} seeds | {d['sign_p']:.3f} | {t} |"
        )
    return rows


def experiment_markdown(summary: dict, runs: list[dict], hf_note: str | None) -> str:
    models = sorted(summary)
    labels = summary_labels(runs)
    lines = [
        "# Experiment report",
        "",
        f"{len(runs)} runs: "
        + ", ".join(f"{m} (seeds {sorted({r['names']['seed'] for r in runs if labels[id(r)] == m})})" for m in models),
        "",
        "Mean ± standard deviation over seeds (ddof=1).",
        "",
        "## Metrics",
        "",
        "| metric | " + " | ".join(models) + " |",
        "|---|" + "---|" * len(models),
    ]
    keys = [k for k in HEADLINE if any(k in summary[m] for m in models)]
    for k in keys:
        lines.append(f"| {k} | " + " | ".join(_fmt(summary[m].get(k, {})) for m in models) + " |")
    gaps = sorted({int(k.split("@")[1]) for m in models for k in summary[m] if k.startswith("recall_prob@")})
    if gaps:
        lines += [
            "",
            "## Long-context recall (recall_prob / exact match)",
            "",
            "| gap | " + " | ".join(models) + " |",
            "|---|" + "---|" * len(models),
        ]
        for g in gaps:
            lines.append(
                f"| {g} | "
                + " | ".join(
                    f"{_fmt(summary[m].get(f'recall_prob@{g}', {}))} / {_fmt(summary[m].get(f'recall_acc@{g}', {}))}"
                    for m in models
                )
                + " |"
            )
        contexts = {
            r["names"]["model"]: x["context"]
            for r in runs
            for x in (r.get("study") or {}).get("recall", [])
            if x.get("context", "full") != "full"
        }
        for m, c in sorted(contexts.items()):
            lines.append(f"\n{m}: bounded context; at the longest gaps it saw only the {c}.")
    if hf_note:
        lines += ["", "## Hugging Face comparison", "", hf_note]
    return "\n".join(lines) + "\n"


def continual_markdown(cont: dict, pairs: list[dict]) -> str:
    """The report of `summarize_continual` output, with `compare_continual`'s pairs."""
    lines = [
        "# Continual learning A -> B -> C",
        "",
        "R[i][j] = test accuracy on task j after training stage i (mean over seeds). "
        "Average forgetting = mean over earlier tasks of (best earlier accuracy - final accuracy); "
        "backward transfer = mean of (final - just-after-training accuracy).",
        "",
    ]
    for model, c in cont.items():
        tasks = c["tasks"]
        lines += [
            f"## {model} (seeds {c['seeds']}, {c['steps_per_stage']} steps per stage, optimizer {c['optimizer']})",
            "",
            "| after \\ eval | " + " | ".join(tasks) + " |",
            "|---|" + "---|" * len(tasks),
        ]
        for i, t in enumerate(tasks):
            lines.append(f"| {t} | " + " | ".join(f"{v:.3f}" for v in c["accuracy_mean"][i]) + " |")
        lines += [
            "",
            f"- average forgetting: {_fmt(c['avg_forgetting'])}",
            f"- backward transfer: {_fmt(c['backward_transfer'])}",
            f"- final average accuracy: {_fmt(c['avg_final_accuracy'])}",
        ]
        if "avg_loss_forgetting" in c:
            lines.append(f"- loss forgetting (rise of test loss): {_fmt(c['avg_loss_forgetting'])}")
        lines.append("")
    if pairs:
        lines += [
            "## Which model forgets less",
            "",
            "Differences a - b of average forgetting, pairing the runs of both models by seed "
            "(each pair an independent draw of initialisation and batches). The sign test asks how "
            "often a random +/- pattern would be this one-sided; a difference it does not separate "
            "from seed noise is not a finding.",
            "",
            *paired_table_header("lower"),
        ]
        for pr in pairs:
            lines += paired_table_rows(pr, "lower")
            lines.append("")
            lines.append(pr["verdict"] + "\n")
    return "\n".join(lines)


def sign_test_p(n_lower: int, n_higher: int) -> float:
    """Exact two-sided sign test: P(a split at least this uneven | each sign has probability 1/2); ties dropped."""
    n = n_lower + n_higher
    if n == 0:
        return 1.0
    return float(binomtest(n_lower, n, 0.5, alternative="two-sided").pvalue)


def paired_difference(a: dict[int, float], b: dict[int, float]) -> dict | None:
    """Per-seed a - b over the seeds both have a number for: mean, std (ddof=1), counts, sign-test p, paired t."""
    seeds = sorted(s for s in set(a) & set(b) if a[s] == a[s] and b[s] == b[s])  # NaN (a diverged run) dropped
    if not seeds:
        return None
    diffs = [a[s] - b[s] for s in seeds]
    st = stats(diffs)
    lower, higher = sum(d < 0 for d in diffs), sum(d > 0 for d in diffs)
    t = t_p = None
    if st["n"] > 1 and st["std"] > 0:
        paired = ttest_rel([a[s] for s in seeds], [b[s] for s in seeds])
        t, t_p = float(paired.statistic), float(paired.pvalue)
    return {
        "seeds": seeds,
        "diffs": diffs,
        "mean": st["mean"],
        "std": st["std"],
        "n": len(seeds),
        "a_lower": lower,
        "a_higher": higher,
        "sign_p": sign_test_p(lower, higher),
        "t": t,
        "t_p": t_p,
    }


def compare_continual(cont: dict, alpha: float = 0.05) -> list[dict]:
    """Every pair of models that share seeds: paired differences of average forgetting (accuracy and loss).

    The verdict names a model as forgetting less only when it is lower at a sign-test p below
    `alpha` on the accuracy matrix; otherwise it says the difference is within seed noise.
    """
    models = list(cont)
    out = []
    for i, a in enumerate(models):
        for b in models[i + 1 :]:
            metrics = {}
            for key in FORGETTING:
                per_a = {r["seed"]: r[key] for r in cont[a]["per_seed"] if key in r}
                per_b = {r["seed"]: r[key] for r in cont[b]["per_seed"] if key in r}
                d = paired_difference(per_a, per_b)
                if d:
                    metrics[key] = d
            if "avg_forgetting" not in metrics:
                continue
            d = metrics["avg_forgetting"]
            if d["sign_p"] < alpha:
                lo, hi = (a, b) if d["mean"] < 0 else (b, a)
                verdict = (
                    f"**{lo}** forgets less than {hi} (accuracy forgetting lower in "
                    f"{max(d['a_lower'], d['a_higher'])} of {d['n']} seeds, sign test p = {d['sign_p']:.3f})."
                )
            else:
                verdict = (
                    f"No difference beyond seed noise between {a} and {b}: {a} lower in {d['a_lower']} of "
                    f"{d['n']} seeds, sign test p = {d['sign_p']:.3f}."
                )
                if sign_test_p(d["n"], 0) >= alpha:
                    need = next(n for n in itertools.count(d["n"] + 1) if sign_test_p(n, 0) < alpha)
                    verdict += f" ({d['n']} seeds cannot reach p < {alpha} even if all agree; run at least {need}.)"
            out.append({"a": a, "b": b, "metrics": metrics, "verdict": verdict})
    return out
