"""SIGTERM outside training: one line and a clean exit (installed by every entry point; see memexp.runs.signals
for what happens during training). Kept free of torch and Lightning so that entry points install it at once."""

from __future__ import annotations

import signal
import sys
from types import FrameType

in_fit = False  # set by memexp.runs.signals.SaveOnStop while Lightning's own handler stops a fit at a step boundary


def _outside_fit(signum: int, frame: FrameType | None) -> None:
    if in_fit:  # Lightning's own handler (registered during fit) stops at the step boundary
        return
    print(
        f"error: stopped by {signal.Signals(signum).name}; files written so far are complete, the same command continues",
        file=sys.stderr,
        flush=True,
    )
    raise SystemExit(128 + signum)


def graceful_signals() -> None:
    """SIGTERM outside a fit: exit at once with one line (the main thread of an entry point only)."""
    signal.signal(signal.SIGTERM, _outside_fit)
