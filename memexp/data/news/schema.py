"""ENDEF's news schema: reading and checking `{root}/{split}.json` and the optional `{split}_emo.npy`.

Each split file is a JSON array of objects:

    {"content": str, "entity_list": [{"entity": str, ...}, ...], "label": "real" | "fake" | 0 | 1,
     "time": "YYYY-MM-DD HH:MM:SS"}

Labels: real = 0, fake = 1 (the original's mapping; the English data already holds 0/1). The
year of `time` becomes a category as in the original: Chinese (Weibo21) 2010 -> 0 ... 2018 -> 8,
2019-2021 -> 9; English (GossipCop) <= 2016 -> 0, 2017 -> 1, 2018 -> 2. Years outside the map are
clamped to its nearest end and counted (the original raises KeyError).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np

from memexp.errors import ConfigError, DataError

SPLITS = ("train", "val", "test")
LABELS = {"real": 0, "fake": 1, 0: 0, 1: 1}
# language -> (first year, last year, category of each year in between)
YEAR_MAPS = {
    "ch": (2010, 2021, lambda y: min(y - 2010, 9)),
    "en": (None, 2018, lambda y: max(0, y - 2016)),
}
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"


@dataclass
class NewsSplit:
    """One split as read: texts, entity strings, labels (0 real, 1 fake), year categories, emotion rows."""

    contents: list[str]
    entities: list[list[str]]
    labels: list[int]
    years: list[int]
    emotion: np.ndarray | None = None
    clamped_years: int = 0  # items whose year lay outside the map
    raw_years: list[int] = field(default_factory=list)


def year_category(year: int, language: str) -> tuple[int, bool]:
    """(category, whether the year was clamped into the map)."""
    if language not in YEAR_MAPS:
        raise ConfigError(f"data.language={language!r}: expected 'ch' (Weibo21) or 'en' (GossipCop)")
    first, last, category = YEAR_MAPS[language]
    clamped = year > last or (first is not None and year < first)
    year = min(year, last) if first is None else min(max(year, first), last)
    return category(year), clamped


def _item_error(path: Path, i: int, what: str) -> DataError:
    return DataError(f"{path}, item {i}: {what}")


def read_split(path: str | Path, language: str = "ch", emotion: str = "auto") -> NewsSplit:
    """Read and check one split file; `emotion` is "auto" (load `<split>_emo.npy` when present), "off" or "require"."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"split file {path} does not exist; expected a JSON array of ENDEF news items there")
    try:
        items = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{path} is not valid UTF-8 JSON ({e}); expected a JSON array of news items") from None
    if not isinstance(items, list):
        raise DataError(f"{path} holds a JSON {type(items).__name__}, not an array; expected a JSON array of news items")
    if not items:
        raise DataError(f"{path} is an empty array; expected at least one news item")
    out = NewsSplit([], [], [], [])
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise _item_error(path, i, f"is a {type(item).__name__}, expected an object with content, entity_list, label, time")
        content = item.get("content")
        if not isinstance(content, str):
            raise _item_error(path, i, "has no string field 'content'")
        label = item.get("label")
        if isinstance(label, bool) or label not in LABELS:
            raise _item_error(path, i, f"label {label!r} is not one of 'real', 'fake', 0, 1")
        ents = item.get("entity_list", [])
        if not isinstance(ents, list) or any(not isinstance(e, dict) or not isinstance(e.get("entity"), str) for e in ents):
            raise _item_error(path, i, 'entity_list must be a list of objects with a string "entity"')
        stamp = item.get("time")
        try:
            year = datetime.strptime(str(stamp), TIME_FORMAT).year
        except ValueError:
            raise _item_error(path, i, f"time {stamp!r} is not 'YYYY-MM-DD HH:MM:SS'") from None
        category, clamped = year_category(year, language)
        out.contents.append(content)
        out.entities.append([e["entity"] for e in ents])
        out.labels.append(LABELS[label])
        out.years.append(category)
        out.raw_years.append(year)
        out.clamped_years += clamped
    out.emotion = read_emotion(emotion_path(path), len(items), emotion)
    return out


def emotion_path(split_path: Path) -> Path:
    """`train.json` -> `train_emo.npy`, the original's companion file of emotion features."""
    return split_path.with_name(f"{split_path.stem}_emo.npy")


def read_emotion(path: Path, n_items: int, mode: str = "auto") -> np.ndarray | None:
    """The (n_items, K) float32 emotion features, or None when absent and not required."""
    if mode not in ("auto", "off", "require"):
        raise ConfigError(f"data.emotion={mode!r}: expected 'auto', 'off' or 'require'")
    if mode == "off" or (mode == "auto" and not path.is_file()):
        return None
    if not path.is_file():
        raise DataError(f"emotion file {path} does not exist (data.emotion=require); expected one row per item")
    try:
        rows = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as e:
        raise DataError(f"emotion file {path} could not be read as a .npy array ({e})") from None
    if rows.ndim != 2 or rows.shape[0] != n_items:
        raise DataError(
            f"emotion file {path} has shape {tuple(rows.shape)}, but its split has {n_items} items; "
            f"expected one row per item ({n_items}, K)"
        )
    return rows.astype(np.float32)
