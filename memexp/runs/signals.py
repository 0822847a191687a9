"""Stopping on SIGTERM and Ctrl-C without losing work: a checkpoint at the next step boundary, then exit.

Schedulers (SLURM, Kubernetes, a cluster's preemption) send SIGTERM some seconds before SIGKILL. During
training Lightning notes SIGTERM and stops at the end of the current step by raising its SIGTERMException;
`SaveOnStop` writes `last.ckpt` there (before Lightning tears the loops down, so the data position is in it),
and `train_and_test` exits with status 143 and one line naming the checkpoint. Ctrl-C during training is
turned into the same path (a second Ctrl-C aborts at once). Outside training (data preparation, evaluation)
`memexp.stopping.graceful_signals` makes SIGTERM a clean exit with one line: files are written under temporary names and
renamed when complete, so an interrupted preparation continues on the next run.

On SLURM through `launcher=slurm` (submitit), the job gets the preemption signal (USR2, or
`SUBMITIT_PREEMPT_SIGNAL`) `hydra.launcher.signal_delay_s` seconds before its time limit or when it is
preempted. submitit's own handler would requeue the job at once, wherever the step is, losing the work since
the last checkpoint; `SaveOnStop` takes that signal during training, stops at the step boundary, saves
`last.ckpt` and only then hands over to submitit's handler, which requeues the job and exits. The requeued job
runs the same command, which resumes from `last.ckpt`. (A plain `sbatch --signal=USR1@90` script gets
Lightning's own `SLURMEnvironment(auto_requeue=True)`: Lightning requeues, SLURM sends SIGTERM, and the
SIGTERM path above saves `last.ckpt`.)
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from types import FrameType

import lightning as L
from lightning.pytorch.utilities.exceptions import SIGTERMException

from memexp import stopping

EXIT_SIGTERM = 128 + signal.SIGTERM  # 143: the status a process stopped by SIGTERM reports


def preemption_signal() -> signal.Signals:
    """The signal submitit's SLURM jobs get before their time limit or on preemption."""
    name = os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2").upper()
    return getattr(signal, name if name.startswith("SIG") else f"SIG{name}", signal.SIGUSR2)


class SaveOnStop(L.Callback):
    """Saves `last` when a fit is stopped by SIGTERM (or Ctrl-C, turned into SIGTERM) at a step boundary."""

    def __init__(self, last: Path):
        self.last, self.saved_step = Path(last), None
        self._previous_sigint = None
        self._preempt: tuple[signal.Signals, object] | None = None  # (signal, the handler it had: submitit's)
        self.requeue: object | None = None  # set when preempted: the handler to call once last.ckpt is saved
        self.preempted_by: signal.Signals | None = None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        stopping.in_fit = True
        if trainer.is_global_zero and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            self._previous_sigint = signal.signal(signal.SIGINT, self._ctrl_c)
        sig = preemption_signal()
        previous = signal.getsignal(sig)
        if callable(previous):  # a scheduler's requeue handler (submitit's): run it after the checkpoint
            self._preempt = (sig, previous)
            signal.signal(sig, self._preempted)

    def _preempted(self, signum: int, frame: FrameType | None) -> None:
        self.preempted_by = signal.Signals(signum)
        self.requeue = self._preempt[1] if self._preempt else None
        print(
            f"\n{self.preempted_by.name}: the job is preempted or near its time limit; saving a checkpoint at the end "
            "of this step, then requeueing",
            file=sys.stderr,
            flush=True,
        )
        os.kill(os.getpid(), signal.SIGTERM)

    def hand_over(self) -> None:
        """After last.ckpt is saved: run the scheduler's requeue handler (submitit's requeues the job and exits)."""
        if self.requeue is not None and self.preempted_by is not None:
            handler, self.requeue = self.requeue, None
            handler(int(self.preempted_by), None)

    def _ctrl_c(self, signum: int, frame: FrameType | None) -> None:
        print(
            "\nstopping at the end of this step to save a checkpoint (Ctrl-C again aborts without one)",
            file=sys.stderr,
            flush=True,
        )
        signal.signal(signal.SIGINT, signal.default_int_handler)
        os.kill(os.getpid(), signal.SIGTERM)

    def _restore(self) -> None:
        stopping.in_fit = False
        if self._previous_sigint is not None:
            signal.signal(signal.SIGINT, self._previous_sigint)
            self._previous_sigint = None
        if self._preempt is not None:
            signal.signal(*self._preempt)
            self._preempt = None

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restore()

    def _save(self, trainer: L.Trainer) -> None:
        trainer.save_checkpoint(self.last, weights_only=False)  # collective; rank 0 writes (atomically)
        self.saved_step = trainer.global_step

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: object) -> None:
        # Saved here, where ModelCheckpoint saves and Lightning's restore expects a mid-epoch checkpoint from (its
        # step counters for the logs follow); Lightning then stops with SIGTERMException at the end of this step.
        if trainer.received_sigterm and self.saved_step is None:
            self._save(trainer)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._restore()
        if isinstance(exception, SIGTERMException) and self.saved_step is None:  # stopped outside a training step
            self._save(trainer)


def stopped_message(saved: Path, step: int) -> str:
    return f"stopped by SIGTERM: saved {saved} at step {step}; run the same command to continue"
