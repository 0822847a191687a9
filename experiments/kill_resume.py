"""Kill -9 a training run at random moments, rerun the same command, and check that it continues exactly.

    python experiments/kill_resume.py [--trials 10] [--steps 150] [--seed 0] [--signal KILL|TERM] [--out outputs/kill_resume]

A tiny transformer on the first 60,000 characters of tiny-shakespeare (one thread, dropout 0, so a run is
deterministic on one machine), validated and checkpointed every 3 steps. First one uninterrupted run (the
reference). Then, per trial, the same command in a fresh checkpoint folder is killed with SIGKILL at a random
moment after its own first checkpoint, drawn over the rest of the reference's run (a step, a validation, a
checkpoint write, the test), and run again to the end. A trial passes when the
rerun reaches the budget, every training loss it logged after its resume step equals the reference's at the
same step (the same batches through the same weights), its final weights equal the reference's, and its final
validation loss equals the reference's within 1e-4 (a rerun that found the run finished validates nothing; its
weights are compared). With --signal TERM the run is sent SIGTERM instead (what schedulers send first): the
trial also needs status 143, the line naming the saved checkpoint, and an exit within 10 s of the signal.
Writes <out>/kill_resume.{json,md}.

    python experiments/kill_resume.py --prepare [--trials 10] [--seed 0] [--signal KILL|TERM]

stops `memexp.prepare` of a generated LCCC-format file of --dialogues dialogues (100,000) instead, at a moment drawn uniformly
from its start to when an uninterrupted preparation wrote its manifest (start-up, reading, the vocabulary, the chunk writes), reruns the same
command, and checks that the chunks it ends with are byte-identical (sha256) to the uninterrupted preparation's,
that no manifest was left by the stopped one, and for TERM status 143 within 10 s.
Writes <out>/prepare_resume.{json,md}.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TINY = ["model.dim=32", "model.depth=1", "model.heads=2", "model.max_len=32", "data.seq_len=32", "data.batch_size=8"]


def command(text: Path, out: Path, ckpt_dir: Path, run_dir: Path, steps: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "memexp.run",
        "data=text",
        f"data.path={text}",
        *TINY,
        "logger=csv",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
        "sample_tokens=0",
        f"trainer.max_steps={steps}",
        "trainer.val_check_interval=3",
        "trainer.limit_val_batches=4",
        "trainer.limit_test_batches=2",
        "trainer.log_every_n_steps=1",
        f"ckpt_dir={ckpt_dir}",
        f"paths.output_dir={out}",
        f"hydra.run.dir={run_dir}",
    ]


def train_losses(run_dir: Path) -> dict[int, float]:
    with open(run_dir / "csv" / "metrics.csv") as f:
        return {int(r["step"]): float(r["train/loss"]) for r in csv.DictReader(f) if r.get("train/loss")}


def final(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def weight_diff(a: Path, b: Path) -> float:
    import torch

    sa = torch.load(a, map_location="cpu", weights_only=True)["state_dict"]
    sb = torch.load(b, map_location="cpu", weights_only=True)["state_dict"]
    return max(float((sa[k].float() - sb[k].float()).abs().max()) for k in sa)


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.2e}"


def dialogue_source(path: Path, n: int = 100_000) -> None:
    rng = random.Random(0)
    words = [f"w{i}" for i in range(300)]
    lines = ("\t".join(" ".join(rng.choices(words, k=rng.randint(2, 6))) for _ in range(rng.randint(2, 4))) for _ in range(n))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def chunk_sums(manifest: Path) -> list[str]:
    splits = json.loads(manifest.read_text())["splits"]
    return [c["sha256"] for split in splits.values() for c in split["chunks"]]


def prepare_trials(args: argparse.Namespace, out: Path, env: dict) -> None:
    src = out / "dialogues.tsv"
    dialogue_source(src, args.dialogues)

    def cmd(cache: Path) -> list[str]:
        return [
            sys.executable, "-m", "memexp.prepare", "data=lccc", f"data.source={src}", f"data.cache_dir={cache}",
            "data.chunk_size=2000", f"paths.output_dir={out}",
        ]  # fmt: skip

    t0 = time.monotonic()
    ref = subprocess.Popen(cmd(out / "prep-reference"), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = None  # until the manifest appears: the preparation's work (the process's exit after it is not drawn from)
    first_chunk = None
    while ref.poll() is None:
        if first_chunk is None and list((out / "prep-reference").glob("*/chunk_*.pt")):
            first_chunk = time.monotonic() - t0
        if wall is None and (out / "prep-reference" / "manifest.json").exists():
            wall = time.monotonic() - t0
        time.sleep(0.01)
    wall = wall if wall is not None else time.monotonic() - t0
    if ref.returncode != 0:
        raise SystemExit(f"the reference preparation failed: {ref.stderr.read()[-2000:]}")
    expected = chunk_sums(out / "prep-reference" / "manifest.json")
    print(f"reference preparation: {len(expected)} chunks in {wall:.1f} s, the first at {first_chunk or 0:.1f} s", flush=True)
    rng = random.Random(args.seed)
    trials = []
    for i in range(args.trials):
        cache = out / f"prep-{i}"
        at = rng.uniform(first_chunk or 0.0, wall) if args.during_chunks else rng.uniform(0.0, wall)
        proc = subprocess.Popen(cmd(cache), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        time.sleep(at)
        finished_first = proc.poll() is not None
        chunks_before = len(list(cache.glob("*/chunk_*.pt")))
        sent = time.monotonic()
        proc.send_signal(getattr(signal, f"SIG{args.signal}"))
        _, err = proc.communicate()
        exit_s = time.monotonic() - sent
        left_manifest = (cache / "manifest.json").exists()
        # a manifest is written last, under a temporary name: one present after the signal marks a finished preparation
        complete_manifest = left_manifest and chunk_sums(cache / "manifest.json") == expected
        rerun = subprocess.run(cmd(cache), env=env, capture_output=True, text=True)
        same = rerun.returncode == 0 and chunk_sums(cache / "manifest.json") == expected
        trial = {
            "trial": i,
            "stopped_after_s": round(at, 2),
            "chunks_on_disk_at_signal": chunks_before,
            "finished_before_signal": finished_first,
            "status": proc.returncode,
            "exit_after_s": round(exit_s, 2),
            "manifest_left": left_manifest,
            "manifest_complete": complete_manifest,
            "rerun_rc": rerun.returncode,
            "chunks_identical": same,
        }
        stopped_ok = finished_first or not left_manifest or complete_manifest
        if args.signal == "TERM" and not finished_first and not complete_manifest:
            stopped_ok = stopped_ok and proc.returncode == 143 and exit_s < 10 and "stopped by SIGTERM" in err
        trial["ok"] = bool(same and stopped_ok)
        trials.append(trial)
        print(json.dumps(trial), flush=True)
    passed = sum(t["ok"] for t in trials)
    (out / "prepare_resume.json").write_text(json.dumps({"trials": trials, "passed": passed, "wall_s": wall}, indent=2))
    lines = [
        "| trial | signal after (s) | chunks on disk | status | exit after (s) | manifest left | rerun chunks identical | ok |",
        "|---|---|---|---|---|---|---|---|",
        *(
            f"| {t['trial']} | {t['stopped_after_s']} | {t['chunks_on_disk_at_signal']} | {t['status']} | "
            f"{t['exit_after_s']} | {t['manifest_left']} | {t['chunks_identical']} | {t['ok']} |"
            for t in trials
        ),
        f"\n{passed} of {len(trials)} preparations stopped by SIG{args.signal} at random moments ended byte-identical "
        f"to the uninterrupted one ({len(expected)} chunks, {wall:.1f} s).",
    ]
    (out / "prepare_resume.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--seed", type=int, default=0, help="seed of the kill moments")
    ap.add_argument("--signal", choices=["KILL", "TERM"], default="KILL")
    ap.add_argument("--out", type=Path, default=Path("outputs/kill_resume"))
    ap.add_argument("--prepare", action="store_true", help="stop memexp.prepare instead of a training run")
    ap.add_argument("--dialogues", type=int, default=100_000, help="--prepare: dialogues in the generated source")
    ap.add_argument(
        "--during-chunks",
        action="store_true",
        help="--prepare: draw the moments while chunks are written (first chunk to manifest)",
    )
    args = ap.parse_args()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    data = Path(os.environ.get("MEMEXP_DATA_DIR", REPO.parent / "shared" / "data"))
    text = out / "tiny.txt"
    text.write_text((data / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8")[:60_000], encoding="utf-8")
    env = os.environ | {"OMP_NUM_THREADS": "1", "MEMEXP_DATA_DIR": str(data), "PYTHONPATH": str(REPO)}
    if args.prepare:
        prepare_trials(args, out, env)
        return

    t0 = time.monotonic()
    ref_dir = out / "reference"
    ref = subprocess.Popen(
        command(text, out, out / "ck-reference", ref_dir, args.steps), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    started = None  # when the first checkpoint (step 3) appeared: kills are drawn from there to the end of the run
    while ref.poll() is None:
        if started is None and (out / "ck-reference" / "last.ckpt").exists():
            started = time.monotonic() - t0
        time.sleep(0.05)
    if ref.returncode != 0:
        raise SystemExit(f"the reference run failed: {ref.stderr.read().decode()[-2000:]}")
    wall = time.monotonic() - t0
    started = started if started is not None else 0.5
    ref_losses, ref_val = train_losses(ref_dir), final(ref_dir)["metrics"]["val/loss"]
    print(
        f"reference: {args.steps} steps in {wall:.1f} s (first checkpoint at {started:.1f} s), final val/loss {ref_val:.6f}",
        flush=True,
    )

    rng = random.Random(args.seed)
    trials = []
    for i in range(args.trials):
        ck = out / f"ck-{i}"
        into_training = rng.uniform(0.0, wall - started)  # seconds after the killed run's own first checkpoint
        t_start = time.monotonic()
        proc = subprocess.Popen(
            command(text, out, ck, out / f"killed-{i}", args.steps),
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        while not (ck / "last.ckpt").exists() and proc.poll() is None and time.monotonic() - t_start < 300:
            time.sleep(0.02)
        time.sleep(into_training)
        killed_at = time.monotonic() - t_start
        finished_first = proc.poll() is not None
        sent = time.monotonic()
        proc.send_signal(getattr(signal, f"SIG{args.signal}"))
        _, err = proc.communicate()
        exit_s = time.monotonic() - sent
        run_dir = out / f"rerun-{i}"
        rerun = subprocess.run(command(text, out, ck, run_dir, args.steps), env=env, capture_output=True, text=True)
        trial = {
            "trial": i,
            "killed_after_s": round(killed_at, 2),
            "finished_before_kill": finished_first,
            "rc": rerun.returncode,
        }
        stopped_ok = True
        done_before = (out / f"killed-{i}" / "metrics.json").exists()  # the signal came after the run's work was done
        if args.signal == "TERM" and not finished_first and not done_before:
            line = next((ln for ln in err.splitlines() if "stopped by SIGTERM" in ln), None)
            trial |= {"exit_after_s": round(exit_s, 2), "status": proc.returncode, "stop_line": line}
            stopped_ok = proc.returncode == 143 and line is not None and exit_s < 10
        if rerun.returncode != 0:
            trial |= {"ok": False, "error": rerun.stderr.strip().splitlines()[-1:]}
        else:
            result = final(run_dir)
            resumed = result["resumed_from_step"]
            losses = train_losses(run_dir) if (run_dir / "csv" / "metrics.csv").exists() else {}
            diffs = [abs(v - ref_losses[s]) for s, v in losses.items() if s in ref_losses]
            val = result["metrics"].get("val/loss")
            val_diff = abs(val - ref_val) if val is not None else None
            weights = weight_diff(ck / "last.ckpt", out / "ck-reference" / "last.ckpt")
            trial |= {
                "resumed_from_step": resumed,
                "steps_compared": len(diffs),
                "max_train_loss_diff": max(diffs, default=0.0),
                "val_loss_diff": val_diff,
                "max_weight_diff": weights,
                "warnings": [ln for ln in rerun.stderr.splitlines() if ln.startswith("warning:")],
            }
            trial["ok"] = (
                stopped_ok
                and (val_diff is None or val_diff <= 1e-4)
                and max(diffs, default=0.0) <= 1e-4
                and weights <= 1e-5
                and result["metrics"]["global_step"] == args.steps
            )
        trials.append(trial)
        print(json.dumps(trial), flush=True)

    passed = sum(t["ok"] for t in trials)
    summary = {"trials": trials, "passed": passed, "reference_val_loss": ref_val, "steps": args.steps}
    (out / "kill_resume.json").write_text(json.dumps(summary, indent=2))
    lines = [
        "| trial | killed after (s) | resumed from step | steps compared | max train-loss diff | val-loss diff "
        "| max weight diff | ok |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for t in trials:
        lines.append(
            f"| {t['trial']} | {t['killed_after_s']} | {t.get('resumed_from_step')} | {t.get('steps_compared', '-')} | "
            f"{t.get('max_train_loss_diff', float('nan')):.2e} | {_fmt(t.get('val_loss_diff'))} | "
            f"{_fmt(t.get('max_weight_diff'))} | {t['ok']} |"
        )
    if args.signal == "TERM":
        waits = [t["exit_after_s"] for t in trials if "exit_after_s" in t]
        lines.append(
            f"\nSIGTERM: exit {min(waits, default=0):.2f}-{max(waits, default=0):.2f} s after the signal, status 143 and the saved checkpoint named."
        )
    lines.append(f"\n{passed} of {len(trials)} continued exactly after SIG{args.signal} (reference val/loss {ref_val:.6f}).")
    (out / "kill_resume.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
