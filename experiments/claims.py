"""The README's table of claims: run every study a claim needs (6 seeds each), then read the table from the runs.

    python experiments/claims.py --root outputs/claims --jobs 2     # runs what is missing, then writes the table
    python experiments/claims.py --root outputs/claims --table-only # the table from the runs already there

Every study writes under ROOT (runs, checkpoints, sweeps in ROOT/claims/<study>); a study interrupted or run before
is resumed or read back by the same command (memexp.run resumes from its checkpoints and skips finished runs), so
running this again only trains what is missing. Each job gets one thread; --jobs studies run side by side.
The table goes to ROOT/reports/claims.md and claims.json (memexp.evals.claims: the claims, arms and the verdict rule).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


def studies(root: Path) -> dict[str, list[str]]:
    """name -> command line: the runs behind each row of memexp.evals.claims.CLAIMS."""
    run = [sys.executable, "-m", "memexp.run", "-m", "trainer.threads=1", "logger=csv", f"paths.output_dir={root}"]

    def sweep(name: str, *args: str) -> list[str]:
        return [*run, *args, f"hydra.sweep.dir={root}/claims/{name}"]

    here = Path(__file__).parent
    return {
        "hyperlstm_vs_lstm": sweep("hyperlstm_vs_lstm", "experiment=leaderboard", "board=hyperlstm,lstm", "seed=0,1,2,3,4,5"),
        "hope_recall": sweep("hope_recall", "experiment=hope_vs_baseline", "seed=0,1,2,3,4,5"),
        "hope_continual": sweep(
            "hope_continual", "experiment=leaderboard", "board=hope_continual,transformer_continual", "seed=0,1,2,3,4,5"
        ),
        "hope_titans": sweep("hope_titans", "experiment=leaderboard", "board=hope,titans", "seed=0,1,2,3,4,5"),
        "gdn_recall": sweep(
            "gdn_recall", "experiment=leaderboard", "board=gated_deltanet_recall,transformer_recall", "seed=0,1,2,3,4,5"
        ),
        "hope_mqar_reassign": sweep(
            "hope_mqar_reassign",
            "experiment=leaderboard",
            "board=hope_mqar_reassign,transformer_mqar_reassign",
            "seed=0,1,2,3,4,5",
        ),
        "hgd_thinking": sweep("hgd_thinking", "experiment=hgd_thinking"),
        "endef": [sys.executable, str(here / "endef_vs_bigru.py"), "--shift", "strong", "--out", f"{root}/claims/endef_strong"],
        "explicit": [
            sys.executable,
            str(here / "explicit_knowledge.py"),
            "--seeds",
            *"0 1 2 3 4 5".split(),
            "--jobs",
            "1",
            "--out",
            f"{root}/claims/explicit_knowledge",
        ],
    }


def run_study(name: str, cmd: list[str], root: Path) -> tuple[str, int, float]:
    log = root / "claims" / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.time()
    env = os.environ | {"OMP_NUM_THREADS": "1", "WANDB_MODE": os.environ.get("WANDB_MODE", "offline")}
    with open(log, "w") as f:
        rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env).returncode
    print(f"{name}: exit {rc} after {time.time() - start:.0f} s (log: {log})", flush=True)
    return name, rc, time.time() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", type=Path, default=Path("outputs/claims"))
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--only", nargs="*", help="run only these studies (names: see studies())")
    ap.add_argument("--table-only", action="store_true")
    args = ap.parse_args()
    root = args.root.resolve()
    failed = []
    if not args.table_only:
        todo = {k: v for k, v in studies(root).items() if not args.only or k in args.only}
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            failed = [name for name, rc, _ in pool.map(lambda kv: run_study(*kv, root), todo.items()) if rc != 0]
    from memexp.evals.claims import write_claims

    written = write_claims(root)
    print(Path(written["claims.md"]).read_text())
    print(f"written: {', '.join(str(p) for p in written.values())}")
    if failed:
        sys.exit(f"error: these studies failed (see their logs in {root}/claims): {', '.join(failed)}")


if __name__ == "__main__":
    main()
