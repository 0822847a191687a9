"""Write, then read: does a fact stated to an ExplicitLM at inference become an answer, and what do
the writes push out? The measurement behind `experiments/explicit_write_read.py`.

On a model trained in the knowledge study (held-out subjects: facts only in the frozen entries):
1. Take `n_earlier` + `n_new` held-out facts and empty their entries: these facts are now in no entry,
   in no training answer and not in the backbone's text.
2. State the earlier facts in chat-like turns (`facts_per_turn` sentences each) through dual-path
   inference, which extracts facts and writes them where the update strategy says; then ask about
   them `uses` times (retrieval's selections are the usage lru and importance read).
3. Ask about the new facts (before), state them the same way, ask again (after), and ask about the
   earlier facts again: how many were displaced (their written entry overwritten) and their recall.
4. Corrections: restate `n_corrections` earlier facts with another object. Does the answer follow the
   correction, and was the stale version replaced (what `similarity` is for) or left to compete?
Accuracy picks among the relation's objects, as in the knowledge study (`evals.knowledge`).
"""

from __future__ import annotations

import random

import torch

from memexp.data.knowledge_qa import KnowledgeQADataModule
from memexp.evals.knowledge import answer_questions, summarise
from memexp.memory.dual_path import DualPathInference
from memexp.memory.updates import BankUpdater

# The rows of the write-then-read table (experiments/explicit_write_read.py, docs/results.md): label, result key
WRITE_READ_ROWS = [
    ("new facts, accuracy before the writes", "new_before"),
    ("new facts, accuracy after the writes", "new_after"),
    ("gain on new facts (target >= 0.3)", "new_gain"),
    ("new facts after, product keys only (content_candidates=0)", "new_after_keys_only"),
    ("writes that landed in updatable entries (must be 1.0)", "landed_updatable"),
    ("earlier facts, recall before the new writes", "earlier_before"),
    ("earlier facts, recall after the new writes", "earlier_after"),
    ("earlier facts displaced (of n_earlier)", "earlier_displaced"),
    ("untouched held-out facts, before any write", "others_before"),
    ("untouched held-out facts, after all writes", "others_after"),
    ("corrections: answers that follow the restated object", "correction_follow"),
    ("corrections: stale versions still in the bank (of 20)", "stale_left"),
]


def _accuracy(net: torch.nn.Module, dm: KnowledgeQADataModule, which: list[int]) -> float:
    return summarise(answer_questions(net, dm, which))["accuracy"]


def _state(dual: DualPathInference, dm: KnowledgeQADataModule, which: list[int], per_turn: int) -> list:
    """Say the facts `which` in turns of `per_turn` sentences; the changes the dual path made."""
    changes = []
    for k in range(0, len(which), per_turn):
        turn = " ".join(dm.world.facts[i].sentence() for i in which[k : k + per_turn])
        changes += dual.generate(turn, max_new_tokens=1)["changes"]
    return changes


def write_then_read(
    net: torch.nn.Module,
    dm: KnowledgeQADataModule,
    strategy: str,
    extractor: object,
    n_new: int = 80,
    n_earlier: int = 80,
    facts_per_turn: int = 4,
    uses: int = 2,
    n_corrections: int = 20,
    seed: int = 0,
    similarity_threshold: float = 0.9,
    similarity_space: str = "retrieval",
) -> dict:
    """One strategy's run of the protocol in the module docstring; the model's bank is restored after."""
    dm.setup()
    net.load_bank(dm.bank.tokens)
    held = dm.facts(held_out=True)
    if n_new + n_earlier > len(held):
        raise ValueError(f"n_new + n_earlier = {n_new + n_earlier} > {len(held)} held-out facts")
    rng = random.Random(seed)
    chosen = rng.sample(held, n_new + n_earlier)
    earlier, new = chosen[:n_earlier], chosen[n_earlier:]
    taken = set(chosen)
    others = [i for i in held if i not in taken]
    saved_bank, saved_content = net.memory_bank.clone(), net.content_rows.clone()
    saved_k = net.content_candidates
    try:
        net.memory_bank[torch.tensor([dm.world.facts[i].entry for i in chosen])] = net.pad_id
        others_before = _accuracy(net, dm, others)
        updater = BankUpdater.for_model(
            net, dm.tokenizer, strategy, similarity_space, similarity_threshold=similarity_threshold, seed=seed
        )
        dual = DualPathInference(net, dm.tokenizer, extractor, updater)
        read = _write_and_read(net, dm, dual, earlier, new, others, facts_per_turn, uses)
        read["others_before"] = others_before
        read["fixed"], read["correction_follow"], read["stale_left"] = _corrections(
            net, dm, dual, rng, earlier, n_corrections, facts_per_turn
        )
        read["statistics"] = dual.statistics()
    finally:
        net.content_candidates = saved_k
        net.selection_listener = None
        net.memory_bank.copy_(saved_bank)
        net.content_rows.copy_(saved_content)
    return _result(net.freeze_mask, {"strategy": strategy, "seed": seed, "n_new": n_new, "n_earlier": n_earlier}, read)


def _result(frozen: torch.Tensor, settings: dict, r: dict) -> dict:
    """The row of one run: its settings, then what `_write_and_read` and `_corrections` measured."""
    earlier_entries = {c["index"] for c in r["written_earlier"]}
    new_entries = [c["index"] for c in r["written_new"]]
    changes = r["written_earlier"] + r["written_new"]
    return {
        **settings,
        "facts_written": len(changes),
        "landed_updatable": sum(not bool(frozen[c["index"]]) for c in changes) / max(len(changes), 1),
        "new_before": r["new_before"],
        "new_after": r["new_after"],
        "new_gain": r["new_after"] - r["new_before"],
        "new_after_keys_only": r["new_after_keys_only"],
        "earlier_unwritten": r["earlier_unwritten"],
        "earlier_before": r["earlier_before"],
        "earlier_after": r["earlier_after"],
        "earlier_displaced": len(earlier_entries.intersection(new_entries)),
        "others_before": r["others_before"],
        "others_after": r["others_after"],
        "corrections": len(r["fixed"]),
        "correction_follow": r["correction_follow"],
        "stale_left": r["stale_left"],
        "statistics": r["statistics"],
    }


def _write_and_read(
    net: torch.nn.Module,
    dm: KnowledgeQADataModule,
    dual: DualPathInference,
    earlier: list[int],
    new: list[int],
    others: list[int],
    facts_per_turn: int,
    uses: int,
) -> dict:
    """Steps 2 and 3 of the protocol: the accuracies around the writes, and the changes each write made."""
    r: dict = {"earlier_unwritten": _accuracy(net, dm, earlier)}
    r["written_earlier"] = _state(dual, dm, earlier, facts_per_turn)
    for _ in range(uses):
        r["earlier_before"] = _accuracy(net, dm, earlier)
    r["new_before"] = _accuracy(net, dm, new)
    r["written_new"] = _state(dual, dm, new, facts_per_turn)
    r["new_after"] = _accuracy(net, dm, new)
    r["earlier_after"] = _accuracy(net, dm, earlier)
    r["others_after"] = _accuracy(net, dm, others)
    saved_k = net.content_candidates
    net.content_candidates = 0  # the same bank read by product keys alone (the original's addressing)
    r["new_after_keys_only"] = _accuracy(net, dm, new)
    net.content_candidates = saved_k
    return r


def _corrections(
    net: torch.nn.Module,
    dm: KnowledgeQADataModule,
    dual: DualPathInference,
    rng: random.Random,
    earlier: list[int],
    n_corrections: int,
    facts_per_turn: int,
) -> tuple[list[int], float, int]:
    """Step 4: restate earlier facts with another object; (the facts, how often the answer follows, stale versions left)."""
    fixed = rng.sample(earlier, min(n_corrections, len(earlier)))
    objects = [
        rng.choice([o for o in dm.world.pools[dm.world.facts[i].relation] if o != dm.world.facts[i].object]) for i in fixed
    ]
    said = [dm.world.facts[i].sentence(o) for i, o in zip(fixed, objects)]
    stale = {dm.world.facts[i].sentence() for i in fixed}
    for k in range(0, len(said), facts_per_turn):
        dual.generate(" ".join(said[k : k + facts_per_turn]), max_new_tokens=1)
    follow = summarise(answer_questions(net, dm, fixed, objects))["accuracy"]
    bank_text = {dm.tokenizer.decode([t for t in row if t != net.pad_id]) for row in net.memory_bank.tolist()}
    return fixed, follow, len(stale & bank_text)
