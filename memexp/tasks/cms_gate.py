"""The continuum memory system's update clock: parameters that the optimiser moves only every C steps.

A model that learns at several frequencies (HOPE's CMS levels) lists its parameter groups and
their periods in `net.cms_update_schedule()`; `CausalLMTask` builds a `CMSGradientGate` from it
and calls `apply(global_step)` in `on_before_optimizer_step`, between backward and step. It is
optimiser work, not model structure, so it lives with the tasks and the model stays a plain
nn.Module.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import nn

from memexp.errors import ConfigError


class CMSGradientGate:
    """Lets CMS level l's parameters move only every C_l optimizer steps.

    Call `apply(step)` after `backward()` and before `optimizer.step()`, with `step` the
    0-based global optimizer step. For a level of period C it adds the fresh gradients to
    a buffer and leaves `p.grad = None` (torch optimizers skip such parameters: no update,
    no weight decay, no moment change); on steps with `(step + 1) % C == 0` it hands the
    buffered gradients back (their mean over the C steps, or their sum with
    `reduce="sum"`, as in Nested Learning eq. 31) and clears the buffer.
    """

    def __init__(self, schedule: Iterable[tuple[Sequence[nn.Parameter], int]], reduce: str = "mean"):
        if reduce not in ("mean", "sum"):
            raise ConfigError(f"reduce={reduce!r} must be 'mean' or 'sum'")
        self.schedule = [(list(params), int(period)) for params, period in schedule]
        self.reduce = reduce
        self._sums: dict[int, torch.Tensor] = {}  # id(param) -> summed grad

    def apply(self, step: int) -> None:
        for params, period in self.schedule:
            if period <= 1:
                continue
            release = (step + 1) % period == 0
            for p in params:
                if p.grad is not None:
                    g = p.grad.detach()
                    prev = self._sums.get(id(p))
                    self._sums[id(p)] = g.clone() if prev is None else prev + g
                if release:
                    total = self._sums.pop(id(p), None)
                    p.grad = None if total is None else (total / period if self.reduce == "mean" else total)
                else:
                    p.grad = None

    def state_dict(self) -> dict:
        """Pending gradient sums, in schedule order (None where empty), for checkpoints."""
        return {"sums": [[self._sums.get(id(p)) for p in params] for params, _ in self.schedule]}

    def load_state_dict(self, state: dict) -> None:
        self._sums = {}
        for (params, _), sums in zip(self.schedule, state["sums"]):
            for p, s in zip(params, sums):
                if s is not None:
                    self._sums[id(p)] = s.clone()
