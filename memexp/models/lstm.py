"""A plain multi-layer LSTM language model: the baseline of the HyperNetworks paper's claim that HyperLSTM reaches
lower bits per character than an LSTM of similar size.

torch.nn.LSTM runs oneDNN's (CPU) or cuDNN's (GPU) fused kernels. Embedding, readout, dropout placement and the
state carried across training windows (truncated BPTT with `task.carry_state`) are HyperLSTM's, so the two differ
only in the recurrent cell.

Shape legend: B batch, T time, E embedding size, H hidden size, V vocabulary, L layers.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from memexp.errors import ConfigError, require_positive_ints
from memexp.models.autocast import run_recurrent

LSTMState = tuple[Tensor, Tensor]  # (h, c), each (L, B, H)


class LSTMLM(nn.Module):
    """Embedding -> `depth` LSTM layers -> linear readout.

    Args:
        vocab_size: V.
        embedding_size: E.
        hidden_size: H of every layer.
        depth: LSTM layers.
        dropout: between layers and before the readout (as HyperLSTM's).
        forget_bias: added to the forget gate's bias at initialisation (1.0, as HyperLSTM's cell).
    """

    task_kind = "causal_lm"
    carries_state = True  # the recurrent state may be carried across training windows (TBPTT)
    max_len = None  # unbounded context

    def __init__(
        self,
        vocab_size: int,
        embedding_size: int = 64,
        hidden_size: int = 456,
        depth: int = 1,
        dropout: float = 0.0,
        forget_bias: float = 1.0,
    ) -> None:
        super().__init__()
        require_positive_ints(
            "model", {"vocab_size": vocab_size, "embedding_size": embedding_size, "hidden_size": hidden_size, "depth": depth}
        )
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"model.dropout={dropout} must be in [0, 1): it is the probability of dropping a unit")
        self.embedding = nn.Embedding(vocab_size, embedding_size)
        self.lstm = nn.LSTM(
            embedding_size, hidden_size, num_layers=depth, batch_first=True, dropout=dropout if depth > 1 else 0.0
        )
        with torch.no_grad():  # PyTorch orders the gates i, f, g, o: the second quarter of each bias is the forget gate's
            for name, bias in self.lstm.named_parameters():
                if name.startswith("bias_ih"):
                    bias[hidden_size : 2 * hidden_size].add_(forget_bias)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(hidden_size, vocab_size)

    def forward(self, idx: Tensor, state: LSTMState | None = None) -> tuple[Tensor, LSTMState]:
        """idx (B, T) long -> logits (B, T, V) and the state (h, c) after these T tokens."""
        y, new_state = self.features(idx, state)
        return self.readout(y), new_state  # (B, T, V)

    def features(self, idx: Tensor, state: LSTMState | None = None) -> tuple[Tensor, LSTMState]:
        """idx (B, T) long -> the last layer's output (B, T, H) and the state (h, c) after these T tokens."""
        x = self.embedding(idx)  # (B, T, E)
        return run_recurrent(self.lstm, x, state)  # (B, T, H); float32 under autocast (memexp.models.autocast)

    def readout(self, y: Tensor) -> Tensor:
        """y (..., H) from `features` -> logits (..., V)."""
        return self.head(self.drop(y))
