"""The table of claims (memexp.evals.claims): arms are read from run folders (metrics.json and the composed config),
paired by seed; the verdict follows the fixed rule; a changed number in a run changes the table."""

import json

import pytest
from omegaconf import OmegaConf

from memexp.evals.aggregate import collect_runs
from memexp.evals.claims import CLAIMS, claim_rows, claims_markdown, verdict, write_claims


def _run(root, sub, experiment, model, seed, metrics, study=None, config=None):
    d = root / sub
    d.mkdir(parents=True)
    names = {"experiment": experiment, "model": model, "data": "x", "seed": seed}
    (d / "metrics.json").write_text(json.dumps({"metrics": metrics, "names": names, "study": study}))
    if config is not None:
        (d / ".hydra").mkdir()
        OmegaConf.save(OmegaConf.create(config), d / ".hydra" / "config.yaml")


def _row(rows, start):
    return next(r for r in rows if r["claim"].startswith(start))


def test_verdict_rule():
    d = lambda lower, higher, p: {"n": lower + higher, "a_lower": lower, "a_higher": higher, "sign_p": p}  # noqa: E731
    assert verdict(d(6, 0, 0.031), a_lower=True) == "supported"
    assert verdict(d(6, 0, 0.031), a_lower=False) == "not supported"  # significant, the other way
    assert verdict(d(4, 2, 0.69), a_lower=True) == "not supported"  # 6 seeds, within seed noise
    assert verdict(d(5, 0, 0.0625), a_lower=True) == "inconclusive"  # 5 seeds cannot reach p < 0.05
    assert verdict(None, a_lower=True) == "inconclusive"


def test_rows_pair_the_arms_by_seed_and_follow_the_runs(tmp_path):
    for s in range(6):
        # HGD: the two arms differ only in a config value (model.max_think), read from the run's .hydra/config.yaml
        for think, ppl in ((4, 100.0 - s), (1, 110.0 + s)):
            _run(
                tmp_path, f"hgd/{s}-{think}", "hgd_thinking", "hgd", s, {"test/ppl": ppl}, config={"model": {"max_think": think}}
            )
        for model, f1 in (("bigru_endef", 0.6 + (0.01 if s else -0.2)), ("bigru", 0.5)):
            _run(tmp_path, f"endef/{s}-{model}", "endef_vs_bigru", model, s, {"test/macro_f1": f1})
    rows = claim_rows(collect_runs(tmp_path))
    hgd, endef = _row(rows, "Gated thinking"), _row(rows, "Entity debiasing")
    assert hgd["difference"]["n"] == 6 and hgd["difference"]["mean"] == pytest.approx(-15.0)
    assert hgd["verdict"] == "supported" and hgd["difference"]["sign_p"] == pytest.approx(0.03125)
    assert endef["difference"]["a_higher"] == 5 and endef["verdict"] == "not supported"  # 5 of 6: p = 0.22
    assert _row(rows, "HyperLSTM")["verdict"] == "inconclusive" and _row(rows, "HyperLSTM")["difference"] is None
    md = claims_markdown(rows, str(tmp_path))
    assert sum(ln.startswith("| ") for ln in md.splitlines()) == 1 + len(CLAIMS)  # the header and one row per claim
    assert "test reply perplexity: up to 4 steps 97.500" in md and "at 6 of 6 seeds: p = 0.0312" in md

    # a changed number in a run changes the table: seed 0's ENDEF run now above the BiGRU, 6 of 6
    path = tmp_path / "endef/0-bigru_endef/metrics.json"
    run = json.loads(path.read_text())
    run["metrics"]["test/macro_f1"] = 0.9
    path.write_text(json.dumps(run))
    written = write_claims(tmp_path)
    after = written["claims.md"].read_text()
    assert after != md and "ENDEF > BiGRU at 6 of 6 seeds" in after
    assert (
        json.loads(written["claims.json"].read_text())[CLAIMS.index(next(c for c in CLAIMS if c.source.startswith("ENDEF")))][
            "verdict"
        ]
        == "supported"
    )


def test_the_claims_driver_runs_every_claims_command(tmp_path):
    """experiments/claims.py runs, for each claim, a study whose command line holds the claim's own command (its
    module or script and every override): a claim added to the table without a study there fails here."""
    from helpers import experiment_script

    commands = [" ".join(argv) for argv in experiment_script("claims").studies(tmp_path).values()]
    for claim in CLAIMS:
        words = claim.command.split()[1:]  # without "python"
        if words[0] == "-m":  # a module: the overrides must all be on one study's command line
            assert any(all(w in cmd.split() for w in words) for cmd in commands), claim.command
        else:  # a script: the same script and seeds
            assert any(words[0].split("/")[-1] in cmd and all(w in cmd.split() for w in words[1:]) for cmd in commands), (
                claim.command
            )
