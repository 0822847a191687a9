"""Dual-path inference: answer with the backbone's own generation (KV cache) while reading the bank, and,
every `fact_update_frequency` calls, extract facts from the input (and optionally the output) once and
write them into the bank's updatable entries. The original ran LLMLingua twice per call and had no cache.

What is generated from and what facts come from may differ: a chat generates from its whole conversation
rendered by the chat template (`prompt_ids`) and extracts facts from the user's latest turn only (`text`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict

import torch

from memexp.errors import ConfigError
from memexp.memory.updates import BankUpdater
from memexp.models.sampling import GREEDY, Sampling


class DualPathInference:
    """Generation plus memory writes around one ExplicitLM.

    net: an `ExplicitLM`; tokenizer: the data's (encode/decode, pad_id, eos_id); extractor: anything with
    `extract(text) -> list[str]` (`memexp.memory.facts`); updater: a `BankUpdater` over the net's bank.
    Retrieval's selections feed the updater's usage counts (lru, importance).
    """

    def __init__(
        self,
        net: torch.nn.Module,
        tokenizer: object,
        extractor: object,
        updater: BankUpdater,
        fact_update_frequency: int = 1,
        include_output: bool = False,
    ):
        if fact_update_frequency < 1:
            raise ConfigError(f"fact_update_frequency={fact_update_frequency}: expected >= 1 (calls per fact update)")
        if not isinstance(getattr(tokenizer, "pad_id", None), int):  # a char/byte tokenizer: not the backbone's ids
            raise ConfigError(
                f"this ExplicitLM was trained with a {type(tokenizer).__name__}, whose ids are not its backbone's; "
                f"chat and memory writes need the backbone's tokenizer: train it with data.tokenizer=qwen (or the "
                f"backbone's folder)"
            )
        self.net, self.tok, self.extractor, self.updater = net, tokenizer, extractor, updater
        self.frequency, self.include_output = fact_update_frequency, include_output
        self.calls = self.facts_written = self.selections = self.updates = 0
        self._retrieved: dict[int, int] | None = None  # layer -> entry selected at the last prompt token (this call)
        net.selection_listener = self._count

    def _count(self, chosen: torch.Tensor) -> None:
        self.selections += chosen.numel()
        self.updater.record_usage(chosen)
        if self._retrieved is not None:
            # `fuse` stored this very tensor as its layer's selection just before calling us; the first forward of a
            # generate is the prompt's (prefill), so the first selection per layer is the prompt's.
            layer = next(i for i, t in self.net.last_selection.items() if t is chosen)
            self._retrieved.setdefault(layer, int(chosen[0, -1]))

    @torch.no_grad()
    def generate(
        self,
        text: str,
        max_new_tokens: int = 50,
        sampling: Sampling = GREEDY,
        prompt_ids: Sequence[int] | None = None,
    ) -> dict:
        """Continue `prompt_ids` (None: `text` encoded); every `fact_update_frequency`-th call, write the facts
        of `text` (and of the reply, with include_output) into the bank. sampling.seed is not read: the
        backbone's generate draws from torch's global generator, which the caller seeds (ExplicitConversation).

        Returns {"text": the reply (up to the end token), "facts": facts written this call, "changes":
        [{index, old, new}], "retrieved": {layer: the entry selected at the prompt's last token}}.
        """
        ids = list(self.tok.encode(text) if prompt_ids is None else prompt_ids)
        if not ids:
            raise ConfigError("the prompt has no tokens")
        self.net.eval()
        prompt = torch.tensor([ids])
        how = (
            {"do_sample": False}
            if sampling.greedy
            else {"do_sample": True, "temperature": sampling.temperature, "top_p": sampling.top_p, "top_k": sampling.top_k}
        )
        eos = getattr(self.tok, "eos_id", None)
        self._retrieved = {}
        try:
            out = self.net.backbone.generate(
                input_ids=prompt,
                attention_mask=torch.ones_like(prompt),
                max_new_tokens=max_new_tokens,
                pad_token_id=self.tok.pad_id,
                eos_token_id=eos,
                **how,
            )
            retrieved = self._retrieved
        finally:
            self._retrieved = None
        new = out[0, len(ids) :].tolist()
        if eos is not None and eos in new:
            new = new[: new.index(eos)]
        reply = self.tok.decode(new)
        self.calls += 1
        facts, changes = [], []
        if self.calls % self.frequency == 0:
            # one extraction per update, over the input and (optionally) the output together
            facts = self.extractor.extract(text + ("\n" + reply if self.include_output else ""))
            changes = [asdict(c) for c in self.updater.write(facts)]
            self.updates += 1
            self.facts_written += len(changes)
        return {"text": reply, "facts": facts, "changes": changes, "retrieved": dict(sorted(retrieved.items()))}

    def statistics(self) -> dict[str, float]:
        """Calls, fact updates, facts written, retrieval selections, and how full the frozen and updatable regions are."""
        bank, frozen = self.updater.bank, self.updater.frozen
        filled = (bank != self.updater.pad_id).any(1)
        return {
            "calls": self.calls,
            "fact_updates": self.updates,
            "facts_written": self.facts_written,
            "retrieval_selections": self.selections,
            "frozen_filled": float(filled[frozen].float().mean()) if bool(frozen.any()) else 0.0,
            "updatable_filled": float(filled[~frozen].float().mean()),
        }
