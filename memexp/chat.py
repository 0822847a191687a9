"""python -m memexp.chat ckpt=PATH [temperature=0.8] [top_k=0] [top_p=0.9] [greedy=false] [max_len=N] [seed=0] [history=N]

A multi-turn conversation with a dialogue model (model=hgd) or with an ExplicitLM (model=explicit_lm).

Dialogue models: each of your lines and each reply joins the history; the last `history` utterances
(default: the data's max_history) are the context of the next reply. Unsegmented input ("你好吗") is
cut into the vocabulary's tokens; replies are printed without the spaces between Chinese characters.
verbose=true reports the context size of every reply on standard error.

ExplicitLM (its checkpoint, or a bank file saved from one): the conversation goes through the tokenizer's
chat template (plain lines when it has none), the backbone answers with its KV cache while reading the
bank, and every `fact_update_frequency` turns the facts of your turn (extractor=identity|llmlingua) are
written into the bank's updatable entries (`memexp.memory.conversation`). `/memory` shows the entries
retrieved for the last reply and the last update, `/memory stats` the counts; `save_bank=PATH` writes
the bank on exit; verbose=true reports each turn's written facts on standard error.

`/reset` forgets the history (an ExplicitLM's bank keeps its facts), `/quit` (or end of input) leaves.
When standard input is not a terminal, every input line gets one reply, printed on its own line of
standard output (messages such as "history cleared" go to standard error), so
`printf '你好\n在干嘛\n' | python -m memexp.chat ckpt=...` answers two lines.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, TextIO

from memexp.entry import chosen_model, launch
from memexp.errors import CheckpointError, ConfigError, DataError

# torch, the models and the memory are imported inside the functions, so `--help` answers at once.
if TYPE_CHECKING:
    from omegaconf import DictConfig

    from memexp.data.dialogue.vocab import DialogueVocab
    from memexp.memory.conversation import ExplicitConversation
    from memexp.models.sampling import Sampling
    from memexp.tasks.dialogue import DialogueTask

_CJK = r"[\u2e80-\u9fff\uf900-\ufaff\uff00-\uffef\u3000-\u303f]"
_SPACE_NEXT_TO_CJK = re.compile(rf"(?<={_CJK}) +| +(?={_CJK})")


def chat_sampling() -> Sampling:
    """The replies' sampling when none is given (ChatConfig's defaults): temperature 0.8, top_p 0.9, seed 0."""
    from memexp.models.sampling import Sampling

    return Sampling(temperature=0.8, top_p=0.9, seed=0)


def detokenize(text: str) -> str:
    """Drop the spaces of segmented text next to Chinese characters and punctuation."""
    return _SPACE_NEXT_TO_CJK.sub("", text)


class ChatSession:
    """The history of one conversation and the sampling settings of its replies."""

    def __init__(
        self,
        task: DialogueTask,
        vocab: DialogueVocab,
        max_len: int = 32,
        sampling: Sampling | None = None,
        history: int = 4,
        max_context_len: int | None = None,
    ):
        if history < 1:
            raise ConfigError(f"history={history} must be >= 1 (utterances kept as context)")
        if max_len < 1:
            raise ConfigError(f"max_len={max_len} must be >= 1")
        self.task, self.vocab = task, vocab
        self.max_len, self.sampling = max_len, sampling if sampling is not None else chat_sampling()
        self.history, self.max_context_len = history, max_context_len
        self.turns: list[list[int]] = []  # utterances so far, user and model alternating

    def reset(self) -> None:
        self.turns = []

    def context(self) -> list[list[int]]:
        return self.turns[-self.history :]

    def respond(self, text: str) -> str:
        """Add the user's line to the history, reply, add the reply; returns the reply's text."""
        self.turns.append(self.vocab.encode(self.vocab.segment(text)))
        sampling = self.sampling
        if sampling.seed is not None:  # reproducible, yet not the same draw every turn
            sampling = replace(sampling, seed=sampling.seed + len(self.turns))
        ids = self.task.reply(self.context(), max_len=self.max_len, sampling=sampling, max_context_len=self.max_context_len)
        self.turns.append(ids)
        return detokenize(self.vocab.decode(ids))


def open_session(
    ckpt: str,
    data_dir: str | None = None,
    model: str | None = None,
    max_len: int | None = None,
    sampling: Sampling | None = None,
    history: int | None = None,
) -> ChatSession:
    from memexp.configs.rebuild import load_checkpoint

    loaded = load_checkpoint(ckpt, data_dir=data_dir, expect_model=model)
    if not hasattr(loaded.task, "reply"):
        kind = loaded.checkpoint["memexp"].get("task_kind", "another")
        raise CheckpointError(
            f"checkpoint {ckpt} holds a {kind} model; chat needs a dialogue model (model=hgd) or an ExplicitLM "
            "(model=explicit_lm); use memexp.generate"
        )
    dm = loaded.datamodule
    return ChatSession(
        loaded.task,
        dm.tokenizer,
        max_len=max_len or dm.max_reply_len,
        sampling=sampling,
        history=history or dm.max_history,
        max_context_len=dm.max_context_len,
    )


def holds_explicit_memory(path: str | Path) -> bool:
    """Whether `path` is a bank file or a checkpoint whose model has an explicit memory bank (ExplicitLM).
    Anything unreadable is left to the checkpoint loader, which names the fault."""
    import torch

    from memexp.memory.bank_file import FORMAT as BANK_FORMAT

    try:
        record = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:
        return False
    if not isinstance(record, dict):
        return False
    return record.get("format") == BANK_FORMAT or "net.memory_bank" in (record.get("state_dict") or {})


def open_explicit_session(
    ckpt: str,
    data_dir: str | None = None,
    model: str | None = None,
    max_len: int | None = None,
    sampling: Sampling | None = None,
    history: int | None = None,
    extractor: str = "identity",
    fact_extractor: Mapping | None = None,
    update_strategy: str = "lru",
    similarity_threshold: float = 0.9,
    fact_update_frequency: int = 1,
    include_output: bool = False,
    system: str | None = None,
) -> ExplicitConversation:
    """A dual-path conversation with the ExplicitLM of `ckpt` (a checkpoint or a bank file); sampling None:
    `chat_sampling()`, whose seed also seeds the bank's updater."""
    from memexp.configs.rebuild import load_memory
    from memexp.memory.conversation import ExplicitConversation
    from memexp.memory.facts import make_extractor

    if model not in (None, "explicit_lm"):
        raise CheckpointError(f"checkpoint {ckpt} holds a model=explicit_lm model, not model={model}")
    facts = make_extractor(extractor, **dict(fact_extractor or {}))  # before the model: its errors come first
    if sampling is None:
        sampling = chat_sampling()
    _, memory = load_memory(ckpt, data_dir, update_strategy, similarity_threshold, sampling.seed or 0)
    window = memory.net.max_len
    return ExplicitConversation(
        memory,
        facts,
        fact_update_frequency=fact_update_frequency,
        include_output=include_output,
        max_new_tokens=max_len or min(64, window // 2),
        sampling=sampling,
        history=history,
        system=system,
    )


def _quote(text: str) -> str:
    return repr(text) if text else "(empty)"


def memory_lines(session: ExplicitConversation, command: str) -> list[str]:
    """What `/memory` (the last retrieval and update) or `/memory stats` prints."""
    words = command.split()
    if words == ["/memory", "stats"]:
        stats = session.statistics()
        return ["  ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in stats.items())]
    if words != ["/memory"]:
        return [f"unknown command {command!r}: /memory, /memory stats, /reset, /quit"]
    if session.last is None:
        return ["(no reply yet)"]
    lines = ["retrieved for the last reply (the entry each memory layer selected at the prompt's last token):"]
    for e in session.retrieved():
        kind = "frozen" if e["frozen"] else "updatable"
        lines.append(f"  layer {e['layer']}: #{e['index']} ({kind}, {e['source'] or 'no source'}) {_quote(e['text'])}")
    changes = session.last_update()
    if not changes:
        every = session.dual.frequency
        lines.append(f"last update: none at this turn (facts are written every {every} turns)")
    else:
        lines.append(f"last update: {len(changes)} entries written")
        lines += [f"  #{c['index']}: {_quote(c['old'])} -> {_quote(c['new'])}" for c in changes]
    return lines


def _turn_report(session: ChatSession | ExplicitConversation) -> str:
    """The verbose line after a reply: its context, and for an ExplicitLM the facts written."""
    if isinstance(session, ChatSession):
        ctx = session.context()[:-1]
        return f"[context: {len(ctx)} utterances, {sum(len(u) + 1 for u in ctx)} tokens]"
    written = "; ".join(f"#{c['index']} {_quote(c['new'])}" for c in session.last_update()) or "none"
    return f"[context: {session.context_turns} turns, {session.context_tokens} tokens] [facts written: {written}]"


def converse(
    session: ChatSession | ExplicitConversation,
    lines: Iterable[str],
    interactive: bool,
    verbose: bool = False,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
) -> int:
    """Answer `lines` (an iterator of input lines); returns the number of replies."""
    from memexp.memory.conversation import ExplicitConversation

    replies = 0
    explicit = isinstance(session, ExplicitConversation)
    for line in lines:
        text = line.strip()
        if not text:
            continue
        if text == "/quit":
            break
        if text == "/reset":
            session.reset()
            print("(history cleared)", file=err, flush=True)
            continue
        if explicit and text.split()[0] == "/memory":
            print("\n".join(memory_lines(session, text)), file=err, flush=True)
            continue
        reply = " ".join(session.respond(text).splitlines())  # one reply, one line
        if verbose:
            print(_turn_report(session), file=err, flush=True)
        print(f"bot> {reply}" if interactive else reply, file=out, flush=True)
        replies += 1
    return replies


def piped_lines(stream: BinaryIO) -> Iterator[str]:
    """Lines of piped standard input, decoded one at a time; invalid UTF-8 names its line."""
    for line_no, raw in enumerate(stream, start=1):
        try:
            yield raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise DataError(
                f"standard input, line {line_no}: not valid UTF-8 (byte {e.start} is {raw[e.start : e.start + 1]!r})"
            ) from None


def _terminal_lines() -> Iterator[str]:
    while True:
        try:
            yield input("you> ")
        except (EOFError, KeyboardInterrupt):
            print()
            return


def check_bank_target(save_bank: str) -> Path:
    """`save_bank` may be a new path or a bank file (replaced), never a folder or another file (a checkpoint)."""
    from memexp.memory.bank_file import is_bank_file

    target = Path(save_bank)
    if target.is_dir():
        raise ConfigError(f"save_bank={save_bank}: a folder; expected the path of a bank file to write")
    if target.exists() and not is_bank_file(target):
        raise ConfigError(f"save_bank={save_bank} exists and is no bank file (a checkpoint?); choose another path, e.g. bank.pt")
    return target


def _plain(settings: object) -> dict:
    """The `fact_extractor` block (the dataclass hydra-zen instantiates, a DictConfig or a dict) as a plain dict."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        plain = OmegaConf.to_container(OmegaConf.create(settings), resolve=True)
    except (OmegaConfBaseException, ValueError):
        plain = None
    if not isinstance(plain, dict):
        raise ConfigError("fact_extractor: expected a mapping (model, rate, force_tokens, chunk_end_tokens)")
    return plain


def chat(
    ckpt: str,
    model: str | None,
    max_len: int | None,
    temperature: float,
    top_k: int,
    top_p: float,
    greedy: bool,
    seed: int | None,
    history: int | None,
    verbose: bool,
    paths: DictConfig,
    extractor: str = "identity",
    fact_extractor: Mapping | None = None,
    update_strategy: str = "lru",
    similarity_threshold: float = 0.9,
    fact_update_frequency: int = 1,
    include_output: bool = False,
    save_bank: str | None = None,
    system: str | None = None,
) -> int:
    """The Hydra task of `python -m memexp.chat` (arguments: `ChatConfig`; `model` is read back by `chosen_model`)."""
    from memexp.models.sampling import Sampling

    ckpt, interactive = str(ckpt), sys.stdin.isatty()
    sampling = Sampling.from_settings(temperature, top_k, top_p, greedy, seed)
    if not holds_explicit_memory(ckpt):
        if save_bank is not None or system is not None:
            raise ConfigError("save_bank and system are options of an ExplicitLM chat; this checkpoint is no explicit_lm")
        session = open_session(ckpt, paths.data_dir, chosen_model(), max_len, sampling, history)
        if interactive:
            print("chat with the model: /reset forgets the history, /quit leaves", file=sys.stderr)
        return converse(session, _terminal_lines() if interactive else piped_lines(sys.stdin.buffer), interactive, verbose)

    target = check_bank_target(str(save_bank)) if save_bank is not None else None
    session = open_explicit_session(
        ckpt,
        paths.data_dir,
        chosen_model(),
        max_len=max_len,
        sampling=sampling,
        history=history,
        extractor=extractor,
        fact_extractor=_plain(fact_extractor or {}),
        update_strategy=update_strategy,
        similarity_threshold=similarity_threshold,
        fact_update_frequency=fact_update_frequency,
        include_output=include_output,
        system=system,
    )
    if not session.templated:
        print("(the tokenizer has no chat template: the turns are joined as plain lines)", file=sys.stderr, flush=True)
    if interactive:
        print(
            "chat with the model: /memory shows the last retrieval and update, /memory stats the counts, "
            "/reset forgets the turns (the bank keeps its facts), /quit leaves",
            file=sys.stderr,
        )
    try:
        replies = converse(session, _terminal_lines() if interactive else piped_lines(sys.stdin.buffer), interactive, verbose)
    except KeyboardInterrupt:  # Ctrl-C while a reply is generated: leave, and still save what was written
        replies = -1
    if target is not None:
        session.memory.save(target)
        print(f"bank saved to {target} ({session.dual.facts_written} facts written this session)", file=sys.stderr, flush=True)
    return replies


def main() -> None:
    launch(chat, "memexp_chat", "chat")


if __name__ == "__main__":
    main()
