"""BiGRU/ENDEF benchmarks: (1) epoch time with the cached tokenisation vs re-tokenising every
epoch as the original ENDEF loader does; (2) training throughput with frozen BERT embeddings at
the original's sizes (768-d, BiGRU 768, max_len 170, batch 64).

    python experiments/bench_bigru.py epoch        # both loaders, same model, same items, 2 epochs each
    python experiments/bench_bigru.py throughput   # samples/s of training steps (add --device cuda on a GPU)

(1) The original design, rebuilt here for the comparison only: every epoch it reloads the
tokenizer, augments the *strings* (jieba words, entity replacement), and encodes every content
and entity string to max_len one by one (`word2input`), then trains. memexp tokenises once into a
cache (`memexp.data.news.tokens`) and augments token ids. Both train the same BiGRU on the same
generated corpus (news_synthetic defaults, 2,160 training items) with max_len 170 and batch 64.
(2) A random BERT with the Chinese vocabulary at hidden size 768 (only its embeddings are used,
frozen), the BiGRU 768 and the original's MLP [384]; steps timed after one warm-up step.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

import torch

from memexp.data.news import SyntheticNewsDataModule
from memexp.models.bigru import BiGRUClassifier
from memexp.tasks.classification import ClassificationTask
from memexp.tasks.optim import OptimizerSettings, build_optimizer

VOCAB = "../shared/data/vocab/bert_chinese_vocab.txt"


def original_augment(content: str, entity_list: list[dict], aug_prob: float, rng: random.Random) -> tuple[str, str]:
    """The original's data_augment on strings (Chinese: jieba words, entities joined by [SEP])."""
    import jieba

    if rng.randint(1, 100) <= 50:
        kept = []
        for item in entity_list:
            r = rng.randint(1, 100)
            if r <= int(aug_prob * 100):
                content = content.replace(item["entity"], "[MASK]")
            elif r <= int(2 * aug_prob * 100):
                content = content.replace(item["entity"], "")
            else:
                kept.append(item["entity"])
        return content, "[SEP]".join(kept)
    words = list(jieba.cut(content))
    for i in range(len(words) - 1, -1, -1):
        r = rng.randint(1, 100)
        if r <= int(aug_prob * 100):
            del words[i]
        elif r <= int(2 * aug_prob * 100):
            words[i] = "[MASK]"
    return "".join(words), "[SEP]".join(e["entity"] for e in entity_list)


def original_epoch_batches(items: list[dict], vocab: str, aug_prob: float, batch_size: int, seed: int) -> list[dict]:
    """One epoch of the original loader: tokenizer reloaded, strings augmented and encoded one by one."""
    from transformers import BertTokenizer

    tok = BertTokenizer(vocab=vocab)  # the original reloads it in every word2input call
    rng = random.Random(seed)
    pairs = [original_augment(it["content"], it["entity_list"], aug_prob, rng) for it in items]
    enc = lambda texts, n: torch.tensor([tok.encode(t, max_length=n, padding="max_length", truncation=True) for t in texts])
    content, entity = enc([c for c, _ in pairs], 170), enc([e for _, e in pairs], 50)
    label = torch.tensor([1 if it["label"] == "fake" else 0 for it in items])
    order = torch.randperm(len(items), generator=torch.Generator().manual_seed(seed))
    return [
        {
            "content": content[i],
            "content_mask": content[i] != 0,
            "entity": entity[i],
            "entity_mask": entity[i] != 0,
            "label": label[i],
        }
        for i in order.split(batch_size)
    ]


def train_epoch(task: ClassificationTask, opt: torch.optim.Optimizer, batches) -> None:
    task.train()
    for b in batches:
        loss = task.training_step(b, 0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def bench_epoch(args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        dm = SyntheticNewsDataModule(tokenizer=VOCAB, cache_dir=tmp, max_len=170, batch_size=64, aug_prob=0.1)
        t0 = time.perf_counter()
        dm.prepare_data()
        cache_build = time.perf_counter() - t0
        items = json.loads((Path(dm.root) / "train.json").read_text(encoding="utf-8"))
        sizes = dict(embedding_size=args.dim, hidden_size=args.dim, mlp_dims=[args.dim], endef=True)
        out = {"cache_build_s": cache_build, "items": len(items), "model_width": args.dim}
        for name in ("cached", "retokenised"):
            torch.manual_seed(0)
            task = ClassificationTask(BiGRUClassifier(dm.spec.vocab_size, **sizes), dm.spec)
            opt = build_optimizer(task.net, OptimizerSettings(lr=1e-3))
            times, data_times = [], []
            for epoch in range(args.epochs):
                t0 = time.perf_counter()
                if name == "cached":
                    loader = dm.train_dataloader()
                    loader.sampler.set_epoch(epoch)
                    batches = list(loader)
                else:
                    batches = original_epoch_batches(items, VOCAB, 0.1, 64, epoch)
                data_times.append(time.perf_counter() - t0)
                train_epoch(task, opt, batches)
                times.append(time.perf_counter() - t0)
            out[name] = {"epoch_s": min(times), "data_s": min(data_times)}
        out["epoch_ratio"] = out["retokenised"]["epoch_s"] / out["cached"]["epoch_s"]
        out["data_ratio"] = out["retokenised"]["data_s"] / out["cached"]["data_s"]
        return out


def bench_throughput(args: argparse.Namespace) -> dict:
    from transformers import BertConfig, BertModel

    device = torch.device(args.device)
    bert = BertModel(BertConfig(vocab_size=21128, hidden_size=768, num_hidden_layers=1, num_attention_heads=12))
    net = BiGRUClassifier(21128, embedding="bert", embeddings=bert.embeddings, hidden_size=768, mlp_dims=[384], endef=args.endef)
    task = ClassificationTask(net, _spec()).to(device)
    opt = build_optimizer(task.net, OptimizerSettings(lr=1e-4))
    g = torch.Generator().manual_seed(0)
    B, L = 64, 170
    lengths = torch.randint(L // 2, L + 1, (B,), generator=g)
    mask = torch.arange(L)[None] < lengths[:, None]
    batch = {
        "content": torch.randint(1000, 21000, (B, L), generator=g) * mask,
        "content_mask": mask,
        "entity": torch.randint(1000, 21000, (B, 50), generator=g),
        "entity_mask": torch.ones(B, 50, dtype=torch.bool),
        "label": torch.randint(0, 2, (B,), generator=g),
    }
    batch = {k: v.to(device) for k, v in batch.items()}
    amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    times = []
    for step in range(args.steps + 1):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        with amp:
            loss = task.training_step(batch, 0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(task.net.parameters(), 1.0)
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if step:  # the first step warms up
            times.append(time.perf_counter() - t0)
    step_s = sum(times) / len(times)
    return {
        "device": str(device),
        "threads": torch.get_num_threads(),
        "step_s": step_s,
        "samples_per_s": B / step_s,
        "steps": args.steps,
    }


def _spec():
    from memexp.data.spec import DataSpec

    return DataSpec(task_kind="classification", vocab_size=21128, tokenizer=None, pad_id=0, num_classes=2)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("what", choices=["epoch", "throughput"])
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--dim", type=int, default=64, help="embedding and GRU width of the epoch benchmark's model")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--endef", action="store_true", help="throughput of bigru_endef instead of bigru")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from memexp.runs.machine import describe, machine_line

    machine = describe()
    print(machine_line(machine), flush=True)
    result = bench_epoch(args) if args.what == "epoch" else bench_throughput(args)
    result["machine"] = machine
    print(json.dumps(result, indent=2))
