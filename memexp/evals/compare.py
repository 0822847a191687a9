"""Paired comparison of models over seeds on a metric where higher is better (the classifiers:
test macro F1, AUC, spAUC), with the exact sign test and paired t of `memexp.evals.aggregate`.

    classification_report.md, classification_comparison.json   (written by memexp.runs.report)
"""

from __future__ import annotations

import itertools
from collections import defaultdict

from memexp.evals.aggregate import _fmt, paired_difference, paired_table_header, paired_table_rows, sign_test_p, summarize

CLASSIFICATION_METRICS = ("test/macro_f1", "test/auc", "test/spauc", "test/acc", "val/macro_f1")


def per_seed(runs: list[dict], metric: str) -> dict[str, dict[int, float]]:
    """{model: {seed: value}} of one metric over the runs that have it."""
    out: dict[str, dict[int, float]] = defaultdict(dict)
    for r in runs:
        if metric in r["metrics"]:
            out[r["names"]["model"]][int(r["names"]["seed"])] = float(r["metrics"][metric])
    return dict(out)


def compare_models(runs: list[dict], metrics: tuple[str, ...] = CLASSIFICATION_METRICS, alpha: float = 0.05) -> list[dict]:
    """Every pair of models sharing seeds: per-seed differences a - b of each metric; the verdict
    (on the first metric) names a better model only at a sign-test p below `alpha`."""
    tables = {m: per_seed(runs, m) for m in metrics}
    models = sorted({model for t in tables.values() for model in t})
    out = []
    for a, b in itertools.combinations(models, 2):
        diffs = {m: d for m in metrics if (d := paired_difference(tables[m].get(a, {}), tables[m].get(b, {})))}
        if metrics[0] not in diffs:
            continue
        d, key = diffs[metrics[0]], metrics[0]
        if d["sign_p"] < alpha:
            hi, lo = (a, b) if d["mean"] > 0 else (b, a)
            verdict = f"**{hi}** is higher than {lo} on {key} in {max(d['a_lower'], d['a_higher'])} of {d['n']} seeds (sign test p = {d['sign_p']:.3f})."
        else:
            verdict = f"No difference on {key} beyond seed noise: {a} higher in {d['a_higher']} of {d['n']} seeds, sign test p = {d['sign_p']:.3f}."
            if sign_test_p(d["n"], 0) >= alpha:
                need = next(n for n in itertools.count(d["n"] + 1) if sign_test_p(n, 0) < alpha)
                verdict += f" ({d['n']} seeds cannot reach p < {alpha} even if all agree; run at least {need}.)"
        out.append({"a": a, "b": b, "metrics": diffs, "verdict": verdict})
    return out


def classification_markdown(runs: list[dict], pairs: list[dict], metrics: tuple[str, ...] = CLASSIFICATION_METRICS) -> str:
    summary = summarize(runs)
    models = sorted(summary)
    lines = [
        "# Classification report",
        "",
        "Mean ± standard deviation over seeds (ddof=1); test = the held-out (future) split.",
        "",
    ]
    lines += ["| metric | " + " | ".join(models) + " |", "|---|" + "---|" * len(models)]
    for k in metrics:
        lines.append(f"| {k} | " + " | ".join(_fmt(summary[m].get(k, {})) for m in models) + " |")
    if pairs:
        lines += [
            "",
            "## Paired comparison over seeds",
            "",
            *paired_table_header("higher"),
        ]
        for pr in pairs:
            lines += paired_table_rows(pr, "higher")
            lines += ["", pr["verdict"], ""]
    return "\n".join(lines) + "\n"
