"""One ExplicitLM's memory as a user works with it: read entries as text, search them through the
model's own retrieval, edit, delete and add entries, and save the result as a bank file.

`ExplicitMemory` wraps a loaded ExplicitLM (`net`) and its tokenizer. Every write goes through
here, so the rules hold in one place: frozen entries are refused unless `force`, a text longer than
the entry's L tokens is truncated with a warning, added facts go where the update strategy puts
them (`BankUpdater`), rewritten entries become content-addressed (`ExplicitLM.content_rows`), and
each entry remembers where it came from (`sources`).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch

from memexp.data.explicit.bank_cache import encode_entry
from memexp.errors import ConfigError
from memexp.memory.bank_file import BankState, apply_bank, bank_state
from memexp.memory.updates import BankUpdater, EntryChange


def knowledge_sources(mapping_path: str | Path | None, n: int) -> list[str]:
    """Per bank entry "kb:<uuid>" from a knowledge cache's mapping file ("" for rows no item holds)."""
    sources = [""] * n
    if mapping_path is None or not Path(mapping_path).is_file():
        return sources
    for m in json.loads(Path(mapping_path).read_text(encoding="utf-8")).get("mappings", []):
        i = int(m["database_index"])
        if 0 <= i < n and m.get("token_count", 1) > 0:  # an empty knowledge item leaves its row all pad
            sources[i] = f"kb:{m.get('uuid') or i}"
    return sources


class ExplicitMemory:
    """The bank of `net` (an ExplicitLM) with the tokenizer its entries are written in.

    checkpoint: the checkpoint the model came from (recorded in saved bank files).
    sources: per entry, where it came from (None: all "").
    strategy, similarity_threshold, seed: how `add` picks entries (memexp.memory.updates).
    """

    def __init__(
        self,
        net: torch.nn.Module,
        tokenizer: object,
        checkpoint: str | Path,
        sources: list[str] | None = None,
        strategy: str = "lru",
        similarity_threshold: float = 0.9,
        seed: int = 0,
    ):
        self.net, self.tok, self.checkpoint = net, tokenizer, str(checkpoint)
        N = net.memory_bank.shape[0]
        self.sources = list(sources) if sources is not None else [""] * N
        self.updater = BankUpdater.for_model(net, tokenizer, strategy, similarity_threshold=similarity_threshold, seed=seed)

    @property
    def size(self) -> int:
        return self.net.memory_bank.shape[0]

    @property
    def length(self) -> int:
        return self.net.memory_bank.shape[1]

    @property
    def vocab_size(self) -> int:
        """How many token ids the backbone embeds (an entry's ids must be below it)."""
        return self.net.backbone.get_input_embeddings().weight.shape[0]

    # -- reading ----------------------------------------------------------------------------
    def check_index(self, index: int) -> int:
        if not 0 <= int(index) < self.size:
            raise ConfigError(f"index={index}: the bank has entries 0..{self.size - 1}")
        return int(index)

    def text(self, index: int) -> str:
        row = self.net.memory_bank[self.check_index(index)].tolist()
        return self.tok.decode([t for t in row if t != self.net.pad_id])

    def entry(self, index: int) -> dict:
        """index, text, frozen, uses (retrieval selections counted this session and saved), source, content-addressed."""
        i = self.check_index(index)
        return {
            "index": i,
            "text": self.text(i),
            "frozen": bool(self.net.freeze_mask[i]),
            "uses": int(self.updater.uses[i]),
            "source": self.sources[i],
            "by_content": bool(self.net.content_rows[i]),
        }

    def show(self, start: int = 0, count: int = 20) -> list[dict]:
        self.check_index(start)
        return [self.entry(i) for i in range(start, min(start + max(count, 0), self.size))]

    @torch.no_grad()
    def search(self, query: str, top: int = 5) -> list[dict]:
        """The entries retrieval considers for the query's last token, best cosine first, per memory layer:
        the candidates the model itself would choose from (product keys, plus rewritten entries by content).
        The `top` best of each layer, and the entry the model selects there (`selected`) even when it ranks lower."""
        ids = self.tok.encode(query)
        if not ids:
            raise ConfigError("query: the text has no tokens")
        self.net.eval()
        self.net(torch.tensor([ids[-self.net.max_len :]]))
        found = []
        for layer, fusion in sorted(self.net.fusions.items(), key=lambda kv: int(kv[0])):
            cand, cos = fusion.last_candidates
            cand, cos = cand[0, -1], cos[0, -1]  # (C',) at the last token
            best = {}
            for e, c in zip(cand.tolist(), cos.tolist()):
                best[e] = max(c, best.get(e, -2.0))  # an entry can be a candidate twice (keys and content)
            chosen = int(self.net.last_selection[int(layer)][0, -1])
            ranked = sorted(best.items(), key=lambda kv: -kv[1])
            shown = ranked[:top] + [(e, c) for e, c in ranked[top:] if e == chosen]  # what is read is always shown
            for e, c in shown:
                found.append(self.entry(e) | {"layer": int(layer), "cosine": round(c, 4), "selected": e == chosen})
        return found

    # -- writing ----------------------------------------------------------------------------
    def encode(self, text: str) -> torch.Tensor:
        """Token row (L,) of `text`, exactly as the knowledge cache encodes entries; a warning when truncated."""
        ids, n, truncated = encode_entry(self.tok, text, self.length)
        if truncated:
            warnings.warn(
                f"the text has {n} tokens; a bank entry holds {self.length} (knowledge_length), the rest is cut off",
                stacklevel=3,
            )
        return torch.tensor(ids, dtype=torch.int32)

    def _refuse_frozen(self, index: int, force: bool, verb: str) -> None:
        if bool(self.net.freeze_mask[index]) and not force:
            raise ConfigError(
                f"index={index} is a frozen entry (the first {int(self.net.freeze_mask.sum())}); {verb} it with force=true"
            )

    def edit(self, index: int, text: str, force: bool = False, source: str = "edit") -> EntryChange:
        """Overwrite one entry with `text` (frozen ones only with force)."""
        i = self.check_index(index)
        self._refuse_frozen(i, force, "edit")
        old = self.text(i)
        self.net.write_entries(torch.tensor([i]), self.encode(text).unsqueeze(0), allow_frozen=force, by_content=True)
        self._mark_written(i)
        self.sources[i] = source
        return EntryChange(i, old, text)

    def put(self, index: int, tokens: torch.Tensor, source: str, by_content: bool, force: bool = False) -> EntryChange:
        """Set one entry to exact token ids (L,), with its source and content flag (an imported entry)."""
        i = self.check_index(index)
        self._refuse_frozen(i, force, "import")
        if tuple(tokens.shape) != (self.length,):
            raise ConfigError(f"entry {i}: {tuple(tokens.shape)} token ids given, a bank entry holds ({self.length},)")
        old = self.text(i)
        if not torch.equal(self.net.memory_bank[i], tokens.to(self.net.memory_bank.dtype)):
            self.net.memory_bank[i] = tokens.to(self.net.memory_bank.dtype)
            self._mark_written(i)
        self.net.content_rows[i] = bool(by_content)
        self.sources[i] = source
        return EntryChange(i, old, self.text(i))

    def _mark_written(self, index: int) -> None:
        """A write is a use now and the newest write (lru and fifo order), as the updater's own writes."""
        self.updater.clock += 1
        self.updater.written[index] = self.updater.last_used[index] = self.updater.clock

    def delete(self, index: int, force: bool = False) -> EntryChange:
        """Empty one entry (all pad; retrieval then reads nothing from it)."""
        i = self.check_index(index)
        self._refuse_frozen(i, force, "delete")
        old = self.text(i)
        self.net.memory_bank[i] = self.net.pad_id
        self.net.content_rows[i] = False
        self.sources[i] = ""
        return EntryChange(i, old, "")

    def add(self, facts: list[str], source: str = "add") -> list[EntryChange]:
        """Write facts where the update strategy puts them (never a frozen entry)."""
        for fact in facts:
            self.encode(fact)  # the truncation warning, once per long fact
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            changes = self.updater.write(facts)
        for c in changes:
            self.sources[c.index] = source
        return changes

    # -- files ------------------------------------------------------------------------------
    def state(self) -> BankState:
        return bank_state(self.net, self.checkpoint, self.sources, self.updater.state())

    def load(self, state: BankState, origin: str | Path = "the bank file") -> None:
        apply_bank(self.net, state, origin)
        self.sources = list(state.sources)
        if state.usage is not None:
            self.updater.load_state(state.usage)

    def save(self, path: str | Path) -> Path:
        return self.state().save(path)
