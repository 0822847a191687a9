"""A causal LM with no token mixing, the control of the recall tests: each position sees only its own token and
position (embedding -> MLP -> readout), so it can learn which tokens are queries but never what was stored."""

from __future__ import annotations

import torch
from torch import nn


class PositionwiseMLPLM(nn.Module):
    task_kind = "causal_lm"
    carries_state = False

    def __init__(self, vocab_size: int, dim: int = 64, max_len: int = 64, hidden_mult: int = 4):
        super().__init__()
        self.max_len = max_len
        self.tok_emb = nn.Embedding(vocab_size, dim)
        self.pos_emb = nn.Embedding(max_len, dim)
        self.mlp = nn.Sequential(
            nn.LayerNorm(dim), nn.Linear(dim, hidden_mult * dim), nn.GELU(), nn.Linear(hidden_mult * dim, dim)
        )
        self.head = nn.Linear(dim, vocab_size)

    def features(self, idx: torch.Tensor, state: object = None) -> tuple[torch.Tensor, None]:
        x = self.tok_emb(idx) + self.pos_emb(torch.arange(idx.shape[1], device=idx.device))  # (B, T, C)
        return x + self.mlp(x), None

    def readout(self, h: torch.Tensor) -> torch.Tensor:
        return self.head(h)

    def forward(self, idx: torch.Tensor, state: object = None) -> tuple[torch.Tensor, None]:
        h, _ = self.features(idx, state)
        return self.readout(h), None
