"""Each task owns its settings (memexp.tasks.base): the run config's `task` section is their union, the run key leaves
out the evaluation-only ones, a setting of another task is refused, and a checkpoint holds the settings whole.
The run's typed seams (memexp.runs.spec): the study section as a type, the result as a dataclass."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from helpers import QUIET, TINY_MODEL, compose_run, run_cli, run_in_process

from memexp.errors import ConfigError
from memexp.runs.keys import TASK_FIELDS_NOT_IN_KEY
from memexp.runs.spec import ContinualStudy, KnowledgeStudy, RunResult, study_from_section
from memexp.runs.studies import StudySettings
from memexp.tasks import TASKS, TaskSettings, task_section_defaults
from memexp.tasks.classification import ClassificationTask
from memexp.tasks.dialogue import DialogueTask
from memexp.tasks.settings import CausalLMSettings, ClassificationSettings, DialogueSettings


def test_the_task_section_is_every_tasks_settings_with_their_defaults(tmp_path):
    cfg = compose_run([], tmp_path)
    section = dict(cfg.task)
    expected = {}
    for task in TASKS.values():
        expected |= {f.name: f.default for f in dataclasses.fields(task.Settings)}
    assert section == expected == task_section_defaults()
    assert set(section) == {
        "carry_state",
        "label_smoothing",
        "answer_readout",
        "stop_at_acc",
        "max_eval_generate_batches",
        "early_stop",
        "test_ckpt",
        "compile",
    }


def test_the_run_key_leaves_out_the_fields_a_task_marks_evaluation_only():
    marked = {
        f.name
        for cls in (TaskSettings, CausalLMSettings, DialogueSettings, ClassificationSettings)
        for f in dataclasses.fields(cls)
        if f.metadata.get("in_key") is False
    }
    assert (
        marked
        == TASK_FIELDS_NOT_IN_KEY
        == {"answer_readout", "stop_at_acc", "max_eval_generate_batches", "early_stop", "test_ckpt", "compile"}
    )


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (lambda: TaskSettings(test_ckpt="first"), "task.test_ckpt='first': expected 'best' or 'last'"),
        (lambda: CausalLMSettings(carry_state="yes"), "task.carry_state='yes': expected auto, true or false"),
        (lambda: CausalLMSettings(answer_readout="some"), "task.answer_readout='some': expected auto, true or false"),
        (lambda: CausalLMSettings(stop_at_acc=0), "task.stop_at_acc=0: expected null or a number in (0, 1]"),
        (lambda: DialogueSettings(max_eval_generate_batches=-1), "task.max_eval_generate_batches=-1 must be >= 0"),
        (lambda: ClassificationSettings(early_stop=-2), "task.early_stop=-2 must be >= 0"),
    ],
)
def test_each_setting_is_checked_where_it_is_declared(settings, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        settings()


def test_a_setting_of_another_task_is_refused_unless_left_at_its_default():
    section = task_section_defaults()
    assert DialogueTask.settings_from(section) == DialogueSettings()
    with pytest.raises(ConfigError, match="task.early_stop=3 applies to classification runs only; this is a dialogue run"):
        DialogueTask.settings_from(section | {"early_stop": 3})
    with pytest.raises(ConfigError, match="task.carry_state=True applies to causal_lm runs only"):
        ClassificationTask.settings_from(section | {"carry_state": True})
    with pytest.raises(ConfigError, match="task.patience: no task has such a setting"):
        ClassificationTask.settings_from({"patience": 3})
    # a saved run's config is read leniently: its own fields, the rest left
    assert ClassificationTask.settings_from(section | {"early_stop": 2, "carry_state": True}, strict=False).early_stop == 2


def test_a_run_refuses_another_tasks_setting_before_training(tiny_text, tmp_path):
    with pytest.raises(ConfigError, match="task.early_stop=3 applies to classification runs only; this is a causal_lm run"):
        run_in_process(["data=text", f"data.path={tiny_text}", *TINY_MODEL, *QUIET, "task.early_stop=3"], tmp_path)
    assert not (tmp_path / "checkpoints").exists()


def test_the_checkpoint_holds_the_tasks_settings_whole(tiny_text, tmp_path):
    steps = ["trainer.max_steps=2", "trainer.val_check_interval=2", "trainer.limit_val_batches=1", "trainer.limit_test_batches=1"]
    result = run_in_process(["data=text", f"data.path={tiny_text}", *TINY_MODEL, *QUIET, *steps, "task.test_ckpt=last"], tmp_path)
    ck = torch.load(f"{result['ckpt_dir']}/last.ckpt", map_location="cpu", weights_only=True)
    assert ck["memexp"]["task_settings"] == {
        "test_ckpt": "last",
        "compile": False,
        "carry_state": False,
        "label_smoothing": 0.0,
        "answer_readout": "auto",
        "stop_at_acc": None,
    }


def test_the_study_section_becomes_one_typed_study():
    assert study_from_section(None) is None
    evaluations = study_from_section({"gaps": ["16", 32], "n_samples": 8})
    assert isinstance(evaluations, StudySettings) and list(evaluations.gaps) == [16, 32] and evaluations.driver == "train"
    continual = study_from_section({"kind": "continual", "tasks": ["A", "B"], "board": True, "lengths": [8, 16]})
    assert continual == ContinualStudy(tasks=["A", "B"], board=True) and continual.driver == "continual"
    knowledge = study_from_section({"kind": "knowledge", "edits": 10, "backbone": {"steps": 5}})
    assert knowledge == KnowledgeStudy(edits=10, backbone={"steps": 5}) and knowledge.driver == "knowledge"
    with pytest.raises(ConfigError, match="study.gapz: no study has such a setting"):
        study_from_section({"gapz": [1]})
    with pytest.raises(ConfigError, match="study.kind=compare: expected one of continual, knowledge"):
        study_from_section({"kind": "compare"})


def test_an_unknown_study_setting_stops_the_run_before_training(tiny_text, tmp_path):
    with pytest.raises(ConfigError, match="study.n_sample: no study has such a setting"):
        run_in_process(["data=text", f"data.path={tiny_text}", *TINY_MODEL, *QUIET, "+study.n_sample=3"], tmp_path)


def test_a_run_result_round_trips_through_its_json():
    result = RunResult(metrics={"val/loss": 1.5}, run_dir="r", names={"model": "m"}, ckpt_dir="c", threads=2)
    d = result.as_dict()
    assert "study" not in d and "result_file" not in d and d["sample"] is None and d["threads"] == 2
    assert RunResult.from_dict(d | {"unknown": 1}) == result


def test_a_setting_added_in_one_file_reaches_the_config_the_key_and_the_loss(tmp_path):
    from memexp.data.spec import DataSpec
    from memexp.models.transformer import Transformer
    from memexp.runs.train import run_key
    from memexp.tasks.causal_lm import CausalLMTask

    cfg = compose_run([], tmp_path)
    assert cfg.task.label_smoothing == 0.0  # in the config from its field alone
    plain = compose_run([], tmp_path)
    smoothed = compose_run(["task.label_smoothing=0.1"], tmp_path)
    from omegaconf import OmegaConf

    key = lambda c: run_key(OmegaConf.to_container(c, resolve=True))  # noqa: E731
    assert key(plain) != key(smoothed)  # it changes the weights: keyed away from its default
    torch.manual_seed(0)
    net = Transformer(11, dim=16, depth=1, heads=2, max_len=8)
    spec = DataSpec(task_kind="causal_lm", vocab_size=11, tokenizer=None)
    batch = {"input": torch.randint(0, 11, (2, 8)), "target": torch.randint(0, 11, (2, 8))}
    losses = [
        CausalLMTask(net, spec, settings=CausalLMSettings(carry_state=False, label_smoothing=ls)).training_step(batch, 0)
        for ls in (0.0, 0.1)
    ]
    assert not torch.isclose(losses[0], losses[1])
    with pytest.raises(ConfigError, match="task.label_smoothing=1.0: expected 0 <= label_smoothing < 1"):
        CausalLMSettings(label_smoothing=1.0)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("task.test_ckpt=worst", "error: task.test_ckpt='worst': expected 'best' or 'last'"),
        ("task.label_smoothing=2", "error: task.label_smoothing=2: expected 0 <= label_smoothing < 1"),
        ("+task.patience=3", "error: task.patience: no task has such a setting"),
        ("+study.gapz=3", "error: study.gapz: no study has such a setting"),
    ],
)
def test_a_bad_task_or_study_setting_is_the_only_line_a_run_prints(override, message, tmp_path):
    proc = run_cli("memexp.run", override, f"paths.output_dir={tmp_path}")
    assert proc.returncode == 2
    assert (proc.stdout + proc.stderr).strip() == message
