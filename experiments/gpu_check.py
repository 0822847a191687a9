"""GPU check: every model trains under the GPU preset (bf16 autocast, gradient clipping, fused AdamW), and its loss
agrees with a float32 CPU run of the same seed.

For each model, two runs of `memexp.run` at the same seed and steps: the float32 reference on the CPU
(`trainer=cpu trainer.precision=32-true`) and the checked run (`trainer=gpu` on CUDA; with `--device cpu` the same
precision path on the CPU, `trainer=cpu trainer.precision=bf16-mixed`, so that the script is exercised where no GPU
is). It prints, per model: both validation losses, their difference against the tolerance, training tokens/s (the
throughput monitor's, validation left out) and peak memory (CUDA: torch's peak allocation; CPU: the process's peak
RSS so far). It exits 1 when a model's loss is not finite or lies outside the tolerance.

Tolerance: |val loss (checked) - val loss (fp32)| <= max(--atol, --rtol x the fp32 loss). bf16 autocast rounds
each matmul's inputs to 8 bits of mantissa, so two runs drift apart step by step like two seeds of one model do
(not like two orderings of one sum): 0.05 nats or 3% by default, about the seed-to-seed spread of these small
models' losses at a few hundred steps.

    python experiments/gpu_check.py                      # on a CUDA machine: 300 steps per model
    python experiments/gpu_check.py --device cpu --steps 8 --models transformer,lstm   # the dry run (a test)

Data: tiny-shakespeare and the LCCC sample from $MEMEXP_DATA_DIR (else ./data, else ../shared/data); on a lent
GPU machine, `cp -r ../shared/data data` here first and carry `data`. The news and ExplicitLM data are generated.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# Each model at a size that trains a few hundred steps in about a minute on a GPU and on 16 CPU cores alike.
TEXT = ["data=text", "data.seq_len=64", "data.batch_size=16"]
MODELS: dict[str, list[str]] = {
    "transformer": ["model=transformer", *TEXT, "model.dim=64", "model.depth=2", "model.heads=4", "model.max_len=64"],
    "hope": [
        "model=hope",
        *TEXT,
        "model.dim=64",
        "model.depth=2",
        "model.heads=4",
        "model.max_len=64",
        "model.seq_len=64",
        "model.mem_write=16",
        "model.memory_capacity=16",
        "model.top_k=2",
    ],
    "titans": [
        "model=titans",
        *TEXT,
        "model.dim=64",
        "model.depth=2",
        "model.heads=4",
        "model.max_len=64",
        "model.seq_len=64",
        "model.mem_write=16",
    ],
    "gated_deltanet": ["model=gated_deltanet", *TEXT, "data.windows=stream", "model.dim=64", "model.depth=2", "model.heads=4"],
    "hyperlstm": [
        "model=hyperlstm",
        *TEXT,
        "data.windows=stream",
        "model.embedding_size=32",
        "model.hidden_size=128",
        "model.hyper_num_units=64",
    ],
    "lstm": ["model=lstm", *TEXT, "model.embedding_size=32", "model.hidden_size=128"],
    "hgd": [
        "model=hgd",
        "data=lccc",
        "model.embedding_dim=32",
        "model.hidden_dim=64",
        "model.static_dim=32",
        "model.max_think=3",
        "data.batch_size=16",
        "data.max_context_len=48",
        "data.max_reply_len=16",
        "task.max_eval_generate_batches=1",
    ],
    "bigru": ["model=bigru", "data=news_synthetic", "data.max_len=64", "model.embedding_size=64", "model.hidden_size=64"],
    "bigru_endef": [
        "model=bigru_endef",
        "data=news_synthetic",
        "data.max_len=64",
        "model.embedding_size=64",
        "model.hidden_size=64",
    ],
    "explicit_lm": [
        "model=explicit_lm",
        "model.knowledge_num=256",
        "model.knowledge_length=8",
        "model.tiny_dim=64",
        "data=explicit_text",
        "data.seq_len=32",
        "data.batch_size=8",
        "data.eval_records=16",
    ],
}


def data_dir() -> Path:
    for candidate in (os.environ.get("MEMEXP_DATA_DIR"), REPO / "data", REPO.parent / "shared" / "data"):
        if candidate and (Path(candidate) / "tinyshakespeare" / "input.txt").is_file():
            return Path(candidate).resolve()
    sys.exit(
        "error: tinyshakespeare/input.txt is in none of $MEMEXP_DATA_DIR, ./data, ../shared/data: copy the shared data folder to ./data"
    )


def generated_data(root: Path, text: Path) -> dict[str, list[str]]:
    """Per model, the data arguments besides its preset: the text file, ExplicitLM's JSONL and knowledge base."""
    paragraphs = [p for p in text.read_text().split("\n\n") if p.strip()][:400]
    (root / "train.jsonl").write_text("\n".join(json.dumps({"text": p}) for p in paragraphs) + "\n")
    (root / "kb.json").write_text(json.dumps([{"sentence": p.splitlines()[0]} for p in paragraphs[:100]]))
    explicit = [f"data.path={root / 'train.jsonl'}", f"data.knowledge_path={root / 'kb.json'}", f"data.data_dir={root}"]
    news = [f"data.cache_dir={root / 'news'}"]
    return {"explicit_lm": explicit, "bigru": news, "bigru_endef": news, "hgd": [f"data.cache_dir={root / 'lccc'}"]} | {
        m: [f"data.path={text}"] for m in ("transformer", "hope", "titans", "gated_deltanet", "hyperlstm", "lstm")
    }


def run_once(overrides: list[str], out: Path) -> dict:
    """One memexp.run in this process; its result dict."""
    from memexp.configs.search import compose_config
    from memexp.run import run_composed

    return run_composed(compose_config("memexp_run", [f"paths.output_dir={out}", *overrides]))


def tokens_per_s(run_dir: str) -> float | None:
    """Training tokens/s from the throughput monitor's running totals in the run's CSV (train/lengths: tokens,
    train/time: training seconds, validation left out), from the second logged step (the first warms up) to the last."""
    with open(Path(run_dir) / "csv" / "metrics.csv") as f:
        rows = [(float(r["train/lengths"]), float(r["train/time"])) for r in csv.DictReader(f) if r.get("train/time")]
    if len(rows) < 3:
        return None
    (n0, t0), (n1, t1) = rows[1], rows[-1]
    return (n1 - n0) / (t1 - t0)


def peak_memory_mb(device: str) -> float:
    import torch

    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def check(model: str, args: list[str], steps: int, device: str, out: Path, atol: float, rtol: float) -> dict:
    import torch

    common = [
        *args,
        f"trainer.max_steps={steps}",
        f"trainer.val_check_interval={steps}",
        "trainer.limit_val_batches=8",
        "trainer.limit_test_batches=8",
        f"trainer.log_every_n_steps={max(1, steps // 10)}",
        "trainer.gradient_clip_val=1.0",
        "task.test_ckpt=last",
        "seed=0",
        "logger=csv",
        "sample_tokens=0",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
    ]
    reference = run_once([*common, "trainer=cpu", "trainer.precision=32-true"], out / model / "fp32-cpu")
    checked_args = ["trainer=gpu"] if device == "cuda" else ["trainer=cpu", "trainer.precision=bf16-mixed"]
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    checked = run_once([*common, *checked_args], out / model / f"bf16-{device}")
    wall = time.perf_counter() - t
    ref_loss, loss = reference["metrics"]["val/loss"], checked["metrics"]["val/loss"]
    tol = max(atol, rtol * abs(ref_loss))
    return {
        "model": model,
        "steps": steps,
        "fp32_cpu_val_loss": ref_loss,
        "bf16_val_loss": loss,
        "diff": loss - ref_loss,
        "tolerance": tol,
        "ok": math.isfinite(loss) and abs(loss - ref_loss) <= tol,
        "tokens_per_s": tokens_per_s(checked["run_dir"]),
        "peak_memory_mb": peak_memory_mb(device),
        "wall_s": wall,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--models", default=",".join(MODELS), help="comma-separated, from: " + ", ".join(MODELS))
    ap.add_argument("--atol", type=float, default=0.05)
    ap.add_argument("--rtol", type=float, default=0.03)
    ap.add_argument("--out", type=Path, default=None, help="run folders and gpu_check.json (default: a temporary folder)")
    a = ap.parse_args(argv)
    import torch

    from memexp.runs.machine import describe, machine_line
    from memexp.runs.precision import native_bf16

    unknown = [m for m in a.models.split(",") if m not in MODELS]
    if unknown:
        print(f"error: --models: {', '.join(unknown)} not among {', '.join(MODELS)}", file=sys.stderr)
        return 2
    if a.device == "cuda" and not torch.cuda.is_available():
        print(
            f"error: --device cuda: no CUDA device is visible (torch {torch.__version__}); --device cpu runs the dry run",
            file=sys.stderr,
        )
        return 2
    os.environ.setdefault("MEMEXP_DATA_DIR", str(data_dir()))
    os.environ.setdefault("WANDB_MODE", "offline")
    out = a.out or Path(tempfile.mkdtemp(prefix="memexp-gpu-check-"))
    text = Path(os.environ["MEMEXP_DATA_DIR"]) / "tinyshakespeare" / "input.txt"
    (out / "data").mkdir(parents=True, exist_ok=True)
    data = generated_data(out / "data", text)
    print(machine_line(describe(peak=False)) + f"; native bf16: {', '.join(native_bf16()) or 'no'}")
    if a.device == "cuda":
        print(f"GPU: {torch.cuda.get_device_name()} (bf16: {torch.cuda.is_bf16_supported()})")
    rows = [check(m, [*MODELS[m], *data[m]], a.steps, a.device, out, a.atol, a.rtol) for m in a.models.split(",")]
    print(
        f"\n{'model':15s} {'steps':>5s} {'fp32 cpu':>9s} {'bf16':>9s} {'diff':>8s} {'tol':>6s} {'tokens/s':>10s} {'peak MB':>8s}  ok"
    )
    for r in rows:
        tps = f"{r['tokens_per_s']:.0f}" if r["tokens_per_s"] else "-"
        print(
            f"{r['model']:15s} {r['steps']:5d} {r['fp32_cpu_val_loss']:9.4f} {r['bf16_val_loss']:9.4f} {r['diff']:+8.4f} "
            f"{r['tolerance']:6.3f} {tps:>10s} {r['peak_memory_mb']:8.0f}  {'yes' if r['ok'] else 'NO'}"
        )
    (out / "gpu_check.json").write_text(json.dumps({"device": a.device, "rows": rows}, indent=1))
    print(f"written to {out / 'gpu_check.json'}")
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
