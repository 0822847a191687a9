"""The token embeddings of a local BERT folder: what `model.embedding=bert` starts from.

Only `BertModel(...).embeddings` (word + position + token-type embeddings and their LayerNorm)
is kept; the encoder layers are dropped, as the BiGRU reads the embeddings alone.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from memexp.data.news.tokens import WordPieceTokenizer
from memexp.errors import ConfigError


def load_bert_embeddings(path: str | Path) -> nn.Module:
    """`BertModel.from_pretrained(path).embeddings`, after checking that the folder's vocabulary
    (vocab.txt or tokenizer.json) has as many tokens as its word embeddings have rows."""
    from transformers import BertModel

    path = Path(path)
    if not (path / "config.json").is_file():
        raise ConfigError(f"model.bert_path={path}: expected a BERT folder with config.json and weights (save_pretrained)")
    try:
        bert = BertModel.from_pretrained(str(path))
    except (OSError, ValueError) as e:
        raise ConfigError(f"model.bert_path={path}: the BERT could not be loaded ({str(e).splitlines()[0]})") from None
    rows = bert.embeddings.word_embeddings.num_embeddings
    if any((path / f).is_file() for f in ("vocab.txt", "tokenizer.json")):
        tokens = WordPieceTokenizer(path).vocab_size
        if tokens != rows:
            raise ConfigError(
                f"model.bert_path={path}: its vocabulary has {tokens} tokens but its word embeddings have {rows} rows; "
                "expected the vocabulary the BERT was trained with"
            )
    return bert.embeddings
