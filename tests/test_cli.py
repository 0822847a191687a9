"""The entry points as a user types them (subprocesses)."""

import json
from pathlib import Path

import pytest
import torch
from helpers import QUIET, TINY_MODEL, run_cli, wandb_records

RUN = ["debug=fast", *TINY_MODEL, *QUIET, "trainer.max_steps=8", "trainer.val_check_interval=4"]


@pytest.fixture(scope="module")
def trained(tiny_text, tmp_path_factory):
    out = tmp_path_factory.mktemp("cli")
    proc = run_cli(
        "memexp.run",
        "data=text",
        f"data.path={tiny_text}",
        f"paths.output_dir={out}",
        *RUN,
        "sample_tokens=20",
        "sample_prompt=ROMEO:",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    ckpts = list(Path(out, "checkpoints").rglob("last.ckpt"))
    assert len(ckpts) == 1
    return proc, ckpts[0]


def test_run_prints_metrics_and_sample_and_writes_files(trained):
    proc, ckpt = trained
    assert "test/loss" in proc.stdout and "ROMEO:" in proc.stdout
    run_dir = Path(proc.stdout.split("run folder: ")[1].split(" (metrics.json")[0])
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["metrics"]["global_step"] == 8
    assert (run_dir / "csv" / "metrics.csv").exists()
    saved = torch.load(ckpt, weights_only=True)
    assert saved["global_step"] == 8 and saved["memexp"]["tokenizer"]["name"] == "char"


def test_evaluate_writes_json(trained, tmp_path):
    _, ckpt = trained
    out = tmp_path / "eval.json"
    proc = run_cli("memexp.evaluate", f"ckpt={ckpt}", f"out={out}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["global_step"] == 8
    assert set(result["metrics"]) >= {"val/loss", "val/ppl", "val/bpc", "test/loss", "test/acc", "test/top5", "test/top10"}
    assert 1.0 < result["metrics"]["test/loss"] < 5.0


def test_evaluate_on_another_text_the_whole_file_with_unknown_characters(trained, tmp_path):
    _, ckpt = trained
    other = tmp_path / "other.txt"
    other.write_text("The quick brown fox jumps over the lazy dog; 42 times! ~ ~\n" * 40)  # '4', '2', '~' are not in it
    proc = run_cli("memexp.evaluate", f"ckpt={ckpt}", f"data_path={other}", "splits=[all]", f"out={tmp_path / 'e.json'}")
    assert proc.returncode == 2 and proc.stderr.count("error:") == 1, proc.stderr[-2000:]
    assert str(other) in proc.stderr and "data.unknown=skip" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_cli(
        "memexp.evaluate", f"ckpt={ckpt}", f"data_path={other}", "splits=[all]", "unknown=skip", f"out={tmp_path / 'e.json'}"
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads((tmp_path / "e.json").read_text())
    assert set(result["metrics"]) >= {"all/loss", "all/ppl", "all/acc"} and not any(
        k.startswith("test/") for k in result["metrics"]
    )
    text = other.read_text()
    unknown = sum(text.count(c) for c in "42~")
    assert result["skipped_chars"]["test"] == unknown == 40 * 4
    assert f"skipped {unknown} characters" in proc.stdout
    assert result["data_path"] == str(other)


def test_generate_continues_the_prompt(trained):
    _, ckpt = trained
    proc = run_cli("memexp.generate", f"ckpt={ckpt}", "prompt=KING:", "max_new_tokens=50", "seed=1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = proc.stdout.rstrip("\n")
    assert text.startswith("KING:") and len(text) == len("KING:") + 50
    again = run_cli("memexp.generate", f"ckpt={ckpt}", "prompt=KING:", "max_new_tokens=50", "seed=1")
    assert again.stdout == proc.stdout


def test_checkpoint_of_another_model_is_refused(trained):
    from memexp.configs.rebuild import load_checkpoint
    from memexp.errors import CheckpointError

    _, ckpt = trained
    with pytest.raises(CheckpointError, match=f"checkpoint {ckpt} holds a model=transformer model, not model=hope"):
        load_checkpoint(ckpt, expect_model="hope")


@pytest.mark.parametrize(
    "args, message",
    [
        (["memexp.evaluate", "ckpt=/no/such/last.ckpt"], "checkpoint /no/such/last.ckpt does not exist"),
        (["memexp.run", "data=text", "data.path=/no/such/file.txt", *RUN], "data file /no/such/file.txt does not exist"),
        (["memexp.run", *RUN, "model.dim=30", "model.heads=4"], "model.dim=30 must be divisible by model.heads=4"),
        (["memexp.run", *RUN, "model.max_len=16", "data.seq_len=32"], "data.seq_len=32 is longer than model.max_len=16"),
        (["memexp.run", *RUN, "model.dimm=3"], "model.dimm: no such setting among the model settings; did you mean model.dim?"),
    ],
)
def test_bad_input_gets_one_clear_error(args, message, tmp_path):
    proc = run_cli(*args[:1], *args[1:], f"paths.output_dir={tmp_path}" if args[0] == "memexp.run" else "paths.data_dir=data")
    assert proc.returncode != 0
    assert message in proc.stderr
    if "model.dimm=3" not in args:
        assert "Traceback" not in proc.stderr


def test_non_utf8_and_foreign_checkpoints(tmp_path):
    latin = tmp_path / "latin.txt"
    latin.write_bytes(b"abc\ndef caf\xe9\n" * 10)
    proc = run_cli("memexp.run", "data=text", f"data.path={latin}", f"paths.output_dir={tmp_path}", *RUN)
    assert proc.returncode == 2 and f"data file {latin} is not valid UTF-8: byte 11 (line 2)" in proc.stderr
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    proc = run_cli("memexp.evaluate", f"ckpt={foreign}")
    assert proc.returncode == 2 and "is not a memexp checkpoint" in proc.stderr


def test_all_loggers_write_offline(tiny_text, tmp_path):
    """logger=many: CSV, an offline W&B run (no login here) that is finished, and TensorBoard events."""
    args = [a for a in RUN if not a.startswith("logger=")]
    proc = run_cli(
        "memexp.run",
        "data=text",
        f"data.path={tiny_text}",
        f"paths.output_dir={tmp_path}",
        *args,
        "logger=many",
        "trainer.max_steps=4",
        "trainer.log_every_n_steps=1",
        "model.dim=48",
        "tags=[smoke,cpu]",
        env={"WANDB_MODE": "", "WANDB_API_KEY": "", "NETRC": str(tmp_path / "none")},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run_dir,) = tmp_path.glob("runs/*/*")
    (wandb_run,) = run_dir.glob("wandb/offline-run-*")
    assert list(wandb_run.glob("*.wandb"))
    assert list(run_dir.glob("tensorboard/events.out.tfevents.*"))
    assert "train/loss" in (run_dir / "csv" / "metrics.csv").read_text()
    # the composed config reaches every logger: CSV's hparams.yaml and the W&B run's config
    import yaml

    hparams = yaml.safe_load((run_dir / "csv" / "hparams.yaml").read_text())
    assert hparams["model"]["dim"] == 48 and hparams["optim"]["lr"] > 0
    assert hparams["run"]["choices"]["model"] == "transformer" and "model.dim=48" in hparams["run"]["overrides"]
    assert hparams["run"]["tags"] == ["smoke", "cpu"] and hparams["ckpt_dir"].startswith(str(tmp_path))
    records = wandb_records(next(wandb_run.glob("*.wandb")))
    (run,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert (run.display_name, run.run_group, run.job_type) == ("default/transformer-text-seed0", "default", "transformer")
    assert list(run.tags) == ["smoke", "cpu"]
    config = {
        i.key: json.loads(i.value_json) for r in records if r.WhichOneof("record_type") == "config" for i in r.config.update
    }
    assert config["model"]["dim"] == 48 and config["run"]["git_commit"] and config["ckpt_dir"] == hparams["ckpt_dir"]
    summary = {
        i.key: json.loads(i.value_json) for r in records if r.WhichOneof("record_type") == "summary" for i in r.summary.update
    }
    assert summary["params/trainable"] > 0 and summary["params/frozen"] == 0


def test_wandb_is_offline_without_login(tmp_path, monkeypatch):
    from memexp.runs.loggers import wandb_logged_in, wandb_logger

    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    assert not wandb_logged_in()
    assert wandb_logger(save_dir=str(tmp_path))._wandb_init["mode"] == "offline"
    (tmp_path / "netrc").write_text("machine api.wandb.ai\n  login user\n  password abc\n")
    assert wandb_logged_in()


def test_a_multirun_is_one_wandb_group(tiny_text, tmp_path):
    args = [a for a in RUN if not a.startswith("logger=")]
    proc = run_cli(
        "memexp.run",
        "-m",
        "data=text",
        f"data.path={tiny_text}",
        f"paths.output_dir={tmp_path}",
        *args,
        "logger=wandb",
        "trainer.max_steps=2",
        "seed=0,1",
        env={"WANDB_MODE": "", "WANDB_API_KEY": "", "NETRC": str(tmp_path / "none")},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = [
        r.run
        for path in sorted(tmp_path.glob("multirun/*/*/[0-9]*/wandb/offline-run-*/*.wandb"))
        for r in wandb_records(path)
        if r.WhichOneof("record_type") == "run"
    ]
    assert sorted(r.display_name for r in runs) == ["default/transformer-text-seed0", "default/transformer-text-seed1"]
    (group,) = {r.run_group for r in runs}
    assert group.startswith("default-") and group != "default"  # the sweep's own group, not every run of the experiment
    # the sweep reported itself when it ended, and its W&B report run joined the sweep's group
    (sweep,) = tmp_path.glob("multirun/*/*")
    report = json.loads((sweep / "reports" / "metrics.json").read_text())
    assert sorted(r["seed"] for r in report["runs"]) == [0, 1]
    text = (sweep / "reports" / "experiment_report.md").read_text()
    assert "compare_metrics.png" in text and "binned_ppl.png" not in text  # it lists only the files it wrote
    assert f"sweep report: {sweep / 'reports'}" in proc.stdout and "logged to W&B" in proc.stdout
    (report_run,) = [
        r.run for path in (sweep / "reports").glob("wandb/offline-run-*/*.wandb") for r in wandb_records(path) if r.run.ByteSize()
    ]
    assert (report_run.run_group, report_run.job_type) == (group, "report")


@pytest.mark.parametrize(("preset", "trials"), [("transformer_optuna", 3), ("hope_optuna", 2)])
def test_an_optuna_search_returns_its_best_trial(preset, trials, tiny_text, tmp_path):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    import yaml

    args = [a for a in RUN if not a.startswith(("model.dim", "trainer.max_steps", "trainer.val_check"))]
    proc = run_cli(
        "memexp.run",
        "-m",
        f"hparams_search={preset}",
        f"hydra.sweeper.n_trials={trials}",
        "data=text",
        f"data.path={tiny_text}",
        f"paths.output_dir={tmp_path}",
        *args,
        "trainer.max_steps=4",
        "trainer.val_check_interval=4",
        *(["model.seq_len=32", "model.depth=1"] if preset.startswith("hope") else []),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (sweep,) = tmp_path.glob("multirun/*/*")
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    trials_val = {json.loads(p.read_text())["metrics"]["val/loss"]: p.parent for p in sweep.glob("[0-9]*/metrics.json")}
    assert len(trials_val) == trials and best["best_value"] == pytest.approx(min(trials_val))
    chosen = yaml.safe_load((trials_val[min(trials_val)] / ".hydra" / "overrides.yaml").read_text())
    assert f"model.dim={best['best_params']['model.dim']}" in chosen  # the best trial's own settings


def test_a_sweep_runs_through_the_local_submitit_launcher(tiny_text, tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    proc = run_cli(
        "memexp.run",
        "-m",
        "launcher=local",
        "seed=0,1",
        "data=text",
        f"data.path={tiny_text}",
        f"paths.output_dir={tmp_path}",
        *RUN,
        "trainer.max_steps=4",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (sweep,) = tmp_path.glob("multirun/*/*")
    runs = [json.loads(p.read_text()) for p in sorted(sweep.glob("[0-9]/metrics.json"))]
    assert [r["names"]["seed"] for r in runs] == [0, 1] and all(r["metrics"]["global_step"] == 4 for r in runs)
    assert list(sweep.glob(".submitit/*/*_result.pkl"))  # each job went through submitit's executor
    assert (sweep / "reports" / "experiment_report.md").exists()


def test_the_slurm_launcher_follows_the_trainer():
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    proc = run_cli(
        "memexp.run", "launcher=slurm", "trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2", "--cfg", "all", "--resolve"
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    import yaml

    launcher = yaml.safe_load(proc.stdout)["hydra"]["launcher"]
    assert launcher["_target_"].endswith("SlurmLauncher")
    assert (launcher["gpus_per_node"], launcher["tasks_per_node"], launcher["nodes"]) == (4, 4, 2)
    # requeue on time-out or preemption: the job script asks SLURM for the signal SaveOnStop waits for
    assert launcher["max_num_timeout"] >= 1
    from submitit.slurm.slurm import _make_sbatch_string

    from memexp.runs.signals import preemption_signal

    script = _make_sbatch_string(command="x", folder="/tmp/f", signal_delay_s=launcher["signal_delay_s"])
    assert f"#SBATCH --signal={preemption_signal().name.removeprefix('SIG')}@{launcher['signal_delay_s']}" in script


@pytest.mark.parametrize(
    "args,line",
    [
        (["model.dimm=3"], "error: model.dimm: no such setting among the model settings; did you mean model.dim?"),
        (["model=transformr"], "error: model=transformr: no such option; did you mean transformer?"),
        (["trainer.max_steps=abc"], "error: trainer.max_steps=abc: expected an integer"),
        (["model.dim=[1"], "error: model.dim=[1: not a valid override"),
        (["-m", "seed=0,1", "model.heads=x,2"], "error: model.heads=x: expected an integer"),
        (["debug=fastt"], "error: debug=fastt: no such option; did you mean fast?"),
        (["experiment=hope_vs_basline"], "did you mean hope_vs_baseline?"),
    ],
)
def test_hydra_composition_errors_are_one_line_naming_the_override(args, line, tmp_path):
    proc = run_cli("memexp.run", *args, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert line in proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
