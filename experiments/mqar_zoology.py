"""Zoology's Figure 2 for the suite's models: the learning-rate grid at seed 0, then more seeds at each best rate,
then the table beside the published numbers (memexp.evals.mqar).

    python experiments/mqar_zoology.py --preset mqar_cpu --out outputs/mqar_cpu            # the CPU table
    python experiments/mqar_zoology.py --preset mqar_zoology --out outputs/mqar_zoology    # the paper's protocol
    python experiments/mqar_zoology.py --preset mqar_cpu --out X mqar=transformer_64 mqar_cell=cpu_64x4  # a part

1. `python -m memexp.run -m experiment=<preset> seed=0` (every model, width, cell and rate of the preset; extra
   arguments are passed on, so `mqar=...`, `mqar_cell=...`, `optim.lr=...` narrow the sweep);
2. for each model, width and cell, the rate with the best seed-0 validation accuracy, and for each (cell, rate)
   one `memexp.run -m` of the models that chose it at `--seeds` (default 1 and 2);
3. `python -m memexp.report dir=OUT/runs` writes OUT/runs/reports/mqar_table.md, .json and mqar_figure2.png.
`--table-from A.json B.json --out DIR` trains nothing: it draws one table and figure from the points of saved tables
(each study's mqar_table.json; docs/mqar_points.json keeps the points of the docs' figure), which outlive
the run folders.
Runs go through Hydra's launcher (add `hydra/launcher=...` to spread them); a rerun of the same command skips the
finished runs (memexp.run resumes from their checkpoints), so an interrupted study continues where it stopped.
Each job gets one thread (trainer.threads=1) unless an extra argument says otherwise.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path


def grid_command(preset: str, out: Path, extra: list[str]) -> list[str]:
    return [
        *_run(out, extra),
        f"experiment={preset}",
        "seed=0",
        f"hydra.sweep.dir={out}/runs/grid",
    ]


def _run(out: Path, extra: list[str]) -> list[str]:
    base = [sys.executable, "-m", "memexp.run", "-m", "logger=csv", "trainer.threads=1", f"paths.output_dir={out}"]
    return base + extra


def seed_commands(preset: str, out: Path, points: list[dict], seeds: list[int], extra: list[str]) -> list[list[str]]:
    """One `memexp.run -m` per (cell, best rate): the models (at their widths) that chose that rate."""
    from memexp.evals.mqar import mqar_rows

    cell_names = {c.split("_")[-1]: c for c in _cells(preset)}
    groups: dict[tuple[str, float], list[str]] = defaultdict(list)
    for row in mqar_rows(points):
        groups[(row["cell"], row["best_lr"])].append(f"{row['model']}_{row['width']}")
    narrowed = [a for a in extra if not a.startswith(("mqar=", "mqar_cell=", "optim.lr=", "seed="))]
    return [
        [
            *_run(out, narrowed),
            f"experiment={preset}",
            f"mqar={','.join(sorted(arms))}",
            f"mqar_cell={cell_names[cell]}",
            f"optim.lr={lr}",
            f"seed={','.join(map(str, seeds))}",
            f"hydra.sweep.dir={out}/runs/seeds/{cell}-lr{lr}",
        ]
        for (cell, lr), arms in sorted(groups.items())
    ]


def _cells(preset: str) -> list[str]:
    from memexp.configs.mqar import MQAR_PRESETS

    return MQAR_PRESETS[preset]["hydra"]["sweeper"]["params"]["mqar_cell"].split(",")


def _call(cmd: list[str], dry_run: bool) -> None:
    print("$ " + " ".join(cmd[1:] if cmd[0] == sys.executable else cmd), flush=True)
    if dry_run:
        return
    env = os.environ | {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    rc = subprocess.run(cmd, env=env).returncode
    if rc in (2, 130):  # memexp's own exits: it has printed the one `error:` line that says why
        sys.exit(rc)
    if rc:
        sys.exit(f"error: the command above exited with {rc}; rerun this script to continue from the finished runs")


def redraw(files: list[Path], out: Path) -> None:
    """The table and figure from saved points, several studies' together (memexp.evals.mqar.merge_points)."""
    from memexp.errors import MemexpError
    from memexp.evals.mqar import merge_points, write_points_table

    try:
        written = write_points_table(merge_points(files), out, ", ".join(str(f) for f in files))
    except MemexpError as e:  # memexp's own status and line (memexp.entry.one_line_errors)
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    if not written:
        print(f"error: {', '.join(map(str, files))}: no points to draw", file=sys.stderr)
        sys.exit(2)
    print("\n".join(str(path) for path in written.values()))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=["mqar_cpu", "mqar_zoology"], default="mqar_cpu")
    p.add_argument("--out", type=Path, default=Path("outputs/mqar"), help="runs, checkpoints and the table go here")
    p.add_argument("--seeds", type=int, nargs="*", default=[1, 2], help="seeds run at each best rate besides seed 0")
    p.add_argument("--dry-run", action="store_true", help="print the first stage's command and stop")
    p.add_argument(
        "--table-from",
        type=Path,
        nargs="+",
        metavar="FILE",
        help="train nothing: write the table and figure into --out from saved tables' points (mqar_table.json files)",
    )
    p.add_argument("extra", nargs="*", help="overrides passed to every memexp.run (e.g. mqar=transformer_64)")
    args = p.parse_args(argv)
    if args.out.exists() and not args.out.is_dir():
        p.error(f"--out {args.out} is a file; give a folder for the runs, checkpoints and the table")
    out = args.out.resolve()
    if args.table_from:
        redraw(args.table_from, out)
        return
    _call(grid_command(args.preset, out, args.extra), args.dry_run)
    if args.dry_run:
        return
    from memexp.evals.aggregate import collect_runs
    from memexp.evals.mqar import mqar_point

    points = [mqar_point(r) for r in collect_runs(out / "runs" / "grid") if r["names"].get("data") == "mqar"]
    if args.seeds:
        for cmd in seed_commands(args.preset, out, points, args.seeds, args.extra):
            _call(cmd, False)
    _call([sys.executable, "-m", "memexp.report", f"dir={out}/runs", f"paths.output_dir={out}"], False)
    print(f"table: {out}/runs/reports/mqar_table.md; figure: {out}/runs/reports/mqar_figure2.png")


if __name__ == "__main__":
    main()
