"""Synthetic memory tasks, generated from a seed (no files): needle-at-gap and multi-query
associative recall. The controlled test every memory architecture is measured on.

Vocabulary (`n_filler + n_keys + n_values` ids, one contiguous block each, plus `n_tasks`
task cues with `task_cue=true`):

    filler  [0, F)          random tokens that fill the gap (and the left padding)
    keys    [F, F + K)
    values  [F + K, F + K + Vv)
    cues    [F + K + Vv, F + K + Vv + n_tasks)     t0, t1, ...: which task a query belongs to

With `disjoint_values=true` the values block is `n_tasks * n_values` ids and task t uses
its own slice [F + K + t Vv, F + K + (t+1) Vv) (the cues, if any, come after it).

needle:        ... filler ... k v  f_1 .. f_gap  k      target at the last k = v
multi_query:   ... filler ... k1 v1 .. kn vn  f_1 .. f_gap  q1 a1 q2 a2 .. qm      target at each q = its value

`gap` is the number of filler tokens between the (last) stored value and the (first)
query. Every sequence is `seq_len` tokens long: the pairs are pushed right against the gap
and the rest on the left is filler, so batches need no padding. Targets are -100
everywhere except at the query positions (the loss and every metric are on the answers
only: predicting random filler teaches nothing). Chance is 1 / n_values.

Continual-learning variants: `task_id` > 0 with `remap_values=true` makes the answer of
value v the value perm_t(v) under a per-task permutation (drawn from the seed), so tasks
A, B, C share inputs but want different outputs: they interfere, and forgetting shows.
Without a cue no model can answer two tasks at once (the same input wants two answers), so
forgetting is fixed by the data; `task_cue=true` puts the task's cue token right before the
query (`... k v f_1 .. f_gap t k`), which makes all tasks learnable together: what a model
keeps of task A after training on B and C alone is then a property of the model (this is
the `continual_abc` preset's design). `disjoint_values=true` gives each task its own value
tokens instead (no input of one task appears in another), so nothing forces a model to
overwrite task A while it learns C: only the drift of shared weights does.

Splits: train, val and test draw from disjoint seed streams (seed, split, index), so a
sample is the same in every run and no evaluation sample is a training sample's twin.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from memexp.data.samplers import EpochSampler, ResumableLoader, SplitLoaders
from memexp.data.spec import IGNORE_INDEX, DataSpec
from memexp.errors import ConfigError

_SPLIT_SALT = {"train": 0, "val": 1, "test": 2, "meta": 3}
KINDS = ("needle", "multi_query")


class RecallTokenizer:
    """Names for the synthetic ids: f3, k1, v5 (decode only; there is no text to encode)."""

    name = "recall"

    def __init__(self, n_filler: int, n_keys: int, n_values: int, n_cues: int = 0):
        self.n_filler, self.n_keys, self.n_values, self.n_cues = n_filler, n_keys, n_values, n_cues

    @property
    def vocab_size(self) -> int:
        return self.n_filler + self.n_keys + self.n_values + self.n_cues

    def encode(self, text: str) -> list[int]:
        """Space-separated names (`k1 v5 f0 t2`) or bare ids back to ids."""
        out = []
        offsets = {"f": 0, "k": self.n_filler, "v": self.n_filler + self.n_keys, "t": self.n_filler + self.n_keys + self.n_values}
        for word in text.split():
            if word[0] in offsets and word[1:].isdigit():
                out.append(offsets[word[0]] + int(word[1:]))
            else:
                out.append(int(word) % self.vocab_size)
        return out

    def decode(self, ids: Iterable[int]) -> str:
        names = []
        for i in ids:
            i = int(i)
            if i < self.n_filler:
                names.append(f"f{i}")
            elif i < self.n_filler + self.n_keys:
                names.append(f"k{i - self.n_filler}")
            elif i < self.n_filler + self.n_keys + self.n_values:
                names.append(f"v{i - self.n_filler - self.n_keys}")
            else:
                names.append(f"t{i - self.n_filler - self.n_keys - self.n_values}")
        return " ".join(names) + " "

    def state_dict(self) -> dict:
        return {
            "name": self.name,
            "n_filler": self.n_filler,
            "n_keys": self.n_keys,
            "n_values": self.n_values,
            "n_cues": self.n_cues,
        }


def recall_batch(
    n: int,
    seq_len: int,
    gap: int | Sequence[int],
    generator: torch.Generator,
    kind: str = "needle",
    n_filler: int = 16,
    n_keys: int = 8,
    n_values: int = 8,
    n_pairs: int = 4,
    n_queries: int = 2,
    value_map: torch.Tensor | None = None,
    cue: int | None = None,
    value_offset: int = 0,
) -> dict:
    """n sequences: {"input": (n, seq_len), "target": (n, seq_len) (-100 except answers)}.
    `gap` is an int or an inclusive [low, high] range; `cue` (a token id) is put right before
    the first query, so the query says which task's answer it wants. Value (and answer) ids
    start at F + K + `value_offset` (tasks with disjoint value blocks)."""
    lo, hi = (int(gap), int(gap)) if isinstance(gap, int) else (int(gap[0]), int(gap[1]))
    F, K = n_filler, n_keys
    V0 = F + K + value_offset  # id of value 0
    pairs, queries = (1, 1) if kind == "needle" else (n_pairs, n_queries)
    tail = 2 * queries - 1  # q1 a1 .. qm (the last answer is not an input)
    cued = cue is not None
    need = 2 * pairs + hi + tail + cued
    if need > seq_len:
        raise ConfigError(
            f"data.seq_len={seq_len} is too short for gap={hi} ({need} tokens needed: "
            f"{2 * pairs} for the pairs, {hi} of gap, {tail} for the queries"
            f"{', 1 for the task cue' if cued else ''})"
        )
    x = torch.randint(0, F, (n, seq_len), generator=generator)
    y = torch.full((n, seq_len), IGNORE_INDEX, dtype=torch.long)
    gaps = torch.randint(lo, hi + 1, (n,), generator=generator)
    # distinct keys per sequence (a key stored twice would have two values)
    keys = torch.argsort(torch.rand(n, K, generator=generator), dim=1)[:, :pairs] + F  # (n, pairs)
    vals = torch.randint(0, n_values, (n, pairs), generator=generator)  # value indices
    answers = vals if value_map is None else value_map[vals]
    which = torch.randint(0, pairs, (n, queries), generator=generator)  # which pair each query asks
    for b in range(n):
        q0 = seq_len - tail  # first query position
        start = q0 - cued - int(gaps[b]) - 2 * pairs  # first key position
        if cued:
            x[b, q0 - 1] = cue
        for p in range(pairs):
            x[b, start + 2 * p] = keys[b, p]
            x[b, start + 2 * p + 1] = V0 + vals[b, p]
        for j in range(queries):
            pos = q0 + 2 * j
            p = int(which[b, j])
            x[b, pos] = keys[b, p]
            y[b, pos] = V0 + answers[b, p]
            if pos + 1 < seq_len:
                x[b, pos + 1] = V0 + answers[b, p]
    return {"input": x, "target": y}


class _RecallSplit(Dataset):
    """Item i of a split: one sequence generated from (seed, split, i)."""

    def __init__(self, module: RecallDataModule, split: str, size: int):
        self.module, self.split, self.size = module, split, size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, i: int) -> dict:
        m = self.module
        g = torch.Generator().manual_seed(((m.seed * 8 + _SPLIT_SALT[self.split]) * 1_000_003 + i) * 31 + m.task_id)
        b = m.batch(1, generator=g)
        return {k: v[0] for k, v in b.items()}


class RecallDataModule(SplitLoaders, L.LightningDataModule):
    """Needle-at-gap or multi-query associative recall, generated on the fly from `seed`.

    Args:
        kind: "needle" (one key/value, one query) or "multi_query" (n_pairs pairs, n_queries queries).
        seq_len: tokens per sequence (training and evaluation).
        gap: filler tokens between the last stored value and the first query: an int, or an
            inclusive [low, high] range drawn per sequence (train on a range to generalise).
        n_filler, n_keys, n_values: sizes of the three vocabulary blocks; chance = 1 / n_values.
        n_pairs, n_queries: multi_query only.
        task_id, remap_values, task_cue, disjoint_values, n_tasks: continual-learning variants
            (see the module docstring); `n_tasks` cue tokens join the vocabulary when `task_cue`
            is set, and `n_tasks` value blocks replace the one with `disjoint_values`.
        train_size, val_size, test_size: sequences per split (training: per epoch).
        batch_size, eval_batch_size: sequences per batch.
        seed: generator seed of every split.
        data_dir, num_workers: accepted for the common data interface; nothing is read.
    """

    task_kind = "causal_lm"

    def __init__(
        self,
        kind: str = "needle",
        seq_len: int = 72,
        gap: int | Sequence[int] = (4, 64),
        n_filler: int = 16,
        n_keys: int = 8,
        n_values: int = 8,
        n_pairs: int = 4,
        n_queries: int = 2,
        task_id: int = 0,
        remap_values: bool = False,
        task_cue: bool = False,
        disjoint_values: bool = False,
        n_tasks: int = 3,
        train_size: int = 100_000,
        val_size: int = 256,
        test_size: int = 512,
        batch_size: int = 32,
        eval_batch_size: int = 128,
        seed: int = 0,
        data_dir: str | None = None,
        num_workers: int = 0,
    ):
        super().__init__()
        if kind not in KINDS:
            raise ConfigError(f"data.kind={kind!r}: expected one of {list(KINDS)}")
        if kind == "multi_query" and not 1 <= n_pairs <= n_keys:
            raise ConfigError(f"data.n_pairs={n_pairs} must be between 1 and data.n_keys={n_keys} (keys are distinct)")
        if min(n_filler, n_keys, n_values) < 1:
            raise ConfigError("data.n_filler, data.n_keys and data.n_values must be positive")
        self.kind, self.seq_len = kind, int(seq_len)
        self.gap = int(gap) if isinstance(gap, int) else [int(g) for g in gap]
        self.n_filler, self.n_keys, self.n_values = n_filler, n_keys, n_values
        self.n_pairs, self.n_queries = n_pairs, n_queries
        self.task_id, self.remap_values = int(task_id), bool(remap_values)
        self.task_cue, self.disjoint_values, self.n_tasks = bool(task_cue), bool(disjoint_values), int(n_tasks)
        if (self.task_cue or self.disjoint_values) and not 0 <= self.task_id < self.n_tasks:
            raise ConfigError(
                f"data.task_id={self.task_id}: with data.task_cue or data.disjoint_values, "
                f"expected 0 <= task_id < data.n_tasks={self.n_tasks}"
            )
        self.sizes = {"train": train_size, "val": val_size, "test": test_size}
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.seed, self.num_workers = seed, num_workers
        self.data_dir = Path(data_dir) if data_dir else None
        value_ids = n_values * (self.n_tasks if self.disjoint_values else 1)
        self.value_offset = n_values * self.task_id if self.disjoint_values else 0
        self.tokenizer = RecallTokenizer(n_filler, n_keys, value_ids, self.n_tasks if self.task_cue else 0)
        # the value -> answer permutation of this task (identity for task 0 or without remapping)
        g = torch.Generator().manual_seed(10_007 * (self.seed + 1) + self.task_id)
        perm = torch.randperm(n_values, generator=g)
        # (with disjoint value blocks task 0 is remapped too: every task's answers come from its own map)
        self.value_map = perm if (self.remap_values and (self.task_id > 0 or self.disjoint_values)) else None
        self.batch(1, generator=torch.Generator().manual_seed(0))  # fail now if seq_len cannot hold the gap

    @property
    def chance(self) -> float:
        return 1.0 / self.n_values

    def batch(
        self, n: int, gap: int | Sequence[int] | None = None, generator: torch.Generator | None = None, seq_len: int | None = None
    ) -> dict:
        """n sequences of this task; `gap` / `seq_len` override the module's (evaluation at other gaps)."""
        gap = self.gap if gap is None else gap
        if seq_len is None:
            hi = gap if isinstance(gap, int) else max(gap)
            tail = 1 if self.kind == "needle" else 2 * self.n_queries - 1
            pairs = 1 if self.kind == "needle" else self.n_pairs
            seq_len = max(self.seq_len, 2 * pairs + hi + tail + self.task_cue)
        return recall_batch(
            n,
            seq_len,
            gap,
            generator or torch.Generator().manual_seed(self.seed),
            self.kind,
            self.n_filler,
            self.n_keys,
            self.n_values,
            self.n_pairs,
            self.n_queries,
            self.value_map,
            self.cue,
            self.value_offset,
        )

    @property
    def cue(self) -> int | None:
        """The id of this task's cue token (None without `task_cue`)."""
        return self.tokenizer.vocab_size - self.n_tasks + self.task_id if self.task_cue else None

    # -- the common data interface -------------------------------------------------------
    def prepare_data(self) -> None:
        pass

    def setup(self, stage: str | None = None) -> None:
        pass

    def restore_tokenizer(self, state: dict) -> None:
        pass  # the vocabulary follows from the config

    @property
    def spec(self) -> DataSpec:
        return DataSpec(
            task_kind=self.task_kind, vocab_size=self.tokenizer.vocab_size, tokenizer=self.tokenizer, seq_len=self.seq_len
        )

    def _loader(self, split: str, batch_size: int, shuffle: bool = False) -> DataLoader:
        items = _RecallSplit(self, split, self.sizes.get(split, self.sizes["val"]))
        return (ResumableLoader if shuffle else DataLoader)(
            items,
            batch_size=batch_size,
            sampler=EpochSampler(len(items), self.seed) if shuffle else None,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )
