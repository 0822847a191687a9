"""DialogueStream: (context -> reply) samples from a prepared chunk folder, one chunk at a time.

What a sample is, and how chunks are dealt to DDP ranks and DataLoader workers so that every
sample is produced once per epoch, is part of the package contract (see `memexp.data.dialogue`).
Order is shuffled per epoch (chunk order, then a shuffle buffer of `buffer_size` samples),
reproducibly from `seed` and the epoch given to `set_epoch`. Memory holds one chunk and the
shuffle buffer per worker, whatever the corpus size. `len(stream)` is the number of samples
this rank produces per epoch.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import torch
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import IterableDataset, get_worker_info

from memexp.data.dialogue.chunks import read_chunk
from memexp.data.dialogue.vocab import DialogueVocab
from memexp.errors import ConfigError, DataError


def load_manifest(root: str | Path) -> dict:
    """The manifest of a finished preparation (a folder without one is not finished)."""
    path = Path(root) / "manifest.json"
    if not path.is_file():
        raise DataError(
            f"{path} not found: {root} is not a finished dialogue preparation; run the preparation (again) to complete it"
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(f"{path}:{e.lineno}: manifest is not valid JSON ({e.msg}); run the preparation again") from None
    if manifest.get("kind") != "dialogue_chunks" or "splits" not in manifest or "vocab" not in manifest:
        raise DataError(f"{path}: not a dialogue chunk manifest (expected kind 'dialogue_chunks' with 'splits' and 'vocab')")
    return manifest


class DialogueStream(IterableDataset):
    """(context, reply) pairs from `root/split/chunk_*.pt`; see the package docstring (memexp.data.dialogue).

    Args:
        root: folder written by `prepare_dialogues`.
        split: "train", "valid" or "test".
        vocab: the DialogueVocab the model was built for; must be the one the folder was
            prepared with (checked against the manifest). None: the folder's vocabulary.json.
        max_history: utterances of history kept before each reply.
        max_context_len: context tokens kept (the most recent ones).
        max_reply_len: length of reply_in / reply_out (SOS/EOS included).
        shuffle: shuffle chunk order and samples within a buffer.
        buffer_size: samples in the shuffle buffer (per worker).
        seed: base seed; the epoch from `set_epoch` is mixed in.
        rank, world_size: this process's DDP place; None reads torch.distributed when it is
            initialised at iteration time, else 0 / 1.
        verify_checksums: check each chunk's sha256 against the manifest when it is read.
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        vocab: DialogueVocab | None = None,
        max_history: int = 8,
        max_context_len: int = 256,
        max_reply_len: int = 64,
        shuffle: bool = True,
        buffer_size: int = 2048,
        seed: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
        verify_checksums: bool = True,
    ):
        super().__init__()
        for field, value in (("max_history", max_history), ("max_context_len", max_context_len), ("buffer_size", buffer_size)):
            if value < 1:
                raise ConfigError(f"data.{field}={value} must be >= 1")
        if max_reply_len < 2:
            raise ConfigError(f"data.max_reply_len={max_reply_len} must be >= 2 (room for one token and EOS)")
        self.root = Path(root)
        self.manifest = load_manifest(root)
        if split not in self.manifest["splits"]:
            raise DataError(
                f"{self.root / 'manifest.json'}: split {split!r} was not prepared (have {sorted(self.manifest['splits'])})"
            )
        self.split = split
        self.vocab = self._checked_vocab(vocab)
        self.pad_id, self.sos_id, self.eos_id = self.vocab.pad_id, self.vocab.sos_id, self.vocab.eos_id
        self.max_history, self.max_context_len, self.max_reply_len = max_history, max_context_len, max_reply_len
        self.shuffle, self.buffer_size, self.seed = shuffle, buffer_size, seed
        self.rank, self.world_size = rank, world_size
        self.verify_checksums = verify_checksums
        self.epoch = 0
        self.chunks = []  # (path, sha256, pairs, index of its first pair)
        offset = 0
        for rec in self.manifest["splits"][split]["chunks"]:
            self.chunks.append((self.root / split / rec["file"], rec["sha256"], rec["pairs"], offset))
            offset += rec["pairs"]
        self.num_samples = offset

    def _checked_vocab(self, vocab: DialogueVocab | None) -> DialogueVocab:
        expected = self.manifest["vocab"]
        if vocab is None:
            vocab = DialogueVocab.load(self.root / expected.get("file", "vocabulary.json"))
            where = f"{self.root / expected.get('file', 'vocabulary.json')}"
        else:
            where = "the vocabulary passed in"
        if vocab.checksum != expected["sha256"]:
            raise DataError(
                f"{where} ({vocab.vocab_size} tokens, sha256 {vocab.checksum[:12]}) is not the vocabulary "
                f"{self.root} was prepared with ({expected['size']} tokens, sha256 {expected['sha256'][:12]}): token ids "
                f"would mean other words; use {self.root / 'vocabulary.json'} or prepare the data again with this vocabulary"
            )
        return vocab

    # -- sharding

    def set_epoch(self, epoch: int) -> None:
        """Reshuffle for this epoch (call before iterating, e.g. at each train epoch start)."""
        self.epoch = int(epoch)

    def _rank_world(self) -> tuple[int, int]:
        rank, world = self.rank, self.world_size
        if rank is None or world is None:
            dist = torch.distributed
            if dist.is_available() and dist.is_initialized():
                rank = dist.get_rank() if rank is None else rank
                world = dist.get_world_size() if world is None else world
            else:
                rank, world = rank or 0, world or 1
        if not 0 <= rank < world:
            raise ConfigError(f"rank={rank} must be in [0, world_size={world})")
        return rank, world

    def _rank_chunks(self, rank: int, world: int) -> tuple[list[int], bool]:
        """Chunk ids this rank reads, and whether it must stride samples by rank."""
        ids = list(range(len(self.chunks)))
        if len(self.chunks) >= world:
            return ids[rank::world], False
        return ids, True

    def samples_on_rank(self, rank: int, world: int) -> int:
        """How many samples rank `rank` of `world` produces per epoch (all its workers together)."""
        ids, strided = self._rank_chunks(rank, world)
        if strided:
            return len(range(rank, self.num_samples, world))
        return sum(self.chunks[i][2] for i in ids)

    def __len__(self) -> int:
        """Samples this rank produces per epoch."""
        return self.samples_on_rank(*self._rank_world())

    def _plan(self) -> tuple[list[int], Callable[[int], bool] | None, int]:
        """This worker's chunk ids (in epoch order), a keep(index) filter, and its consumer id."""
        rank, world = self._rank_world()
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        ids, rank_strided = self._rank_chunks(rank, world)
        if self.shuffle:
            random.Random(f"{self.seed}:{self.epoch}:chunks:{rank}").shuffle(ids)
        if not rank_strided and len(ids) >= workers:
            return ids[worker::workers], None, rank * workers + worker
        if rank_strided and workers == 1:
            return ids, (lambda i: i % world == rank), rank
        if rank_strided:  # stride by rank, then by worker among this rank's samples
            return ids, (lambda i: i % world == rank and (i // world) % workers == worker), rank * workers + worker
        return ids, (lambda i: i % workers == worker), rank * workers + worker

    # -- samples

    def _chunk_samples(self, chunk_id: int, keep: Callable[[int], bool] | None) -> Iterator[dict]:
        path, sha, _, first_index = self.chunks[chunk_id]
        chunk = read_chunk(path, sha256=sha if self.verify_checksums else None)
        return self.samples_from_chunk(chunk, first_index, keep)

    def samples_from_chunk(
        self, chunk: dict[str, torch.Tensor], first_index: int = 0, keep: Callable[[int], bool] | None = None
    ) -> Iterator[dict]:
        """The (context, reply) samples of one loaded chunk whose first pair has index first_index."""
        tokens, uo, do = chunk["tokens"].long(), chunk["utt_offsets"], chunk["dial_offsets"]
        n_utt = len(uo) - 1
        # Lay the chunk out with EOS after every utterance, so that any run of consecutive
        # utterances (a context) is one contiguous slice.
        lengths = uo[1:] - uo[:-1]
        shift = torch.arange(n_utt)
        flat = torch.empty(len(tokens) + n_utt, dtype=torch.long)
        flat[torch.arange(len(tokens)) + torch.repeat_interleave(shift, lengths)] = tokens
        ends = (uo[1:] + shift).tolist()  # position of utterance u's EOS
        flat[ends] = self.eos_id
        starts = (uo[:-1] + shift).tolist()
        sos = torch.tensor([self.sos_id])
        index = first_index
        do = do.tolist()
        for d in range(len(do) - 1):
            u0, u1 = do[d], do[d + 1]
            for i in range(u0 + 1, u1):
                if keep is None or keep(index):
                    h0 = max(u0, i - self.max_history)
                    context = flat[max(starts[h0], ends[i - 1] + 1 - self.max_context_len) : ends[i - 1] + 1].clone()
                    reply_end = min(ends[i], starts[i] + self.max_reply_len - 1)
                    reply = torch.cat([sos, flat[starts[i] : reply_end], flat[ends[i] : ends[i] + 1]])
                    yield {"context": context, "reply": reply, "index": index}
                index += 1

    def __iter__(self) -> Iterator[dict]:
        ids, keep, consumer = self._plan()
        samples = (s for c in ids for s in self._chunk_samples(c, keep))
        if not self.shuffle:
            yield from samples
            return
        rng = random.Random(f"{self.seed}:{self.epoch}:buffer:{consumer}")
        buf: list[dict] = []
        for s in samples:
            if len(buf) < self.buffer_size:
                buf.append(s)
                continue
            j = rng.randrange(self.buffer_size)
            yield buf[j]
            buf[j] = s
        rng.shuffle(buf)
        yield from buf

    @property
    def collate_fn(self) -> Callable[[list[dict]], dict[str, torch.Tensor]]:
        """`collate_dialogues` bound to this vocabulary's pad id (picklable, for DataLoader)."""
        return partial(collate_dialogues, pad_id=self.pad_id)


def collate_dialogues(batch: list[dict], pad_id: int = 0) -> dict[str, torch.Tensor]:
    """Pad a list of samples to the longest in the batch.

    Returns context (B, Lc) long, context_mask (B, Lc) bool (True = real token),
    reply_in (B, Lr) = SOS u, reply_out (B, Lr) = u EOS (padding = pad_id, to be ignored
    by the loss), index (B,) long.
    """
    if not batch:
        raise ValueError("collate_dialogues got an empty batch")
    context = pad_sequence([b["context"] for b in batch], batch_first=True, padding_value=pad_id)  # (B, Lc)
    lengths = torch.tensor([len(b["context"]) for b in batch])
    mask = torch.arange(context.shape[1])[None, :] < lengths[:, None]  # (B, Lc)
    reply_in = pad_sequence([b["reply"][:-1] for b in batch], batch_first=True, padding_value=pad_id)  # (B, Lr)
    reply_out = pad_sequence([b["reply"][1:] for b in batch], batch_first=True, padding_value=pad_id)  # (B, Lr)
    index = torch.tensor([int(b["index"]) for b in batch], dtype=torch.long)
    return {"context": context, "context_mask": mask, "reply_in": reply_in, "reply_out": reply_out, "index": index}
