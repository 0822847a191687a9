"""The ranges of numeric settings, checked on the composed config before any work (memexp.configs.overrides).

Without these a negative step count, a zero head count or a dropout of 2 reaches torch or Lightning and comes
back as a traceback from deep inside them, or is accepted silently. Each rule is a dotted-key pattern and a
range; the first rule whose pattern matches a key applies. Keys the rules do not name are left to the
constructors' own checks.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass

from memexp.errors import ConfigError


@dataclass(frozen=True)
class Range:
    low: float | None = None  # inclusive unless open_low
    high: float | None = None  # inclusive unless open_high
    integer: bool = False
    open_low: bool = False
    open_high: bool = False
    also: tuple = ()  # other allowed values (e.g. -1 for "no limit")

    def admits(self, v: object) -> bool:
        if v in self.also and not isinstance(v, bool):
            return True
        if isinstance(v, bool) or not isinstance(v, (int, float)) or (self.integer and not isinstance(v, int)):
            return False
        if isinstance(v, float) and math.isnan(v):
            return False
        if self.low is not None and (v <= self.low if self.open_low else v < self.low):
            return False
        return not (self.high is not None and (v >= self.high if self.open_high else v > self.high))

    def __str__(self) -> str:
        kind = "an integer" if self.integer else "a number"
        lo = None if self.low is None else f"{'>' if self.open_low else '>='} {self.low:g}"
        hi = None if self.high is None else f"{'<' if self.open_high else '<='} {self.high:g}"
        bounds = " and ".join(b for b in (lo, hi) if b)
        extra = "".join(f" or {a}" for a in self.also)
        return f"{kind}{' ' + bounds if bounds else ''}{extra}"


COUNT = Range(1, integer=True)  # sizes, counts, lengths
NONNEG_INT = Range(0, integer=True)
FRACTION = Range(0.0, 1.0)
POSITIVE = Range(0.0, open_low=True)
NONNEG = Range(0.0)

RULES: list[tuple[str, Range]] = [
    # run-level
    (r"seed|data_seed|data\.data_seed", NONNEG_INT),
    (r"sample_tokens", NONNEG_INT),
    # optimiser
    (r"optim\.lr", POSITIVE),
    (r"optim\.(min_lr|weight_decay|momentum)", NONNEG),
    (r"optim\.warmup_steps", NONNEG_INT),
    (r"optim\.betas\.\d", Range(0.0, 1.0, open_high=True)),
    # trainer
    (r"trainer\.max_steps", Range(1, integer=True, also=(-1,))),
    (r"trainer\.threads", Range(1, integer=True, also=("auto",))),
    (r"trainer\.max_epochs", Range(1, integer=True, also=(-1, None))),
    (r"trainer\.(accumulate_grad_batches|log_every_n_steps|devices|num_nodes)", Range(1, integer=True, also=("auto", -1))),
    (r"trainer\.val_check_interval", Range(0.0, open_low=True, also=(None,))),
    (r"trainer\.gradient_clip_val", Range(0.0, also=(None,))),
    (r"trainer\.limit_(train|val|test)_batches", Range(0.0, also=(None,))),
    (r"trainer\.overfit_batches", NONNEG),
    (r"trainer\.num_sanity_val_steps", Range(-1, integer=True)),
    # dropout-like probabilities and ratios, anywhere
    (r"(model|data)\..*(dropout|_prob|_ratio)[a-z_]*", FRACTION),
    (r"callbacks\.ema\.decay", FRACTION),
    # model sizes
    (r"model\.(ff_mult|min_think)", NONNEG),
    (
        r"model\.(dim|depth|heads|max_len|seq_len|vocab_size|embedding_size|embedding_dim|hidden_size"
        r"|hidden_dim|static_dim|hyper_num_units|hyper_embedding_size|num_layers|knowledge_num|knowledge_length"
        r"|knowledge_dim|num_candidates|fusion_dim|memory_capacity|top_k|mem_write|max_think)",
        Range(1, integer=True, also=(None,)),
    ),
    (r"model\.cms_frequencies\.\d+", COUNT),
    # data sizes
    (
        r"data\.(seq_len|batch_size|eval_batch_size|max_len|entity_max_len|max_history|max_context_len|max_reply_len"
        r"|n_filler|n_keys|n_values|n_pairs|n_queries|n_tasks|train_size|val_size|test_size|chunk_size"
        r"|qa_per_batch|index_per_batch|num_tokens|train_windows_per_epoch|steps_per_epoch"
        r"|vocab_size|num_kv_pairs|num_examples|num_test_examples)",
        Range(1, integer=True, also=(None,)),
    ),
    (r"data\.(num_workers|min_freq|task_id|holdout|num_reassigned)", NONNEG_INT),
    (r"data\.power_a", POSITIVE),
    (r"data\.gap(\.\d+)?", COUNT),
    (r"data\.splits\.\d", FRACTION),
    # generation, chat, evaluation
    (r"(max_new_tokens|max_len|history|n_samples|top)", Range(0, integer=True, also=(None,))),
    (r"temperature", NONNEG),
    (r"top_k", NONNEG_INT),
    (r"top_p", Range(0.0, 1.0, open_low=True)),
    (r"similarity_threshold", Range(-1.0, 1.0)),
    (r"fact_update_frequency", COUNT),
    (r"(gap|gaps\.\d+|lengths\.\d+)", Range(1, integer=True, also=(None,))),
]
_COMPILED = [(re.compile(pattern + r"$"), rng) for pattern, rng in RULES]


def _leaves(node: object, prefix: str = "") -> Iterator[tuple[str, object]]:
    if isinstance(node, dict):
        for k, v in node.items():
            if str(k) in ("hydra", "_target_", "_partial_") or str(k).startswith("_"):
                continue
            yield from _leaves(v, f"{prefix}{k}.")
    elif isinstance(node, (list, tuple)):
        for i, v in enumerate(node):
            yield from _leaves(v, f"{prefix}{i}.")
    else:
        yield prefix[:-1], node


class RangeError(ConfigError):
    def __init__(self, key: str, value: object, rng: Range):
        super().__init__(f"{key}={value}: expected {rng}")
        self.key, self.range = key, rng


def rule_for(key: str) -> Range | None:
    return next((rng for pattern, rng in _COMPILED if pattern.match(key)), None)


def check_ranges(cfg: dict) -> None:
    """A ConfigError for the first numeric setting of `cfg` (a resolved config as plain containers) out of range."""
    for key, value in _leaves(cfg):
        rng = rule_for(key)
        if rng is None or value is None and None in rng.also:
            continue
        if isinstance(value, str) and value in rng.also:
            continue
        if isinstance(value, bool):  # a switch whose name looks numeric (use_recurrent_dropout)
            continue
        if isinstance(value, (int, float, str)) or value is None:
            if not rng.admits(value):
                raise RangeError(key, value, rng)
