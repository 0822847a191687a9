"""ExplicitLM's model: product-key retrieval, causal per-token reading, Gumbel selection, the shortcut
alpha, the frozen backbone, the frozen bank region, checkpoints that name their backbone, generation."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch

from memexp.errors import CheckpointError, ConfigError
from memexp.memory.backbone import build_explicit_lm, load_backbone
from memexp.models.explicit_lm import ExplicitLM, MemoryFusion
from memexp.models.product_keys import ProductKeys

V = 97


def tiny(**kw) -> ExplicitLM:
    torch.manual_seed(0)
    kw = {"knowledge_num": 64, "knowledge_length": 4, "num_candidates": 4, "knowledge_dim": 16, "fusion_dim": 32} | kw
    net = build_explicit_lm(V, pad_id=0, tiny_dim=32, **kw)
    net.load_bank(torch.randint(1, V, (kw["knowledge_num"], kw["knowledge_length"])))
    # the fusion starts as the identity (zero down-projection); give it weights so the memory matters
    for f in net.fusions.values():
        torch.nn.init.normal_(f.down.weight, std=0.5)
    return net


def backbone_digest(net: ExplicitLM) -> str:
    h = hashlib.sha256()
    for name, p in sorted(net.backbone.state_dict().items()):
        h.update(name.encode() + p.detach().numpy().tobytes())
    return h.hexdigest()


def test_product_keys_equal_exhaustive_search():
    torch.manual_seed(1)
    pk = ProductKeys(dim=24, knowledge_num=256, knowledge_dim=16, num_candidates=8)
    s1, s2 = pk.half_scores(pk.query(torch.randn(5, 7, 24)))
    fast_ids, fast_scores = pk.top(s1, s2)
    full_ids, full_scores = pk.exhaustive(s1, s2)
    assert torch.allclose(fast_scores, full_scores)
    assert torch.equal(fast_ids.sort(-1).values, full_ids.sort(-1).values)


@pytest.mark.parametrize("n", [1000, 0])
def test_knowledge_num_must_be_a_perfect_square(n):
    with pytest.raises(ConfigError, match=rf"model.knowledge_num={n}: must be a perfect square"):
        tiny(knowledge_num=n)


class PooledFusion(MemoryFusion):
    """The original's later design: one query per sequence, the mean over all its tokens."""

    def queries(self, u):
        return u.mean(1, keepdim=True).expand_as(u)


def future_leak(net: ExplicitLM, t: int = 5) -> float:
    """Largest change of the logits at positions <= t when token t + 1 changes."""
    net.eval()
    x = torch.randint(1, V, (3, 12))
    y = x.clone()
    y[:, t + 1] = (y[:, t + 1] + 1) % V
    with torch.no_grad():
        a, _ = net(x)
        b, _ = net(y)
    return float((a[:, : t + 1] - b[:, : t + 1]).abs().max())


def test_retrieval_is_causal_and_the_pooled_design_is_caught():
    net = tiny()
    assert future_leak(net) == 0.0
    for f in net.fusions.values():
        f.__class__ = PooledFusion
    assert future_leak(net) > 1e-4


def test_selection_is_one_hot_at_evaluation_and_differentiable_in_training():
    net = tiny()
    fusion = net.fusions["0"]
    h = torch.randn(2, 6, 32)
    emb = net.backbone.get_input_embeddings().weight
    fusion.eval()
    _, _, chosen = fusion(h, net.memory_bank, emb, 0)
    assert chosen.shape == (2, 6) and bool((chosen >= 0).all())
    fusion.train()
    out, losses, _ = fusion(h, net.memory_bank, emb, 0)
    (out.sum() + losses["similarity"]).backward()
    assert float(fusion.project.weight.grad.abs().sum()) > 0  # through the straight-through weights
    assert sum(float(p.grad.abs().sum()) for p in fusion.keys.query.parameters()) > 0
    assert 0.0 <= float(fusion.last_alpha.min()) and float(fusion.last_alpha.max()) <= 1.0


def test_an_empty_bank_reads_zero_memory():
    net = tiny()
    net.memory_bank.fill_(net.pad_id)
    fusion = net.fusions["0"].eval()
    h = torch.randn(1, 4, 32)
    out, losses, _ = fusion(h, net.memory_bank, net.backbone.get_input_embeddings().weight, 0)
    assert float(losses["similarity"]) == 0.0  # cosine with an all-pad entry is 0


def test_only_the_memory_trains_and_the_backbone_never_changes():
    net = tiny()
    before = backbone_digest(net)
    frozen = sum(p.numel() for p in net.backbone.parameters())
    trainable = [p for p in net.parameters() if p.requires_grad]
    assert sum(p.numel() for p in trainable) > 0 and all(not p.requires_grad for p in net.backbone.parameters())
    assert sum(p.numel() for p in net.parameters() if not p.requires_grad) == frozen
    opt = torch.optim.AdamW(trainable, lr=1e-2)
    x = torch.randint(1, V, (4, 10))
    net.train()
    losses = []
    for _ in range(15):
        logits, _ = net(x, memory_target=torch.tensor([3, 5, -1, 7]), memory_position=torch.tensor([9, 9, 0, 4]))
        loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, V), x[:, 1:].reshape(-1))
        loss = loss + sum(net.auxiliary_losses().values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert backbone_digest(net) == before
    assert losses[-1] < losses[0] - 0.1


def test_auxiliary_loss_coefficients_are_honoured():
    x = torch.randint(1, V, (2, 8))
    target, pos = torch.tensor([3, 4]), torch.tensor([7, 2])
    torch.manual_seed(3)
    a = tiny().train()
    a(x, memory_target=target, memory_position=pos)
    la = a.auxiliary_losses()
    torch.manual_seed(3)
    b = tiny(similarity_loss_coef=0.0, router_loss_coef=2.0).train()
    b(x, memory_target=target, memory_position=pos)
    lb = b.auxiliary_losses()
    assert "similarity" in la and "similarity" not in lb
    assert float(lb["router"]) == pytest.approx(2.0 * float(la["router"]), rel=1e-5)


def test_frozen_mask_and_frozen_rows_are_refused():
    net = tiny(knowledge_num=100, freeze_ratio=0.25)
    assert net.freeze_mask.shape == (100,) and int(net.freeze_mask.sum()) == 25 and bool(net.freeze_mask[:25].all())
    row = torch.ones(1, 4, dtype=torch.int32)
    with pytest.raises(ValueError, match="frozen"):
        net.write_entries(torch.tensor([3]), row)
    net.write_entries(torch.tensor([30]), row * 5)
    assert net.memory_bank[30].tolist() == [5, 5, 5, 5]


def test_checkpoint_state_holds_memory_and_bank_not_the_backbone():
    net = tiny()
    state = net.state_dict()
    assert not any(k.startswith("backbone.") for k in state)
    assert state["memory_bank"].dtype == torch.int32 and "_extra_state" in state
    again = tiny()
    again.memory_bank.zero_()
    again.load_state_dict(state)
    assert torch.equal(again.memory_bank, net.memory_bank)
    other = build_explicit_lm(V, pad_id=0, tiny_dim=32, tiny_seed=7, knowledge_num=64, knowledge_length=4, num_candidates=4)
    with pytest.raises(CheckpointError, match="fingerprint"):
        other.load_state_dict(state)


def test_generation_with_the_kv_cache_equals_generation_without():
    net = tiny().eval()
    prompt = torch.randint(1, V, (1, 5))
    with torch.no_grad():
        logits, cache = net(prompt)
        ids = prompt
        cached = []
        for _ in range(20):
            nxt = logits[:, -1].argmax(-1, keepdim=True)
            cached.append(int(nxt))
            logits, cache = net(nxt, cache)
        plain = []
        for _ in range(20):
            logits, _ = net(ids)
            nxt = logits[:, -1].argmax(-1, keepdim=True)
            plain.append(int(nxt))
            ids = torch.cat([ids, nxt], 1)
    assert cached == plain


def test_bad_backbones_get_one_sentence(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="expected a folder with config.json"):
        load_backbone(str(tmp_path), V)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(ConfigError, match="model_type='llama'"):
        load_backbone(str(tmp_path), V)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConfigError, match=r"hf download Qwen/Qwen3-0.6B --local-dir models/Qwen3-0.6B"):
        load_backbone("Qwen/Qwen3-0.6B", V)
    with pytest.raises(ConfigError, match="no such checkpoint"):
        load_backbone(str(tmp_path / "missing.ckpt"), V)


def test_a_saved_qwen3_folder_loads_as_the_backbone(tmp_path):
    net = load_backbone("tiny", V, 0)
    net.save_pretrained(tmp_path)
    again = load_backbone(str(tmp_path), V)
    assert torch.equal(again.model.embed_tokens.weight, net.model.embed_tokens.weight)
    with pytest.raises(ConfigError, match="embeds 97 token ids"):
        load_backbone(str(tmp_path), V + 10)
    weights = next(tmp_path.glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:100])  # truncated
    with pytest.raises(ConfigError, match=rf"model.backbone={tmp_path}: its weights could not be loaded"):
        load_backbone(str(tmp_path), V)
    weights.unlink()  # a folder with config.json and no weight file
    with pytest.raises(ConfigError, match=r"has config.json but no weights \(model.safetensors or pytorch_model.bin\)"):
        load_backbone(str(tmp_path), V)


def test_memory_layers_choose_where_the_memory_reads():
    net = tiny(memory_layers=[1])
    assert list(net.fusions) == ["1"]
    with pytest.raises(ConfigError, match="model.memory_layers"):
        tiny(memory_layers=[5])


def test_a_deep_copy_reads_its_own_memory():
    import copy

    net = tiny().eval()
    twin = copy.deepcopy(net)
    twin.memory_bank.fill_(twin.pad_id)  # empty the copy's bank: only the copy's output may change
    x = torch.randint(1, V, (2, 6))
    with torch.no_grad():
        before, _ = net(x)
        changed, _ = twin(x)
        after, _ = net(x)
    assert torch.equal(before, after) and not torch.allclose(before, changed)
