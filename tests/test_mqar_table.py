"""The MQAR study (experiment=mqar_zoology / mqar_cpu): the presets compose every model, width and cell as Zoology's
protocol says; the table picks each learning rate on validation accuracy and reports test accuracy over seeds beside
the published Figure-2 numbers; task.stop_at_acc ends a run at the first validation above it."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
from helpers import QUIET, REPO, compose_run, experiment_script, run_cli, run_in_process
from omegaconf import OmegaConf

from memexp.configs.mqar import MQAR_CELLS, MQAR_CPU_BUDGET, MQAR_LRS, MQAR_MODELS, MQAR_PRESETS, MQAR_WIDTHS
from memexp.evals.mqar import PUBLISHED_MODELS, mqar_markdown, mqar_rows, published


def test_the_learning_rate_grid_is_zoologys_logspace():
    import numpy as np

    np.testing.assert_allclose(MQAR_LRS, np.logspace(-4, -2, 4), rtol=5e-3)  # 3 significant digits: within 0.5%


@pytest.mark.parametrize("model", MQAR_MODELS)
def test_every_arm_composes_at_its_width_with_two_layers(model, tmp_path):
    for width in (64, 512):
        cfg = compose_run(["experiment=mqar_zoology", f"mqar={model}_{width}", "mqar_cell=128x8"], tmp_path)
        m = OmegaConf.to_container(cfg.model, resolve=True)
        assert m.get("dim", m.get("hidden_size")) == width
        assert m["depth"] == 2 and m.get("heads", 1) == 1
        if model == "transformer":
            assert m["max_len"] == 128  # the whole sequence in its window, as Zoology's attention


@pytest.mark.parametrize("cell", list(MQAR_CELLS))
def test_the_cells_carry_zoologys_data_and_budget(cell, tmp_path):
    seq_len, pairs, batch = MQAR_CELLS[cell]
    cfg = compose_run(["experiment=mqar_zoology", "mqar=lstm_64", f"mqar_cell={cell}"], tmp_path)
    d = cfg.data
    assert (d.seq_len, d.num_kv_pairs, d.vocab_size, d.batch_size) == (seq_len, pairs, 8192, batch)
    assert (d.num_examples, d.num_test_examples, d.power_a, d.random_non_queries) == (100_000, 3_000, 0.01, False)
    epoch = math.ceil(100_000 / batch)
    assert cfg.trainer.max_steps == 64 * epoch and cfg.trainer.val_check_interval == epoch  # 64 epochs, one check each
    assert cfg.task.stop_at_acc == 0.99 and cfg.optim.weight_decay == 0.1 and cfg.optim.warmup_steps == 0
    assert cfg.optim.min_lr == 0.0 and cfg.trainer.gradient_clip_val is None
    assert list(cfg.optim.betas) == [0.9, 0.999]  # Zoology builds torch's AdamW at its default betas


def test_the_cpu_preset_sweeps_two_cells_two_widths_and_the_grid(tmp_path):
    params = MQAR_PRESETS["mqar_cpu"]["hydra"]["sweeper"]["params"]
    assert params["mqar_cell"] == "cpu_64x4,cpu_128x8"
    assert sorted(params["mqar"].split(",")) == sorted(f"{m}_{w}" for m in MQAR_MODELS for w in (64, 128))
    assert [float(x) for x in params["optim.lr"].split(",")] == list(MQAR_LRS)
    cfg = compose_run(["experiment=mqar_cpu", "mqar=gated_deltanet_128", "mqar_cell=cpu_128x8"], tmp_path)
    epoch = math.ceil(100_000 / 512)  # Zoology's data and batch at (128, 8), fewer epochs, a validation each
    assert cfg.data.batch_size == 512 and cfg.data.num_examples == 100_000
    assert cfg.trainer.max_steps == MQAR_CPU_BUDGET["epochs"] * epoch and cfg.trainer.val_check_interval == epoch


def test_runs_at_two_budgets_are_two_rows_never_one(tmp_path):
    from memexp.evals.mqar import plot_mqar

    small = [{**_point(lr=lr, val=0.2, test=0.2), "budget": (64, 1000)} for lr in (1e-3, 1e-2)]
    rows = mqar_rows([_point(val=0.9, test=0.9), *small])
    assert sorted((r["budget"]["batch"], r["best_lr"], r["test_acc"]["mean"]) for r in rows) == [
        (64, 1e-3, 0.2),
        (512, 1e-3, 0.9),
    ]
    assert "| 64x4 | 64 | transformer | 64 x 1000 | 0.001 | 0.200 (n=1) |" in mqar_markdown(rows, published(), "s")
    assert plot_mqar(rows, published(), tmp_path / "f.png").stat().st_size > 1000


def test_the_published_numbers_cover_every_cell_model_and_width():
    pub = published()
    assert pub["widths"] == list(MQAR_WIDTHS) and "Figure 2" in pub["source"] and "approximate" in pub["how_read"]
    assert set(pub["cells"]) == set(MQAR_CELLS)
    for cell in pub["cells"].values():
        assert set(cell) == set(PUBLISHED_MODELS)
        assert all(len(v) == 4 and all(0 <= x <= 1 for x in v) for v in cell.values())
    assert all(x >= 0.98 for c in pub["cells"].values() for x in c["attention"])  # "about 0.98-1.0"


def _point(model="transformer", width=64, cell="64x4", lr=1e-3, seed=0, val=0.5, test=0.5):
    return dict(
        model=model,
        width=width,
        cell=cell,
        reassigned=0,
        budget=(512, 980),
        lr=lr,
        seed=seed,
        val_acc=val,
        test_acc=test,
        steps=100,
    )


def test_the_rate_is_chosen_on_validation_and_the_test_is_reported_over_its_seeds():
    points = [
        _point(lr=1e-4, val=0.2, test=0.99),  # the best *test* accuracy: never chosen on it
        _point(lr=1e-3, val=0.9, test=0.80),
        _point(lr=1e-2, val=0.9, test=0.70),  # a tie on validation: the smaller rate
        _point(lr=1e-3, seed=1, val=0.0, test=0.90),
        _point(lr=1e-3, seed=2, val=0.0, test=0.85),
        _point(lr=1e-4, seed=1, val=1.0, test=1.0),  # seeds other than 0 never choose the rate
        _point(model="lstm", lr=1e-2, val=float("nan"), test=0.1),
        _point(model="lstm", lr=1e-3, val=0.1, test=0.2),
    ]
    rows = {r["model"]: r for r in mqar_rows(points)}
    t = rows["transformer"]
    assert t["best_lr"] == 1e-3 and t["seeds"] == [0, 1, 2]
    assert t["test_acc"]["mean"] == pytest.approx(0.85) and t["test_acc"]["std"] == pytest.approx(0.05)
    assert t["grid_val_acc"] == {"0.0001": 0.2, "0.001": 0.9, "0.01": 0.9}
    assert rows["lstm"]["best_lr"] == 1e-3  # a NaN validation accuracy never wins
    md = mqar_markdown(mqar_rows(points), published(), "sweep")
    assert "| 64x4 | 64 | transformer | 512 x 980 | 0.001 | 0.850 ± 0.050 (n=3) |" in md
    assert "attention 1.00, hyena 0.51, rwkv 0.76, h3 0.93, base_conv 0.70" in md


def test_a_debug_sweep_writes_the_table_and_figure_beside_the_published_numbers(tmp_path):
    proc = run_cli(
        "memexp.run",
        "-m",
        "experiment=mqar_cpu",
        "debug=fast",
        "mqar=transformer_64,gated_deltanet_64",
        "mqar_cell=cpu_64x4",
        "optim.lr=0.01",
        "data.num_examples=256",
        "data.num_test_examples=64",
        "data.batch_size=32",
        "trainer.threads=1",
        *QUIET,
        f"paths.output_dir={tmp_path}",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    reports = tmp_path / "sweep" / "reports"
    table = json.loads((reports / "mqar_table.json").read_text())
    assert sorted((r["model"], r["width"], r["cell"]) for r in table["rows"]) == [
        ("gated_deltanet", 64, "64x4"),
        ("transformer", 64, "64x4"),
    ]
    assert all(r["test_acc"]["n"] == 1 and 0 <= r["test_acc"]["mean"] <= 1 for r in table["rows"])
    assert "attention 1.00" in (reports / "mqar_table.md").read_text()
    assert (reports / "mqar_figure2.png").stat().st_size > 1000


def test_stop_at_acc_ends_training_at_the_first_validation_above_it(tmp_path):
    tiny = ["model=gated_deltanet", "model.dim=32", "model.depth=1", "model.heads=1", "optim.lr=3e-3", "optim.warmup_steps=0"]
    data = ["data=mqar", "data.vocab_size=16", "data.seq_len=16", "data.num_kv_pairs=2", "data.num_examples=4096"]
    budget = ["trainer.max_steps=400", "trainer.val_check_interval=20", "data.num_test_examples=128"]
    result = run_in_process([*tiny, *data, *budget, "task.stop_at_acc=0.3", *QUIET], tmp_path)
    m = result["metrics"]
    assert m["global_step"] < 400 and m["global_step"] % 20 == 0  # stopped at a validation
    assert m["val/acc"] > 0.3  # the tested checkpoint is the best by validation accuracy: the one that stopped it
    # run again (an interrupted sweep rerun): the stopped run is tested again, never trained past its stop
    rerun = run_in_process([*tiny, *data, *budget, "task.stop_at_acc=0.3", *QUIET], tmp_path)
    again = rerun["metrics"]
    assert again["global_step"] == m["global_step"] and again["test/acc"] == m["test/acc"] and rerun["retested"] is True


def test_only_a_stop_at_the_threshold_counts_as_finished():
    """A checkpoint's EarlyStopping state says why it stopped: at `task.stop_at_acc`'s threshold the run is
    finished; a fit that trainer.max_time or a signal ended (no threshold reached) continues on a rerun."""
    from lightning.pytorch.callbacks import EarlyStopping
    from lightning.pytorch.callbacks.early_stopping import EarlyStoppingReason

    from memexp.runs.checkpoints import stopped_at_threshold

    stopper = EarlyStopping(monitor="val/acc", mode="max", stopping_threshold=0.5, patience=2**31 - 1)
    running = {"callbacks": {stopper.state_key: stopper.state_dict()}}
    assert not stopped_at_threshold(running) and not stopped_at_threshold({"callbacks": {}})
    stopper.stopping_reason = EarlyStoppingReason.STOPPING_THRESHOLD  # what its check sets when val/acc passes 0.5
    assert stopped_at_threshold({"callbacks": {stopper.state_key: stopper.state_dict()}})


def test_a_bad_stop_threshold_is_one_error_line():
    proc = run_cli("memexp.run", "data=mqar", "task.stop_at_acc=2", *QUIET)
    assert proc.returncode != 0
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert lines == ["error: task.stop_at_acc=2: expected null or a number in (0, 1]"], proc.stderr


def test_the_arm_bench_times_each_arm_and_prices_the_table(tmp_path):
    """experiments/bench_mqar_arms.py on one small arm: a step time per cell and the table's CPU-hours from them
    (each (arm, cell) priced as its grid of 4 rates plus 2 seeds, at the preset's steps per job)."""
    result = experiment_script("bench_mqar_arms").main(
        ["--arms", "lstm_64", "--steps", "1", "--out", str(tmp_path / "arms.json")]
    )
    assert [r["cell"] for r in result["rows"]] == ["cpu_64x4", "cpu_128x8"]
    for r in result["rows"]:
        epoch = math.ceil(100_000 / MQAR_CELLS[r["cell"].removeprefix("cpu_")][2])
        assert r["s_per_step"] > 0 and r["job_steps"] == MQAR_CPU_BUDGET["epochs"] * epoch
        assert r["cpu_s"] == pytest.approx(r["s_per_step"] * r["job_steps"] * 6)
    assert result["cpu_hours"] == pytest.approx(sum(r["cpu_s"] for r in result["rows"]) / 3600)
    assert json.loads((tmp_path / "arms.json").read_text())["preset"] == "mqar_cpu"


def test_the_drivers_bad_inputs_are_one_error_line(tmp_path, capsys):
    """experiments/mqar_zoology.py: a bad override is memexp.run's one `error:` line and its status (no second line
    from the driver suggesting a rerun); an --out that is a file, and the arm bench's unknown arm, are argparse's."""
    driver = REPO / "experiments" / "mqar_zoology.py"
    proc = subprocess.run(
        [sys.executable, str(driver), "--out", str(tmp_path / "o"), "mqar=bogus"], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 2
    errors = [ln for ln in proc.stderr.splitlines() if "error" in ln]
    assert len(errors) == 1 and errors[0].startswith("error: mqar=bogus: no such option"), proc.stderr
    a_file = tmp_path / "table.md"
    a_file.write_text("")
    with pytest.raises(SystemExit) as e:
        experiment_script("mqar_zoology").main(["--out", str(a_file)])
    assert e.value.code == 2 and f"--out {a_file} is a file" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        experiment_script("bench_mqar_arms").main(["--arms", "lstm_6"])
    assert e.value.code == 2 and "invalid choice: 'lstm_6'" in capsys.readouterr().err


def test_the_table_is_redrawn_from_saved_points_and_bad_point_files_are_one_error_line(tmp_path, capsys):
    """--table-from: two saved tables' points make one table and figure, the same rows as from the points together;
    a damaged file, a point without a field and a run given twice are each one `error:` line naming the file."""
    driver = experiment_script("mqar_zoology")
    first = [_point(lr=1e-3, val=0.9, test=0.8), _point(lr=1e-2, val=0.5, test=0.9)]
    second = [_point(lr=1e-3, seed=1, val=0.0, test=0.7), _point(model="lstm", lr=1e-2, val=0.1, test=0.2)]
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps({"points": first, "rows": []}))
    b.write_text(json.dumps({"points": second}))
    driver.main(["--table-from", str(a), str(b), "--out", str(tmp_path / "out")])
    table = json.loads((tmp_path / "out" / "mqar_table.json").read_text())
    assert table["rows"] == json.loads(json.dumps(mqar_rows(first + second)))
    t = next(r for r in table["rows"] if r["model"] == "transformer")
    assert t["best_lr"] == 1e-3 and t["seeds"] == [0, 1] and t["test_acc"]["mean"] == pytest.approx(0.75)
    assert (tmp_path / "out" / "mqar_figure2.png").stat().st_size > 1000
    capsys.readouterr()
    bad = tmp_path / "bad.json"
    for text, says in [
        ('{"points": [\n{"model": ', f"{bad}: line 2: not a JSON file"),
        (json.dumps({"points": [first[0], {k: v for k, v in first[1].items() if k != "seed"}]}), "points[1].seed: expected int"),
        (json.dumps({"rows": []}), 'no "points" list'),
    ]:
        bad.write_text(text)
        with pytest.raises(SystemExit) as e:
            driver.main(["--table-from", str(bad), "--out", str(tmp_path / "o2")])
        err = capsys.readouterr().err.strip().splitlines()
        assert e.value.code == 2 and len(err) == 1 and err[0].startswith("error: ") and says in err[0], err
    with pytest.raises(SystemExit) as e:
        driver.main(["--table-from", str(a), str(a), "--out", str(tmp_path / "o3")])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and f"is also in {a}" in err[0]
    assert not (tmp_path / "o2").exists() and not (tmp_path / "o3").exists()


def test_the_docs_figure_points_read_back_with_their_sources():
    """docs/mqar_points.json (behind docs/mqar_figure2.png): every point has its fields and a source, an unmeasured
    accuracy (null) reads as NaN and never chooses a rate, and each row has its 3 seeds at the chosen rate."""
    from memexp.evals.mqar import read_points

    points = read_points(REPO / "docs" / "mqar_points.json")
    assert points and all(isinstance(p.get("source"), str) and p["source"] for p in points)
    assert any(math.isnan(p["test_acc"]) for p in points)
    for row in mqar_rows(points):
        assert row["seeds"] == [0, 1, 2] and not math.isnan(row["test_acc"]["mean"]), row
