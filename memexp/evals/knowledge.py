"""Does an explicit memory answer knowledge questions? The measurements of the knowledge study.

On the test subjects (held-out subjects whose facts are only in frozen bank entries, never an answer in
training, and whose questions validation never asked: the checkpoint was chosen on the other held-out subjects):
    accuracy with the full bank, with an empty (all-pad) bank, and of the backbone alone (memory off);
    retrieval hit rate (the entry selected at the answer position is the fact's) on correct and on wrong answers;
    editing: overwrite the object of K bank entries, no training: how many answers follow the edit.
Accuracy picks the answer among the relation's objects (chance = 1 / objects per relation); the
full-vocabulary argmax accuracy is reported beside it.
"""

from __future__ import annotations

import random

import torch

from memexp.data.explicit.bank_cache import encode_entry
from memexp.data.knowledge_qa import KnowledgeQADataModule
from memexp.models.protocols import ExplicitBank


@torch.no_grad()
def answer_questions(net: torch.nn.Module, dm: KnowledgeQADataModule, which: list[int], answers: list[str] | None = None) -> dict:
    """Per question: correct (among the relation's objects), correct over the whole vocabulary, and
    whether the last memory layer (and any memory layer) selected the fact's entry."""
    world, tok = dm.world, dm.tokenizer
    pool_ids = {r: torch.tensor([tok.encode(o)[0] for o in pool]) for r, pool in world.pools.items()}
    out = {"correct": [], "correct_vocab": [], "hit_last": [], "hit_any": []}
    net.eval()
    for k, batch in enumerate(dm.question_batches(which, answers)):
        facts = [world.facts[i] for i in which[k * dm.eval_batch_size : (k + 1) * dm.eval_batch_size]]
        logits, _ = net(batch["input"])
        rows = torch.arange(len(facts))
        pos = batch["memory_position"]
        last = logits[rows, pos]  # (n, V) the answer's logits
        gold = batch["input"][rows, pos + 1]
        for n, f in enumerate(facts):
            ids = pool_ids[f.relation]
            out["correct"].append(bool(ids[last[n, ids].argmax()] == gold[n]))
        out["correct_vocab"] += (last.argmax(-1) == gold).tolist()
        selections = net.last_selection if isinstance(net, ExplicitBank) and net.memory_enabled else {}
        if selections:
            picked = torch.stack([s[rows, pos] for _, s in sorted(selections.items())])  # (layers, n)
            hits = picked == batch["memory_target"]
            out["hit_last"] += hits[-1].tolist()
            out["hit_any"] += hits.any(0).tolist()
    return out


def _rate(flags: list[bool]) -> float:
    return float(sum(flags) / len(flags)) if flags else float("nan")


def summarise(answers: dict) -> dict[str, float]:
    """Accuracy, vocabulary accuracy and hit rates (overall, on correct and on wrong answers)."""
    s = {"accuracy": _rate(answers["correct"]), "accuracy_vocab": _rate(answers["correct_vocab"]), "n": len(answers["correct"])}
    if answers["hit_last"]:
        ok = answers["correct"]
        s["hit_rate"] = _rate(answers["hit_last"])
        s["hit_rate_any_layer"] = _rate(answers["hit_any"])
        s["hit_rate_correct"] = _rate([h for h, c in zip(answers["hit_last"], ok) if c])
        s["hit_rate_wrong"] = _rate([h for h, c in zip(answers["hit_last"], ok) if not c])
    return s


def knowledge_study(net: torch.nn.Module, dm: KnowledgeQADataModule, edits: int = 100, seed: int = 0) -> dict:
    """All measurements of the study on a trained ExplicitLM (its bank is reset to the knowledge base first)."""
    dm.setup()
    held, known = dm.split_facts("test"), dm.facts(held_out=False)
    net.load_bank(dm.bank.tokens)  # training rewrote the updatable entries (episodic objects): restore them
    result = {
        "full_bank": summarise(answer_questions(net, dm, held)),
        "train_subjects_full_bank": summarise(answer_questions(net, dm, known)),
    }
    saved = net.memory_bank.clone()
    net.memory_bank.fill_(net.pad_id)
    result["empty_bank"] = summarise(answer_questions(net, dm, held))
    net.memory_bank.copy_(saved)
    net.memory_enabled = False
    result["backbone_alone"] = summarise(answer_questions(net, dm, held))
    net.memory_enabled = True

    # Editing: a new object for K test facts, written into their (frozen) entries by an explicit edit.
    rng = random.Random(seed)
    chosen = rng.sample(held, min(edits, len(held)))
    new = []
    for i in chosen:
        f = dm.world.facts[i]
        new.append(rng.choice([o for o in dm.world.pools[f.relation] if o != f.object]))
    rows = torch.tensor([dm.world.facts[i].entry for i in chosen])
    tokens = torch.tensor(
        [encode_entry(dm.tokenizer, dm.world.facts[i].sentence(o), dm.knowledge_length)[0] for i, o in zip(chosen, new)]
    )
    net.write_entries(rows, tokens, allow_frozen=True)
    followed = summarise(answer_questions(net, dm, chosen, new))
    kept_old = summarise(answer_questions(net, dm, chosen))
    net.memory_bank.copy_(saved)
    result["edit"] = {"k": len(chosen), "follow_rate": followed["accuracy"], "old_answer_rate": kept_old["accuracy"]}
    result["chance"] = 1.0 / len(next(iter(dm.world.pools.values())))
    result["full_minus_empty"] = result["full_bank"]["accuracy"] - result["empty_bank"]["accuracy"]
    return result
