"""Memory studies: recall scoring, binned perplexity, continual metrics, meta-training, multirun -> report."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from helpers import QUIET, run_cli, run_in_process, wandb_bytes_with

from memexp.data.recall import RecallDataModule
from memexp.errors import ConfigError
from memexp.evals.binned_ppl import binned_perplexity
from memexp.evals.continual import continual_summary
from memexp.evals.recall import recall_at_gap

# ----------------------------------------------------------------------------- recall data and scoring


class BlindModel(torch.nn.Module):
    """Cannot see the key: the same logits everywhere (uniform over the values). A CausalLM (memexp.models.protocols)."""

    task_kind = "causal_lm"
    carries_state = False
    max_len = None

    def __init__(self, dm: RecallDataModule):
        super().__init__()
        self.dm = dm

    def forward(self, idx, state=None):
        logits = torch.full((*idx.shape, self.dm.tokenizer.vocab_size), -1e9)
        logits[..., self.dm.n_filler + self.dm.n_keys :] = 0.0
        return logits, None


class OracleModel(BlindModel):
    """Looks up the value stored after the last earlier occurrence of the current key."""

    def __init__(self, dm, max_len=None):
        super().__init__(dm)
        if max_len:
            self.max_len = max_len

    def forward(self, idx, state=None):
        logits, _ = super().forward(idx)
        F_, K = self.dm.n_filler, self.dm.n_keys
        for b in range(idx.shape[0]):
            row = idx[b].tolist()
            for t, tok in enumerate(row):
                if F_ <= tok < F_ + K:
                    earlier = [s for s in range(t) if row[s] == tok and s + 1 < t]
                    if earlier:
                        logits[b, t] = -1e9
                        logits[b, t, row[earlier[0] + 1]] = 0.0
        return logits, None


def test_recall_data_is_reproducible_and_targets_only_the_answers():
    dm = RecallDataModule(seq_len=40, gap=[4, 30], seed=3)
    a, b = dm.batch(8, generator=torch.Generator().manual_seed(1)), dm.batch(8, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a["input"], b["input"])
    assert ((a["target"] != -100).sum(1) == 1).all()  # one answer per needle sequence
    assert (a["target"][:, -1] >= dm.n_filler + dm.n_keys).all()  # the answer is a value
    mq = RecallDataModule(kind="multi_query", seq_len=40, gap=10, n_pairs=3, n_queries=2)
    assert ((mq.batch(4)["target"] != -100).sum(1) == 2).all()
    assert torch.equal(dm.train_dataloader().dataset[5]["input"], dm.train_dataloader().dataset[5]["input"])


def test_task_cue_sits_before_the_query_and_names_the_task():
    for t in range(3):
        dm = RecallDataModule(seq_len=40, gap=[4, 32], remap_values=True, task_cue=True, task_id=t)
        b = dm.batch(16, generator=torch.Generator().manual_seed(0))
        assert dm.spec.vocab_size == 16 + 8 + 8 + 3
        assert (b["input"][:, -2] == dm.cue).all() and dm.cue == 32 + t  # right before the query key
        assert dm.tokenizer.decode([dm.cue]).strip() == f"t{t}"
        assert (b["input"][:, :-2] < 32).all()  # no cue anywhere else
    with pytest.raises(ConfigError, match="data.task_id=3"):
        RecallDataModule(task_cue=True, task_id=3)


def test_disjoint_values_give_each_task_its_own_value_tokens():
    blocks = []
    for t in range(3):
        dm = RecallDataModule(seq_len=40, gap=[4, 32], remap_values=True, disjoint_values=True, task_id=t)
        b = dm.batch(64, generator=torch.Generator().manual_seed(0))
        assert dm.spec.vocab_size == 16 + 8 + 3 * 8
        values = b["input"][b["input"] >= 24]
        answers = b["target"][b["target"] >= 0]
        lo, hi = 24 + 8 * t, 24 + 8 * (t + 1)
        assert ((values >= lo) & (values < hi)).all() and ((answers >= lo) & (answers < hi)).all()
        blocks.append(dm.value_map)
    assert all(m is not None for m in blocks)  # every task, A included, answers through its own map
    assert not torch.equal(blocks[0], blocks[1])


@pytest.mark.parametrize("kind", ["needle", "multi_query"])
def test_blind_model_scores_chance_and_oracle_scores_one(kind):
    dm = RecallDataModule(kind=kind, seq_len=32, gap=8, n_pairs=3, n_queries=2)
    blind = recall_at_gap(BlindModel(dm), dm, gap=200, n_samples=64)
    assert blind["recall_prob"] == pytest.approx(1 / dm.n_values, abs=1e-6)
    oracle = recall_at_gap(OracleModel(dm), dm, gap=200, n_samples=64)
    assert oracle["recall_prob"] == pytest.approx(1.0) and oracle["accuracy"] == 1.0
    assert oracle["context"] == "full"


def test_bounded_context_sees_only_its_last_tokens():
    dm = RecallDataModule(seq_len=32, gap=8)
    within = recall_at_gap(OracleModel(dm, max_len=16), dm, gap=8, n_samples=64)
    beyond = recall_at_gap(OracleModel(dm, max_len=16), dm, gap=64, n_samples=64)
    assert within["accuracy"] == 1.0
    assert beyond["recall_prob"] == pytest.approx(1 / dm.n_values, abs=1e-6)
    assert beyond["context"] == "last 16 of 67 tokens (max_len)"


# ----------------------------------------------------------------------------- binned perplexity


def test_binned_perplexity_full_bin_matches_plain_evaluation(tiny_text):
    import lightning as L

    from memexp.data.text import TextDataModule
    from memexp.models.transformer import Transformer
    from memexp.tasks.causal_lm import CausalLMTask

    torch.manual_seed(0)
    dm = TextDataModule(path=str(tiny_text), seq_len=64, eval_batch_size=16)
    dm.setup()
    task = CausalLMTask(Transformer(dm.spec.vocab_size, dim=32, depth=1, heads=2, max_len=64), dm.spec)
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    plain = trainer.test(task, dataloaders=dm.test_dataloader(), verbose=False)[0]
    rows = binned_perplexity(task.net, dm.tokens("test"), [16, 32, 64])
    assert [r["lo"] for r in rows] == [0, 16, 32] and [r["hi"] for r in rows] == [16, 32, 64]
    assert rows[-1]["ppl_upto"] == pytest.approx(plain["test/ppl"], rel=1e-4)
    assert sum(r["tokens"] for r in rows) == len(dm.tokens("test")) - 1
    # the bins partition the tokens: their token-weighted NLL is the whole NLL
    nll = sum(r["nll"] * r["tokens"] for r in rows) / sum(r["tokens"] for r in rows)
    assert math.exp(nll) == pytest.approx(rows[-1]["ppl_upto"], rel=1e-6)
    # a model with a shorter context leaves the bins beyond it empty
    short = binned_perplexity(
        Transformer(dm.spec.vocab_size, dim=32, depth=1, heads=2, max_len=32), dm.tokens("test"), [16, 32, 64]
    )
    assert math.isnan(short[-1]["ppl"]) and "max_len=32" in short[-1]["note"]


# ----------------------------------------------------------------------------- continual metrics


def test_forgetting_and_backward_transfer_by_hand():
    acc = [[0.9, 0.1, 0.1], [0.6, 0.8, 0.2], [0.5, 0.4, 0.7]]
    s = continual_summary(acc)
    # forgetting: task A max(0.9, 0.6) - 0.5 = 0.4; task B 0.8 - 0.4 = 0.4 -> 0.4
    assert s["avg_forgetting"] == pytest.approx(0.4)
    # BWT: (0.5 - 0.9 + 0.4 - 0.8) / 2 = -0.4
    assert s["backward_transfer"] == pytest.approx(-0.4)
    assert s["avg_final_accuracy"] == pytest.approx((0.5 + 0.4 + 0.7) / 3)
    acc2 = [[0.5, 0.0], [0.7, 0.9]]  # positive backward transfer, no forgetting
    assert continual_summary(acc2) == pytest.approx({"avg_forgetting": -0.2, "backward_transfer": 0.2, "avg_final_accuracy": 0.8})


def _continual_run(model: str, seed: int, forget_a: float) -> dict:
    """A fake job whose only forgetting is on task A: best 0.9, final 0.9 - forget_a."""
    acc = [[0.9, 0.1], [0.9 - forget_a, 0.8]]
    loss = [[1.0, 3.0], [1.0 + forget_a, 1.5]]
    return {
        "names": {"model": model, "seed": seed},
        "study": {"continual": {"tasks": ["A", "B"], "accuracy": acc, "loss": loss, **continual_summary(acc, loss)}},
    }


def test_paired_forgetting_comparison_by_hand():
    from memexp.evals.aggregate import compare_continual, continual_markdown, summarize_continual

    # six seeds, "hope" forgets 0.01 less at every one (0.02 + s/100 vs 0.03 + s/100)
    runs = [_continual_run(m, s, base + s / 100) for s in range(6) for m, base in (("hope", 0.02), ("transformer", 0.03))]
    cont = summarize_continual(runs)
    (pair,) = compare_continual(cont)
    d = pair["metrics"]["avg_forgetting"]
    assert (pair["a"], pair["b"], d["n"], d["a_lower"]) == ("hope", "transformer", 6, 6)
    assert d["mean"] == pytest.approx(-0.01) and d["std"] == pytest.approx(0.0, abs=1e-12)
    assert d["sign_p"] == pytest.approx(2 / 64)  # all six one way: 2 * (1/2)^6
    assert pair["metrics"]["avg_loss_forgetting"]["mean"] == pytest.approx(-0.01)
    assert pair["verdict"].startswith("**hope** forgets less")
    assert "| hope vs transformer | avg_forgetting | -0.0100 ± 0.0000 | 6 of 6 seeds | 0.031 |" in continual_markdown(
        cont, [pair]
    )

    # three seeds all one way is still p = 0.25: reported as noise, with the seeds it would take
    (pair3,) = compare_continual(summarize_continual([r for r in runs if r["names"]["seed"] < 3]))
    assert pair3["metrics"]["avg_forgetting"]["sign_p"] == pytest.approx(0.25)
    assert pair3["verdict"].startswith("No difference beyond seed noise") and "run at least 6" in pair3["verdict"]

    # mixed signs: 4 of 6 lower -> p = 2 * (1 + 6 + 15) / 64
    mixed = [_continual_run("hope", s, 0.03 + (0.01 if s < 2 else -0.01)) for s in range(6)] + [
        _continual_run("transformer", s, 0.03) for s in range(6)
    ]
    (pm,) = compare_continual(summarize_continual(mixed))
    assert pm["metrics"]["avg_forgetting"]["a_lower"] == 4
    assert pm["metrics"]["avg_forgetting"]["sign_p"] == pytest.approx(44 / 64)

    # a diverged run (NaN forgetting at seed 0) drops that seed only; the others stay paired by seed
    nan_runs = [_continual_run("hope", 0, float("nan"))] + [r for r in mixed if r["names"] != {"model": "hope", "seed": 0}]
    (pn,) = compare_continual(summarize_continual(nan_runs))
    d = pn["metrics"]["avg_forgetting"]
    assert d["seeds"] == [1, 2, 3, 4, 5] and d["a_lower"] == 4 and d["a_higher"] == 1
    assert d["diffs"] == pytest.approx([0.01, -0.01, -0.01, -0.01, -0.01])


def test_continual_report_files_and_wandb_tables(tmp_path, monkeypatch):
    from memexp.runs.report import write_reports

    monkeypatch.setenv("WANDB_MODE", "offline")
    for s in range(2):
        for m, f in (("hope", 0.02), ("transformer", 0.05)):
            run = _continual_run(m, s, f) | {"metrics": {}}
            (tmp_path / f"{m}{s}").mkdir()
            (tmp_path / f"{m}{s}" / "metrics.json").write_text(json.dumps(run))
    written = write_reports(tmp_path, wandb_log=True)
    data = json.loads(Path(written["continual_metrics.json"]).read_text())
    assert set(data["models"]) == {"hope", "transformer"} and data["models"]["hope"]["seeds"] == [0, 1]
    assert data["comparisons"][0]["metrics"]["avg_forgetting"]["a_lower"] == 2
    assert "No difference beyond seed noise" in Path(written["continual_report.md"]).read_text()
    _assert_real_png(Path(written["continual_heatmap.png"]))
    (run_file,) = (tmp_path / "reports").rglob("offline-run-*/*.wandb")
    wanted = (b"report/continual_comparison", b"report/continual_heatmap", b"report/continual_accuracy")
    blob = wandb_bytes_with(run_file, wanted)
    assert all(w in blob for w in wanted), blob[:200]


def test_continual_run_fills_a_task_by_task_matrix(tmp_path):
    result = run_in_process(
        [
            "experiment=continual_abc",
            "model=transformer_tiny",
            "debug=fast",
            *QUIET,
            "trainer.max_steps=3",
            "data.test_size=32",
            "data.eval_batch_size=32",
        ],
        tmp_path,
    )
    c = result["study"]["continual"]
    assert c["tasks"] == ["A", "B", "C"]
    assert len(c["accuracy"]) == 3 and all(len(r) == 3 for r in c["accuracy"])
    assert len(c["loss"]) == 3 and all(0 <= a <= 1 for r in c["accuracy"] for a in r)
    assert c["avg_forgetting"] == pytest.approx(continual_summary(c["accuracy"])["avg_forgetting"])
    assert Path(result["run_dir"], "reports", "continual_heatmap.png").stat().st_size > 5000


def test_continual_text_trains_on_three_corpus_parts(tmp_path):
    result = run_in_process(
        [
            "experiment=continual_text",
            "model=hope_tiny",
            "debug=fast",
            *QUIET,
            "trainer.max_steps=2",
            "trainer.limit_test_batches=1",
        ],
        tmp_path,
    )
    c = result["study"]["continual"]
    loss = c["loss"]
    assert len(loss) == 3 and all(len(r) == 3 and all(math.isfinite(x) for x in r) for r in loss)
    assert loss[0][0] > loss[2][0]  # later stages keep training: task A's loss still falls (tiny budget)
    assert len({round(x, 6) for x in loss[0]}) == 3  # three different parts of the text


# ----------------------------------------------------------------------------- meta-training


def test_reptile_outer_loop_moves_weights_toward_the_adapted_ones():
    from types import SimpleNamespace

    from memexp.models.transformer import Transformer
    from memexp.tasks.causal_lm import CausalLMTask
    from memexp.tasks.meta import ReptileOuterLoop

    dm = RecallDataModule(seq_len=16, gap=4, val_size=8, eval_batch_size=8)
    trainer = SimpleNamespace(datamodule=dm, global_step=0)

    def run(outer_lr):
        torch.manual_seed(0)
        task = CausalLMTask(Transformer(dm.spec.vocab_size, dim=16, depth=1, heads=2, max_len=16), dm.spec)
        task.log = lambda *a, **k: None
        before = [p.detach().clone() for p in task.net.parameters()]
        ReptileOuterLoop(inner_steps=2, outer_lr=outer_lr, inner_lr=0.1).meta_update(trainer, task)
        return before, [p.detach().clone() for p in task.net.parameters()]

    before, full = run(1.0)
    _, half = run(0.5)
    moved = sum((a - b).abs().sum().item() for a, b in zip(full, before))
    assert moved > 0
    for b, f, h in zip(before, full, half):
        torch.testing.assert_close(h, b + 0.5 * (f - b))


# ----------------------------------------------------------------------------- multirun -> report


TINY_STUDY = [
    "debug=fast",
    "logger=csv",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "trainer.max_steps=4",
    "trainer.val_check_interval=4",
    "data.seq_len=24",
    "data.gap=[2,16]",
    "data.batch_size=8",
    "data.val_size=32",
    "data.test_size=32",
    "data.eval_batch_size=32",
    "study.n_samples=32",
    "study.gaps=[8,128]",
    "sample_tokens=0",
]


@pytest.fixture(scope="module")
def study_sweep(tmp_path_factory):
    out = tmp_path_factory.mktemp("study")
    proc = run_cli("memexp.run", "-m", "experiment=hope_vs_baseline", "seed=0,1", f"paths.output_dir={out}", *TINY_STUDY)
    assert proc.returncode == 0, proc.stderr[-3000:]
    sweeps = list((out / "multirun").glob("*/*"))
    assert len(sweeps) == 1
    return out, sweeps[0]


def test_multirun_over_two_seeds_aggregates_into_one_report(study_sweep):
    out, sweep = study_sweep
    proc = run_cli("memexp.report", f"paths.output_dir={out}")  # the newest multirun folder
    assert proc.returncode == 0, proc.stderr[-3000:]
    reports = sweep / "reports"
    metrics = json.loads((reports / "metrics.json").read_text())
    assert set(metrics["models"]) == {"hope_tiny", "transformer_tiny"}
    for m in metrics["models"].values():
        assert m["val/loss"]["n"] == 2 and m["recall_prob@128"]["n"] == 2
        assert m["val/loss"]["min"] <= m["val/loss"]["mean"] <= m["val/loss"]["max"]
    text = (reports / "experiment_report.md").read_text()
    assert "| val/top5 |" in text and "hope_tiny" in text and "recall_prob" in text
    assert "transformer_tiny: bounded context" in text and "Skipped" in text
    rows = (reports / "long_context.csv").read_text().splitlines()
    assert len(rows) == 1 + 2 * 2 * 2  # header + models x seeds x gaps
    for name in ("recall_curve.png", "compare_metrics.png"):
        _assert_real_png(reports / name)


def test_evaluate_recall_on_a_study_checkpoint(study_sweep, tmp_path):
    out, _ = study_sweep
    ckpt = next((out / "checkpoints" / "hope_vs_baseline").glob("transformer_tiny-*seed0*/last.ckpt"))
    proc = run_cli(
        "memexp.evaluate",
        f"ckpt={ckpt}",
        "eval=recall",
        "gaps=[8,128]",
        "n_samples=32",
        f"reports_dir={tmp_path}",
        f"paths.output_dir={tmp_path}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "recall_prob" in proc.stdout and "last 72 of 131 tokens (max_len)" in proc.stdout
    assert len((tmp_path / "long_context.csv").read_text().splitlines()) == 3


def _assert_real_png(path: Path):
    import matplotlib.image as mpimg

    assert path.stat().st_size > 10_000, path
    assert mpimg.imread(path).std() > 0.05  # not a blank canvas


def test_a_damaged_run_result_is_one_error_line_naming_the_file(tmp_path):
    """A sweep folder with one job's metrics.json cut short: the report names that file and line instead of leaving
    the job out (which would report one seed fewer without saying so)."""
    good = {"metrics": {"test/loss": 1.0}, "names": {"model": "lstm", "seed": 0, "experiment": "x", "data": "text"}}
    (tmp_path / "0").mkdir()
    (tmp_path / "0" / "metrics.json").write_text(json.dumps(good))
    (tmp_path / "1").mkdir()
    (tmp_path / "1" / "metrics.json").write_text('{\n  "metrics": {\n    "test/loss": 1.')
    proc = run_cli("memexp.report", f"dir={tmp_path}")
    assert proc.returncode == 2, proc.stderr[-2000:]
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("error: ") and f"{tmp_path / '1' / 'metrics.json'} line 3" in line, line
