"""How many CPU threads a run uses: `trainer.threads` (a number, or `auto`).

`auto` is the cores this process may use (its CPU affinity), less the cores other processes keep busy, at least
one; one when the runs of a multirun share the machine (a parallel launcher). A busy core is the reason: torch's
OpenMP threads meet at a barrier after every parallel op, and a thread whose core runs another process arrives a
scheduler time slice late, so two threads on two cores beside one busy process ran 20-40x slower than one thread.
During training `ThreadGovernor` looks again every `interval_s` seconds and moves between one thread and the
cores that are free as other processes come and go (only under `auto`).

Busy cores are counted from the kernel's count of running tasks (`procs_running` in /proc/stat, the median of a
few samples) less this process's own running threads. (Not the load average: it carries this process's own past,
e.g. the previous run of a multirun in the same process, for a minute.)
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path

import lightning as L
from lightning.pytorch.utilities import rank_zero_info

from memexp.console import say


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def _procs_running() -> int | None:
    try:
        for line in Path("/proc/stat").read_text().splitlines():
            if line.startswith("procs_running"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _own_running() -> int:
    """Threads of this process that are running or runnable now."""
    n = 0
    for stat in Path("/proc/self/task").glob("*/stat"):
        try:
            n += stat.read_text().rsplit(")", 1)[1].split()[0] == "R"
        except (OSError, IndexError):
            continue
    return n


def busy_cores(samples: int = 9, gap_s: float = 0.01) -> int:
    """Cores other processes keep busy now (0 where /proc cannot be read)."""
    others = []
    for i in range(samples):
        total = _procs_running()
        if total is None:
            return 0
        others.append(max(0, total - _own_running()))
        if i + 1 < samples:
            time.sleep(gap_s)
    return int(statistics.median(others))


def _omp_threads() -> int | None:
    """The thread count the user set in OMP_NUM_THREADS, if any."""
    value = os.environ.get("OMP_NUM_THREADS", "")
    return max(1, int(value)) if value.isdigit() else None


def follows_machine(setting: int | str | None, parallel_runs: bool = False) -> bool:
    """Whether the count may follow other processes during training (a `ThreadGovernor`): `auto` with no count
    from the environment, on a machine this run does not share with its own sweep."""
    return setting in (None, "auto") and _omp_threads() is None and not parallel_runs


def plan_threads(setting: int | str | None, parallel_runs: bool = False) -> tuple[int, str]:
    """(threads, why) for `trainer.threads=setting`."""
    cores = usable_cores()
    if setting not in (None, "auto"):
        return int(setting), f"trainer.threads={setting}"
    if _omp_threads() is not None:
        return _omp_threads(), f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}"
    if parallel_runs:
        return 1, f"the runs of this sweep share the machine's {cores} cores; trainer.threads=N to change"
    busy = busy_cores()
    n = max(1, min(cores, cores - busy))
    if n < cores:
        return n, f"of {cores} cores: other processes keep {busy} busy; trainer.threads=N to change"
    return n, f"the {cores} cores this process may use; trainer.threads=N to change"


def apply_threads(setting: int | str | None, parallel_runs: bool = False, beside: str = "") -> bool:
    """Set torch's thread count for this run and say so in one line (with `beside`, e.g. the precision, after it);
    returns `follows_machine` (add a `ThreadGovernor` when True)."""
    import torch

    n, why = plan_threads(setting, parallel_runs)
    torch.set_num_threads(n)
    say(f"threads: {n} ({why})" + (f"; {beside}" if beside else ""))
    return follows_machine(setting, parallel_runs)


class ThreadGovernor(L.Callback):
    """Under `trainer.threads=auto`, follows other processes during training: one thread while they keep cores busy,
    the free cores when they leave (checked every `interval_s` seconds of training, at a step boundary)."""

    def __init__(self, interval_s: float = 15.0):
        self.interval_s = interval_s
        self._next = 0.0

    def on_train_start(self, trainer: L.Trainer, *args: object) -> None:
        self._next = time.monotonic() + self.interval_s  # the run's plan (apply_threads) has just counted

    def on_train_batch_start(self, trainer: L.Trainer, *args: object) -> None:
        now = time.monotonic()
        if now < self._next:
            return
        self._next = now + self.interval_s
        import torch

        current, cores = torch.get_num_threads(), usable_cores()
        target = max(1, cores - busy_cores(samples=3, gap_s=0.005))
        if target != current:
            torch.set_num_threads(target)
            rank_zero_info(f"threads: {current} -> {target} (other processes now keep {cores - target} cores busy)")
