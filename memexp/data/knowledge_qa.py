"""Questions about a generated world of facts, for training and testing an explicit memory (`data=knowledge_qa`).

A question is the cloze prompt of a fact's sentence ("the capital of zorvan is"); its answer is the
object. Batches (dict of tensors, T = the longest prompt + 1):
    input (B, T) long, target (B, T) long: -100 except the answer position of question rows
    memory_target (B,) long: the fact's bank entry; memory_position (B,): the prompt's last token
    bank_rows (n,), bank_tokens (n, L): entries the batch rewrites before it is read (episodic training)

A training batch holds `qa_per_batch` questions about training subjects and `index_per_batch` index
rows: prompts of any fact (held-out ones too) with no answer, which train only the router to find
the fact's entry, as ExplicitLM's router stage trains on the knowledge base itself. With `episodic`,
every question's object is drawn anew and written into its (updatable) bank entry first, so the
answer can only be read from the bank: neither the frozen backbone's knowledge nor the fusion's
weights can hold it. Validation and test ask the held-out subjects' questions, whose facts sit in
the frozen entries and were never an answer in training. The held-out subjects are split in two:
validation asks about the first `val_subjects` of them (in bank order), test about the rest, so the
checkpoint chosen on validation (`task.test_ckpt=best`) is measured on questions it was not chosen on.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, IterableDataset

from memexp.data.dialogue.datamodule import _default_cache_root
from memexp.data.explicit.bank_cache import BankCache, build_bank_cache, encode_entry
from memexp.data.knowledge_world import Fact, World, make_world, read_world, write_world
from memexp.data.samplers import ResumableLoader
from memexp.data.sources import default_data_dir
from memexp.data.spec import IGNORE_INDEX, DataSpec
from memexp.data.tokenizers import HFTokenizer, tokenizer_from_state
from memexp.errors import ConfigError
from memexp.files import text_digest


class QuestionRows:
    """Token rows of questions (with or without their answers) for a list of facts."""

    def __init__(self, tokenizer: HFTokenizer, facts: list[Fact]):
        self.tok = tokenizer
        self.prompts = [tokenizer.encode(f.prompt()) for f in facts]
        self.T = max(len(p) for p in self.prompts) + 1

    def batch(self, which: list[int], facts: list[Fact], answers: list[str | None]) -> dict[str, torch.Tensor]:
        """Rows for facts[i] (i in which), answered with answers[k] (None: an index row with nothing to predict)."""
        pad = self.tok.pad_id
        x = torch.full((len(which), self.T), pad, dtype=torch.long)
        y = torch.full((len(which), self.T), IGNORE_INDEX, dtype=torch.long)
        pos = torch.empty(len(which), dtype=torch.long)
        for k, (i, answer) in enumerate(zip(which, answers)):
            p = self.prompts[i]
            x[k, : len(p)] = torch.tensor(p)
            pos[k] = len(p) - 1
            if answer is not None:
                (a,) = self.tok.encode(answer)
                x[k, len(p)] = a
                y[k, len(p) - 1] = a
        target = torch.tensor([facts[i].entry for i in which], dtype=torch.long)
        return {"input": x, "target": y, "memory_target": target, "memory_position": pos}


class EpisodicBatches(IterableDataset):
    """`steps` training batches per epoch (see the module docstring), drawn from a seed and the epoch."""

    def __init__(self, module: KnowledgeQADataModule, steps: int):
        self.m, self.steps, self.epoch = module, steps, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.steps

    def __iter__(self):
        m = self.m
        g = torch.Generator().manual_seed(m.seed * 100_003 + self.epoch)
        self.epoch += 1
        train = [i for i, f in enumerate(m.world.facts) if not f.held_out]
        for _ in range(self.steps):
            qa = [train[int(j)] for j in torch.randperm(len(train), generator=g)[: m.qa_per_batch]]
            index = torch.randint(0, len(m.world.facts), (m.index_per_batch,), generator=g).tolist()
            answers = []
            for i in qa:
                pool = m.world.pools[m.world.facts[i].relation]
                answers.append(
                    pool[int(torch.randint(0, len(pool), (1,), generator=g))] if m.episodic else m.world.facts[i].object
                )
            batch = m.rows.batch(qa + index, m.world.facts, answers + [None] * len(index))
            if m.episodic:
                facts = [m.world.facts[i] for i in qa]
                batch["bank_rows"] = torch.tensor([f.entry for f in facts], dtype=torch.long)
                batch["bank_tokens"] = torch.tensor(
                    [encode_entry(m.tokenizer, f.sentence(a), m.knowledge_length)[0] for f, a in zip(facts, answers)],
                    dtype=torch.int32,
                )
            yield batch


class KnowledgeQADataModule(L.LightningDataModule):
    """Cloze questions about a generated world, its knowledge base as the memory bank.

    Args:
        n_subjects, n_relations, n_objects: the world's size (facts = n_subjects * n_relations).
        held_out: subjects whose facts are only in the bank; None fills the frozen entries
            (floor(floor(knowledge_num * freeze_ratio) / n_relations) subjects).
        val_subjects: how many held-out subjects validation asks about (None: half, rounded down); test asks
            about the other held-out subjects, so validation and test questions are disjoint.
        world_seed: the world's random seed (subjects, objects, which subjects are held out).
        knowledge_num, knowledge_length, freeze_ratio: the bank's shape and frozen share (the model's).
        qa_per_batch, index_per_batch: question rows and router-only index rows per training batch.
        episodic: draw each training question's object anew and write it into the bank first.
        steps_per_epoch: training batches per epoch.
        eval_batch_size: questions per evaluation batch.
        pretrain_repeats: passes over the training sentences in the backbone's pretraining text.
        seed: the training batches' random stream.
        data_dir: the data root; the world is written to <data_dir>/knowledge_study/world-<digest>/ (to the user's
            cache folder, ~/.cache/memexp/knowledge_study/, when the data root is read-only).
    """

    task_kind = "causal_lm"

    def __init__(
        self,
        n_subjects: int = 256,
        n_relations: int = 4,
        n_objects: int = 32,
        held_out: int | None = None,
        val_subjects: int | None = None,
        world_seed: int = 0,
        knowledge_num: int = 1024,
        knowledge_length: int = 16,
        freeze_ratio: float = 0.2,
        qa_per_batch: int = 32,
        index_per_batch: int = 32,
        episodic: bool = True,
        steps_per_epoch: int = 500,
        eval_batch_size: int = 256,
        pretrain_repeats: int = 8,
        seed: int = 0,
        data_dir: str | None = None,
    ):
        super().__init__()
        frozen = int(knowledge_num * freeze_ratio)
        self.held_out = frozen // n_relations if held_out is None else held_out
        if self.held_out * n_relations > frozen:
            raise ConfigError(
                f"data.held_out={self.held_out} subjects have {self.held_out * n_relations} facts, more than the "
                f"{frozen} frozen entries (knowledge_num * freeze_ratio); lower data.held_out or raise freeze_ratio"
            )
        self.val_subjects = self.held_out // 2 if val_subjects is None else int(val_subjects)
        if not 1 <= self.val_subjects < self.held_out:
            raise ConfigError(
                f"data.val_subjects={self.val_subjects} of data.held_out={self.held_out} held-out subjects: expected "
                "1 <= val_subjects < held_out (validation and test each need held-out subjects of their own)"
            )
        if qa_per_batch < 1 or index_per_batch < 0 or steps_per_epoch < 1:
            raise ConfigError("data.qa_per_batch and data.steps_per_epoch must be >= 1, data.index_per_batch >= 0")
        if frozen + (n_subjects - self.held_out) * n_relations > knowledge_num:
            raise ConfigError(
                f"the training subjects' facts do not fit after the {frozen} frozen entries of model.knowledge_num={knowledge_num}"
            )
        self.settings = dict(
            n_subjects=n_subjects, n_relations=n_relations, n_objects=n_objects, held_out=self.held_out, frozen=frozen
        )
        self.world_seed, self.pretrain_repeats = world_seed, pretrain_repeats
        self.knowledge_num, self.knowledge_length = knowledge_num, knowledge_length
        self.qa_per_batch, self.index_per_batch, self.episodic = qa_per_batch, index_per_batch, episodic
        self.steps_per_epoch, self.eval_batch_size, self.seed = steps_per_epoch, eval_batch_size, seed
        self.data_dir = Path(data_dir) if data_dir else default_data_dir()
        self.tokenizer: HFTokenizer | None = None
        self.world: World | None = None
        self.bank: BankCache | None = None

    @property
    def world_dir(self) -> Path:
        key = text_digest(
            repr(sorted((self.settings | {"seed": self.world_seed, "repeats": self.pretrain_repeats, "format": 2}).items())),
            length=10,
        )
        # <data_dir>/knowledge_study, or the user's cache folder when the data root is read-only (a shared folder)
        return _default_cache_root(self.data_dir).parent / "knowledge_study" / f"world-{key}"

    def prepare_data(self) -> None:
        if not (self.world_dir / "world.json").exists():
            write_world(make_world(self.world_seed, **self.settings), self.world_dir, self.pretrain_repeats)

    def set_tokenizer(self, tokenizer: HFTokenizer) -> None:
        self.tokenizer = tokenizer

    def restore_tokenizer(self, state: dict) -> None:
        self.set_tokenizer(tokenizer_from_state(state))

    def setup(self, stage: str | None = None) -> None:
        if self.world is not None:
            return
        self.prepare_data()
        self.world = read_world(self.world_dir)
        if self.tokenizer is None:
            self.tokenizer = HFTokenizer(str(self.world_dir / "tokenizer"))
        cache = self.world_dir / f"bank_N{self.knowledge_num}_L{self.knowledge_length}.pt"
        self.bank = build_bank_cache(self.world_dir / "kb.json", self.tokenizer, self.knowledge_num, self.knowledge_length, cache)
        self.rows = QuestionRows(self.tokenizer, self.world.facts)

    @property
    def spec(self) -> DataSpec:
        self.setup()
        return DataSpec(
            task_kind=self.task_kind,
            vocab_size=self.tokenizer.vocab_size,
            tokenizer=self.tokenizer,
            pad_id=self.tokenizer.pad_id,
            seq_len=self.rows.T,
            memory=self.bank,
        )

    def facts(self, held_out: bool) -> list[int]:
        self.setup()
        return [i for i, f in enumerate(self.world.facts) if f.held_out == held_out]

    def split_facts(self, split: str) -> list[int]:
        """The facts whose questions `split` ("val" or "test") asks: held-out subjects, disjoint between the two."""
        held = self.facts(held_out=True)
        subjects = list(dict.fromkeys(self.world.facts[i].subject for i in held))  # bank order
        chosen = set(subjects[: self.val_subjects] if split == "val" else subjects[self.val_subjects :])
        return [i for i in held if self.world.facts[i].subject in chosen]

    def question_batches(self, which: list[int], answers: list[str] | None = None) -> list[dict[str, torch.Tensor]]:
        """Questions about facts `which`, answered with their objects (or `answers`), in evaluation batches."""
        self.setup()
        answers = answers or [self.world.facts[i].object for i in which]
        n = self.eval_batch_size
        return [self.rows.batch(which[k : k + n], self.world.facts, answers[k : k + n]) for k in range(0, len(which), n)]

    def train_dataloader(self) -> DataLoader:
        self.setup()
        return ResumableLoader(EpisodicBatches(self, self.steps_per_epoch), batch_size=None)

    def eval_dataloader(self, split: str) -> DataLoader:
        return DataLoader(self.question_batches(self.split_facts(split)), batch_size=None)

    def val_dataloader(self) -> DataLoader:
        return self.eval_dataloader("val")

    def test_dataloader(self) -> DataLoader:
        return self.eval_dataloader("test")
