"""Items and batches of a tokenised news split, with ENDEF's training augmentation.

Contract of a batch (all padded to fixed lengths by default collation):

    content (B, max_len) long      [CLS] content tokens (truncated) [SEP], then pad_id
    content_mask (B, max_len) bool True on the tokens above
    entity (B, entity_max_len) long, entity_mask: [CLS] e1 [SEP] e2 [SEP] ... as the original joins them
    label (B,) long (0 real, 1 fake), year (B,) long (year category), index (B,) long (item index)
    emotion (B, K) float           only when the split has emotion features

Augmentation (training only, `aug_prob` > 0), as the original's `data_augment`, on token ids:
with probability 1/2 each entity is, with probability aug_prob each, replaced by [MASK] in the
content (and dropped from the entity string), or deleted from the content (and dropped), or kept;
otherwise each word of the content (jieba words for Chinese, characters without jieba, spaces for
English) is deleted with probability aug_prob or replaced by one [MASK] with probability aug_prob.
It is seeded by (seed, epoch, item), so a run is repeatable and every epoch differs.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from memexp.data.samplers import EpochSampler


@dataclass(frozen=True)
class SpecialIds:
    pad: int
    cls: int
    sep: int
    mask: int


def replace_span(ids: torch.Tensor, pattern: torch.Tensor, repl: list[int]) -> torch.Tensor:
    """Every non-overlapping occurrence of `pattern` in `ids` (1-D) replaced by `repl`, left to right."""
    k = len(pattern)
    if k == 0 or k > len(ids):
        return ids
    hits = (ids.unfold(0, k, 1) == pattern).all(1).nonzero().flatten().tolist()
    pieces, pos = [], 0
    for h in hits:
        if h < pos:
            continue
        pieces += [ids[pos:h], torch.tensor(repl, dtype=ids.dtype)]
        pos = h + k
    if not pieces:
        return ids
    return torch.cat([*pieces, ids[pos:]])


def augment(
    content: torch.Tensor, words: torch.Tensor, entities: list[torch.Tensor], rng: np.random.Generator, p: float, mask_id: int
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """ENDEF's `data_augment` on ids: (content ids, word index per token, entity ids) -> augmented (content, entities)."""
    if rng.random() < 0.5:
        kept = []
        for ent in entities:
            r = rng.random()
            if r < p:
                content = replace_span(content, ent, [mask_id])
            elif r < 2 * p:
                content = replace_span(content, ent, [])
            else:
                kept.append(ent)
        return content, kept
    if len(content) == 0:
        return content, entities
    w = words.long() - int(words.min())
    r = torch.from_numpy(rng.random(int(w.max()) + 1))
    deleted, masked = r < p, (r >= p) & (r < 2 * p)
    first = torch.ones_like(w, dtype=torch.bool)
    first[1:] = w[1:] != w[:-1]
    out = content.clone()
    out[masked[w] & first] = mask_id  # a masked word becomes one [MASK]
    return out[~(deleted[w] | (masked[w] & ~first))], entities


def wrap(body: torch.Tensor, length: int, ids: SpecialIds) -> tuple[torch.Tensor, torch.Tensor]:
    """[CLS] body[: length - 2] [SEP] padded to `length`, and its mask."""
    body = body[: max(length - 2, 0)].long()
    n = len(body) + 2
    out = torch.full((length,), ids.pad, dtype=torch.long)
    out[0], out[1 : n - 1], out[n - 1] = ids.cls, body, ids.sep
    mask = torch.zeros(length, dtype=torch.bool)
    mask[:n] = True
    return out, mask


class NewsItems(Dataset):
    """A tokenised split (`memexp.data.news.tokens`) as padded items; keys are an index, or
    (epoch, index) from `EpochShuffle`, which turns on augmentation when aug_prob > 0."""

    def __init__(
        self, t: dict, ids: SpecialIds, max_len: int = 170, entity_max_len: int = 50, aug_prob: float = 0.0, seed: int = 0
    ):
        self.t, self.ids = t, ids
        self.max_len, self.entity_max_len, self.aug_prob, self.seed = max_len, entity_max_len, aug_prob, seed

    def __len__(self) -> int:
        return len(self.t["label"])

    def entities(self, i: int) -> list[torch.Tensor]:
        eo, off = self.t["entity_offsets"], self.t["item_entities"]
        return [self.t["entity"][eo[j] : eo[j + 1]] for j in range(int(off[i]), int(off[i + 1]))]

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        epoch, i = key if isinstance(key, tuple) else (None, key)
        a, b = int(self.t["content_offsets"][i]), int(self.t["content_offsets"][i + 1])
        content, entities = self.t["content"][a:b], self.entities(i)
        if epoch is not None and self.aug_prob > 0:
            rng = np.random.default_rng((self.seed, epoch, i))
            content, entities = augment(content, self.t["content_word"][a:b], entities, rng, self.aug_prob, self.ids.mask)
        sep = torch.tensor([self.ids.sep], dtype=torch.int32)
        joined = torch.cat([x for e in entities for x in (e, sep)][:-1]) if entities else torch.zeros(0, dtype=torch.int32)
        c, cm = wrap(content, self.max_len, self.ids)
        e, em = wrap(joined, self.entity_max_len, self.ids)
        item = {"content": c, "content_mask": cm, "entity": e, "entity_mask": em, "index": torch.tensor(i)}
        item |= {"label": self.t["label"][i], "year": self.t["year"][i]}
        if "emotion" in self.t:
            item["emotion"] = self.t["emotion"][i]
        return item


class EpochShuffle(EpochSampler):
    """A seeded permutation per epoch (memexp.data.samplers), yielding (epoch, index) keys so that
    the items can seed their augmentation by epoch."""

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch, start = self.epoch, self._take_start()
        self.epoch += 1
        for i in self.indices(epoch)[start:]:
            yield epoch, i
