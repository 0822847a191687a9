"""Where a tiny run's time goes: `python -m memexp.run debug=fast` against a plain script doing the same work.

    python experiments/bench_startup.py [--rounds 3] [--out outputs/bench/startup.json]

Per round, alternately:
- `memexp`: `python -m memexp.run debug=fast fresh=true` (the default transformer on tiny-shakespeare: 20 steps,
  validation every 10 on 2 batches, test on 2 batches, checkpoints, CSV and offline W&B logs, a 200-character
  sample), whole-process wall time;
- `plain`: one Python process that imports torch and wandb, reads tiny-shakespeare, builds the same transformer
  (memexp.models.transformer.Transformer, default size) and AdamW, trains the same 20 steps of the same batch shape,
  validates twice and tests on 2 batches, saves a checkpoint twice, logs to an offline W&B run, samples 200
  characters: what the run does, without Lightning, Hydra or the suite;
- `phases`: the memexp run once more in one process with its phases timed (imports, composition, W&B start and
  finish, data, model, fit, test, sample): the breakdown.
Targets (issue 16): memexp's wall <= 15 s and <= 2x the plain script's (medians). One thread per process
when `--threads 1` (default: the run's own choice, trainer.threads=auto).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

PLAIN = r"""
import time, sys, os
t0 = time.perf_counter()
import torch, torch.nn.functional as F
import wandb
from memexp.models.transformer import Transformer
data_dir = os.environ["MEMEXP_DATA_DIR"]
text = open(os.path.join(data_dir, "tinyshakespeare", "input.txt"), encoding="utf-8").read()
chars = sorted(set(text)); stoi = {c: i for i, c in enumerate(chars)}
ids = torch.tensor([stoi[c] for c in text]); n = int(0.9 * len(ids))
train, val = ids[:n], ids[n:]
torch.manual_seed(0)
seq, batch = int(sys.argv[1]), int(sys.argv[2])
torch.set_num_threads(int(sys.argv[4]))  # the count the memexp run beside it chose
model = Transformer(vocab_size=len(chars), max_len=seq)
opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
run = wandb.init(project="bench-plain", mode="offline", dir=sys.argv[3], config={"steps": 20})
def get(split, b=batch):
    ix = torch.randint(len(split) - seq - 1, (b,))
    x = torch.stack([split[i:i + seq] for i in ix]); y = torch.stack([split[i + 1:i + seq + 1] for i in ix])
    return x, y
def evaluate(split):
    model.eval()
    with torch.no_grad():
        losses = [F.cross_entropy(model(x)[0].flatten(0, 1), y.flatten()).item() for x, y in (get(split, 64) for _ in range(2))]
    model.train()
    return sum(losses) / len(losses)
for step in range(1, 21):
    x, y = get(train)
    loss = F.cross_entropy(model(x)[0].flatten(0, 1), y.flatten())
    opt.zero_grad(); loss.backward(); torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0); opt.step()
    if step % 5 == 0:
        run.log({"train/loss": loss.item()}, step=step)
    if step % 10 == 0:
        run.log({"val/loss": evaluate(val)}, step=step)
        torch.save({"state_dict": model.state_dict(), "opt": opt.state_dict()}, os.path.join(sys.argv[3], "ck.pt"))
run.log({"test/loss": evaluate(val)})
model.eval(); x = torch.tensor([[stoi["\n"]]])
with torch.no_grad():
    for _ in range(200):
        nxt = torch.multinomial(torch.softmax(model(x[:, -seq:])[0][:, -1] / 0.8, -1), 1); x = torch.cat([x, nxt], 1)
run.finish()
print(f"plain {time.perf_counter() - t0:.2f}")
"""


def memexp_wall(out: Path, env: dict, threads: str) -> tuple[float, int]:
    cmd = [sys.executable, "-m", "memexp.run", "debug=fast", "fresh=true", f"trainer.threads={threads}",
           f"paths.output_dir={out}", f"hydra.run.dir={out / 'run'}"]  # fmt: skip
    t = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"memexp.run failed: {proc.stderr[-2000:]}")
    return wall, json.loads((out / "run" / "metrics.json").read_text())["threads"]


def plain_wall(out: Path, env: dict, seq: int, batch: int, threads: int) -> float:
    out.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", PLAIN, str(seq), str(batch), str(out), str(threads)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"the plain script failed: {proc.stderr[-2000:]}")
    return wall


PHASES = r"""
import sys, time, json
t0 = time.perf_counter()
marks = {}
def timed(owner, name, label):
    fn = getattr(owner, name)
    def wrapper(*a, **k):
        t = time.perf_counter()
        try:
            return fn(*a, **k)
        finally:
            marks[label] = marks.get(label, 0.0) + time.perf_counter() - t
    setattr(owner, name, wrapper)
t = time.perf_counter()
from memexp.configs import register_all
register_all()  # imports torch, Lightning, the models and data modules
marks["imports (torch, Lightning, the suite)"] = time.perf_counter() - t
import lightning as L
import memexp.runs.train as train
import memexp.data.text as text
import memexp.tasks.causal_lm as clm
timed(train, "make_loggers", "loggers start (W&B init)")
timed(train, "finish_loggers", "loggers finish (W&B sync)")
timed(text.TextDataModule, "prepare_data", "data prepare")
timed(text.TextDataModule, "setup", "data setup")
timed(train, "build_task", "model build")
timed(L.Trainer, "fit", "fit (20 steps, 2 validations, checkpoints)")
timed(L.Trainer, "test", "test (reload best, 2 batches)")
timed(clm.CausalLMTask, "generate", "sample (200 characters)")
sys.argv = ["memexp.run", *sys.argv[1:]]
from memexp.run import main
try:
    main()
except SystemExit:
    pass
total = time.perf_counter() - t0
marks["everything else (Hydra composition, checks, report)"] = total - sum(marks.values())
marks["total in process"] = total
print("PHASES " + json.dumps(marks))
"""


def phases(out: Path, env: dict, threads: str) -> dict:
    args = [
        "debug=fast",
        "fresh=true",
        f"trainer.threads={threads}",
        f"paths.output_dir={out}",
        f"hydra.run.dir={out / 'phases'}",
    ]
    proc = subprocess.run([sys.executable, "-c", PHASES, *args], cwd=REPO, env=env, capture_output=True, text=True)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("PHASES ")), None)
    if line is None:
        raise SystemExit(f"the timed run failed: {proc.stderr[-2000:]}")
    return json.loads(line[len("PHASES ") :])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", default="auto", help="trainer.threads of the memexp run (and OMP threads of the plain one)")
    ap.add_argument("--out", type=Path, default=Path("outputs/bench/startup.json"))
    args = ap.parse_args()
    work = (args.out.parent / "startup-work").resolve()
    data = Path(os.environ.get("MEMEXP_DATA_DIR", REPO.parent / "shared" / "data")).resolve()
    env = os.environ | {"MEMEXP_DATA_DIR": str(data), "WANDB_MODE": "offline", "PYTHONPATH": str(REPO)}
    if args.threads != "auto":
        env["OMP_NUM_THREADS"] = str(args.threads)
    from memexp.runs.machine import describe, machine_line

    machine = describe()
    print(f"{machine_line(machine)}; load {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores", flush=True)
    mem, plain = [], []
    for r in range(args.rounds):
        wall, threads = memexp_wall(work / "memexp", env, args.threads)
        mem.append(wall)
        plain.append(plain_wall(work / "plain", env, seq=64, batch=12, threads=threads))
        print(f"round {r}: memexp.run debug=fast {mem[-1]:.2f} s, plain script {plain[-1]:.2f} s ({threads} threads)", flush=True)
    breakdown = phases(work, env, args.threads)
    m, p = statistics.median(mem), statistics.median(plain)
    result = {
        "machine": machine,
        "memexp_s": mem,
        "plain_s": plain,
        "median_memexp_s": m,
        "median_plain_s": p,
        "ratio": m / p,
        "phases_s": breakdown,
        "targets": {"memexp_s <= 15": m <= 15, "ratio <= 2": m / p <= 2},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print("\nphases of one memexp.run debug=fast (in one process):")
    for k, v in breakdown.items():
        print(f"  {v:6.2f} s  {k}")
    print(
        f"\nmedian wall: memexp {m:.2f} s (target <= 15: {'met' if m <= 15 else 'NOT met'}), plain {p:.2f} s, "
        f"ratio {m / p:.2f} (target <= 2: {'met' if m / p <= 2 else 'NOT met'}); range memexp {min(mem):.2f}-{max(mem):.2f}, "
        f"plain {min(plain):.2f}-{max(plain):.2f}"
    )


if __name__ == "__main__":
    main()
