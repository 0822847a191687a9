"""Mixed precision: the GPU preset's path (bf16 autocast with gradient clipping and the fused AdamW step) trains,
resumes and evaluates every model on the CPU; `trainer.precision=auto` (trainer=cpu_bf16) picks bf16 only where the
CPU computes it natively; a precision or accelerator that cannot run is one `error:` line."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch
from helpers import HOPE_TINY, QUIET, TINY_HGD, TINY_MODEL, TITANS_TINY, run_cli, run_in_process

from memexp.errors import ConfigError
from memexp.runs import precision as P

# ----------------------------------------------------------------------------- the plan


def test_auto_is_bf16_only_where_the_cpu_computes_it_natively(monkeypatch):
    monkeypatch.setattr(P.platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    zen4 = {"avx2", "avx512f", "avx512_bf16"}
    sapphire_rapids = {"avx2", "avx512f", "amx_bf16", "amx_tile"}
    for flags in (zen4, sapphire_rapids):
        precision, why = P.plan_precision("auto", "cpu", flags)
        assert precision == "bf16-mixed" and "natively" in why
    for flags in ({"avx2", "fma"}, {"avx2", "avx512f", "avx512bw"}):  # Zen 3; an AVX-512 Xeon without bf16
        precision, why = P.plan_precision("auto", "cpu", flags)
        assert precision == "32-true" and "no native bf16" in why
    monkeypatch.setattr(P.platform, "machine", lambda: "aarch64")
    assert P.plan_precision("auto", "cpu", {"asimd", "bf16"})[0] == "bf16-mixed"
    assert P.plan_precision("auto", "cpu", {"asimd"})[0] == "32-true"


def test_the_preset_resolves_auto_in_the_trainer_and_says_why(monkeypatch):
    import functools

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(P.platform, "machine", lambda: "x86_64")
    trainer = functools.partial(dict, accelerator="cpu", precision="auto", max_steps=3)
    resolved, line = P.with_precision(trainer, {"avx512_bf16"})
    assert resolved.keywords == {"accelerator": "cpu", "precision": "bf16-mixed", "max_steps": 3}
    assert line.startswith("precision: bf16-mixed (") and "avx512_bf16" in line
    resolved, line = P.with_precision(trainer, {"avx2"})
    assert resolved.keywords["precision"] == "32-true" and "no native bf16" in line


@pytest.mark.parametrize(
    "setting, expected",
    [
        (32, "32-true"),
        ("32", "32-true"),
        ("64", "64-true"),
        ("64-true", "64-true"),
        ("bf16", "bf16-mixed"),
        ("bf16-mixed", "bf16-mixed"),
    ],
)
def test_lightning_spellings_are_accepted(setting, expected, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert P.plan_precision(setting, "cpu", set())[0] == expected


@pytest.mark.parametrize(
    "setting, message",
    [
        ("bf16-true", "trainer.precision=bf16-true: not supported: it holds weights and optimiser state in bf16"),
        ("16-true", "trainer.precision=16-true: not supported"),
        (
            "16-mixed",
            "trainer.precision=16-mixed: fp16 autocast runs on CUDA GPUs only; on a CPU use trainer.precision=bf16-mixed",
        ),
        ("8", "trainer.precision=8: expected auto, 32-true, 64-true, bf16-mixed or 16-mixed"),
    ],
)
def test_a_precision_that_cannot_run_is_refused_with_the_reason(setting, message, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError) as e:
        P.plan_precision(setting, "cpu", set())
    assert str(e.value).startswith(message)


def test_bf16_on_a_cpu_without_it_runs_and_says_it_is_emulated(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(P.platform, "machine", lambda: "x86_64")
    assert "emulated" in P.plan_precision("bf16-mixed", "cpu", {"avx2"})[1]
    assert "emulated" not in P.plan_precision("bf16-mixed", "cpu", {"avx512_bf16"})[1]


def test_the_run_key_holds_a_precision_other_than_float32():
    from memexp.runs.train import run_key

    base = {"model": {"dim": 8}, "seed": 0, "trainer": {"precision": "32-true"}}
    assert run_key(base) == run_key(base | {"trainer": {"precision": 32}}) == run_key(base | {"trainer": {}})
    assert run_key(base | {"trainer": {"precision": "bf16-mixed"}}) != run_key(base)
    assert run_key(base | {"trainer": {"precision": "bf16"}}) == run_key(base | {"trainer": {"precision": "bf16-mixed"}})


def test_frozen_children_are_held_in_bf16_and_trained_ones_stay_float32():
    net = torch.nn.Module()
    net.backbone = torch.nn.Linear(4, 4).requires_grad_(False)
    net.memory = torch.nn.Linear(4, 4)
    net.partly = torch.nn.Sequential(torch.nn.Linear(4, 4).requires_grad_(False), torch.nn.Linear(4, 4))
    assert P.hold_frozen_in_bf16(net) == ["backbone"]
    assert net.backbone.weight.dtype == torch.bfloat16
    assert {p.dtype for p in [*net.memory.parameters(), *net.partly.parameters()]} == {torch.float32}


# ----------------------------------------------------------------------------- the optimiser and clipping


def test_clipping_bounds_the_gradient_before_the_fused_step_under_bf16(tmp_path):
    """Lightning's mixed-precision plugin refuses to clip for a fused optimiser; the tasks clip before the step."""
    import lightning as L

    from memexp.data.spec import DataSpec
    from memexp.models.transformer import Transformer
    from memexp.tasks.causal_lm import CausalLMTask

    torch.manual_seed(0)
    net = Transformer(vocab_size=11, dim=16, depth=1, heads=2, max_len=8)
    task = CausalLMTask(net, DataSpec(task_kind="causal_lm", vocab_size=11, tokenizer=None))
    norms = []

    class Record(L.Callback):
        def on_train_batch_end(self, trainer, module, *args):  # after the step: the gradients it took
            grads = [p.grad for p in module.parameters() if p.grad is not None]
            norms.append(float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))))
            optimizer = trainer.optimizers[0]
            assert isinstance(optimizer, torch.optim.AdamW) and optimizer.defaults["fused"]

    x = torch.randint(0, 11, (16, 9))
    batches = [{"input": x[i : i + 4, :-1], "target": x[i : i + 4, 1:]} for i in range(0, 16, 4)]
    trainer = L.Trainer(
        accelerator="cpu",
        precision="bf16-mixed",
        gradient_clip_val=1e-3,
        max_steps=4,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[Record()],
        default_root_dir=tmp_path,
    )
    trainer.fit(task, train_dataloaders=torch.utils.data.DataLoader(batches, batch_size=None))
    assert len(norms) == 4 and max(norms) <= 1e-3 * (1 + 1e-5)


def test_fp16s_scaled_gradients_get_the_foreach_step():
    from memexp.tasks.optim import OptimizerSettings, build_optimizer

    net = torch.nn.Linear(3, 3)
    assert build_optimizer(net, OptimizerSettings()).defaults["fused"]
    scaled = build_optimizer(net, OptimizerSettings(), scaled_gradients=True)
    assert scaled.defaults["foreach"] and not scaled.defaults["fused"]


# ----------------------------------------------------------------------------- every model under bf16-mixed

NEWS_SMALL = [
    "data=news_synthetic",
    "data.max_len=40",
    "data.entity_max_len=12",
    "data.batch_size=16",
    "model.embedding_size=16",
    "model.hidden_size=16",
    "model.mlp_dims=[16]",
    "model.dropout=0.0",
]
MODELS = {
    "transformer": ["model=transformer", "data=text", *TINY_MODEL],
    "hope": [*HOPE_TINY, "data=text"],
    "hyperlstm": [
        "model=hyperlstm",
        "data=text",
        "model.embedding_size=8",
        "model.hidden_size=24",
        "model.hyper_num_units=8",
        "model.hyper_embedding_size=4",
        "data.seq_len=16",
        "data.batch_size=4",
        "data.windows=stream",
    ],
    "lstm": [
        "model=lstm",
        "data=text",
        "model.embedding_size=16",
        "model.hidden_size=32",
        "data.seq_len=32",
        "data.batch_size=8",
    ],
    "titans": [*TITANS_TINY, "data=text"],
    "gated_deltanet": [
        "model=gated_deltanet",
        "data=text",
        "model.dim=32",
        "model.depth=1",
        "model.heads=2",
        "model.chunk_size=16",
        "data.seq_len=32",
        "data.batch_size=8",
        "data.windows=stream",
    ],
    "hgd": TINY_HGD,
    "bigru": ["model=bigru", *NEWS_SMALL],
    "bigru_endef": ["model=bigru_endef", *NEWS_SMALL, "model.entity_filters=4", "model.entity_mlp_dims=[8]"],
    "explicit_lm": [
        "model=explicit_lm",
        "model.knowledge_num=64",
        "model.knowledge_length=8",
        "model.knowledge_dim=16",
        "model.num_candidates=4",
        "model.fusion_dim=32",
        "model.query_hidden=32",
        "model.tiny_dim=32",
        "data=explicit_text",
        "data.seq_len=16",
        "data.batch_size=4",
        "data.eval_batch_size=8",
        "data.eval_records=2",
        "data.shuffle_buffer=8",
    ],
}
BF16 = [
    "trainer.precision=bf16-mixed",
    "trainer.gradient_clip_val=0.5",  # clipping on, as every preset has it
    "trainer.val_check_interval=8",
    "trainer.limit_val_batches=2",  # the test sees the whole test split, as evaluate does
    "trainer.log_every_n_steps=1",
    "task.test_ckpt=last",
    "optim.lr=1e-2",
    "optim.warmup_steps=0",
    "optim.schedule=constant",
    *QUIET,
]


@pytest.fixture(scope="module")
def model_data(tiny_text, tmp_path_factory) -> dict[str, list[str]]:
    """The data arguments each model needs besides its preset (a text file, the LCCC cache, a JSONL corpus)."""
    root = tmp_path_factory.mktemp("explicit")
    paragraphs = [p for p in tiny_text.read_text().split("\n\n") if p.strip()][:80]
    (root / "train.jsonl").write_text("\n".join(json.dumps({"text": p}) for p in paragraphs) + "\n")
    (root / "kb.json").write_text(json.dumps([{"sentence": p.splitlines()[0]} for p in paragraphs[:30]]))
    from memexp.data.knowledge_world import write_word_tokenizer

    # a word tokenizer of these paragraphs: a vocabulary of hundreds, not Qwen's 151,669 (emulated bf16 is slow)
    write_word_tokenizer(sorted({w for p in paragraphs for w in p.split()}), root / "words")
    explicit = [
        f"data.path={root / 'train.jsonl'}",
        f"data.knowledge_path={root / 'kb.json'}",
        f"data.data_dir={root}",
        f"data.tokenizer={root / 'words'}",
    ]
    news = [f"data.cache_dir={tmp_path_factory.mktemp('news')}"]
    return {
        "explicit_lm": explicit,
        "bigru": news,
        "bigru_endef": news,
    } | {m: [f"data.path={tiny_text}"] for m in ("transformer", "hope", "titans", "hyperlstm", "lstm", "gated_deltanet")}


def _train_losses(run_dir: str) -> list[float]:
    with open(f"{run_dir}/csv/metrics.csv") as f:
        return [float(r["train/loss"]) for r in csv.DictReader(f) if r.get("train/loss")]


@pytest.mark.parametrize("model", sorted(MODELS))
def test_every_model_trains_resumes_and_evaluates_under_bf16_mixed(model, model_data, tmp_path, request):
    from memexp.evaluate import evaluate_checkpoint

    torch.set_num_threads(1)
    data = [f"data.cache_dir={request.getfixturevalue('lccc_cache')}"] if model == "hgd" else model_data[model]
    args = [*MODELS[model], *data, *BF16]
    first = run_in_process([*args, "trainer.max_steps=16"], tmp_path / "a")
    losses = _train_losses(first["run_dir"])
    assert len(losses) == 16 and all(math.isfinite(v) for v in losses), losses
    assert sum(losses[-4:]) / 4 < sum(losses[:4]) / 4, losses  # it learns under autocast, clipping and the fused step
    ckpt = Path(first["ckpt_dir"]) / "last.ckpt"
    saved = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert saved["memexp"]["config"]["trainer"]["precision"] == "bf16-mixed"
    weights = {v.dtype for v in saved["state_dict"].values() if isinstance(v, torch.Tensor) and v.is_floating_point()}
    assert weights == {torch.float32}  # autocast's master weights stay float32

    # the same command with a longer budget resumes the bf16 checkpoint at its step
    second = run_in_process([*args, "trainer.max_steps=20", f"paths.checkpoint_root={tmp_path}/a/checkpoints"], tmp_path / "b")
    assert second["resumed_from_step"] == 16 and second["metrics"]["global_step"] == 20
    assert all(math.isfinite(v) for v in _train_losses(second["run_dir"]))

    # evaluate reads the run's precision from the checkpoint and reproduces its test loss
    again = evaluate_checkpoint(
        str(Path(second["ckpt_dir"]) / "last.ckpt"), ["test"], data_dir=None, out=str(tmp_path / "eval.json")
    )
    assert again["metrics"]["test/loss"] == pytest.approx(second["metrics"]["test/loss"], rel=1e-3)


# ----------------------------------------------------------------------------- one line, no traceback


def test_the_gpu_preset_without_a_gpu_is_one_error_line(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is visible")
    for preset in ("gpu", "fsdp"):
        proc = run_cli("memexp.run", f"trainer={preset}", "debug=fast", f"paths.output_dir={tmp_path}")
        assert proc.returncode == 2, proc.stderr[-2000:]
        assert "Traceback" not in proc.stderr
        last = proc.stderr.strip().splitlines()[-1]
        assert last.startswith("error: trainer.accelerator=gpu: no CUDA device is visible (this torch (")
        assert "CPU-only build" in last


@pytest.mark.parametrize("setting", ["bf16-true", "16-mixed"])
def test_an_unsupported_precision_on_the_command_line_is_one_error_line(setting, tmp_path):
    proc = run_cli("memexp.run", f"trainer.precision={setting}", "debug=fast", f"paths.output_dir={tmp_path}")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1].startswith(f"error: trainer.precision={setting}: ")


@pytest.mark.parametrize("model", sorted(MODELS))
def test_every_model_trains_in_float64(model, model_data, tmp_path, request):
    """trainer.precision=64 (Lightning's double precision) is a trained run for every model, not a dtype clash."""
    torch.set_num_threads(1)
    data = [f"data.cache_dir={request.getfixturevalue('lccc_cache')}"] if model == "hgd" else model_data[model]
    args = [a for a in BF16 if not a.startswith("trainer.precision")]
    result = run_in_process([*MODELS[model], *data, *args, "trainer.precision=64", "trainer.max_steps=3"], tmp_path)
    assert result["metrics"]["global_step"] == 3 and math.isfinite(result["metrics"]["test/loss"])


def test_the_cpu_bf16_preset_says_what_it_chose_in_the_start_line(tiny_text, tmp_path):
    args = ["trainer=cpu_bf16", "data=text", f"data.path={tiny_text}", *TINY_MODEL, *QUIET, "trainer.max_steps=4"]
    proc = run_cli(
        "memexp.run",
        *args,
        "trainer.val_check_interval=4",
        "trainer.limit_val_batches=1",
        "trainer.limit_test_batches=1",
        f"paths.output_dir={tmp_path}",
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    start = next(line for line in proc.stdout.splitlines() if line.startswith("threads: "))
    expected = "bf16-mixed" if P.native_bf16() else "32-true"
    assert f"; precision: {expected} (trainer.precision=auto: this CPU " in start
    saved = torch.load(next(tmp_path.glob("checkpoints/**/last.ckpt")), map_location="cpu", weights_only=True)
    assert saved["memexp"]["config"]["trainer"]["precision"] == expected  # the run records what ran, not "auto"


def test_fsdp_on_a_cpu_is_one_error_line(tmp_path):
    proc = run_cli("memexp.run", "trainer=fsdp", "trainer.accelerator=cpu", "debug=fast", f"paths.output_dir={tmp_path}")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert (
        proc.stderr.strip().splitlines()[-1].startswith("error: trainer.strategy=fsdp: Lightning's FSDP runs on CUDA GPUs only")
    )
