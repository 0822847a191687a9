"""A generated news corpus in ENDEF's schema with a temporal shift: `data=news_synthetic`.

No ENDEF data ships offline, so this writes `train.json`, `val.json`, `test.json` in the real
layout (then `generator.json`, last, recording the settings: a folder without it is unfinished).
The same commands then run on Weibo21 by pointing `data=endef_ch` at its folder.

Each item is a string of two-character words from three character pools:
- content signal: `signal_words` cue words, each drawn from the "real" pool when the item is real
  with probability `signal_accuracy` (else from the "fake" pool), and the reverse when fake;
- filler: `filler_words` words from a neutral pool;
- an entity: a "hot" entity (one of `hot_entities`) with probability `hot_fraction`, else one of
  the neutral names; it is listed in `entity_list` and, with probability `entity_in_content`,
  also written into the content.
The planted shortcut: for hot items P(real) = `p_real_hot_train` in the training years and
`p_real_hot_test` in the test year (other items: 1/2), so a model that leans on the hot entity
fails on the "future" split, the paper's setting (97% of 2010-2017 "Donald Trump" items real,
33% in 2018). Validation is a random `val_fraction` of the training years, like the training data.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path

from memexp.data.dialogue.datamodule import _default_cache_root
from memexp.data.news.datamodule import NewsDataModule
from memexp.errors import ConfigError
from memexp.files import text_digest, write_json

# Single-character entries of the Chinese BERT vocabulary, in three disjoint pools.
REAL_CHARS = "证实官报道布通确认据悉记者公告部门政府表示采访调查统计数据介绍研究"
FAKE_CHARS = "震惊疯传速看转紧急曝光内幕秘密绝对千万不要竟然真相揭神奇偏吓人"
FILLER_CHARS = "天气城市今日生活朋友学校工作时间家庭社会早上晚一起觉得我们他这个那地东西"
NEUTRAL_ENTITIES = ["张伟", "王芳", "李娜", "刘洋", "陈静", "杨磊", "赵敏", "黄勇", "周杰", "吴刚", "徐丽", "孙涛"]


def _word(chars: str, rng: random.Random) -> str:
    return rng.choice(chars) + rng.choice(chars)


def make_item(
    rng: random.Random,
    year: int,
    p_real_hot: float,
    hot_entities: Sequence[str],
    hot_fraction: float,
    signal_words: int,
    signal_accuracy: float,
    filler_words: int,
    entity_in_content: float,
) -> dict:
    """One news item of `year` in ENDEF's schema (see the module docstring)."""
    hot = rng.random() < hot_fraction
    entity = rng.choice(list(hot_entities)) if hot else rng.choice(NEUTRAL_ENTITIES)
    real = rng.random() < (p_real_hot if hot else 0.5)
    words = [_word(FILLER_CHARS, rng) for _ in range(filler_words)]
    for _ in range(signal_words):
        words.append(_word(REAL_CHARS if real == (rng.random() < signal_accuracy) else FAKE_CHARS, rng))
    rng.shuffle(words)
    if rng.random() < entity_in_content:
        words.insert(rng.randrange(len(words) + 1), entity)
    stamp = f"{year}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d} {rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:00"
    return {
        "content": "".join(words) + "。",
        "entity_list": [{"entity": entity}],
        "label": "real" if real else "fake",
        "time": stamp,
    }


def generate_corpus(
    out_dir: str | Path,
    train_years: Sequence[int] = (2010, 2017),
    test_year: int = 2018,
    items_per_year: int = 300,
    val_fraction: float = 0.1,
    hot_entities: Sequence[str] = ("特朗普",),
    hot_fraction: float = 0.5,
    p_real_hot_train: float = 0.97,
    p_real_hot_test: float = 0.2,
    signal_words: int = 3,
    signal_accuracy: float = 0.8,
    filler_words: int = 10,
    entity_in_content: float = 1.0,
    corpus_seed: int = 0,
) -> dict:
    """Write train/val/test.json (then generator.json) into `out_dir`; returns the settings written."""
    first, last = int(train_years[0]), int(train_years[1])
    if first > last or test_year <= last:
        raise ConfigError(f"data.train_years={list(train_years)}, data.test_year={test_year}: expected first <= last < test_year")
    for name, p in dict(hot_fraction=hot_fraction, p_real_hot_train=p_real_hot_train, p_real_hot_test=p_real_hot_test).items():
        if not 0 <= p <= 1:
            raise ConfigError(f"data.{name}={p} must be a probability in [0, 1]")
    if not 0 < val_fraction < 1 or items_per_year < 2 or not hot_entities:
        raise ConfigError("data.val_fraction must be in (0, 1), data.items_per_year >= 2, data.hot_entities non-empty")
    settings = dict(
        train_years=[first, last],
        test_year=test_year,
        items_per_year=items_per_year,
        val_fraction=val_fraction,
        hot_entities=list(hot_entities),
        hot_fraction=hot_fraction,
        p_real_hot_train=p_real_hot_train,
        p_real_hot_test=p_real_hot_test,
        signal_words=signal_words,
        signal_accuracy=signal_accuracy,
        filler_words=filler_words,
        entity_in_content=entity_in_content,
        corpus_seed=corpus_seed,
    )
    rng = random.Random(corpus_seed)
    shape = dict(
        hot_entities=hot_entities,
        hot_fraction=hot_fraction,
        signal_words=signal_words,
        signal_accuracy=signal_accuracy,
        filler_words=filler_words,
        entity_in_content=entity_in_content,
    )
    past = [make_item(rng, y, p_real_hot_train, **shape) for y in range(first, last + 1) for _ in range(items_per_year)]
    rng.shuffle(past)
    n_val = max(1, int(len(past) * val_fraction))
    future = [make_item(rng, test_year, p_real_hot_test, **shape) for _ in range(items_per_year)]
    out = Path(out_dir)
    write_json(past[n_val:], out / "train.json")
    write_json(past[:n_val], out / "val.json")
    write_json(future, out / "test.json")
    write_json(settings, out / "generator.json")  # last: its presence marks a finished corpus
    return settings


class SyntheticNewsDataModule(NewsDataModule):
    """`NewsDataModule` on a generated corpus (`generate_corpus`, whose settings are the arguments
    below); the corpus goes to `root`, or by default to `<cache>/news_synthetic-<hash of the settings>`."""

    def __init__(
        self,
        train_years: Sequence[int] = (2010, 2017),
        test_year: int = 2018,
        items_per_year: int = 300,
        val_fraction: float = 0.1,
        hot_entities: Sequence[str] = ("特朗普",),
        hot_fraction: float = 0.5,
        p_real_hot_train: float = 0.97,
        p_real_hot_test: float = 0.2,
        signal_words: int = 3,
        signal_accuracy: float = 0.8,
        filler_words: int = 10,
        entity_in_content: float = 1.0,
        corpus_seed: int = 0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.generator_settings = dict(
            train_years=list(train_years),
            test_year=test_year,
            items_per_year=items_per_year,
            val_fraction=val_fraction,
            hot_entities=list(hot_entities),
            hot_fraction=hot_fraction,
            p_real_hot_train=p_real_hot_train,
            p_real_hot_test=p_real_hot_test,
            signal_words=signal_words,
            signal_accuracy=signal_accuracy,
            filler_words=filler_words,
            entity_in_content=entity_in_content,
            corpus_seed=corpus_seed,
        )
        if self.root is None:
            key = text_digest(repr(sorted(self.generator_settings.items())), length=10)
            base = Path(kwargs["cache_dir"]) if kwargs.get("cache_dir") else _default_cache_root(self.data_dir)
            self.root = base / f"news_synthetic-{key}"

    def split_files(self) -> list[Path]:
        manifest = self.split_root() / "generator.json"
        if not manifest.is_file() or json.loads(manifest.read_text(encoding="utf-8")) != self.generator_settings:
            generate_corpus(self.split_root(), **self.generator_settings)
        return super().split_files()
