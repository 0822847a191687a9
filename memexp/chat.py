"""python -m memexp.chat ckpt=PATH [temperature=0.8] [top_k=0] [top_p=0.9] [greedy=false] [max_len=N] [seed=0] [history=N]

A multi-turn conversation with a dialogue model (model=hgd). Each of your lines and each
reply joins the history; the last `history` utterances (default: the data's max_history)
are the context of the next reply. `/reset` forgets the history, `/quit` (or end of input)
leaves. When standard input is not a terminal, every input line gets one reply, printed
on its own line of standard output (messages such as "history cleared" go to standard
error), so `printf '你好\n在干嘛\n' | python -m memexp.chat ckpt=...` answers two lines.
Unsegmented input ("你好吗") is cut into the vocabulary's tokens; replies are printed
without the spaces between Chinese characters. verbose=true reports the context size of
every reply on standard error.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, TextIO

from memexp.configs.rebuild import load_checkpoint
from memexp.entry import chosen_model, launch
from memexp.errors import CheckpointError, ConfigError

if TYPE_CHECKING:
    from omegaconf import DictConfig

    from memexp.data.dialogue.vocab import DialogueVocab
    from memexp.tasks.dialogue import DialogueTask

_CJK = r"[\u2e80-\u9fff\uf900-\ufaff\uff00-\uffef\u3000-\u303f]"
_SPACE_NEXT_TO_CJK = re.compile(rf"(?<={_CJK}) +| +(?={_CJK})")


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
        temperature: float = 0.8,
        top_k: int = 0,
        top_p: float = 0.9,
        greedy: bool = False,
        seed: int | None = 0,
        history: int = 4,
        max_context_len: int | None = None,
    ):
        if history < 1:
            raise ConfigError(f"history={history} must be >= 1 (utterances kept as context)")
        if max_len < 1:
            raise ConfigError(f"max_len={max_len} must be >= 1")
        if not 0 < top_p <= 1:
            raise ConfigError(f"top_p={top_p} must be in (0, 1]")
        self.task, self.vocab = task, vocab
        self.max_len, self.temperature, self.top_k, self.top_p, self.greedy = max_len, temperature, top_k, top_p, greedy
        self.seed, self.history, self.max_context_len = seed, history, max_context_len
        self.turns: list[list[int]] = []  # utterances so far, user and model alternating

    def reset(self) -> None:
        self.turns = []

    def context(self) -> list[list[int]]:
        return self.turns[-self.history :]

    def respond(self, text: str) -> str:
        """Add the user's line to the history, reply, add the reply; returns the reply's text."""
        self.turns.append(self.vocab.encode(self.vocab.segment(text)))
        seed = None if self.seed is None else self.seed + len(self.turns)  # reproducible, yet not the same draw every turn
        ids = self.task.reply(
            self.context(),
            max_len=self.max_len,
            temperature=self.temperature,
            top_k=self.top_k,
            top_p=self.top_p,
            greedy=self.greedy,
            seed=seed,
            max_context_len=self.max_context_len,
        )
        self.turns.append(ids)
        return detokenize(self.vocab.decode(ids))


def open_session(
    ckpt: str,
    data_dir: str | None = None,
    model: str | None = None,
    max_len: int | None = None,
    temperature: float = 0.8,
    top_k: int = 0,
    top_p: float = 0.9,
    greedy: bool = False,
    seed: int | None = 0,
    history: int | None = None,
) -> ChatSession:
    loaded = load_checkpoint(ckpt, data_dir=data_dir, expect_model=model)
    if not hasattr(loaded.task, "reply"):
        kind = loaded.checkpoint["memexp"].get("task_kind", "another")
        raise CheckpointError(
            f"checkpoint {ckpt} holds a {kind} model; chat needs a dialogue model (model=hgd); use memexp.generate"
        )
    dm = loaded.datamodule
    return ChatSession(
        loaded.task,
        dm.tokenizer,
        max_len=max_len or dm.max_reply_len,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        greedy=greedy,
        seed=seed,
        history=history or dm.max_history,
        max_context_len=dm.max_context_len,
    )


def converse(
    session: ChatSession,
    lines: Iterable[str],
    interactive: bool,
    verbose: bool = False,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
) -> int:
    """Answer `lines` (an iterator of input lines); returns the number of replies."""
    replies = 0
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
        reply = session.respond(text)
        if verbose:
            ctx = session.context()[:-1]
            print(f"[context: {len(ctx)} utterances, {sum(len(u) + 1 for u in ctx)} tokens]", file=err, flush=True)
        print(f"bot> {reply}" if interactive else reply, file=out, flush=True)
        replies += 1
    return replies


def _terminal_lines() -> Iterator[str]:
    while True:
        try:
            yield input("you> ")
        except EOFError:
            print()
            return


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
) -> int:
    """The Hydra task of `python -m memexp.chat` (arguments: `ChatConfig`; `model` is read back by `chosen_model`)."""
    session = open_session(str(ckpt), paths.data_dir, chosen_model(), max_len, temperature, top_k, top_p, greedy, seed, history)
    interactive = sys.stdin.isatty()
    if interactive:
        print("chat with the model: /reset forgets the history, /quit leaves", file=sys.stderr)
    return converse(session, _terminal_lines() if interactive else sys.stdin, interactive, verbose)


def main() -> None:
    launch(chat, "memexp_chat", "chat")


if __name__ == "__main__":
    main()
