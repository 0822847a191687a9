"""Next-token sampling shared by the generating models: `Sampling` (greedy, temperature, top-k, nucleus
(top-p), seed) and the functions that apply it.

Shape legend: B batch, V vocabulary; `...` any leading dims.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from memexp.errors import ConfigError


@dataclass(frozen=True)
class Sampling:
    """How each next token is chosen; the one place these settings are checked.

    greedy: the most likely token (temperature, top_k and top_p are then not read); else a draw at
    `temperature` (> 0) from the `top_k` most likely tokens (0: all) within the nucleus of mass `top_p`
    (1.0: all). seed: the draws' generator (None: torch's global one).
    """

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    greedy: bool = False
    seed: int | None = None

    def __post_init__(self) -> None:
        if not self.greedy and not self.temperature > 0:
            raise ConfigError(f"temperature={self.temperature}: expected temperature > 0 (or greedy=true: the most likely token)")
        if self.top_k < 0:
            raise ConfigError(f"top_k={self.top_k}: expected top_k >= 0 (0 = no top-k filtering)")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"top_p={self.top_p}: expected 0 < top_p <= 1 (1.0 = no nucleus filtering)")

    @classmethod
    def from_settings(
        cls, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, greedy: bool = False, seed: int | None = None
    ) -> Sampling:
        """From the command lines' flat settings (memexp.generate, memexp.chat), where temperature 0 means greedy."""
        return cls(temperature, top_k, top_p, greedy=greedy or temperature == 0, seed=seed)

    def generator(self, device: torch.device | str) -> torch.Generator | None:
        """A generator on `device` seeded with `seed`; None without a seed."""
        return None if self.seed is None else torch.Generator(device=device).manual_seed(self.seed)


GREEDY = Sampling(greedy=True)


def filter_logits(logits: torch.Tensor, sampling: Sampling) -> torch.Tensor:
    """Set to -inf every logit outside the top-k and outside the nucleus of mass top_p.

    logits (..., V) -> (..., V). top_k=0 and top_p=1.0 leave it unchanged; the most likely
    token always survives, so at least one finite logit remains per row.
    """
    top_k, top_p = sampling.top_k, sampling.top_p
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


def sample_next(logits: torch.Tensor, sampling: Sampling, generator: torch.Generator | None = None) -> torch.Tensor:
    """One token per row: logits (B, V) -> ids (B,); argmax when greedy. generator: the draws' (one per
    sequence, made from sampling.seed by the caller, so that a seed fixes the whole sequence)."""
    if sampling.greedy:
        return logits.argmax(dim=-1)
    logits = filter_logits(logits / sampling.temperature, sampling)
    probs = F.softmax(logits.float(), dim=-1)  # (B, V)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)
