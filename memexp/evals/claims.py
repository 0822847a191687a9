"""The table of claims: each paper claim the suite tests, the suite's setting, the effect measured over seeds, the
paired test and a verdict, all read from the runs under one folder (`experiments/claims.py` runs them).

A claim compares two arms (two models, one setting against another, or two readings of one run) seed by seed: the
effect is the per-seed difference a - b (mean ± std over seeds), the test the exact two-sided sign test over the seeds
(`aggregate.paired_difference`; the paired t-test's p is shown beside it). The verdict follows one rule, fixed
before any run:

- **supported**: sign test p < 0.05 with the arms in the claimed order;
- **not supported**: p < 0.05 the other way, or p >= 0.05 over at least 6 seeds (no difference beyond seed noise);
- **inconclusive**: fewer than 6 paired seeds (the sign test cannot reach 0.05 below 6) or no runs yet.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from memexp.evals.aggregate import paired_difference, run_kind, run_setting, stats

MIN_SEEDS = 6
ALPHA = 0.05


@dataclass(frozen=True)
class Arm:
    """The runs of one side of a comparison, and the number each run gives."""

    label: str
    experiment: str
    value: Callable[[dict], float | None]
    model: str | None = None
    setting: tuple[str, object] | None = None  # (dotted config key, value): runs composed with it
    kind: str | None = None  # "text", "recall", "continual" or "mqar" (the leaderboard's columns)


@dataclass(frozen=True)
class Claim:
    claim: str
    source: str
    setting: str
    metric: str
    a: Arm
    b: Arm
    a_lower: bool  # the claim says a's number is below b's
    command: str
    also: tuple[tuple[str, Callable[[dict], float | None]], ...] = ()  # other numbers of both arms, shown, not tested


def _metric(key: str) -> Callable[[dict], float | None]:
    return lambda r: r["metrics"].get(key)


def _recall_at_largest_gap(r: dict) -> float | None:
    rows = (r.get("study") or {}).get("recall") or []
    return max(rows, key=lambda x: x["gap"])["recall_prob"] if rows else None


def _continual(key: str) -> Callable[[dict], float | None]:
    return lambda r: ((r.get("study") or {}).get("continual") or {}).get(key)


def _knowledge(*path: str) -> Callable[[dict], float | None]:
    def read(r: dict) -> float | None:
        v = (r.get("study") or {}).get("knowledge")
        for p in path:
            v = v.get(p) if isinstance(v, dict) else None
        return v

    return read


CLAIMS = [
    Claim(
        claim="HyperLSTM reaches lower bits per character than an LSTM of similar size",
        source="HyperNetworks (Ha et al., 2016)",
        setting="tiny-shakespeare, 0.99M vs 0.99M parameters, 2000 steps of 12 x 64 characters, state carried",
        metric="test bits/char",
        a=Arm("HyperLSTM", "leaderboard", _metric("test/bpc"), model="hyperlstm", kind="text"),
        b=Arm("LSTM", "leaderboard", _metric("test/bpc"), model="lstm", kind="text"),
        a_lower=True,
        command="python -m memexp.run -m experiment=leaderboard board=hyperlstm,lstm seed=0,1,2,3,4,5",
    ),
    Claim(
        claim="HOPE recalls far beyond its attention window",
        source="Titans / Nested Learning (Behrouz et al.)",
        setting="needle recall, HOPE's attention segment 16 tokens vs a transformer seeing 72, both ~30k parameters, "
        "600 steps; asked 256 tokens (16x the segment) after the pair",
        metric="recall_prob at gap 256",
        a=Arm("HOPE", "hope_vs_baseline", _recall_at_largest_gap, model="hope_tiny"),
        b=Arm("transformer", "hope_vs_baseline", _recall_at_largest_gap, model="transformer_tiny"),
        a_lower=False,
        command="python -m memexp.run -m experiment=hope_vs_baseline seed=0,1,2,3,4,5",
    ),
    Claim(
        claim="HOPE forgets less than a transformer when tasks arrive in sequence",
        source="Nested Learning (Behrouz et al., 2025)",
        setting="three consecutive parts of tiny-shakespeare (A -> B -> C), 300 steps each, the leaderboard's "
        "0.8M-parameter HOPE and transformer",
        metric="accuracy forgetting",
        a=Arm("HOPE", "leaderboard", _continual("avg_forgetting"), model="hope", kind="continual"),
        b=Arm("transformer", "leaderboard", _continual("avg_forgetting"), model="transformer", kind="continual"),
        a_lower=True,
        command="python -m memexp.run -m experiment=leaderboard board=hope_continual,transformer_continual seed=0,1,2,3,4,5",
    ),
    Claim(
        claim="HOPE reaches lower bits per character than Titans",
        source="Nested Learning (Behrouz et al., 2025)",
        setting="tiny-shakespeare at nanoGPT's CPU budget, the leaderboard's HOPE (0.8M) vs Titans MAG from the same "
        "block and neural memory without continuum memory levels or slot memory (0.83M)",
        metric="test bits/char",
        a=Arm("HOPE", "leaderboard", _metric("test/bpc"), model="hope", kind="text"),
        b=Arm("Titans", "leaderboard", _metric("test/bpc"), model="titans", kind="text"),
        a_lower=True,
        command="python -m memexp.run -m experiment=leaderboard board=hope,titans seed=0,1,2,3,4,5",
    ),
    Claim(
        claim="Gated DeltaNet recalls beyond a transformer's window",
        source="DeltaNet / Gated DeltaNet (Yang et al., 2024, 2025)",
        setting="needle recall at the leaderboard's budget, both trained on 64-token sequences; asked 1,024 tokens "
        "(16x the transformer's context) after the pair; Gated DeltaNet 0.81M, transformer 0.8M parameters",
        metric="recall_prob at gap 1024",
        a=Arm("Gated DeltaNet", "leaderboard", _recall_at_largest_gap, model="gated_deltanet", kind="recall"),
        b=Arm("transformer", "leaderboard", _recall_at_largest_gap, model="transformer", kind="recall"),
        a_lower=False,
        command="python -m memexp.run -m experiment=leaderboard board=gated_deltanet_recall,transformer_recall seed=0,1,2,3,4,5",
    ),
    Claim(
        claim="HOPE answers reassigned keys with the latest value more often than a transformer of equal size",
        source="Nested Learning (Behrouz et al., 2025); the task is Zoology's forgetting MQAR (Arora et al.)",
        setting="MQAR with 64 tokens and 4 key-value pairs, 2 of them given a new value later in the context, vocabulary "
        "8192; the leaderboard's HOPE and transformer networks, one budget (the CPU preset's: 5 epochs of 100,000 sequences in "
        "batches of 512, stopped at validation accuracy 0.99)",
        metric="test answer accuracy",
        a=Arm("HOPE", "leaderboard", _metric("test/acc"), model="hope", kind="mqar", setting=("data.num_reassigned", 2)),
        b=Arm(
            "transformer",
            "leaderboard",
            _metric("test/acc"),
            model="transformer",
            kind="mqar",
            setting=("data.num_reassigned", 2),
        ),
        a_lower=False,
        command="python -m memexp.run -m experiment=leaderboard board=hope_mqar_reassign,transformer_mqar_reassign "
        "seed=0,1,2,3,4,5",
    ),
    Claim(
        claim="An explicit token memory answers knowledge questions a frozen backbone cannot",
        source="ExplicitLM",
        setting="generated world of facts, frozen tiny Qwen3 pretrained on its sentences, questions about held-out "
        "subjects that validation (checkpoint choice) never asked; the same trained model with its bank full vs emptied",
        metric="held-out accuracy",
        a=Arm("full bank", "explicit_knowledge", _knowledge("full_bank", "accuracy")),
        b=Arm("empty bank", "explicit_knowledge", _knowledge("empty_bank", "accuracy")),
        a_lower=False,
        command="python experiments/explicit_knowledge.py --seeds 0 1 2 3 4 5",
    ),
    Claim(
        claim="The explicit memory follows edits of its entries",
        source="ExplicitLM",
        setting="100 bank entries of the test subjects (held out, never asked in validation) rewritten to a new "
        "object; questions asked again",
        metric="answers giving the new vs the old object",
        a=Arm("new object", "explicit_knowledge", _knowledge("edit", "follow_rate")),
        b=Arm("old object", "explicit_knowledge", _knowledge("edit", "old_answer_rate")),
        a_lower=False,
        command="python experiments/explicit_knowledge.py --seeds 0 1 2 3 4 5",
    ),
    Claim(
        claim="Entity debiasing generalises better to future news",
        source="ENDEF (Zhu et al., SIGIR 2022)",
        setting="generated news whose hot entity flips from real (2010-2017) to fake (2018, the test year); "
        "BiGRU 64-d, with vs without ENDEF's entity branch",
        metric="test macro F1",
        a=Arm("ENDEF", "endef_vs_bigru", _metric("test/macro_f1"), model="bigru_endef"),
        b=Arm("BiGRU", "endef_vs_bigru", _metric("test/macro_f1"), model="bigru"),
        a_lower=False,
        command="python experiments/endef_vs_bigru.py --shift strong",
    ),
    Claim(
        claim="Gated thinking steps give better replies than the same network held to one step",
        source="HGD-MemNet (the seed document's design)",
        setting="10,000-dialogue LCCC sample (last 1,000 held out), 300 steps, up to 4 thinking steps vs exactly 1",
        metric="test reply perplexity",
        a=Arm("up to 4 steps", "hgd_thinking", _metric("test/ppl"), setting=("model.max_think", 4)),
        b=Arm("1 step", "hgd_thinking", _metric("test/ppl"), setting=("model.max_think", 1)),
        a_lower=True,
        command="python -m memexp.run -m experiment=hgd_thinking",
        also=(
            ("BLEU-2", _metric("test/bleu2")),
            ("distinct-2", _metric("test/distinct2")),
            ("mean thinking steps", _metric("test/think_steps")),
        ),
    ),
]


def arm_values(runs: list[dict], arm: Arm) -> dict[int, float]:
    """seed -> the arm's number, from the newest matching run of each seed."""
    out: dict[int, tuple[float, float]] = {}
    for r in runs:
        names = r["names"]
        if names.get("experiment") != arm.experiment or (arm.model and names.get("model") != arm.model):
            continue
        if arm.kind and run_kind(r) != arm.kind:
            continue
        if arm.setting and run_setting(r, arm.setting[0]) != arm.setting[1]:
            continue
        v = arm.value(r)
        if not isinstance(v, (int, float)):
            continue
        mtime = (Path(r["path"]) / "metrics.json").stat().st_mtime if Path(r["path"]).is_dir() else 0.0
        seed = int(names["seed"])
        if seed not in out or mtime >= out[seed][0]:
            out[seed] = (mtime, float(v))
    return {s: v for s, (_, v) in sorted(out.items())}


def verdict(d: dict | None, a_lower: bool) -> str:
    if d is None or d["n"] < MIN_SEEDS:
        return "inconclusive"
    agree, against = (d["a_lower"], d["a_higher"]) if a_lower else (d["a_higher"], d["a_lower"])
    return "supported" if d["sign_p"] < ALPHA and agree > against else "not supported"


def claim_rows(runs: list[dict], claims: list[Claim] = CLAIMS) -> list[dict]:
    rows = []
    for c in claims:
        a, b = arm_values(runs, c.a), arm_values(runs, c.b)
        d = paired_difference(a, b) if a and b else None
        also = {
            name: [stats(list(arm_values(runs, replace(arm, value=fn)).values())) for arm in (c.a, c.b)] for name, fn in c.also
        }
        rows.append(
            {
                "claim": c.claim,
                "source": c.source,
                "setting": c.setting,
                "metric": c.metric,
                "a": c.a.label,
                "b": c.b.label,
                "a_stats": stats(list(a.values())),
                "b_stats": stats(list(b.values())),
                "difference": d,
                "claimed": f"{c.a.label} {'<' if c.a_lower else '>'} {c.b.label}",
                "a_lower_claimed": c.a_lower,
                "verdict": verdict(d, c.a_lower),
                "also": also,
                "command": c.command,
            }
        )
    return rows


def _num(v: float, like: float | None = None) -> str:
    """v with the decimals that suit `like` (default v itself): 4 below 0.1, 3 below 100, else 1."""
    m = abs(v if like is None else like)
    return f"{v:.4f}" if m < 0.1 else f"{v:.3f}" if m < 100 else f"{v:.1f}"


def claims_markdown(rows: list[dict], root: str) -> str:
    lines = [
        "| claim (source) | the suite's setting | measured: a vs b, mean ± std over seeds; a - b | test over seeds | verdict |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        d, sa, sb = r["difference"], r["a_stats"], r["b_stats"]
        if d is None:
            effect = f"no runs of both arms under `{root}` yet: `{r['command']}`"
            test = "-"
        else:
            effect = (
                f"{r['metric']}: {r['a']} {_num(sa['mean'])} ± {_num(sa['std'], sa['mean'])} vs {r['b']} "
                f"{_num(sb['mean'])} ± {_num(sb['std'], sb['mean'])}; difference {d['mean']:+.3g} ± {d['std']:.2g}"
            )
            for name, (x, y) in r["also"].items():
                if x["n"] and y["n"]:
                    effect += f"; {name} {_num(x['mean'])} vs {_num(y['mean'])}"
            t = f", paired t p = {d['t_p']:.3g}" if d["t_p"] is not None else ""
            test = (
                f"sign test, {r['claimed']} at {d['a_lower'] if r['a_lower_claimed'] else d['a_higher']} "
                f"of {d['n']} seeds: p = {d['sign_p']:.3g}{t}"
            )
        setting = f"{r['setting']} (`{r['command']}`)"
        lines.append(f"| {r['claim']} ({r['source']}) | {setting} | {effect} | {test} | **{r['verdict']}** |")
    lines += [
        "",
        "Verdicts: supported = sign test p < 0.05 in the claimed direction; not supported = p < 0.05 against it, or "
        "p >= 0.05 over at least 6 seeds; inconclusive = fewer than 6 paired seeds. Read from the runs under "
        f"`{root}` (`memexp.evals.claims`).",
    ]
    return "\n".join(lines) + "\n"


def write_claims(root: str | Path, out: str | Path | None = None) -> dict[str, Path]:
    """claims.md and claims.json of the runs under `root`, into `out` (default <root>/reports)."""
    from memexp.evals.aggregate import collect_runs
    from memexp.files import write_json, write_text

    out = Path(out) if out else Path(root) / "reports"
    rows = claim_rows(collect_runs(root))
    md = write_text(claims_markdown(rows, str(root)), out / "claims.md")
    return {"claims.md": md, "claims.json": write_json(rows, out / "claims.json")}
