"""Multi-query associative recall (MQAR) as Zoology defines it (Arora et al., "Zoology: Measuring and improving recall
in efficient language models", ICLR 2024; HazyResearch/zoology, `zoology/data/multiquery_ar.py`), generated here
from the definition (nothing of theirs is copied), vectorised, from one seeded generator per split.

One sequence of `seq_len` tokens, vocabulary `vocab_size` (V; 8192 in the paper's Figure 2), N = `num_kv_pairs`:

    keys    [1, V // 2)       N distinct keys per sequence (each key stored once), id 0 is left for the filler
    values  [V // 2, V)       N distinct values per sequence
    inputs  k1 v1 k2 v2 .. kN vN | q . q . . . q . . .        the context (2N tokens), then the query region
    target  -100 everywhere but at each query position, whose target is its key's value

The query region has `seq_len - 2N` positions. Each key is asked once: key j sits at offset 2 g_j of the region
(even offsets, so a query never sits right after another), where the gap slots g_1 .. g_N are N distinct draws,
without replacement, from range((seq_len - 2N) // 2) with weights p(g) proportional to (g + 1) ** (power_a - 1):
a power law (power_a = 0.01: most queries come soon after the context; power_a = 1: uniform). Zoology draws them
with numpy's `choice(replace=False, p=...)`, one draw after another with the weights of the slots left
renormalised, and hands the first draw to the first key of the context, the second to the second, and so on;
here the same distribution comes from one vectorised draw (the Gumbel top-k trick: the slots ordered by
log p + Gumbel noise are exactly such a sequence of draws), the j-th slot again to the j-th key.

The inputs and targets are Zoology's after its shift: it builds a (seq_len + 1)-token example with the value one
position after the query and drops the first target and the last input, so the target of the query position is
the value and the value itself is never an input (the position after a query holds the filler). Every other
position of the query region is id 0, or with `random_non_queries` (Zoology's default; its Figure-2 configs turn it
off) a uniform draw from the whole vocabulary [0, V) (so keys and values of the sequence may reappear there,
unlabelled). Accuracy (Zoology's): per sequence its right answers over its N answers, averaged over sequences.

Key reassignment (`num_reassigned` = U > 0, Zoology's newer `forgetting_mqar`): after the N pairs come U more,
U distinct keys of the N with a new value each, and every query wants its key's latest value:
`k1 v1 .. kN vN k_a v_a' .. (U pairs) | queries`; the context is 2 (N + U) tokens.

Splits: train (`num_examples`), validation and test (`num_test_examples` each) come from three generators seeded
from (`data_seed`, split), so the same seed gives the same data and no split shares a stream with another.

Where this differs from Zoology, on purpose:
- Zoology draws the random filler from torch's global generator, which its data seed does not fix (two runs at
  one seed differ there); here it comes from the split's seeded generator like everything else.
- Zoology validates on its test set; here validation has its own set (model selection never sees the test set).
- Zoology asserts vocab_size > seq_len; nothing in the task needs it (small test vocabularies would fail it), so
  the checks here are what the layout needs: room for the pairs and queries, enough keys and values.
- forgetting_mqar draws the new value of the j-th reassigned key avoiding the old value of the j-th key of the
  context, which is not that key when the reassigned keys are shuffled, so a key could be "reassigned" its old
  value; here the new value always differs from the key's old one (it may equal another key's value, as there).
- The batches: Zoology's Figure 2 trains with 512 sequences a batch (256 at seq_len 256), 64 epochs of 100,000;
  this module's defaults are sized for a CPU (set data.batch_size for Zoology's).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from memexp.data.samplers import EpochSampler, ResumableLoader, SplitLoaders
from memexp.data.spec import IGNORE_INDEX, DataSpec
from memexp.errors import ConfigError

_SPLIT_SALT = {"train": 0, "val": 1, "test": 2}
_CHUNK = 8192  # sequences generated at once (bounds the (rows, slots) noise of the gap draw)


def check_mqar(vocab_size: int, seq_len: int, num_kv_pairs: int, num_reassigned: int = 0, power_a: float = 0.01) -> None:
    """A ConfigError naming the first data.* setting the layout cannot hold."""
    for name, value in (("vocab_size", vocab_size), ("seq_len", seq_len), ("num_kv_pairs", num_kv_pairs)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"data.{name}={value!r} must be a positive integer")
    if seq_len % 2:
        raise ConfigError(f"data.seq_len={seq_len} must be even (queries sit at even offsets after the pairs, as Zoology's)")
    if not isinstance(num_reassigned, int) or not 0 <= num_reassigned <= num_kv_pairs:
        raise ConfigError(f"data.num_reassigned={num_reassigned} must be between 0 and data.num_kv_pairs={num_kv_pairs}")
    need = 2 * (num_kv_pairs + num_reassigned) + 2 * num_kv_pairs
    if need > seq_len:
        raise ConfigError(
            f"data.num_kv_pairs={num_kv_pairs} does not fit data.seq_len={seq_len}: {need} tokens needed "
            f"({2 * (num_kv_pairs + num_reassigned)} for the pairs, 2 per query)"
        )
    keys, values = vocab_size // 2 - 1, vocab_size - vocab_size // 2
    if num_kv_pairs > keys or num_kv_pairs > values or (num_reassigned and values < 2):
        raise ConfigError(
            f"data.vocab_size={vocab_size} is too small for data.num_kv_pairs={num_kv_pairs} distinct keys and values "
            f"(keys are ids 1..{vocab_size // 2 - 1}, values {vocab_size // 2}..{vocab_size - 1}); "
            f"use data.vocab_size >= {2 * num_kv_pairs + 2}"
        )
    if not (isinstance(power_a, (int, float)) and power_a > 0 and math.isfinite(power_a)):
        raise ConfigError(f"data.power_a={power_a!r} must be a positive number (1: uniform gaps; 0.01: Zoology's power law)")


def gap_weights(slots: int, power_a: float) -> torch.Tensor:
    """(slots,) float64: the probability of gap slot g, proportional to (g + 1) ** (power_a - 1) (Zoology's)."""
    w = torch.arange(1, slots + 1, dtype=torch.float64) ** (power_a - 1)
    return w / w.sum()


def distinct_draws(rows: int, n: int, k: int, generator: torch.Generator) -> torch.Tensor:
    """(rows, k) long: per row k distinct ints of range(n), a uniform k-subset in uniform order (Floyd's algorithm
    vectorised over rows, then a shuffle): O(rows k^2), never a (rows, n) table."""
    out = torch.empty(rows, k, dtype=torch.long)
    for i, j in enumerate(range(n - k, n)):
        t = torch.randint(0, j + 1, (rows,), generator=generator)
        taken = (out[:, :i] == t[:, None]).any(dim=1)
        out[:, i] = torch.where(taken, torch.full_like(t, j), t)
    order = torch.argsort(torch.rand(rows, k, generator=generator), dim=1)
    return out.gather(1, order)


def query_gaps(rows: int, slots: int, k: int, power_a: float, generator: torch.Generator) -> torch.Tensor:
    """(rows, k) long: k gap slots per row drawn one after another without replacement with `gap_weights`, in the
    order drawn (Gumbel top-k: the slots sorted by log p + Gumbel noise are such a sequence of draws)."""
    u = torch.rand(rows, slots, generator=generator, dtype=torch.float64).clamp_min(1e-300)
    scores = gap_weights(slots, power_a).log() - torch.log(-torch.log(u))  # (rows, slots)
    return torch.topk(scores, k, dim=1, sorted=True).indices


def _reassign(keys: torch.Tensor, vals: torch.Tensor, u: int, n_values: int, generator: torch.Generator) -> tuple:
    """U of the N keys of each row get a new value: (the U extra pairs (rows, 2U), the final values (rows, N))."""
    rows, n = keys.shape
    which = torch.argsort(torch.rand(rows, n, generator=generator), dim=1)[:, :u]  # (rows, U) distinct pair indices
    old = vals.gather(1, which)  # value indices, in [0, n_values)
    r = torch.randint(0, n_values - 1, (rows, u), generator=generator)
    new = r + (r >= old).long()  # uniform over the values other than the key's old one
    pairs = torch.stack([keys.gather(1, which), new], dim=2).reshape(rows, 2 * u)
    return pairs, vals.scatter(1, which, new)


def mqar_examples(
    n: int,
    vocab_size: int,
    seq_len: int,
    num_kv_pairs: int,
    generator: torch.Generator,
    power_a: float = 0.01,
    random_non_queries: bool = True,
    num_reassigned: int = 0,
) -> dict[str, torch.Tensor]:
    """n MQAR sequences (the module docstring's definition), generated `_CHUNK` at a time from `generator`:
    {"input" (n, T) long, "answer_pos" (n, N) long (the query positions, key j's at column j), "answer" (n, N) long
    (their targets)}; `as_targets` turns the last two into the (n, T) targets."""
    check_mqar(vocab_size, seq_len, num_kv_pairs, num_reassigned, power_a)
    parts = [
        _chunk(min(_CHUNK, n - s), vocab_size, seq_len, num_kv_pairs, generator, power_a, random_non_queries, num_reassigned)
        for s in range(0, n, _CHUNK)
    ]
    return {k: torch.cat([p[k] for p in parts]) for k in ("input", "answer_pos", "answer")}


def _chunk(
    rows: int, V: int, T: int, N: int, generator: torch.Generator, power_a: float, random_fill: bool, U: int
) -> dict[str, torch.Tensor]:
    half = V // 2
    keys = distinct_draws(rows, half - 1, N, generator) + 1  # (rows, N) ids in [1, V/2)
    vals = distinct_draws(rows, V - half, N, generator)  # (rows, N) value indices in [0, V - V/2)
    context = torch.stack([keys, vals + half], dim=2).reshape(rows, 2 * N)  # k1 v1 .. kN vN
    final = vals
    if U:
        extra, final = _reassign(keys, vals, U, V - half, generator)
        context = torch.cat([context, extra + torch.tensor([0, half]).repeat(U)], dim=1)
    C = context.shape[1]
    gaps = query_gaps(rows, (T - C) // 2, N, power_a, generator)  # (rows, N): key j's slot in column j
    pos = C + 2 * gaps  # (rows, N) query positions
    x = torch.zeros(rows, T, dtype=torch.long)
    x[:, :C] = context
    x.scatter_(1, pos, keys)
    if random_fill:  # the zeros (only in the query region: keys start at 1) become uniform draws from [0, V)
        fill = torch.randint(0, V, (rows, T), generator=generator)
        x = torch.where(x == 0, fill, x)
    return {"input": x, "answer_pos": pos, "answer": final + half}


def as_targets(answer_pos: torch.Tensor, answer: torch.Tensor, seq_len: int) -> torch.Tensor:
    """(n, T) long targets: -100 everywhere but `answer` at `answer_pos` (both (n, N))."""
    y = torch.full((answer_pos.shape[0], seq_len), IGNORE_INDEX, dtype=torch.long)
    return y.scatter_(1, answer_pos, answer)


class MQARTokenizer:
    """Names for the ids (decode only; there is no text to encode): `_` the filler id 0, `k12` key 12, `v5` value 5
    (id V // 2 + 5)."""

    name = "mqar"

    def __init__(self, vocab_size: int):
        self.vocab_size = int(vocab_size)

    def encode(self, text: str) -> list[int]:
        """Space-separated names (`k12 v5 _`) or bare ids back to ids."""
        half, out = self.vocab_size // 2, []
        for word in text.split():
            if word == "_":
                out.append(0)
            elif word[0] in "kv" and word[1:].isdigit():
                out.append(int(word[1:]) + (half if word[0] == "v" else 0))
            else:
                out.append(int(word) % self.vocab_size)
        return out

    def decode(self, ids: Iterable[int]) -> str:
        half = self.vocab_size // 2
        return " ".join("_" if i == 0 else f"k{i}" if i < half else f"v{i - half}" for i in map(int, ids)) + " "

    def state_dict(self) -> dict:
        return {"name": self.name, "vocab_size": self.vocab_size}


class _MQARSplit(Dataset):
    """One generated split; a batch of indices is fetched at once (`__getitems__`), not sequence by sequence."""

    def __init__(self, data: dict[str, torch.Tensor], seq_len: int):
        small = int(data["input"].max()) < 2**15
        self.inputs = data["input"].to(torch.int16 if small else torch.int32)  # (n, T), widened per batch
        self.answer_pos, self.answer, self.seq_len = data["answer_pos"], data["answer"], seq_len

    def __len__(self) -> int:
        return self.inputs.shape[0]

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        i = torch.as_tensor(indices, dtype=torch.long)
        return {"input": self.inputs[i].long(), "target": as_targets(self.answer_pos[i], self.answer[i], self.seq_len)}

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {k: v[0] for k, v in self.__getitems__([i]).items()}


def _whole_batch(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The collate of a split whose `__getitems__` already returns the batch."""
    return batch


class MQARDataModule(SplitLoaders, L.LightningDataModule):
    """Zoology's multi-query associative recall (the module docstring), generated from `data_seed`.

    Args:
        vocab_size: V; keys are ids 1 .. V/2 - 1, values V/2 .. V - 1 (Zoology's Figure 2: 8192).
        seq_len: tokens per sequence (Figure 2: 64 to 512).
        num_kv_pairs: N key-value pairs per sequence, each key asked once (Figure 2: 4 to 64).
        num_examples: training sequences (Zoology: 100,000; an epoch is one pass).
        num_test_examples: validation and test sequences each (Zoology: 3,000).
        power_a: exponent of the power law of the query gaps (Zoology's default 0.01; 1.0: uniform).
        random_non_queries: fill the query region's other positions with random ids (Zoology's default) instead of 0.
        num_reassigned: keys given a second, newer value after the N pairs (Zoology's forgetting MQAR; 0: plain MQAR).
        batch_size, eval_batch_size: sequences per batch (Zoology's Figure 2 trains with 512, 256 at seq_len 256).
        data_seed: seed of the three splits' generators (the run's `data_seed`).
        data_dir, num_workers: accepted for the common data interface; nothing is read.
    """

    task_kind = "causal_lm"

    def __init__(
        self,
        vocab_size: int = 8192,
        seq_len: int = 64,
        num_kv_pairs: int = 4,
        num_examples: int = 100_000,
        num_test_examples: int = 3_000,
        power_a: float = 0.01,
        random_non_queries: bool = True,
        num_reassigned: int = 0,
        batch_size: int = 64,
        eval_batch_size: int = 256,
        data_seed: int = 0,
        data_dir: str | None = None,
        num_workers: int = 0,
    ):
        super().__init__()
        check_mqar(vocab_size, seq_len, num_kv_pairs, num_reassigned, power_a)
        for name, value in (("num_examples", num_examples), ("num_test_examples", num_test_examples)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"data.{name}={value!r} must be a positive integer")
        self.vocab_size, self.seq_len, self.num_kv_pairs = vocab_size, seq_len, num_kv_pairs
        self.power_a, self.random_non_queries, self.num_reassigned = float(power_a), bool(random_non_queries), num_reassigned
        self.sizes = {"train": num_examples, "val": num_test_examples, "test": num_test_examples}
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.data_seed, self.num_workers = int(data_seed), num_workers
        self.data_dir = Path(data_dir) if data_dir else None
        self.tokenizer = MQARTokenizer(vocab_size)
        self._splits: dict[str, _MQARSplit] = {}

    @property
    def chance(self) -> float:
        """The accuracy of a uniform guess among the values."""
        return 1.0 / (self.vocab_size - self.vocab_size // 2)

    def generator(self, split: str) -> torch.Generator:
        """The seeded generator of one split: its own stream of (data_seed, split)."""
        seed = np.random.SeedSequence([self.data_seed, _SPLIT_SALT[split]]).generate_state(1, dtype=np.uint64)[0]
        return torch.Generator().manual_seed(int(seed))

    def examples(self, split: str) -> dict[str, torch.Tensor]:
        """The split's sequences as `mqar_examples` returns them (generated on first use, then kept)."""
        if split not in self._splits:
            data = mqar_examples(
                self.sizes[split],
                self.vocab_size,
                self.seq_len,
                self.num_kv_pairs,
                self.generator(split),
                self.power_a,
                self.random_non_queries,
                self.num_reassigned,
            )
            self._splits[split] = _MQARSplit(data, self.seq_len)
        s = self._splits[split]
        return {"input": s.inputs.long(), "answer_pos": s.answer_pos, "answer": s.answer}

    # -- the common data interface -------------------------------------------------------
    def prepare_data(self) -> None:
        pass

    def setup(self, stage: str | None = None) -> None:
        pass  # each split is generated when its loader is first asked for

    def restore_tokenizer(self, state: dict) -> None:
        pass  # the vocabulary follows from the config

    @property
    def spec(self) -> DataSpec:
        return DataSpec(
            task_kind=self.task_kind,
            vocab_size=self.vocab_size,
            tokenizer=self.tokenizer,
            seq_len=self.seq_len,
            answer_positions=True,
        )

    def _loader(self, split: str, batch_size: int, shuffle: bool = False) -> DataLoader:
        self.examples(split)
        items = self._splits[split]
        return (ResumableLoader if shuffle else DataLoader)(
            items,
            batch_size=batch_size,
            sampler=EpochSampler(len(items), self.data_seed) if shuffle else None,
            collate_fn=_whole_batch,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )
