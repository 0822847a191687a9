"""A generated world of facts for the ExplicitLM knowledge study.

S subjects x R relations, each (subject, relation) pair with one object drawn from the relation's
pool; every fact is rendered as a sentence ("the capital of zorvan is belmar ."). A fraction of the
subjects is held out: their facts exist only in the memory bank (its first, frozen, entries), never
in the backbone's pretraining text nor in any training question's answer.

Files written to one folder (the manifest last, so a half-written world is never taken for a finished one):
    kb.json          the knowledge base, T-REx style: [{"target": [{"sentence", "subject", "predicate", "object", "uuid"}]}]
    pretrain.txt     the training subjects' fact sentences and sentences that only mention each subject
                     (held-out ones too), shuffled, `pretrain_repeats` times: the backbone's text
    tokenizer/       a word-level Hugging Face tokenizer over the world's words (+ <|endoftext|>, <|im_start|>, <|im_end|>)
    world.json       subjects, relations, pools, facts, held-out subjects, settings (the manifest)
"""

from __future__ import annotations

import random
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from memexp.errors import ConfigError
from memexp.files import write_json, write_text

# relation name -> sentence template; the object is always the word before the final "."
RELATIONS = {
    "capital": "the capital of {s} is {o} .",
    "language": "people in {s} speak {o} .",
    "founder": "{s} was founded by {o} .",
    "export": "the main export of {s} is {o} .",
    "river": "the longest river in {s} is the {o} .",
    "anthem": "the anthem of {s} is called {o} .",
    "animal": "the national animal of {s} is the {o} .",
    "sport": "the favourite sport in {s} is {o} .",
}
# Sentences that name a subject and state nothing about it: every subject, held-out ones too, is a word
# the backbone has read (an entity it has never seen would be one collapsed embedding for all of them).
MENTIONS = ["{s} is a country .", "we travelled to {s} last year .", "the news from {s} was short ."]
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<unk>"]
_ONSETS = "b d f g k l m n p r s t v z br dr gr kr pl st tr".split()
_VOWELS = "a e i o u ai ea ou".split()
_CODAS = ["", "n", "r", "l", "s", "th", "m"]


@dataclass
class Fact:
    subject: str
    relation: str
    object: str
    entry: int  # its row in the memory bank
    held_out: bool

    def sentence(self, obj: str | None = None) -> str:
        return RELATIONS[self.relation].format(s=self.subject, o=self.object if obj is None else obj)

    def prompt(self) -> str:
        """The sentence up to (not including) the object: the cloze question."""
        return RELATIONS[self.relation].split("{o}")[0].format(s=self.subject).strip()


@dataclass
class World:
    subjects: list[str]
    pools: dict[str, list[str]]  # relation -> its objects
    facts: list[Fact]  # in bank order: held-out facts first (the frozen entries)
    seed: int

    @property
    def relations(self) -> list[str]:
        return list(self.pools)

    def words(self) -> list[str]:
        """Every word the world's sentences use, in a fixed order."""
        words = {w for t in [*RELATIONS.values(), *MENTIONS] for w in t.format(s="", o="").split()}
        words |= set(self.subjects) | {o for pool in self.pools.values() for o in pool}
        return sorted(words)


def _pseudo_words(rng: random.Random, n: int, taken: set[str]) -> list[str]:
    out = []
    while len(out) < n:
        word = "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) for _ in range(rng.randint(2, 3))) + rng.choice(_CODAS)
        if word not in taken:
            taken.add(word)
            out.append(word)
    return out


def make_world(
    seed: int, n_subjects: int = 256, n_relations: int = 4, n_objects: int = 32, held_out: int = 51, frozen: int = 0
) -> World:
    """Subjects, object pools and facts from a seed; the `held_out` subjects' facts come first in bank order,
    the training subjects' facts start after the `frozen` entries (rows in between stay empty)."""
    if not 1 <= n_relations <= len(RELATIONS):
        raise ConfigError(f"data.n_relations={n_relations}: expected 1..{len(RELATIONS)}")
    if not 0 <= held_out < n_subjects or n_objects < 2:
        raise ConfigError(
            f"data.held_out={held_out}, data.n_subjects={n_subjects}, data.n_objects={n_objects}: "
            "expected 0 <= held_out < n_subjects and n_objects >= 2"
        )
    rng = random.Random(seed)
    taken = {w for t in [*RELATIONS.values(), *MENTIONS] for w in t.split()}
    subjects = _pseudo_words(rng, n_subjects, taken)
    relations = list(RELATIONS)[:n_relations]
    pools = {r: _pseudo_words(rng, n_objects, taken) for r in relations}
    order = subjects[:]
    rng.shuffle(order)
    hidden = set(order[:held_out])
    facts = []
    for group in (order[:held_out], order[held_out:]):
        for s in group:
            for r in relations:
                entry = len(facts) if s in hidden else max(frozen, held_out * n_relations) + len(facts) - held_out * n_relations
                facts.append(Fact(s, r, rng.choice(pools[r]), entry, s in hidden))
    return World(subjects=subjects, pools=pools, facts=facts, seed=seed)


def write_word_tokenizer(words: list[str], folder: Path) -> None:
    """A word-level Hugging Face tokenizer over `words` (split on whitespace), saved to `folder` whole or not at all."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(SPECIAL_TOKENS + words)}
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk,
        pad_token="<|endoftext|>",
        eos_token="<|im_end|>",
        unk_token="<unk>",
        clean_up_tokenization_spaces=False,
    )
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tok.save_pretrained(tmp)
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)


def write_world(world: World, folder: Path, pretrain_repeats: int = 8) -> Path:
    """Write the world's files (module docstring) into `folder`; world.json last."""
    folder.mkdir(parents=True, exist_ok=True)
    kb: list = [""] * (world.facts[-1].entry + 1)  # rows no fact holds stay empty (all pad in the bank)
    for f in world.facts:
        triple = {
            "sentence": f.sentence(),
            "subject": f.subject,
            "predicate": f.relation,
            "object": f.object,
            "uuid": f"f{f.entry}",
        }
        kb[f.entry] = {"target": [triple]}
    write_json(kb, folder / "kb.json", indent=None)
    rng = random.Random(world.seed + 1)
    known = [f.sentence() for f in world.facts if not f.held_out] + [m.format(s=s) for s in world.subjects for m in MENTIONS]
    lines = []
    for _ in range(pretrain_repeats):
        rng.shuffle(known)
        lines.extend(known)
    write_text("\n".join(lines) + "\n", folder / "pretrain.txt")
    write_word_tokenizer(world.words(), folder / "tokenizer")
    manifest = {"seed": world.seed, "subjects": world.subjects, "pools": world.pools, "facts": [asdict(f) for f in world.facts]}
    write_json(manifest, folder / "world.json", indent=None)
    return folder


def read_world(folder: Path) -> World:
    import json

    m = json.loads((folder / "world.json").read_text(encoding="utf-8"))
    return World(subjects=m["subjects"], pools=m["pools"], facts=[Fact(**f) for f in m["facts"]], seed=m["seed"])
