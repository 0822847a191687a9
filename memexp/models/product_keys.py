"""Product-key retrieval (Lample et al. 2019): the top-C of N = R * R entries from two searches over
R keys each, never scoring all N. Shapes: K query width, R = sqrt(N) keys per half, C candidates."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from memexp.errors import ConfigError
from memexp.models.autocast import at_least_float32, autocast_off


class ProductKeys(nn.Module):
    """Product-key retrieval over N = R * R entries: entry i * R + j has the key [keys[0, i]; keys[1, j]]."""

    def __init__(self, dim: int, knowledge_num: int, knowledge_dim: int, num_candidates: int, query_hidden: int = 0):
        super().__init__()
        R = math.isqrt(knowledge_num)
        if knowledge_num < 1 or R * R != knowledge_num:
            raise ConfigError(
                f"model.knowledge_num={knowledge_num}: must be a perfect square (product keys split it into sqrt(N) x sqrt(N)), "
                f"e.g. {max(R, 1) ** 2} or {(R + 1) ** 2}"
            )
        if knowledge_dim < 2 or knowledge_dim % 2:
            raise ConfigError(f"model.knowledge_dim={knowledge_dim}: must be an even number >= 2 (two halves)")
        if not 1 <= num_candidates <= R:
            raise ConfigError(f"model.num_candidates={num_candidates}: must be between 1 and sqrt(knowledge_num)={R}")
        self.R, self.C = R, num_candidates
        # The entry layout is arbitrary (row = id // R, column = id % R), so finding an entry is an arbitrary
        # partition of the hidden states: a hidden layer makes the query a learned index, not a linear probe.
        if query_hidden:
            self.query = nn.Sequential(nn.Linear(dim, query_hidden), nn.GELU(), nn.Linear(query_hidden, knowledge_dim))
        else:
            self.query = nn.Linear(dim, knowledge_dim, bias=False)
        self.keys = nn.Parameter(torch.randn(2, R, knowledge_dim // 2))
        self.log_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))  # cosine -> retrieval logits

    def half_scores(self, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """q (..., K) -> scaled cosine of both halves with their R keys, (..., R) each."""
        with autocast_off(q):  # float32 under autocast: bf16 cosines scaled by up to 100 would reorder the top-k
            scale = self.log_scale.clamp(max=math.log(100.0)).exp()
            q1, q2 = F.normalize(at_least_float32(q), dim=-1).chunk(
                2, dim=-1
            )  # halves of the unit query: s1 + s2 is its cosine / 2 ...
            k = F.normalize(at_least_float32(self.keys), dim=-1)  # ... with the unit-half key [k1; k2] / sqrt(2)
            return scale * (q1 @ k[0].T), scale * (q2 @ k[1].T)

    def top(self, s1: torch.Tensor, s2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The C best entries of s1[i] + s2[j] without scoring all R * R: (ids (..., C), scores (..., C))."""
        C = self.C
        v1, i1 = s1.topk(C, dim=-1)  # (..., C)
        v2, i2 = s2.topk(C, dim=-1)
        sums = (v1.unsqueeze(-1) + v2.unsqueeze(-2)).flatten(-2)  # (..., C*C)
        best, flat = sums.topk(C, dim=-1)
        ids = i1.gather(-1, flat // C) * self.R + i2.gather(-1, flat % C)
        return ids, best

    def exhaustive(self, s1: torch.Tensor, s2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The same top-C by scoring every entry (tests and the benchmark compare against it)."""
        scores = (s1.unsqueeze(-1) + s2.unsqueeze(-2)).flatten(-2)  # (..., N)
        best, ids = scores.topk(self.C, dim=-1)
        return ids, best
