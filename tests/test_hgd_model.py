"""HGD-MemNet: adaptive thinking bounds, NaN-free ponder loss, per-position decoding,
masking, learning on toy dialogues, generation; and the shared sampling helpers."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from helpers import shared_data_dir

from memexp.errors import ConfigError
from memexp.models.hgd import HGDMemNet
from memexp.models.sampling import GREEDY, Sampling, filter_logits, sample_next

torch.set_num_threads(1)  # shared test machine; these tensors are tiny

V, PAD, SOS, EOS = 50, 0, 1, 2
TOY = shared_data_dir() / "lccc_toy" / "toy_data.json"


def tiny(**kw) -> HGDMemNet:
    args = dict(embedding_dim=16, hidden_dim=32, static_dim=16, dropout=0.0)
    args.update(kw)
    return HGDMemNet(V, pad_id=PAD, **args)


def random_batch(B=6, Lc=12, Lr=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, Lc + 1, (B,), generator=g)
    lengths[0] = Lc
    mask = torch.arange(Lc)[None, :] < lengths[:, None]
    context = torch.randint(3, V, (B, Lc), generator=g).masked_fill(~mask, PAD)
    reply_in = torch.randint(3, V, (B, Lr), generator=g)
    reply_in[:, 0] = SOS
    return context, mask, reply_in


def set_gate_bias(model: HGDMemNet, value: float) -> None:
    with torch.no_grad():
        model.gate[-1].weight.zero_()
        model.gate[-1].bias.fill_(value)


# ----------------------------------------------------------------------------- thinking


@pytest.mark.parametrize("encoder", ["gru", "transformer"])
@pytest.mark.parametrize("min_think,max_think", [(1, 1), (1, 6), (3, 5)])
def test_think_steps_within_bounds(encoder, min_think, max_think):
    torch.manual_seed(0)
    m = tiny(encoder=encoder, min_think=min_think, max_think=max_think)
    for seed in range(3):
        with torch.no_grad():  # random gate weights, large enough to give varied halting
            m.gate[-1].weight.normal_(0, 3.0)
        out = m(*random_batch(seed=seed))
        steps = out["think_steps"]
        assert steps.shape == (6,) and steps.dtype == torch.float32
        assert bool(((steps >= min_think) & (steps <= max_think)).all())
        assert torch.equal(steps, steps.round())


@pytest.mark.parametrize("min_think", [1, 3])
def test_gate_that_always_halts_stops_at_min_think(min_think):
    m = tiny(min_think=min_think, max_think=8)
    set_gate_bias(m, 50.0)
    out = m(*random_batch())
    assert torch.equal(out["think_steps"], torch.full((6,), float(min_think)))
    # ponder = N + R with R = 1: everything left for the halting step
    assert out["ponder_loss"].item() == pytest.approx(m.ponder_cost * (min_think + 1.0))


def test_gate_that_never_halts_runs_max_think():
    m = tiny(min_think=2, max_think=5)
    set_gate_bias(m, -50.0)
    out = m(*random_batch())
    assert torch.equal(out["think_steps"], torch.full((6,), 5.0))


def test_halting_threshold_counts_cumulative_probability():
    m = tiny(min_think=1, max_think=8, halt_threshold=0.99)
    set_gate_bias(m, 0.0)  # p = 0.5 each step: 0.5, 1.0 >= 0.99 -> halts at step 2
    assert torch.equal(m(*random_batch())["think_steps"], torch.full((6,), 2.0))
    m.halt_threshold = 0.3  # 0.5 >= 0.3 at once
    assert torch.equal(m(*random_batch())["think_steps"], torch.full((6,), 1.0))


@pytest.mark.parametrize("bias", [-1e4, 1e4, -88.0, 88.0])
def test_ponder_loss_and_gradients_finite_when_gate_saturates(bias):
    m = tiny(min_think=1, max_think=4)
    set_gate_bias(m, bias)
    context, mask, reply_in = random_batch()
    out = m(context, mask, reply_in)
    loss = F.cross_entropy(out["logits"].flatten(0, 1), reply_in.flatten()) + out["ponder_loss"]
    loss.backward()
    assert torch.isfinite(out["ponder_loss"]) and torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in m.parameters() if p.grad is not None)


# ----------------------------------------------------------------------------- decoding


def test_logits_are_one_distribution_per_reply_position_and_causal():
    torch.manual_seed(0)
    m = tiny().eval()
    context, mask, reply_in = random_batch()
    logits = m(context, mask, reply_in)["logits"]
    assert logits.shape == (6, 7, V)
    assert not torch.allclose(logits[:, 0], logits[:, 3])  # not one distribution for every token
    changed = reply_in.clone()
    changed[:, 4] = (changed[:, 4] + 1) % V
    logits2 = m(context, mask, changed)["logits"]
    assert torch.allclose(logits[:, :4], logits2[:, :4], atol=1e-6)  # positions before 4 cannot see it
    assert not torch.allclose(logits[:, 4:], logits2[:, 4:])


@pytest.mark.parametrize("encoder", ["gru", "transformer"])
def test_padding_of_the_history_is_masked(encoder):
    torch.manual_seed(0)
    m = tiny(encoder=encoder).eval()
    context, mask, reply_in = random_batch()
    a = m(context, mask, reply_in)
    more = torch.cat([context, torch.full((6, 5), PAD)], 1)
    b = m(more, torch.cat([mask, torch.zeros(6, 5, dtype=torch.bool)], 1), reply_in)
    garbage = torch.cat([context, torch.randint(3, V, (6, 5))], 1)  # what sits under the mask is ignored
    c = m(garbage, torch.cat([mask, torch.zeros(6, 5, dtype=torch.bool)], 1), reply_in)
    assert torch.allclose(a["logits"], b["logits"], atol=1e-5)
    assert torch.allclose(a["logits"], c["logits"], atol=1e-5)


def test_generation_stops_at_eos():
    m = tiny().eval()
    context, mask, _ = random_batch()
    with torch.no_grad():
        m.out_bias[EOS] = 1e4
    out = m.generate(context, mask, max_len=10, sos_id=SOS, eos_id=EOS)
    assert out.shape == (6, 1) and bool((out == EOS).all())


def test_generation_respects_max_len_and_pads_after_eos():
    torch.manual_seed(0)
    m = tiny().eval()
    context, mask, _ = random_batch()
    with torch.no_grad():
        m.out_bias[EOS] = -1e4
    out = m.generate(context, mask, max_len=9, sos_id=SOS, eos_id=EOS, sampling=GREEDY)
    assert out.shape == (6, 9) and not bool((out == EOS).any())
    with torch.no_grad():
        m.out_bias[EOS] = 2.0  # some rows end early: everything after their EOS is padding
    sampling = Sampling(temperature=1.5, top_k=10, top_p=0.9, seed=1)
    out = m.generate(context, mask, max_len=12, sos_id=SOS, eos_id=EOS, sampling=sampling)
    assert out.shape[1] <= 12
    for row in out.tolist():
        if EOS in row:
            assert all(t == PAD for t in row[row.index(EOS) + 1 :])


def test_bad_configuration_names_the_field():
    with pytest.raises(ConfigError, match="min_think"):
        HGDMemNet(V, min_think=5, max_think=3)
    with pytest.raises(ConfigError, match="halt_threshold"):
        HGDMemNet(V, halt_threshold=1.5)
    with pytest.raises(ConfigError, match="model.encoder"):
        HGDMemNet(V, encoder="lstm")


# ----------------------------------------------------------------------------- learning


@pytest.mark.skipif(not TOY.exists(), reason="shared LCCC toy data not present")
def test_loss_falls_on_toy_dialogues(tmp_path):
    from memexp.data.dialogue import DialogueStream, prepare_dialogues

    dialogues = json.loads(TOY.read_text(encoding="utf-8"))["train"][:50]
    src = tmp_path / "toy50.json"
    src.write_text(json.dumps(dialogues, ensure_ascii=False), encoding="utf-8")
    prepare_dialogues(src, tmp_path / "out", chunk_size=25, splits=("train",))
    ds = DialogueStream(tmp_path / "out", "train", max_history=2, max_context_len=32, max_reply_len=16, shuffle=False)
    batch = ds.collate_fn(list(ds)[:48])
    torch.manual_seed(0)
    m = HGDMemNet(ds.vocab.vocab_size, pad_id=ds.pad_id, embedding_dim=32, hidden_dim=64, static_dim=32, max_think=3, dropout=0.0)
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        out = m(batch["context"], batch["context_mask"], batch["reply_in"])
        ce = F.cross_entropy(out["logits"].flatten(0, 1), batch["reply_out"].flatten(), ignore_index=ds.pad_id)
        opt.zero_grad()
        (ce + out["ponder_loss"]).backward()
        torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
        opt.step()
        losses.append(ce.item())
    assert losses[0] > 6.0  # about log(V) at the start (V ~ 950)
    assert losses[-1] < 0.5 * losses[0], losses


# ----------------------------------------------------------------------------- sampling


def test_filter_logits_top_k_and_top_p():
    logits = torch.log(torch.tensor([[0.5, 0.2, 0.15, 0.1, 0.05]]))
    k2 = filter_logits(logits, Sampling(top_k=2))
    assert torch.isfinite(k2).tolist() == [[True, True, False, False, False]]
    p = filter_logits(logits, Sampling(top_p=0.8))  # 0.5 + 0.2 = 0.7 < 0.8, so 0.15 is kept too
    assert torch.isfinite(p).tolist() == [[True, True, True, False, False]]
    assert torch.isfinite(filter_logits(logits, Sampling(top_p=0.01))).sum() == 1  # the best token always stays
    assert torch.equal(filter_logits(logits, Sampling()), logits)
    with pytest.raises(ConfigError, match="top_p"):
        Sampling(top_p=0.0)


def test_sample_next_greedy_temperature_and_distribution():
    logits = torch.tensor([[0.0, 3.0, 1.0], [2.0, 0.0, 0.0]])
    assert sample_next(logits, GREEDY).tolist() == [1, 0]
    assert sample_next(logits, Sampling.from_settings(temperature=0)).tolist() == [1, 0]
    g = torch.Generator().manual_seed(0)
    draws = torch.stack([sample_next(logits, Sampling(temperature=1.0, top_k=2), g) for _ in range(4000)])
    assert not bool((draws[:, 0] == 0).any())  # filtered out by top_k=2
    freq = (draws[:, 0] == 1).float().mean().item()
    assert freq == pytest.approx(torch.softmax(torch.tensor([3.0, 1.0]), 0)[0].item(), abs=0.03)
