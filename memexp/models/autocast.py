"""Where a model leaves autocast: recurrences that compute in float32 under `bf16-mixed`.

A recurrence multiplies its state by gates T times; in bf16 (8 bits of mantissa) that state loses its low bits
step by step, and on a CPU torch's recurrent kernels have no bf16 path that runs everywhere (oneDNN's bf16 LSTM
fails to build its primitive on AVX2; HyperLSTM's C++ loops are float32/float64). Such a layer runs in its
parameters' dtype with autocast off, and the layers around it (embeddings, projections, the readout) stay in
autocast's bf16.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence


@contextlib.contextmanager
def autocast_off(x: Tensor) -> Iterator[bool]:
    """Autocast off for `x`'s device inside the block; yields whether it was on (the caller then casts its inputs
    to the parameters' dtype)."""
    on = torch.is_autocast_enabled(x.device.type)
    if not on:
        yield False
        return
    with torch.autocast(x.device.type, enabled=False):
        yield True


def cast_state(state: object, dtype: torch.dtype) -> object:
    """A state (a tensor, or a tuple / list of them, or None) in `dtype`."""
    if isinstance(state, Tensor):
        return state.to(dtype) if state.is_floating_point() else state
    if isinstance(state, (tuple, list)):
        return type(state)(cast_state(s, dtype) for s in state)
    return state


def run_recurrent(rnn: nn.Module, x: Tensor | PackedSequence, state: object = None) -> object:
    """`rnn(x, state)` (a torch nn.LSTM / nn.GRU / cell) in its parameters' dtype with autocast off; as `rnn(x, state)`
    outside autocast. Under CPU autocast torch runs a packed GRU step by step in emulated bf16 (5x slower than float32
    on AVX2) and its LSTM in a oneDNN primitive that AVX2 lacks."""
    data = x.data if isinstance(x, PackedSequence) else x
    with autocast_off(data) as on:
        if on:
            dtype = next(rnn.parameters()).dtype
            x, state = x.to(dtype), cast_state(state, dtype)
        return rnn(x) if state is None else rnn(x, state)


def at_least_float32(x: Tensor) -> Tensor:
    """`x` in float32 when it is in a half type (autocast's output), else unchanged (float32, float64 runs)."""
    return x.float() if x.dtype in (torch.bfloat16, torch.float16) else x
