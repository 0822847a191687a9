"""model=gated_deltanet: the chunked gated delta rule against the token-by-token recurrence and against an
independent implementation (transformers' Qwen3-Next reference), the model's carried state (streaming, generation
steps), gradients, argument checks, and a tiny run through the suite (training, resume, a sample)."""

from __future__ import annotations

import csv
import json
import math

import pytest
import torch
import torch.nn.functional as F
from helpers import QUIET, experiment_script, run_in_process

from memexp.errors import ConfigError
from memexp.models.gated_deltanet import GatedDeltaNetLM, gated_delta_rule_chunked, gated_delta_rule_recurrent
from memexp.models.protocols import CausalLM


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _inputs(B=2, H=3, T=37, K=8, Dv=16, dtype=torch.float64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(B, H, T, K, generator=gen, dtype=dtype) * K**-0.5
    k = F.normalize(torch.randn(B, H, T, K, generator=gen, dtype=dtype), dim=-1)
    v = torch.randn(B, H, T, Dv, generator=gen, dtype=dtype)
    g = -torch.rand(B, H, T, generator=gen, dtype=dtype)  # log decay in (-1, 0]
    beta = torch.rand(B, H, T, generator=gen, dtype=dtype)
    S0 = torch.randn(B, H, K, Dv, generator=gen, dtype=dtype)
    return q, k, v, g, beta, S0


@pytest.mark.parametrize("chunk_size", [1, 5, 16, 64])  # 5 and 16 do not divide T=37; 64 > T: one padded chunk
def test_chunked_equals_recurrent_token_by_token(chunk_size):
    q, k, v, g, beta, S0 = _inputs()
    o_ref, s_ref = gated_delta_rule_recurrent(q, k, v, g, beta, S0)
    o, s = gated_delta_rule_chunked(q, k, v, g, beta, chunk_size, S0)
    assert o.shape == o_ref.shape and s.shape == s_ref.shape
    torch.testing.assert_close(o, o_ref, rtol=0, atol=1e-6)
    torch.testing.assert_close(s, s_ref, rtol=0, atol=1e-6)


def test_chunked_state_after_three_calls_equals_one_call():
    q, k, v, g, beta, S0 = _inputs(T=50)
    o_all, s_all = gated_delta_rule_chunked(q, k, v, g, beta, 8, S0)
    s, outs = S0, []
    for a, b in ((0, 13), (13, 14), (14, 50)):  # 13 tokens, one token, 36 tokens
        o, s = gated_delta_rule_chunked(q[:, :, a:b], k[:, :, a:b], v[:, :, a:b], g[:, :, a:b], beta[:, :, a:b], 8, s)
        outs.append(o)
    torch.testing.assert_close(torch.cat(outs, dim=2), o_all, rtol=0, atol=1e-10)
    torch.testing.assert_close(s, s_all, rtol=0, atol=1e-10)


def test_the_core_matches_transformers_qwen3_next_reference():
    """transformers' torch_chunk_gated_delta_rule / torch_recurrent_gated_delta_rule (layout (B, T, H, D); they
    L2-normalise q and k, scale q by K^-0.5 and compute in float32). Ours runs in float64 on the same normalised,
    scaled inputs. Tolerance from float32: each output sums T decayed terms of products of unit vectors and O(1)
    values, so its rounding error is about a few (T + K) * 2^-24 * max|v|; we allow 8 (T + K) u max|v|."""
    from transformers.models.qwen3_next.modeling_qwen3_next import (
        torch_chunk_gated_delta_rule,
        torch_recurrent_gated_delta_rule,
    )

    B, H, T, K, Dv = 2, 2, 100, 16, 32
    _, _, v, g, beta, S0 = _inputs(B, H, T, K, Dv, seed=1)
    gen = torch.Generator().manual_seed(2)
    q_raw, k_raw = (torch.randn(B, H, T, K, generator=gen, dtype=torch.float64) for _ in range(2))
    q = F.normalize(q_raw, dim=-1, eps=1e-6) * K**-0.5
    k = F.normalize(k_raw, dim=-1, eps=1e-6)
    ours, ours_s = gated_delta_rule_chunked(q, k, v, g, beta, 32, S0)

    def bthd(x):
        return x.transpose(1, 2).float()

    args = (bthd(q_raw), bthd(k_raw), bthd(v), g.transpose(1, 2).float(), beta.transpose(1, 2).float())
    tol = 8 * (T + K) * 2**-24 * v.abs().max().item()
    for ref_fn, extra in ((torch_chunk_gated_delta_rule, {"chunk_size": 64}), (torch_recurrent_gated_delta_rule, {})):
        o_ref, s_ref = ref_fn(*args, initial_state=S0.float(), output_final_state=True, use_qk_l2norm_in_kernel=True, **extra)
        torch.testing.assert_close(o_ref.transpose(1, 2).double(), ours, rtol=0, atol=tol)
        torch.testing.assert_close(s_ref.double(), ours_s, rtol=0, atol=tol)


def test_gradcheck_of_a_tiny_core_call():
    q, k, v, g, beta, S0 = (t.requires_grad_() for t in _inputs(B=1, H=1, T=6, K=3, Dv=2))
    assert torch.autograd.gradcheck(
        lambda q, k, v, g, b, s: gated_delta_rule_chunked(q, k, v, g, b, 4, s), (q, k, v, g, beta, S0)
    )


@pytest.mark.parametrize("chunk_size", [1, 5, 16, 64])
def test_the_hand_written_backward_equals_autograd(chunk_size):
    """`_ChunkedRule.backward` against autograd through the same forward written with plain ops (and
    torch.linalg.solve_triangular), float64, every input's gradient including the carried state's. Each gradient
    entry sums O(T (K + Dv)) products of O(1) terms, so float64 rounding is ~1e-13; 1e-10 leaves room."""
    xs = [t.requires_grad_() for t in _inputs(T=37)]
    gen = torch.Generator().manual_seed(5)
    o, s = gated_delta_rule_chunked(*xs[:5], chunk_size, xs[5])
    wo, ws = torch.randn(o.shape, generator=gen, dtype=o.dtype), torch.randn(s.shape, generator=gen, dtype=s.dtype)
    hand = torch.autograd.grad((o * wo).sum() + (s * ws).sum(), xs)
    o2, s2 = gated_delta_rule_chunked(*xs[:5], chunk_size, xs[5], hand_backward=False)
    auto = torch.autograd.grad((o2 * wo).sum() + (s2 * ws).sum(), xs)
    for name, a, b in zip("q k v g beta state".split(), hand, auto):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10, msg=lambda m, name=name: f"d{name}: {m}")


def test_the_hand_written_backward_when_only_the_state_or_only_the_output_is_used():
    xs = [t.requires_grad_() for t in _inputs(T=20)]
    for pick in (0, 1):
        out = gated_delta_rule_chunked(*xs[:5], 8, xs[5])[pick].sum()
        ref = gated_delta_rule_chunked(*xs[:5], 8, xs[5], hand_backward=False)[pick].sum()
        grads = (torch.autograd.grad(x, xs, allow_unused=True, materialize_grads=True) for x in (out, ref))
        for a, b in zip(*grads):  # the state never depends on q: zeros from both
            torch.testing.assert_close(a, b, rtol=0, atol=1e-10)


def test_the_speed_bench_runs_and_writes_its_ratios(tmp_path):
    """experiments/bench_gated_deltanet.py at a toy size: it prints the machine line and writes both ratios
    (the speed targets themselves live in the bench, not in a timed test)."""
    bench = experiment_script("bench_gated_deltanet")
    out = tmp_path / "b.json"
    argv = "--dim 16 --depth 1 --heads 2 --seq-len 16 --batch 2 --context 8 24 --gen-tokens 2 --rounds 1 --steps 1"
    result = bench.main([*argv.split(), "--out", str(out)])
    saved = json.loads(out.read_text())
    assert saved["train_ratio"] == pytest.approx(result["train_ratio"]) and saved["train_ratio"] > 0
    assert set(saved["gen_ratio"]) == {"8", "24"} and all(r > 0 for r in saved["gen_ratio"].values())


def _net(**kw) -> GatedDeltaNetLM:
    torch.manual_seed(0)
    kw = dict(dim=32, depth=2, heads=2, ff_mult=2, chunk_size=8) | kw
    return GatedDeltaNetLM(40, **kw).double().eval()


def test_streaming_two_halves_equals_one_call():
    net, idx = _net(), torch.randint(0, 40, (3, 45))
    full, state_full = net(idx)
    first, state = net(idx[:, :19])
    second, state = net(idx[:, 19:], state)
    torch.testing.assert_close(torch.cat([first, second], dim=1), full, rtol=0, atol=1e-10)
    for got, want in zip(state, state_full):
        for a, b in zip(got, want):  # S and the conv cache
            torch.testing.assert_close(a, b, rtol=0, atol=1e-10)


def test_generation_steps_equal_one_call():
    net, idx = _net(), torch.randint(0, 40, (2, 20))
    full, _ = net(idx)
    logits, state = net(idx[:, :5])  # a prime (chunked), then one token per call (the recurrent step)
    steps = [logits]
    for t in range(5, 20):
        logits, state = net(idx[:, t : t + 1], state)
        steps.append(logits)
    torch.testing.assert_close(torch.cat(steps, dim=1), full, rtol=0, atol=1e-10)


def test_gradients_reach_every_parameter():
    net = _net().train()
    logits, _ = net(torch.randint(0, 40, (2, 20)))
    F.cross_entropy(logits.flatten(0, 1), torch.randint(0, 40, (40,))).backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all() or not p.grad.any()]
    assert not missing


def test_the_model_is_a_causal_lm_that_carries_state():
    net = _net()
    assert isinstance(net, CausalLM) and net.task_kind == "causal_lm"
    assert net.max_len is None and net.carries_state is True
    assert net.head.weight is net.embedding.weight  # tied, as model=transformer


def test_bf16_autocast_runs_the_core_in_float32():
    net = GatedDeltaNetLM(40, dim=32, depth=1, heads=2, chunk_size=8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits, state = net(torch.randint(0, 40, (2, 20)))
    assert torch.isfinite(logits.float()).all() and state[0][0].dtype == torch.float32


@pytest.mark.parametrize(
    "field, value",
    [("dim", 0), ("depth", 0), ("heads", 3), ("expand_v", 0), ("conv_size", 1), ("chunk_size", 0), ("dropout", 1.0)],
)
def test_bad_arguments_name_the_field(field, value):
    with pytest.raises(ConfigError, match=rf"model\.{field}="):
        GatedDeltaNetLM(40, **{"dim": 32, field: value})


def _losses(run_dir):
    with open(f"{run_dir}/csv/metrics.csv") as f:
        return [float(r["train/loss"]) for r in csv.DictReader(f) if r.get("train/loss")]


def test_a_tiny_run_trains_resumes_and_samples(tiny_text, tmp_path):
    common = [
        "model=gated_deltanet",
        "debug=fast",
        "model.dim=32",
        "model.depth=1",
        "model.heads=2",
        "model.ff_mult=2",
        "model.chunk_size=16",
        "data=text",
        f"data.path={tiny_text}",
        "data.seq_len=32",
        "data.batch_size=8",
        "data.windows=stream",
        "optim.lr=1e-2",
        "optim.warmup_steps=2",
        "trainer.log_every_n_steps=1",
        *QUIET,
        "sample_tokens=20",
        f"paths.checkpoint_root={tmp_path}/ck",
    ]
    first = run_in_process(common, tmp_path / "a")
    losses = _losses(first["run_dir"])
    assert first["metrics"]["global_step"] == 20
    assert losses[-1] < losses[0] - 0.5, losses
    assert first["metrics"]["val/loss"] < math.log(66), first["metrics"]
    assert first["sample"] and len(first["sample"]) > 0
    second = run_in_process([*common, "trainer.max_steps=24"], tmp_path / "b")
    assert second["resumed_from_step"] == 20 and second["metrics"]["global_step"] == 24


def test_the_layer_is_the_papers_gated_delta_layer_term_by_term():
    """The whole token mixer rebuilt from its parameters with torch's own ops and transformers' reference core (which
    L2-normalises q and k and scales q inside): a depthwise Conv1d + SiLU per channel, beta = sigmoid(W_b x),
    g = -exp(A_log) softplus(W_a x + dt_bias), the gated per-head RMSNorm, the output projection. Float64."""
    from transformers.models.qwen3_next.modeling_qwen3_next import torch_recurrent_gated_delta_rule

    from memexp.models.gated_deltanet import GatedDeltaNetLayer

    torch.manual_seed(0)
    layer = GatedDeltaNetLayer(dim=16, heads=2, expand_v=2, conv_size=4, chunk_size=8).double()
    x = torch.randn(2, 11, 16, dtype=torch.float64)
    ours, _ = layer(x)

    H, K, V = 2, 8, 16
    qkv, gate, a, b = layer.in_proj(x).split([2 * H * K + H * V, H * V, H, H], dim=-1)
    conv = F.conv1d(F.pad(qkv.transpose(1, 2), (3, 0)), layer.conv.conv.weight, groups=qkv.shape[-1])
    q, k, v = F.silu(conv).transpose(1, 2).split([H * K, H * K, H * V], dim=-1)
    beta = torch.sigmoid(b)
    g = -layer.A_log.exp() * F.softplus(a + layer.dt_bias)
    o, _ = torch_recurrent_gated_delta_rule(
        q.view(2, 11, H, K), k.view(2, 11, H, K), v.view(2, 11, H, V), g, beta, use_qk_l2norm_in_kernel=True
    )  # float32 inside: the tolerance is float32's
    o = o.double()
    normed = o * torch.rsqrt(o.pow(2).mean(-1, keepdim=True) + 1e-5) * layer.o_norm.weight
    ref = layer.o_proj((normed * F.silu(gate).view(2, 11, H, V)).flatten(2))
    # float32 rounding (2^-24) over the ~T + K terms of each state entry, amplified by the norm and the projection
    assert torch.allclose(ours, ref, rtol=0, atol=64 * (11 + K) * 2**-24 * ref.abs().max().item())
