"""What a network promises the tasks, the builder and the evaluations: one causal-LM protocol and small capabilities.

A causal language model of the suite (`model=transformer`, `hope`, `hyperlstm`, `lstm`, `qwen3`, `explicit_lm`, or
a user's own) implements `CausalLM`. The rest are capabilities a model may add; the code around it asks
`isinstance(net, Capability)`, never `hasattr`:

    StepScheduled     set_training_step(step): settings that ramp with the optimiser step (HOPE's memory warm-up)
    MultiRateCMS      cms_update_schedule(): parameter groups updated every k steps (HOPE's continuum memory)
    AuxiliaryLosses   auxiliary_losses(): extra loss terms of the last forward, added to the training loss
    ExplicitBank      a token memory bank the data fills and training episodes rewrite (ExplicitLM); its
                      `batch_inputs` name the batch entries forward() reads besides the tokens
    FeatureReadout    features(idx, state) and readout(h): forward split before the LM head, so a task reads out
                      only the positions it scores (data whose targets are a few answer positions: data=mqar)

They are `typing.Protocol`s, checked at run time by the methods and attributes they name (`runtime_checkable`), so
a model implements one by having those members; it need not inherit anything.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch


@runtime_checkable
class CausalLM(Protocol):
    """forward(idx (B, T) long, state or None) -> (logits (B, T, V), state).

    task_kind: "causal_lm". max_len: the longest context the model reads at once (None: unbounded; windows and
    generation slide within it). carries_state: the returned state may be fed back across training windows
    (truncated BPTT over in-order streams) and across generation calls.
    """

    task_kind: str
    max_len: int | None
    carries_state: bool

    def forward(self, idx: torch.Tensor, state: Any = None) -> tuple[torch.Tensor, Any]: ...


@runtime_checkable
class StepScheduled(Protocol):
    def set_training_step(self, step: int) -> None: ...


@runtime_checkable
class MultiRateCMS(Protocol):
    def cms_update_schedule(self) -> list[tuple[list[torch.nn.Parameter], int]]: ...


@runtime_checkable
class AuxiliaryLosses(Protocol):
    def auxiliary_losses(self) -> dict[str, torch.Tensor]: ...


@runtime_checkable
class ExplicitBank(Protocol):
    """memory_bank (N, L) token ids; memory_enabled switches reading it; last_selection holds, per memory layer, the
    entry each position read in the last forward; batch_inputs the batch entries forward() takes as keywords."""

    memory_bank: torch.Tensor
    memory_enabled: bool
    last_selection: dict[int, torch.Tensor]
    batch_inputs: tuple[str, ...]

    def load_bank(self, tokens: torch.Tensor) -> None: ...

    def write_entries(self, rows: torch.Tensor, tokens: torch.Tensor, allow_frozen: bool = False) -> None: ...


@runtime_checkable
class FeatureReadout(Protocol):
    """forward(idx, state) split at the LM head: features(idx, state) -> (h (B, T, C), state), the hidden states the
    head reads, and readout(h (..., C)) -> logits (..., V), position by position. readout(features(idx)[0]) is
    forward(idx)[0], so readout(h[mask]) is the logits at the masked positions without the (B, T, V) of the rest."""

    def features(self, idx: torch.Tensor, state: Any = None) -> tuple[torch.Tensor, Any]: ...

    def readout(self, h: torch.Tensor) -> torch.Tensor: ...


def context_limit(net: object) -> int | None:
    """The longest context a causal LM reads at once (None: unbounded, or not a causal LM)."""
    return net.max_len if isinstance(net, CausalLM) else None


def missing_members(net: object, protocol: type) -> list[str]:
    """The members of `protocol` that `net` lacks: what the error refusing it names."""
    members = [m for m in vars(protocol).get("__annotations__", {})] + [
        m for m, v in vars(protocol).items() if callable(v) and not m.startswith("_") or m == "forward"
    ]
    return [m for m in dict.fromkeys(members) if not hasattr(net, m)]
