"""Dual-path inference: answer with the backbone's own generation (KV cache) while reading the bank, and,
every `fact_update_frequency` calls, extract facts from the input (and optionally the output) once and
write them into the bank's updatable entries. The original ran LLMLingua twice per call and had no cache.
"""

from __future__ import annotations

from dataclasses import asdict

import torch

from memexp.memory.updates import BankUpdater


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
            raise ValueError(f"fact_update_frequency={fact_update_frequency}: expected >= 1")
        self.net, self.tok, self.extractor, self.updater = net, tokenizer, extractor, updater
        self.frequency, self.include_output = fact_update_frequency, include_output
        self.calls = self.facts_written = self.selections = 0
        net.selection_listener = self._count

    def _count(self, chosen: torch.Tensor) -> None:
        self.selections += chosen.numel()
        self.updater.record_usage(chosen)

    @torch.no_grad()
    def generate(self, text: str, max_new_tokens: int = 50, temperature: float = 0.0, top_p: float = 1.0) -> dict:
        """{"text": the continuation, "facts": facts written this call, "changes": [{index, old, new}]}."""
        self.net.eval()
        ids = torch.tensor([self.tok.encode(text)])
        sampling = {"do_sample": True, "temperature": temperature, "top_p": top_p} if temperature > 0 else {"do_sample": False}
        out = self.net.backbone.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=max_new_tokens,
            pad_token_id=self.tok.pad_id,
            eos_token_id=getattr(self.tok, "eos_id", None),
            **sampling,
        )
        reply = self.tok.decode(out[0, ids.shape[1] :].tolist())
        self.calls += 1
        facts, changes = [], []
        if self.calls % self.frequency == 0:
            facts = self.extractor.extract(text + ("\n" + reply if self.include_output else ""))
            changes = [asdict(c) for c in self.updater.write(facts)]
            self.facts_written += len(changes)
        return {"text": reply, "facts": facts, "changes": changes}

    def statistics(self) -> dict[str, float]:
        """Calls, facts written, retrieval selections, and how full the frozen and updatable regions are."""
        bank, frozen = self.updater.bank, self.updater.frozen
        filled = (bank != self.updater.pad_id).any(1)
        return {
            "calls": self.calls,
            "facts_written": self.facts_written,
            "retrieval_selections": self.selections,
            "frozen_filled": float(filled[frozen].float().mean()) if bool(frozen.any()) else 0.0,
            "updatable_filled": float(filled[~frozen].float().mean()),
        }
