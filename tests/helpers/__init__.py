"""What the tests share besides fixtures (those are in conftest.py): the repository and data folders, the tiny
model and run settings, running memexp in-process or as a command, and readers of what runs write."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def shared_data_dir() -> Path:
    """$MEMEXP_DATA_DIR, else the team's ../shared/data, else the repository's ./data."""
    env = os.environ.get("MEMEXP_DATA_DIR")
    if env:
        return Path(env).resolve()
    shared = (REPO.parent / "shared" / "data").resolve()
    return shared if shared.is_dir() else REPO / "data"


TINY_MODEL = ["model.dim=32", "model.depth=1", "model.heads=2", "model.max_len=32", "data.seq_len=32", "data.batch_size=8"]


# A tiny HOPE (one block, one 32-token segment), for the suite's runs of model=hope
HOPE_TINY = [
    "model=hope",
    "model.dim=32",
    "model.depth=1",
    "model.heads=2",
    "model.ff_mult=2",
    "model.max_len=32",
    "model.seq_len=32",
    "model.mem_write=16",
    "model.memory_capacity=8",
    "model.top_k=2",
    "data.seq_len=32",
    "data.batch_size=8",
]


# A tiny Titans (HOPE's block without CMS levels or slots; one 32-token segment), for the suite's runs of model=titans
TITANS_TINY = [
    "model=titans",
    "model.dim=32",
    "model.depth=1",
    "model.heads=2",
    "model.ff_mult=2",
    "model.max_len=32",
    "model.seq_len=32",
    "model.mem_write=16",
    "model.persistent_tokens=2",
    "data.seq_len=32",
    "data.batch_size=8",
]

QUIET = ["logger=csv", "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false", "sample_tokens=0"]


def compose_run(overrides: list[str], output_dir: Path):
    """Compose the memexp.run config as the command line would."""
    from memexp.configs.search import compose_config

    return compose_config("memexp_run", [f"paths.output_dir={output_dir}", *overrides])


def run_in_process(overrides: list[str], output_dir: Path) -> dict:
    from memexp.run import run_composed

    return run_composed(compose_run(overrides, output_dir))


CLI_OUTPUTS = Path(tempfile.mkdtemp(prefix="memexp-test-outputs-"))


def run_cli(
    module: str, *args: str, cwd: Path | None = None, env: dict | None = None, timeout: int = 300, input: str | None = None
):
    """Run `python -m <module> args...` (standard input: `input`, else none) and return the CompletedProcess (text).

    Its outputs (Hydra's run folders) go to a temporary folder unless the arguments name `paths.output_dir`, so
    the tests leave the checkout as they found it."""
    if cwd is None and not any(a.startswith("paths.output_dir=") for a in args):  # in the checkout: outputs elsewhere
        at = 1 if module.startswith("memexp.memory") and args else 0  # after the verb (or -h) memexp.memory wants first
        args = (*args[:at], f"paths.output_dir={CLI_OUTPUTS}", *args[at:])
    full_env = os.environ.copy() | {"MEMEXP_DATA_DIR": str(shared_data_dir()), "WANDB_MODE": "offline", "PYTHONUNBUFFERED": "1"}
    full_env |= env or {}
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd or REPO,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        input=input,
        stdin=None if input is not None else subprocess.DEVNULL,
    )


LCCC_TOY = shared_data_dir() / "lccc_toy" / "toy_data.json"


# A tiny HGD-MemNet on the whole LCCC toy sample: 30 steps, a validation every 10.
TINY_HGD = [
    "model=hgd",
    "data=lccc",
    "model.embedding_dim=32",
    "model.hidden_dim=64",
    "model.static_dim=32",
    "model.max_think=3",
    "model.dropout=0.0",
    "data.batch_size=16",
    "data.eval_batch_size=32",
    "data.max_context_len=48",
    "data.max_reply_len=16",
    "task.max_eval_generate_batches=1",
]


HGD_STEPS = [
    "trainer.max_steps=30",
    "trainer.val_check_interval=10",
    "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=2",
    "trainer.log_every_n_steps=5",
    "optim.lr=1e-2",
    "optim.warmup_steps=5",
    "optim.schedule=constant",
]


def experiment_script(name: str):
    """The module of `experiments/<name>.py` (the scripts are not a package), loaded to call its functions."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, REPO / "experiments" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def wandb_bytes_with(path, wanted: tuple[bytes, ...], timeout: float = 60.0) -> bytes:
    """An offline W&B run file's bytes once they hold every one of `wanted`, or after `timeout` seconds: wandb's core
    process may still be writing the file when run.finish() returns in-process (seen on a loaded machine)."""
    import time

    deadline = time.monotonic() + timeout
    while not all(w in (blob := Path(path).read_bytes()) for w in wanted) and time.monotonic() < deadline:
        time.sleep(0.5)
    return blob


def wandb_records(path):
    """The records of an offline W&B run file (`run-*.wandb`), as `wandb_internal_pb2.Record`s.

    wandb 0.31 keeps no Python reader of its own transaction log (the Go core writes it), so this reads
    the LevelDB-log framing itself: a 7-byte file header, then 32 KiB blocks of chunks, each with a
    7-byte header (crc32 4, length 2, type 1: full 1, first 2, middle 3, last 4)."""
    import struct

    from wandb.proto import wandb_internal_pb2 as pb

    data, block = open(path, "rb").read(), 32768
    assert data[:4] == b":W&B", f"{path}: not a W&B run file"
    pos, buf, out = 7, b"", []
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # a block's tail too short for a header is padding
            pos += left
            continue
        _, n, kind = struct.unpack("<IHB", data[pos : pos + 7])
        pos += 7
        buf += data[pos : pos + n]
        pos += n
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(buf)
            out.append(record)
            buf = b""
    return out


def recording_extractor():
    """The identity extractor (whole sentences as facts) that also keeps every text it was asked to extract from."""
    from memexp.memory.facts import IdentityExtractor

    class RecordingExtractor(IdentityExtractor):
        def __init__(self):
            super().__init__()
            self.texts: list[str] = []

        def extract(self, text: str) -> list[str]:
            self.texts.append(text)
            return super().extract(text)

    return RecordingExtractor()


def record_batches(monkeypatch, task_cls, key: str) -> list:
    """The training batches' `key` each run's task received, in order (one list per run: per task object)."""
    runs: list = []
    tasks: list = []
    step = task_cls.training_step

    def recording(self, batch, batch_idx):
        if not tasks or tasks[-1] is not self:
            tasks.append(self)
            runs.append([])
        runs[-1].append(batch[key].clone())
        return step(self, batch, batch_idx)

    monkeypatch.setattr(task_cls, "training_step", recording)
    return runs


def data_factory(name: str):
    """The data partial `data=<name>` composes to."""
    from hydra_zen import instantiate

    from memexp.configs.search import compose_config

    return instantiate(compose_config("memexp_run", [f"data={name}"]).data)


def check_names(result: dict, data: str, study: str | None = None) -> None:
    """Every metric the run logged is a name known before it started (training diagnostics, which depend on the
    model, aside), and every val/ and test/ name was logged."""
    from memexp.runs.build import metric_names

    known = set(metric_names(data_factory(data), study))
    logged = {k for k in result["metrics"] if not k.startswith(("train/", "lr-"))}
    assert logged <= known, sorted(logged - known)
    evals = {k for k in known if k.startswith(("val/", "test/", "knowledge/"))}
    assert evals <= logged, sorted(evals - logged)
