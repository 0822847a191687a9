"""A multi-turn conversation with an ExplicitLM whose bank learns from it (dual-path inference).

Each user turn is appended to the conversation, the whole conversation is rendered by the tokenizer's
chat template (with the generation prompt) and the backbone generates the reply with its KV cache,
reading the bank. Every `fact_update_frequency` turns the facts of the user's turn (and of the reply,
with include_output) are extracted once and written into updatable entries, each marked with the
source "chat". A tokenizer without a chat template (the knowledge study's word-level one) gets the
turns joined as plain text, one per line (`templated` says which).

The prompt keeps the latest turns that fit the backbone's positions minus the reply's tokens; older
turns are left out of the prompt (their facts stay in the bank).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from memexp.errors import ConfigError
from memexp.memory.dual_path import DualPathInference
from memexp.memory.runtime import ExplicitMemory
from memexp.models.sampling import Sampling


def has_chat_template(tokenizer: object) -> bool:
    """Whether the tokenizer renders conversations (an HFTokenizer whose transformers tokenizer has a template)."""
    hf = getattr(tokenizer, "hf", None)
    return hasattr(tokenizer, "apply_chat") and bool(getattr(hf, "chat_template", None))


class ExplicitConversation:
    """The turns of one conversation with `memory`'s model, and the dual path that writes its facts.

    extractor: `memexp.memory.facts` (identity, llmlingua). max_new_tokens: the most tokens of a reply.
    sampling: greedy, the most likely token each step; else sampling (top_k 0: off) seeded by its
    `seed` plus the turn number (None: unseeded). history: the most utterances kept in the prompt (None:
    all that fit). system: a system prompt leading every prompt.
    """

    def __init__(
        self,
        memory: ExplicitMemory,
        extractor: object,
        fact_update_frequency: int = 1,
        include_output: bool = False,
        max_new_tokens: int = 32,
        sampling: Sampling = Sampling(temperature=0.8, top_p=0.9, seed=0),
        history: int | None = None,
        system: str | None = None,
        source: str = "chat",
    ):
        window = memory.net.max_len
        if not 1 <= max_new_tokens < window:
            raise ConfigError(f"max_len={max_new_tokens}: a reply needs 1..{window - 1} tokens (the backbone reads {window})")
        if history is not None and history < 1:
            raise ConfigError(f"history={history} must be >= 1 (utterances kept in the prompt)")
        self.memory, self.source = memory, source
        self.dual = DualPathInference(memory.net, memory.tok, extractor, memory.updater, fact_update_frequency, include_output)
        self.max_new_tokens, self.sampling = max_new_tokens, sampling
        self.history, self.system = history, system
        self.templated = has_chat_template(memory.tok)
        self.messages: list[dict[str, str]] = []  # user and assistant turns, alternating
        self.last: dict | None = None  # the dual path's result for the last reply
        self.context_tokens = self.context_turns = 0  # the last prompt's size

    def reset(self) -> None:
        """Forget the turns; the bank keeps what was written."""
        self.messages, self.last = [], None

    # -- the prompt -----------------------------------------------------------------------
    def render(self, messages: Sequence[dict[str, str]]) -> list[int]:
        """Token ids of `messages` (after the system prompt) ready for the assistant's reply."""
        lead = [{"role": "system", "content": self.system}] if self.system else []
        if self.templated:
            return self.memory.tok.apply_chat([*lead, *messages], add_generation_prompt=True)
        return self.memory.tok.encode("\n".join(m["content"] for m in [*lead, *messages]) + "\n")

    def prompt_ids(self) -> list[int]:
        """The conversation's latest turns that leave room for a reply in the backbone's window."""
        budget = self.memory.net.max_len - self.max_new_tokens
        kept = self.messages[-self.history :] if self.history else list(self.messages)
        while kept and kept[0]["role"] != "user":  # a prompt starts with a user turn
            kept = kept[1:]
        ids = self.render(kept)
        while len(ids) > budget and len(kept) > 1:
            kept = kept[1:]
            while len(kept) > 1 and kept[0]["role"] != "user":
                kept = kept[1:]
            ids = self.render(kept)
        self.context_turns = len(kept)
        ids = ids[-budget:]  # the latest turn alone is too long: its end
        self.context_tokens = len(ids)
        return ids

    # -- a turn ---------------------------------------------------------------------------
    def respond(self, text: str) -> str:
        """Add the user's turn, reply (reading the bank), write the turn's facts when an update is due;
        returns the reply's text."""
        self.messages.append({"role": "user", "content": text})
        ids = self.prompt_ids()
        with torch.random.fork_rng(devices=[]):  # the turn's seed, without moving the caller's random state
            if self.sampling.seed is not None:
                torch.manual_seed(self.sampling.seed + len(self.messages))
            out = self.dual.generate(text, max_new_tokens=self.max_new_tokens, sampling=self.sampling, prompt_ids=ids)
        for change in out["changes"]:
            self.memory.sources[change["index"]] = self.source
        reply = out["text"].strip()
        self.messages.append({"role": "assistant", "content": reply})
        self.last = out
        return reply

    # -- what the memory did ------------------------------------------------------------------
    def retrieved(self) -> list[dict]:
        """Per memory layer, the entry selected at the last prompt token of the last reply (memory.entry + layer)."""
        if self.last is None:
            return []
        return [{"layer": layer} | self.memory.entry(index) for layer, index in self.last["retrieved"].items()]

    def last_update(self) -> list[dict]:
        """The entries the last reply's update wrote: index, old and new text ([] when no update was due)."""
        return [] if self.last is None else list(self.last["changes"])

    def statistics(self) -> dict[str, float]:
        return self.dual.statistics() | {"turns": len(self.messages) // 2}
