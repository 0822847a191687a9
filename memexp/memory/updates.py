"""Writing new facts into an explicit memory bank without ever touching its frozen entries.

`BankUpdater` picks, for each new fact, the updatable entry it replaces:

    fifo        the updatable entries in turn, oldest write first (a ring over the updatable region)
    lru         the least recently used updatable entry (retrieval marks use: `record_usage`)
    random      a uniformly random updatable entry (seeded)
    similarity  the most similar updatable entry when its cosine is >= similarity_threshold (a
                restatement replaces what it restates), else the least recently used one; `for_model`
                compares entries in retrieval's own space
    importance  the updatable entry retrieval selected least often (`record_usage` counts; ties: the oldest write)

The frozen entries (`freeze_mask`, the first floor(N * freeze_ratio)) are never candidates: the
original's FIFO started at index 0, which is exactly its frozen 20%, its "similarity" was random and
its usage counts were never updated. Every pick is one masked argmin/argmax over N (no sort).
Facts are tokenised with `bank_cache.encode_entry`, exactly as the knowledge cache tokenises entries.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from memexp.data.explicit.bank_cache import encode_entry
from memexp.errors import ConfigError

STRATEGIES = ("fifo", "lru", "random", "similarity", "importance")


@dataclass
class EntryChange:
    """One written entry: its index, the text it held and the text it holds now."""

    index: int
    old: str
    new: str


class BankUpdater:
    """Choose and overwrite updatable bank entries (see the module docstring).

    bank (N, L) int32 and freeze_mask (N,) bool are the model's own buffers, written in place.
    embed: token rows (n, L) -> embeddings (n, D), for the similarity strategy (the backbone's mean
    token embedding, as retrieval embeds candidates); None for the other strategies.
    content_rows (N,) bool: the model's mask of entries retrieval also finds by content; every write sets it.
    """

    def __init__(
        self,
        bank: torch.Tensor,
        freeze_mask: torch.Tensor,
        tokenizer: object,
        pad_id: int,
        strategy: str = "lru",
        similarity_threshold: float = 0.9,
        embed: Callable[[torch.Tensor], torch.Tensor] | None = None,
        seed: int = 0,
        content_rows: torch.Tensor | None = None,
        token_similarity: bool = False,
    ):
        if strategy not in STRATEGIES:
            raise ConfigError(f"update_strategy={strategy!r}: expected one of {', '.join(STRATEGIES)}")
        if strategy == "similarity" and embed is None and not token_similarity:
            raise ConfigError("update_strategy='similarity' needs the backbone's embeddings to compare entries")
        if not -1.0 <= similarity_threshold <= 1.0:
            raise ConfigError(f"similarity_threshold={similarity_threshold}: expected a cosine in [-1, 1]")
        self.bank, self.frozen, self.tok, self.pad_id = bank, freeze_mask.bool(), tokenizer, pad_id
        self.strategy, self.threshold, self.embed = strategy, similarity_threshold, embed
        self.content_rows, self.token_similarity = content_rows, token_similarity
        N = bank.shape[0]
        self.last_used = torch.zeros(N, dtype=torch.long)  # the clock tick of the last retrieval or write
        self.uses = torch.zeros(N, dtype=torch.long)  # how often retrieval selected each entry
        self.written = torch.zeros(N, dtype=torch.long)  # the tick of the last write (fifo order)
        self.clock = 0
        self.generator = torch.Generator().manual_seed(seed)
        if bool(self.frozen.all()):
            raise ConfigError("every bank entry is frozen (freeze_ratio = 1): there is nothing an update may write")

    @classmethod
    def for_model(
        cls, net: torch.nn.Module, tokenizer: object, strategy: str = "lru", similarity_space: str = "retrieval", **kw: object
    ) -> BankUpdater:
        """An updater over an ExplicitLM's own bank: its pad id, frozen region and content mask.

        similarity_space "tokens": the cosine of the two entries' token sets (shared tokens / sqrt of the
        set sizes): a restatement of a 7-token fact shares 6 tokens (0.86), another subject's fact of the same
        template 5 (0.71). "retrieval": entries are compared where retrieval compares them: each memory layer's projection
        of the entry's mean token embedding (the vectors a query's cosine ranks), averaged over layers. Two
        sentences of one template share most tokens, so their plain mean embeddings are nearly equal (0.94
        for different subjects against 0.96 for a restatement, knowledge-study model); in retrieval's space a
        restatement stays near (0.96) while another subject falls away (0.76-0.83).
        """
        if similarity_space not in ("retrieval", "tokens"):
            raise ConfigError(f"similarity_space={similarity_space!r}: expected retrieval or tokens")
        if similarity_space == "tokens":
            kw["token_similarity"] = True
        weight = net.backbone.get_input_embeddings().weight
        projections = [f.project for f in net.fusions.values()]

        def embed(rows: torch.Tensor) -> torch.Tensor:
            mean = torch.nn.functional.embedding_bag(rows.long(), weight, mode="mean", padding_idx=net.pad_id)
            return torch.cat([torch.nn.functional.normalize(p(mean), dim=-1) for p in projections], -1)

        return cls(
            net.memory_bank, net.freeze_mask, tokenizer, net.pad_id, strategy, embed=embed, content_rows=net.content_rows, **kw
        )

    def state(self) -> dict[str, torch.Tensor | int]:
        """The usage counters (saved with a bank, so lru/importance/fifo go on where they stopped)."""
        return {"last_used": self.last_used, "uses": self.uses, "written": self.written, "clock": self.clock}

    def load_state(self, state: dict) -> None:
        for name in ("last_used", "uses", "written"):
            getattr(self, name).copy_(state[name])
        self.clock = int(state["clock"])

    def record_usage(self, selected: torch.Tensor) -> None:
        """Count the entries retrieval selected (any shape of entry ids), and mark them used now."""
        self.clock += 1
        ids = selected.flatten().long()
        self.uses += torch.bincount(ids, minlength=self.uses.numel())
        self.last_used[ids.unique()] = self.clock

    def _lowest(self, score: torch.Tensor) -> int:
        """The updatable entry with the lowest score (ties: the lowest index)."""
        return int(score.masked_fill(self.frozen, torch.iinfo(score.dtype).max).argmin())

    def pick(self, row: torch.Tensor) -> int:
        """The entry a new fact (token row (L,)) replaces; never a frozen one."""
        if self.strategy == "fifo":
            return self._lowest(self.written)
        if self.strategy == "lru":
            return self._lowest(self.last_used)
        if self.strategy == "importance":  # fewest selections; among equals the oldest write (a new fact is not next)
            return self._lowest(self.uses * (self.clock + 1) + self.written)
        if self.strategy == "random":
            free = (~self.frozen).nonzero().squeeze(-1)
            return int(free[torch.randint(len(free), (1,), generator=self.generator)])
        # similarity: one pass over the bank per fact, 65,536 entries at a time (memory stays bounded)
        if self.token_similarity:
            sims = torch.cat([self._token_cosine(row, chunk) for chunk in self.bank.split(65_536)])
        else:
            sims = self._embedding_cosine(row)
        sims = sims.masked_fill(self.frozen, -2.0)
        best = int(sims.argmax())
        return best if float(sims[best]) >= self.threshold else self._lowest(self.last_used)

    def _token_cosine(self, row: torch.Tensor, bank: torch.Tensor) -> torch.Tensor:
        """Cosine of token sets: |A and B| / sqrt(|A| |B|) for the new row against each bank row (pad ignored)."""
        new = row[row != self.pad_id].unique()  # (a,)
        if len(new) == 0:
            return torch.zeros(len(bank))
        real = bank != self.pad_id  # (n, L)
        # a bank token counts once however often it repeats: drop every position with an equal token before it
        seen = torch.tril(bank.unsqueeze(-1) == bank.unsqueeze(-2), diagonal=-1).any(-1)  # (n, L)
        distinct = real & ~seen
        shared = (torch.isin(bank, new) & distinct).sum(-1).float()
        return shared / (distinct.sum(-1).float() * len(new)).clamp(min=1).sqrt()

    def _embedding_cosine(self, row: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            new = torch.nn.functional.normalize(self.embed(row.unsqueeze(0)), dim=-1)  # (1, D)
            sims = torch.cat(
                [new @ torch.nn.functional.normalize(self.embed(chunk), dim=-1).T for chunk in self.bank.split(65_536)], 1
            ).squeeze(0)
        return sims

    def write(self, facts: Sequence[str]) -> list[EntryChange]:
        """Write each fact into the entry its strategy picks; what changed, in order."""
        changes = []
        L = self.bank.shape[1]
        for fact in facts:
            row = torch.tensor(encode_entry(self.tok, fact, L)[0], dtype=self.bank.dtype)
            index = self.pick(row)
            if bool(self.frozen[index]):  # the invariant every strategy keeps; checked, never assumed
                raise RuntimeError(f"update strategy {self.strategy} picked frozen entry {index}")
            old = self.tok.decode([t for t in self.bank[index].tolist() if t != self.pad_id])
            self.bank[index] = row
            if self.content_rows is not None:
                self.content_rows[index] = True
            self.clock += 1
            self.written[index] = self.last_used[index] = self.clock
            # A new fact starts level with the least-used entry (not below it), so importance does not pick it next.
            others = self.uses.masked_fill(self.frozen, torch.iinfo(self.uses.dtype).max)
            others[index] = torch.iinfo(self.uses.dtype).max
            self.uses[index] = int(others.min()) if bool((others < torch.iinfo(self.uses.dtype).max).any()) else 0
            changes.append(EntryChange(index, old, fact))
        return changes
