"""LCCC-format dialogues: prepared once into a folder of chunks, streamed as (context -> reply) pairs.

Modules, in the order data flows through them:
  readers     raw TSV / JSONL / JSON files (optionally .gz) -> `Record`s, streamed
  vocab       `DialogueVocab`: whitespace tokens -> ids (built, or WordPiece vocab.txt)
  chunks      the chunk file: `ChunkWriter`, `read_chunk`, `chunk_dialogues`
  prepare     `prepare_dialogues` (resumable), `download_lccc`
  stream      `DialogueStream` (IterableDataset), `load_manifest`, `collate_dialogues`
  datamodule  `DialogueDataModule`, `EpochBatches`, `UnsizedBatches`

CONTRACT

A chunk file `chunk_NNNNN.pt` holds `chunk_size` dialogues (the last one of a split fewer) as a
dict of exactly three 1-d tensors, written with `torch.save` and read with
`torch.load(weights_only=True)` (nothing else is unpickled):
    tokens       (N_tok,)   int32  every utterance's ids, back to back
    utt_offsets  (N_utt+1,) int64  utterance u is tokens[utt_offsets[u]:utt_offsets[u+1]]; [0]=0, [-1]=N_tok
    dial_offsets (N_dia+1,) int64  dialogue d is utterances dial_offsets[d]:dial_offsets[d+1]; [0]=0, [-1]=N_utt
`read_chunk` checks keys, dtypes, shapes and offsets, and with a sha256 the file's bytes.

A prepared folder:
    out_dir/
      vocabulary.json   DialogueVocab.state_dict() (tokens, special roles, kind, source), written first
      progress.json     only while preparing (or after an interruption): fingerprint, vocabulary
                        checksum, records consumed per source, and per split the chunks written so far
                        (with sha256) and the counters; removed once manifest.json is written
      train/ valid/ test/   chunk_00000.pt, chunk_00001.pt, ... of each prepared split
                        (chunk_NNNNN.pt.tmp only while that chunk is being written)
      manifest.json     written LAST; a folder without it is not finished and is never read
Every file is written under a temporary name and renamed into place, so a file that exists is
whole. Running `prepare_dialogues` again on an interrupted folder with the same fingerprint
re-checks the recorded chunks' sha256, removes leftover `*.tmp` chunks and continues after the
last recorded chunk; the result is byte-identical to an uninterrupted run. A different
preparation (or a chunk that fails its check) starts the folder over.

What manifest.json proves: `fingerprint`, a sha256 over the format version, each source's resolved
path, split, format, size and mtime, the vocabulary setting (build settings, the WordPiece file's
sha256, or a given vocabulary's checksum), chunk_size, skip_bad and the splits, so the same call
returns the finished manifest and a changed input invalidates the folder; `vocab.sha256`, the
checksum of the id assignment (tokens, special roles, kind), against which `DialogueStream`
refuses any other vocabulary, plus its size and pad/sos/eos/unk ids; per split the counts
(dialogues, utterances, tokens, pairs, skipped_empty, skipped_single, skipped_bad) and the list of chunks, each
with its file name, counts and the sha256 of its bytes (checked again when a chunk is read);
`totals` over the splits.

Samples: every reply turn i >= 1 of a dialogue u_0 .. u_{n-1} is one sample (a chunk's `pairs`),
numbered 0 .. num_samples-1 through the split in chunk order ("index"): context = the last
`max_history` utterances before u_i, each followed by EOS, cut to the last `max_context_len`
tokens; reply = SOS u_i EOS, u_i cut to `max_reply_len - 1` tokens. `collate_dialogues` pads
them into context / context_mask / reply_in / reply_out / index.

Sharding, so that every sample is produced exactly once per epoch over all DDP ranks x DataLoader
workers (rank and world size from torch.distributed when it is initialised, else 0 / 1):
  - ranks: with at least as many chunks as ranks, rank r reads chunks c with c % world_size == r;
    with fewer, every rank reads all chunks and keeps the samples with index % world_size == r.
  - workers: each rank shuffles its chunk ids with a seed of (seed, epoch, rank), the same in all
    its workers. With whole chunks per rank and at least as many of them as workers, worker w
    reads every num_workers-th chunk of that order starting at w; otherwise every worker reads
    the rank's chunks and keeps the samples with index % num_workers == w (after the rank's
    stride: (index // world_size) % num_workers == w).
  - order (shuffle=True, the train split): that chunk order, then a per-worker shuffle buffer
    seeded from (seed, epoch, rank, worker); `set_epoch` (the training loader calls it each
    epoch) changes both. Without shuffle each worker yields its samples in split order.
The training loader of `DialogueDataModule` stops every rank after the same number of batches,
floor(smallest rank's sample count / batch_size), so that DDP ranks step together: up to about a
chunk's worth of samples per rank is left out of a training epoch (a different part each epoch).
Validation and test loaders read every sample of their split exactly once.
"""

from memexp.data.dialogue.chunks import ChunkWriter, chunk_dialogues, chunk_name, read_chunk
from memexp.data.dialogue.prepare import FORMAT_VERSION, LCCC_URL, download_lccc, prepare_dialogues
from memexp.data.dialogue.readers import (
    LCCC_FILE,
    READERS,
    SPLITS,
    Record,
    detect_format,
    open_text,
    read_json,
    read_jsonl,
    read_tsv,
    resolve_sources,
)
from memexp.data.dialogue.stream import DialogueStream, collate_dialogues, load_manifest
from memexp.data.dialogue.vocab import DialogueVocab

# The data module's names load on first use: it imports Lightning (seconds, ~200 MB), which
# preparation, streaming and DataLoader workers never need.
_DATAMODULE_NAMES = ("DialogueDataModule", "EpochBatches", "UnsizedBatches", "LCCC_TOY", "LCCC_BASE_DIR")


def __getattr__(name: str) -> object:
    if name in _DATAMODULE_NAMES:
        from memexp.data.dialogue import datamodule

        value = globals()[name] = getattr(datamodule, name)
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "FORMAT_VERSION",
    "LCCC_BASE_DIR",
    "LCCC_FILE",
    "LCCC_TOY",
    "LCCC_URL",
    "READERS",
    "SPLITS",
    "ChunkWriter",
    "DialogueDataModule",
    "DialogueStream",
    "DialogueVocab",
    "EpochBatches",
    "Record",
    "UnsizedBatches",
    "chunk_dialogues",
    "chunk_name",
    "collate_dialogues",
    "detect_format",
    "download_lccc",
    "load_manifest",
    "open_text",
    "prepare_dialogues",
    "read_chunk",
    "read_json",
    "read_jsonl",
    "read_tsv",
    "resolve_sources",
]
