"""Numeric settings out of range stop before any work with one sentence naming the field and the range."""

import pytest
from helpers import run_cli
from omegaconf import OmegaConf

from memexp.configs.catalog import GROUPS
from memexp.configs.overrides import check_command_line
from memexp.configs.ranges import check_ranges
from memexp.configs.search import compose_config
from memexp.errors import ConfigError


def test_every_stored_option_and_app_is_in_range():
    for group in ("model", "data", "trainer", "optim", "callbacks", "experiment", "debug", "logger"):
        for option in GROUPS[group]:
            check_ranges(OmegaConf.to_container(compose_config("memexp_run", [f"{group}={option}"]), resolve=True))
    for app, args in {
        "memexp_evaluate": ["ckpt=x"],
        "memexp_generate": ["ckpt=x"],
        "memexp_chat": ["ckpt=x"],
        "memexp_memory": ["ckpt=x", "verb=show"],
        "memexp_report": [],
        "memexp_prepare": [],
    }.items():
        check_ranges(OmegaConf.to_container(compose_config(app, args), resolve=True))


@pytest.mark.parametrize(
    "app,args,message",
    [
        ("memexp_run", ["trainer.max_steps=-5"], "trainer.max_steps=-5: expected an integer >= 1 or -1"),
        ("memexp_run", ["trainer.max_steps=0"], "trainer.max_steps=0: expected an integer >= 1 or -1"),
        ("memexp_run", ["optim.lr=-0.001"], "optim.lr=-0.001: expected a number > 0"),
        ("memexp_run", ["optim.lr=0"], "optim.lr=0: expected a number > 0"),
        ("memexp_run", ["optim.weight_decay=-1"], "optim.weight_decay=-1: expected a number >= 0"),
        ("memexp_run", ["optim.warmup_steps=-3"], "optim.warmup_steps=-3: expected an integer >= 0"),
        ("memexp_run", ["optim.betas=[0.9,1.5]"], "optim.betas.1=1.5: expected a number >= 0 and < 1"),
        ("memexp_run", ["model.heads=0"], "model.heads=0: expected an integer >= 1"),
        ("memexp_run", ["model.depth=-1"], "model.depth=-1: expected an integer >= 1"),
        ("memexp_run", ["model.dropout=1.5"], "model.dropout=1.5: expected a number >= 0 and <= 1"),
        ("memexp_run", ["model=hope", "model.mem_write=0"], "model.mem_write=0: expected an integer >= 1"),
        ("memexp_run", ["model=hyperlstm", "model.dropout_keep_prob=1.1"], "model.dropout_keep_prob=1.1: expected a number >= 0"),
        ("memexp_run", ["data.seq_len=0"], "data.seq_len=0: expected an integer >= 1"),
        ("memexp_run", ["data.batch_size=-8"], "data.batch_size=-8: expected an integer >= 1"),
        ("memexp_run", ["data.num_workers=-1"], "data.num_workers=-1: expected an integer >= 0"),
        ("memexp_run", ["data=recall", "data.gap=[4,0]"], "data.gap.1=0: expected an integer >= 1"),
        ("memexp_run", ["data.splits=[0.9,0.2,-0.1]"], "data.splits.2=-0.1: expected a number >= 0 and <= 1"),
        ("memexp_run", ["trainer.accumulate_grad_batches=0"], "trainer.accumulate_grad_batches=0: expected an integer >= 1"),
        ("memexp_run", ["trainer.gradient_clip_val=-1"], "trainer.gradient_clip_val=-1: expected a number >= 0"),
        ("memexp_run", ["trainer.val_check_interval=0"], "trainer.val_check_interval=0: expected a number > 0"),
        ("memexp_run", ["callbacks=ema", "callbacks.ema.decay=1.2"], "callbacks.ema.decay=1.2"),
        ("memexp_run", ["seed=-1"], "seed=-1: expected an integer >= 0"),
        ("memexp_run", ["seed=x"], "seed=x: expected an integer >= 0"),
        ("memexp_run", ["sample_tokens=-1"], "sample_tokens=-1: expected an integer >= 0"),
        ("memexp_run", ["-m", "optim.lr=1e-3,3e-3", "seed=0,1,2"], None),
        ("memexp_run", ["-m", "optim.lr=1e-3,-1e-3", "seed=0,1"], "optim.lr=-0.001: expected a number > 0"),  # every value
        ("memexp_generate", ["ckpt=x", "temperature=-0.5"], "temperature=-0.5: expected a number >= 0"),
        ("memexp_generate", ["ckpt=x", "top_p=1.5"], "top_p=1.5: expected a number > 0 and <= 1"),
        ("memexp_generate", ["ckpt=x", "top_k=-2"], "top_k=-2: expected an integer >= 0"),
        ("memexp_generate", ["ckpt=x", "max_new_tokens=-1"], "max_new_tokens=-1: expected an integer >= 0"),
        ("memexp_chat", ["ckpt=x", "top_p=0"], "top_p=0: expected a number > 0 and <= 1"),
        ("memexp_chat", ["ckpt=x", "history=-1"], "history=-1: expected an integer >= 0"),
        ("memexp_chat", ["ckpt=x", "similarity_threshold=2"], "similarity_threshold=2: expected a number >= -1 and <= 1"),
        ("memexp_chat", ["ckpt=x", "fact_update_frequency=0"], "fact_update_frequency=0: expected an integer >= 1"),
        ("memexp_evaluate", ["ckpt=x", "eval=recall", "gaps=[16,-4]"], "gaps.1=-4: expected an integer >= 1"),
        ("memexp_memory", ["ckpt=x", "verb=search", "top=-1"], "top=-1: expected an integer >= 0"),
    ],
)
def test_out_of_range_settings_are_named_with_their_range(app, args, message):
    from memexp.configs.search import prepare_app

    prepare_app(app, "runs")
    if message is None:
        check_command_line(app, args)
        return
    with pytest.raises(ConfigError) as e:
        check_command_line(app, args)
    assert message in str(e.value)


def test_an_out_of_range_setting_on_the_command_line_is_one_error_line(tmp_path):
    proc = run_cli("memexp.run", "model.dropout=2", cwd=tmp_path, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr == "error: model.dropout=2: expected a number >= 0 and <= 1\n"


def test_sampling_refuses_a_negative_temperature_and_a_top_p_above_one():
    import torch

    from memexp.models.sampling import Sampling, sample_next

    logits = torch.randn(2, 10)
    # 0 is greedy on the command line, as documented
    assert torch.equal(sample_next(logits, Sampling.from_settings(temperature=0.0)), logits.argmax(-1))
    with pytest.raises(ConfigError, match=r"temperature=-0.5: expected temperature > 0"):
        Sampling.from_settings(temperature=-0.5)
    with pytest.raises(ConfigError, match=r"top_p=1.5: expected 0 < top_p <= 1"):
        Sampling.from_settings(temperature=1.0, top_p=1.5)


def test_chat_stdin_with_invalid_utf8_names_the_line():
    import io

    from memexp.chat import piped_lines
    from memexp.errors import DataError

    lines = piped_lines(io.BytesIO("你好\n".encode() + b"caf\xe9\n" + b"ok\n"))
    assert next(lines) == "你好\n"
    with pytest.raises(DataError, match=r"standard input, line 2: not valid UTF-8 \(byte 3 is b'\\xe9'\)"):
        next(lines)
