"""Next-token sampling shared by the generating models: temperature, top-k, nucleus (top-p).

Shape legend: B batch, V vocabulary; `...` any leading dims.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from memexp.errors import ConfigError


def filter_logits(logits: torch.Tensor, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """Set to -inf every logit outside the top-k and outside the nucleus of mass top_p.

    logits (..., V) -> (..., V). top_k=0 and top_p=1.0 leave it unchanged; the most likely
    token always survives, so at least one finite logit remains per row.
    """
    if top_k < 0:
        raise ConfigError(f"top_k={top_k} must be >= 0 (0 = no top-k filtering)")
    if not 0.0 < top_p <= 1.0:
        raise ConfigError(f"top_p={top_p} must be in (0, 1] (1.0 = no nucleus filtering)")
    V = logits.shape[-1]
    if 0 < top_k < V:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]  # (..., 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)  # (..., V)
        probs = F.softmax(sorted_logits.float(), dim=-1)
        mass_before = probs.cumsum(dim=-1) - probs  # probability of the tokens ranked above each one
        drop = mass_before >= top_p
        drop[..., 0] = False
        logits = logits.scatter(-1, order, sorted_logits.masked_fill(drop, float("-inf")))
    return logits


def sample_next(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    greedy: bool = False,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """One token per row: logits (B, V) -> ids (B,). temperature 0 or greedy -> argmax; below 0 is an error."""
    if temperature < 0:
        raise ConfigError(f"temperature={temperature} must be >= 0 (0 = greedy, the most likely token)")
    if greedy or temperature == 0:
        return logits.argmax(dim=-1)
    logits = filter_logits(logits / temperature, top_k, top_p)
    probs = F.softmax(logits.float(), dim=-1)  # (B, V)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)
