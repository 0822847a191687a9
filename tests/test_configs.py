"""Every stored config instantiates; every experiment preset composes into a task that builds."""

import json
from pathlib import Path

import lightning as L
import pytest
import torch
from helpers import REPO, compose_run
from hydra_zen import instantiate, store

import memexp.configs
from memexp.runs.build import build_task
from memexp.tasks.optim import OptimizerSettings, build_optimizer, build_schedule

memexp.configs.register_all()


def entries(group):
    return sorted(name for (g, name) in store[group] if g == group)


def node(group, name):
    return store[group, name]


def test_groups_hold_what_the_design_lists():
    for group in ["model", "data", "optim", "trainer", "logger", "callbacks", "paths", "experiment", "debug"]:
        assert entries(group), group
    assert {"cpu", "gpu", "ddp", "fsdp", "cluster", "default"} <= set(entries("trainer"))
    assert {"csv", "wandb", "tensorboard", "many"} <= set(entries("logger"))
    assert {"fast", "overfit", "limit"} <= set(entries("debug"))


@pytest.mark.parametrize("name", entries("model"))
def test_model_configs_instantiate(name):
    net = instantiate(node("model", name))(vocab_size=32)
    assert sum(p.numel() for p in net.parameters()) > 0


@pytest.mark.parametrize("name", entries("data"))
def test_data_configs_instantiate(name, tiny_text, tiny_jsonl, data_dir, tmp_path):
    if name.startswith("lccc"):  # dialogue data: a source, not a path
        cfg = compose_run([f"data={name}", f"data.cache_dir={tmp_path}"], Path("/tmp"))
        dm = instantiate(cfg.data)(data_dir=str(data_dir))
        assert isinstance(dm, L.LightningDataModule) and dm.task_kind == "dialogue"
        if name == "lccc_full":  # LCCC-base is a multi-GB download: built here, never prepared
            assert dm.source is None and not dm.is_prepared()
        else:
            assert dm.spec.vocab_size > 0 and dm.spec.pad_id == 0
        return
    if name in ("endef", "endef_ch", "endef_en", "news_synthetic"):  # news: the spec needs only the vocabulary
        vocab = data_dir / "vocab" / "bert_chinese_vocab.txt"
        extra = {"endef": [f"data.root={tmp_path}"], "endef_en": [f"data.tokenizer={vocab}"]}.get(name, [])
        cfg = compose_run([f"data={name}", *extra], Path("/tmp"))
        dm = instantiate(cfg.data)(data_dir=str(data_dir), cache_dir=str(tmp_path))
        assert dm.task_kind == "classification" and dm.spec.vocab_size == 21128 and dm.spec.num_classes == 2
        return
    if name == "knowledge_qa":  # a generated world: its questions, tokenizer and bank
        cfg = compose_run(["model=explicit_lm", "data=knowledge_qa"], Path("/tmp"))
        dm = instantiate(cfg.data)(data_dir=str(tmp_path))
        assert dm.spec.memory.tokens.shape == (1024, 16) and dm.spec.memory.n_filled == 1024
        return
    path = {"shakespeare": "null", "jsonl": tiny_jsonl, "explicit_text": tiny_jsonl}.get(name, tiny_text)
    synthetic = name in ("recall", "mqar")  # generated data reads no file
    cfg = compose_run([f"data={name}"] + ([] if synthetic else [f"data.path={path}"]), Path("/tmp"))
    dm = instantiate(cfg.data)(data_dir=str(tmp_path if name == "explicit_text" else data_dir))  # its tokenizer cache
    assert isinstance(dm, L.LightningDataModule) and dm.spec.vocab_size > 0
    assert dm.spec.answer_positions == (name == "mqar")  # only MQAR labels a few answer positions per sequence


@pytest.mark.parametrize("name", entries("optim"))
def test_optim_configs_build(name):
    settings = instantiate(node("optim", name))
    assert isinstance(settings, OptimizerSettings)
    net = torch.nn.Linear(3, 3)
    opt = build_optimizer(net, settings)
    sched = build_schedule(opt, settings, total_steps=1000)
    lrs = []
    for _ in range(1000):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert max(lrs) == pytest.approx(settings.lr, rel=1e-2)
    if settings.schedule == "cosine":
        assert lrs[-1] == pytest.approx(settings.min_lr, rel=0.05)


@pytest.mark.parametrize("name", entries("trainer"))
def test_trainer_configs_instantiate(name, tmp_path):
    from memexp.runs.precision import with_precision

    partial = instantiate(node("trainer", name))
    if partial.keywords.get("accelerator") == "gpu" and not torch.cuda.is_available():
        assert partial.keywords["precision"] == "bf16-mixed"
        return
    partial, _ = with_precision(partial)  # as memexp.run does: `auto` resolved for this machine
    trainer = partial(default_root_dir=str(tmp_path), logger=False, devices=1)
    assert isinstance(trainer, L.Trainer)


@pytest.mark.parametrize("name", entries("logger"))
def test_logger_configs_instantiate(name, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    loggers = {k: v(save_dir=str(tmp_path)) for k, v in instantiate(node("logger", name)).items()}
    assert loggers and all(hasattr(lg, "log_metrics") for lg in loggers.values())


@pytest.mark.parametrize("name", entries("callbacks"))
def test_callback_configs_instantiate(name, tmp_path):
    for cb in instantiate(node("callbacks", name)).values():
        cb = cb(dirpath=str(tmp_path)) if not isinstance(cb, L.Callback) else cb
        assert isinstance(cb, L.Callback)


def yaml_presets():
    from memexp.configs.search import preset_dirs

    return sorted({p.stem for d in preset_dirs(REPO) for p in (d / "experiment").glob("*.yaml")})


@pytest.mark.parametrize("name", sorted(set(entries("experiment")) | set(yaml_presets())))
@pytest.mark.parametrize("debug", [None, "fast"])
def test_experiment_presets_compose_and_build(name, debug, data_dir, tmp_path):
    overrides = [f"experiment={name}"] + ([f"debug={debug}"] if debug else [])
    cfg = compose_run(overrides, tmp_path)
    assert cfg.experiment_name == name
    if debug == "fast":
        assert cfg.trainer.max_steps == 20
    extra = {"cache_dir": str(tmp_path / "cache")} if "cache_dir" in cfg.data else {}  # the shared data root is read-only
    root = data_dir
    if "knowledge_num" in cfg.data:  # ExplicitLM's data writes a world, a tokenizer or a bank cache: a writable root
        root = tmp_path
        if cfg.data._target_.endswith("ExplicitLMDataModule"):
            sft = tmp_path / "sft.jsonl"
            turns = [{"role": "user", "content": "hello there"}, {"role": "assistant", "content": "general kenobi"}]
            sft.write_text("\n".join(json.dumps({"conversations": turns}) for _ in range(3)) + "\n")
            extra |= {"path": str(sft), "eval_records": 1}
    dm = instantiate(cfg.data)(data_dir=str(root), **extra)
    task = build_task(instantiate(cfg.model), dm.spec, instantiate(cfg.optim), cfg.task)
    batch = next(iter(dm.train_dataloader()))
    assert task.training_step(batch, 0).isfinite()


def test_yaml_presets_are_on_the_search_path():
    assert "quick_byte" in yaml_presets()
    cfg = compose_run(["experiment=quick_byte"], Path("/tmp"))
    assert cfg.data.tokenizer == "byte"


def test_the_fsdp_preset_shards_with_bf16_on_gpus():
    trainer = node("trainer", "fsdp")
    assert (trainer.strategy, trainer.accelerator, trainer.precision, trainer.devices) == ("fsdp", "gpu", "bf16-mixed", 2)


def test_optimiser_steps_use_torchs_multi_tensor_kernels():
    """AdamW runs torch's fused kernel and SGD its foreach kernel (dense float parameters); a parameter without a
    gradient in a step (HOPE's gated continuum memory) does not stop either."""
    net = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Linear(3, 3))
    for name, flag in (("adamw", "fused"), ("sgd", "foreach")):
        opt = build_optimizer(net, OptimizerSettings(name=name))
        assert opt.defaults[flag] is True
        net.zero_grad(set_to_none=True)
        net[0](torch.randn(2, 3)).sum().backward()  # net[1] gets no gradient
        before = net[0].weight.detach().clone()
        opt.step()
        assert not torch.equal(before, net[0].weight)
