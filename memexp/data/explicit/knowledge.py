"""Knowledge-base files for an explicit memory bank: a JSON array of sentences, streamed.

Accepted items (ExplicitLM's formats), each giving one or more `KnowledgeItem`s in file order:
  {"sentence": "..."}                       one item
  {"text": "..."}                           one item
  "..."                                     one item (a bare string)
  {"target": [{"sentence", "subject", "predicate", "object", "uuid"}, ...]}
                                            T-REx style: one item per entry of "target"
The real file (sentence_trex_data.json) is 446 MB: it is never loaded whole, and reading stops
after the first `limit` items.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from memexp.data.json_stream import iter_json_array
from memexp.errors import DataError

ACCEPTED_SHAPES = '{"sentence": str}, {"text": str}, a bare string, or {"target": [{"sentence": str, ...}, ...]}'
TRIPLE_FIELDS = ("uuid", "subject", "predicate", "object")


@dataclass
class KnowledgeItem:
    """One sentence of the knowledge base and, for T-REx items, its triple (None where absent)."""

    sentence: str
    uuid: str | None = None
    subject: str | None = None
    predicate: str | None = None
    object: str | None = None


def _field(entry: dict, key: str) -> str | None:
    value = entry.get(key)
    return None if value is None else str(value)


def _items_of(value: Any) -> tuple[list[KnowledgeItem], str | None]:
    """(the items one array element gives, None) or ([], what is wrong with it)."""
    if isinstance(value, str):
        return [KnowledgeItem(value)], None
    if isinstance(value, dict) and isinstance(value.get("target"), list):
        out = []
        for j, entry in enumerate(value["target"]):
            if not isinstance(entry, dict) or not isinstance(entry.get("sentence"), str):
                return [], f'its target entry {j} has no string "sentence"'
            out.append(KnowledgeItem(entry["sentence"], *(_field(entry, k) for k in TRIPLE_FIELDS)))
        return out, None
    if isinstance(value, dict):
        for key in ("sentence", "text"):
            if isinstance(value.get(key), str):
                return [KnowledgeItem(value[key], *(_field(value, k) for k in TRIPLE_FIELDS))], None
        return [], f"it is an object with keys {sorted(value)[:5]}"
    return [], f"it is {'null' if value is None else type(value).__name__}"


def read_knowledge(path: str | Path, limit: int) -> Iterator[KnowledgeItem]:
    """The first `limit` items of a knowledge-base JSON array, streamed (see the module docstring)."""
    if limit <= 0:
        return
    count = 0
    for index, (line, value) in enumerate(iter_json_array(path, what="knowledge items")):
        items, problem = _items_of(value)
        if problem:
            raise DataError(f"{path}:{line}: knowledge item {index} has another shape ({problem}); expected {ACCEPTED_SHAPES}")
        for item in items:
            yield item
            count += 1
            if count >= limit:
                return
