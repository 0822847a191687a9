"""The causal-LM task of a network with an explicit token bank (`memexp.models.protocols.ExplicitBank`: ExplicitLM).

Besides next-token prediction it passes the batch entries the network reads (`net.batch_inputs`: the router's
targets) and trains episodically: a batch may carry `bank_rows` and `bank_tokens`, entries it rewrites before it is
read (the knowledge study draws each question's object anew and writes it there first), and the entries are put
back after the step, so checkpoints and evaluation see the knowledge bank, not the last episode.
"""

from __future__ import annotations

from memexp.tasks.causal_lm import CausalLMTask


class ExplicitMemoryTask(CausalLMTask):
    _episodic = None  # (rows, their entries before the batch rewrote them)

    def _extra_inputs(self, batch: dict) -> dict:
        return {k: batch[k] for k in self.net.batch_inputs if k in batch}

    def _before_forward(self, batch: dict) -> None:
        if "bank_rows" in batch:
            rows = batch["bank_rows"]
            self._episodic = (rows, self.net.memory_bank[rows].clone())
            self.net.write_entries(rows, batch["bank_tokens"])

    def on_train_batch_end(self, outputs: object, batch: dict, batch_idx: int) -> None:
        if self._episodic is not None:
            rows, saved = self._episodic
            self.net.memory_bank[rows] = saved
            self._episodic = None
