"""Stopping on SIGTERM and Ctrl-C without losing work: a checkpoint at the next step boundary, then exit.

Schedulers (SLURM, Kubernetes, a cluster's preemption) send SIGTERM some seconds before SIGKILL. During
training Lightning notes SIGTERM and stops at the end of the current step by raising its SIGTERMException;
`SaveOnStop` writes `last.ckpt` there (before Lightning tears the loops down, so the data position is in it),
and `train_and_test` exits with status 143 and one line naming the checkpoint. Ctrl-C during training is
turned into the same path (a second Ctrl-C aborts at once). Outside training (data preparation, evaluation)
`memexp.stopping.graceful_signals` makes SIGTERM a clean exit with one line: files are written under temporary names and
renamed when complete, so an interrupted preparation continues on the next run.
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


class SaveOnStop(L.Callback):
    """Saves `last` when a fit is stopped by SIGTERM (or Ctrl-C, turned into SIGTERM) at a step boundary."""

    def __init__(self, last: Path):
        self.last, self.saved_step = Path(last), None
        self._previous_sigint = None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        stopping.in_fit = True
        if trainer.is_global_zero and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            self._previous_sigint = signal.signal(signal.SIGINT, self._ctrl_c)

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
