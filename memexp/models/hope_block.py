"""HOPE's block (attention over the segment beside the memory's reads, then the continuum-memory levels) and one
continuum-memory level. The equations are in `memexp.models.hope`'s docstring; Titans MAG's switches of the block
are `memexp.models.titans`'."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from memexp.models.attention import cached_causal_attention
from memexp.models.hope_memory import HopeMemory

# ----------------------------------------------------------------------------- continuum memory


class CMSLevel(nn.Module):
    """One continuum-memory level: LN + MLP, residual; stepped every `period` optimizer steps."""

    def __init__(self, dim: int, hidden: int, dropout: float, bias: bool, period: int):
        super().__init__()
        self.period = period
        self.ln = nn.LayerNorm(dim, bias=bias)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden, bias=bias), nn.GELU(), nn.Linear(hidden, dim, bias=bias))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, T, C) -> the level's residual update (B, T, C)."""
        return self.dropout(self.mlp(self.ln(x)))


# ----------------------------------------------------------------------------- blocks


class HopeBlock(nn.Module):
    """Causal attention over the segment, plus the memory's reads of what lies before it, then CMS."""

    def __init__(
        self,
        *,
        dim: int,
        heads: int,
        dropout: float,
        bias: bool,
        memory: HopeMemory | None,
        cms_hidden: int,
        cms_frequencies: Sequence[int],
        persistent_tokens: int = 0,
        gate: bool = False,
    ):
        # Titans MAG's switches (memexp.models.titans; the defaults build HOPE's block): `persistent_tokens` learned
        # key/value pairs per head before the segment, and `gate`: o = LN(y) * sigmoid(LN(M(q))) in place of y + M(q)
        super().__init__()
        self.heads = heads
        self.ln_attn = nn.LayerNorm(dim, bias=bias)
        self.qkv = nn.Linear(dim, 3 * dim, bias=bias)
        self.proj = nn.Linear(dim, dim, bias=bias)
        self.dropout = dropout
        self.resid_dropout = nn.Dropout(dropout)
        self.memory = memory
        self.cms = nn.ModuleList(CMSLevel(dim, cms_hidden, dropout, bias, f) for f in cms_frequencies)
        self.persistent = None
        if persistent_tokens:
            self.persistent = nn.Parameter(torch.randn(2, heads, persistent_tokens, dim // heads) * 0.02)
        self.gate = gate and memory is not None
        if self.gate:
            self.ln_y, self.ln_mem = nn.LayerNorm(dim, bias=bias), nn.LayerNorm(dim, bias=bias)

    def attend(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, st: dict
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q, k, v (B, T, C) -> (B, T, C) attention over the cached segment + these tokens, new cache
        k, v (B, H, S, D)."""
        B, T, C = q.shape
        q, k, v = (t.view(B, T, self.heads, -1).transpose(1, 2) for t in (q, k, v))  # (B, H, T, D)
        if st["attn_k"].shape[2]:  # a segment's first call has no cache: nothing to copy k, v onto
            k = torch.cat([st["attn_k"], k], 2)  # (B, H, S, D)
            v = torch.cat([st["attn_v"], v], 2)
        pk, pv = k, v
        if self.persistent is not None:  # P learned keys / values in front of the segment, seen by every query
            p = self.persistent.unsqueeze(1).expand(-1, B, -1, -1, -1)  # (2, B, H, P, D)
            pk, pv = torch.cat([p[0], k], 2), torch.cat([p[1], v], 2)
        y = cached_causal_attention(q, pk, pv, self.dropout if self.training else 0.0)
        return y.transpose(1, 2).reshape(B, T, C), k, v

    def forward(
        self, x: torch.Tensor, st: dict, chunk: int, seg_end: bool, surprise_scale: float, fresh: bool = False
    ) -> tuple[torch.Tensor, dict]:
        """x (B, T, C) -> (B, T, C), this layer's new state (attention cache, memory). `fresh`: st is
        `init_state`'s (the memory then skips work on its zero momentum and empty slots)."""
        u = self.ln_attn(x)  # (B, T, C)
        q, k, v = self.qkv(u).chunk(3, dim=-1)  # each (B, T, C)
        y, ck, cv = self.attend(q, k, v, st)
        new = {"attn_k": ck[:, :, :0] if seg_end else ck, "attn_v": cv[:, :, :0] if seg_end else cv}
        if self.memory is not None:
            m, new["memory"] = self.memory(u, q, k, v, st["memory"], chunk, seg_end, surprise_scale, fresh)
            y = self.ln_y(y) * torch.sigmoid(self.ln_mem(m)) if self.gate else y + m
        x = x + self.resid_dropout(self.proj(y))
        for level in self.cms:
            x = x + level(x)
        return x, new
