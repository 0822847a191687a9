"""Causal attention over a KV cache, shared by the transformer and HOPE.

Shape legend: B batch, H heads, T new tokens, S cached + new tokens, D head width.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def cached_causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float = 0.0) -> torch.Tensor:
    """q (B, H, T, D) of the newest T tokens, k, v (B, H, S, D) of all S tokens -> (B, H, T, D).

    The new tokens sit at the end of the cache: token i may see cache positions <= S - T + i.
    (`is_causal` aligns its mask top-left, which is wrong when S > T, so the mask is built then.)
    """
    T, S = q.shape[2], k.shape[2]
    if S == T:
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True)
    allowed = torch.ones(T, S, dtype=torch.bool, device=q.device).tril(diagonal=S - T)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=dropout_p)
