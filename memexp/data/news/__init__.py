"""ENDEF-schema news for fake-news classification: the schema reader (`schema`), tokenisation once
into a cached tensor file (`tokens`), items, augmentation and batches (`batches`), the data module
(`datamodule`), and a generator of a corpus in the same schema with a temporal shift (`synthetic`)."""

from memexp.data.news.datamodule import NewsDataModule
from memexp.data.news.synthetic import SyntheticNewsDataModule, generate_corpus

__all__ = ["NewsDataModule", "SyntheticNewsDataModule", "generate_corpus"]
