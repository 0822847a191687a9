"""DialogueVocab: space-separated tokens -> ids, built from the training split or read from a
WordPiece vocab.txt, with the PAD / SOS / EOS / UNK roles the stream and the models use."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from memexp.errors import DataError
from memexp.files import text_digest


class DialogueVocab:
    """Space-separated tokens -> ids, with PAD / SOS / EOS / UNK roles.

    Built vocabularies put <pad>=0, <sos>=1, <eos>=2, <unk>=3 first and then tokens by
    descending training-split frequency (ties by token, so the build is deterministic).
    A WordPiece vocabulary file (the Chinese BERT vocab) keeps its own ids and maps
    [PAD]/[CLS]/[SEP]/[UNK] to the PAD/SOS/EOS/UNK roles; a token missing from it is tried
    lower-cased, then split greedily into WordPiece pieces (`##` continuations), else [UNK].
    """

    BUILT_SPECIALS = {"pad": "<pad>", "sos": "<sos>", "eos": "<eos>", "unk": "<unk>"}
    WORDPIECE_SPECIALS = {"pad": "[PAD]", "sos": "[CLS]", "eos": "[SEP]", "unk": "[UNK]"}

    def __init__(self, tokens: list[str], specials: dict[str, str], kind: str = "built", source: str | None = None):
        self.tokens = list(tokens)
        self.kind = kind
        self.source = source
        self.specials = dict(specials)
        self.stoi = {t: i for i, t in enumerate(self.tokens)}
        if len(self.stoi) != len(self.tokens):
            dup = next(t for t in self.tokens if self.tokens.count(t) > 1)
            raise DataError(f"vocabulary{' ' + source if source else ''}: token {dup!r} appears more than once")
        for role in ("pad", "sos", "eos", "unk"):
            if specials.get(role) not in self.stoi:
                raise DataError(
                    f"vocabulary{' ' + source if source else ''}: the {role.upper()} token {specials.get(role)!r} is missing "
                    f"(expected {DialogueVocab.WORDPIECE_SPECIALS if kind == 'wordpiece' else DialogueVocab.BUILT_SPECIALS})"
                )
        self.pad_id, self.sos_id, self.eos_id, self.unk_id = (self.stoi[specials[r]] for r in ("pad", "sos", "eos", "unk"))
        self._special_ids = {self.pad_id, self.sos_id, self.eos_id}

    # -- construction

    @classmethod
    def build(cls, counts: Counter, min_freq: int = 1, max_size: int | None = None) -> DialogueVocab:
        """From token counts; `max_size` counts the 4 specials."""
        specials = cls.BUILT_SPECIALS
        words = sorted(
            (w for w, c in counts.items() if c >= min_freq and w not in specials.values()), key=lambda w: (-counts[w], w)
        )
        if max_size is not None:
            words = words[: max(0, max_size - len(specials))]
        return cls([specials[r] for r in ("pad", "sos", "eos", "unk")] + words, specials, kind="built")

    @classmethod
    def from_wordpiece_file(cls, path: str | Path) -> DialogueVocab:
        """A BERT-style vocab.txt: one token per line, id = line number - 1."""
        path = Path(path)
        if not path.is_file():
            raise DataError(f"{path}: vocabulary file not found (expected a WordPiece vocab.txt, one token per line)")
        try:
            with open(path, encoding="utf-8") as f:
                tokens = [line.rstrip("\r\n") for line in f]
        except UnicodeDecodeError as e:
            raise DataError(
                f"{path}: not UTF-8 text (byte {e.start}); expected a WordPiece vocab.txt, one token per line"
            ) from None
        while tokens and tokens[-1] == "":
            tokens.pop()
        return cls(tokens, cls.WORDPIECE_SPECIALS, kind="wordpiece", source=str(path))

    # -- ids

    @property
    def vocab_size(self) -> int:
        """Number of ids (specials included)."""
        return len(self.tokens)

    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, text: str) -> list[int]:
        """Whitespace-separated tokens -> ids (missing ones through the WordPiece fallback or UNK)."""
        get = self.stoi.get
        words = text.split()
        ids = [get(w, -1) for w in words]
        if -1 in ids:
            ids = [i for w, i0 in zip(words, ids) for i in ((i0,) if i0 >= 0 else self._encode_missing(w))]
        return ids

    def _encode_missing(self, word: str) -> list[int]:
        # Kept by hand: tokenizers.models.WordPiece(...).tokenize(word.lower()) gives the same ids, but
        # on LCCC's out-of-vocabulary words (single letters, emoji) a call through the binding takes
        # about twice as long; a whole HF Tokenizer (Lowercase normalizer) even gives other ids.
        if self.kind != "wordpiece":
            return [self.unk_id]
        low = word.lower()
        if low in self.stoi:
            return [self.stoi[low]]
        if len(low) > 100:
            return [self.unk_id]
        pieces, start = [], 0
        while start < len(low):  # greedy longest-match-first, as in BERT's WordPiece
            end = len(low)
            while end > start:
                piece = low[start:end] if start == 0 else "##" + low[start:end]
                if piece in self.stoi:
                    pieces.append(self.stoi[piece])
                    break
                end -= 1
            if end == start:
                return [self.unk_id]
            start = end
        return pieces

    def segment(self, text: str, longest: int = 8) -> str:
        """Unsegmented user text -> space-separated vocabulary tokens (for `encode`).

        Whitespace-separated words found in the vocabulary are kept; any other word is cut
        greedily into the longest known tokens of at most `longest` characters, unknown
        characters standing alone. "你好吗" becomes "你 好 吗" with a character vocabulary
        and "你好 吗" with a word vocabulary holding 你好.
        """
        out: list[str] = []
        for word in text.split():
            if word in self.stoi:
                out.append(word)
                continue
            start = 0
            while start < len(word):
                end = min(len(word), start + longest)
                while end > start + 1 and word[start:end] not in self.stoi:
                    end -= 1
                out.append(word[start:end])
                start = end
        return " ".join(out)

    def decode(self, ids: Iterable[int], skip_special: bool = True) -> str:
        """Ids -> space-separated tokens (`##` pieces of a WordPiece vocabulary glued back on)."""
        out: list[str] = []
        for i in ids:
            i = int(i)
            if skip_special and i in self._special_ids:
                continue
            tok = self.tokens[i]
            if tok.startswith("##") and out and self.kind == "wordpiece":
                out[-1] += tok[2:]
            else:
                out.append(tok)
        return " ".join(out)

    # -- persistence

    def state_dict(self) -> dict:
        """What vocabulary.json and checkpoints hold."""
        return {
            "name": "dialogue_vocab",
            "kind": self.kind,
            "tokens": self.tokens,
            "specials": self.specials,
            "source": self.source,
        }

    @classmethod
    def from_state(cls, state: dict) -> DialogueVocab:
        """The vocabulary of a `state_dict()`."""
        try:
            return cls(state["tokens"], state["specials"], kind=state.get("kind", "built"), source=state.get("source"))
        except (KeyError, TypeError):
            raise DataError("vocabulary state: expected a dict with 'tokens' (list) and 'specials' (pad/sos/eos/unk)") from None

    @classmethod
    def load(cls, path: str | Path) -> DialogueVocab:
        """Read a vocabulary.json."""
        path = Path(path)
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise DataError(f"{path}: vocabulary.json not found; run the preparation for this folder first") from None
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{e.lineno}: vocabulary.json is not valid JSON ({e.msg})") from None
        except UnicodeDecodeError as e:
            raise DataError(f"{path}: not UTF-8 text (byte {e.start}); expected a vocabulary.json") from None
        return cls.from_state(state)

    @property
    def checksum(self) -> str:
        """sha256 of the id assignment (tokens and special roles); what chunks depend on."""
        return text_digest(
            json.dumps({"tokens": self.tokens, "specials": self.specials, "kind": self.kind}, ensure_ascii=False, sort_keys=True)
        )

    def describe(self) -> str:
        """One line about where the vocabulary comes from and its size."""
        if self.kind == "wordpiece":
            return f"WordPiece vocabulary {self.source} ({self.vocab_size} tokens; [PAD]/[CLS]/[SEP]/[UNK] as PAD/SOS/EOS/UNK)"
        return f"built from the training split ({self.vocab_size} tokens incl. <pad>/<sos>/<eos>/<unk>)"
