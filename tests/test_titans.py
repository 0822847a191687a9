"""model=titans (memexp.models.titans): HOPE's block and neural memory without CMS levels or slot memory, MAG gate and
persistent tokens; streams like HOPE (one call == several calls == token by token), carries and detaches its state,
refuses bad settings naming the field, and trains, resumes and samples through memexp.run."""

from __future__ import annotations

import csv

import pytest
import torch
from helpers import QUIET, TITANS_TINY, run_in_process

from memexp.errors import ConfigError
from memexp.models.hope import HOPE, HopeBlock
from memexp.models.protocols import CausalLM, MultiRateCMS, StepScheduled
from memexp.models.titans import Titans


def tiny(**kw) -> Titans:
    args = dict(dim=16, depth=2, heads=2, ff_mult=2, max_len=12, seq_len=12, mem_write=4, persistent_tokens=3) | kw
    return Titans(32, **args)


def test_titans_is_hope_minus_cms_and_slot_memory_with_a_gate_and_persistent_memory():
    m = tiny()
    assert isinstance(m, CausalLM) and not isinstance(m, (MultiRateCMS, StepScheduled))
    assert Titans.carries_state and Titans.max_len is None and Titans.task_kind == "causal_lm"
    for b in m.blocks:
        assert isinstance(b, HopeBlock) and b.gate and b.persistent.shape == (2, 2, 3, 8)
        assert b.memory.slots is None and b.memory.slot_scale is None  # no slot memory
        assert [level.period for level in b.cms] == [1]  # one MLP stepped every step: no continuum memory
    assert set(m.init_state(2)["layers"][0]["memory"]) == {"w", "m", "pending"}


def test_hope_blocks_keep_their_parameters_and_results_under_the_new_defaults():
    """HopeBlock's persistent_tokens=0 and gate=False build HOPE's block: no new parameters, the read added."""
    torch.manual_seed(0)
    h = HOPE(32, dim=16, depth=1, heads=2, max_len=8, seq_len=8, mem_write=4, memory_capacity=4, top_k=2)
    b = h.blocks[0]
    assert b.persistent is None and not b.gate and not hasattr(b, "ln_y")
    assert not any("persistent" in k or "ln_y" in k or "ln_mem" in k for k in h.state_dict())


@pytest.mark.parametrize("mem_write", [3, 4])  # 3: uneven pieces; 4: chunks that fit the 12-token segment
def test_two_calls_and_token_by_token_equal_one_pass(mem_write):
    torch.manual_seed(0)
    m = tiny(mem_write=mem_write).double().eval()
    idx = torch.randint(0, 32, (2, 30))  # two and a half segments
    with torch.no_grad():
        full, st_full = m(idx)
        a, st = m(idx[:, :13])
        b, st = m(idx[:, 13:19], st)  # starts inside a chunk, closes it, leaves an open one
        c, st_three = m(idx[:, 19:], st)
        torch.testing.assert_close(torch.cat([a, b, c], 1), full)
        outs, st_tok = [], None
        for t in range(idx.shape[1]):
            o, st_tok = m(idx[:, t : t + 1], st_tok)
            outs.append(o)
        torch.testing.assert_close(torch.cat(outs, 1), full)
    for got in (st_three, st_tok):
        for lf, lg in zip(st_full["layers"], got["layers"]):
            for key in lf["memory"]:
                torch.testing.assert_close(lg["memory"][key], lf["memory"][key])
            torch.testing.assert_close(lg["attn_k"], lf["attn_k"])


def test_hope_calls_that_close_a_chunk_begun_earlier_and_leave_one_open_equal_one_call():
    """The bug the reference tests found, on HOPE: such a call used to put the earlier call's tokens back in pending."""
    torch.manual_seed(0)
    m = HOPE(32, dim=16, depth=1, heads=2, max_len=32, seq_len=32, mem_write=4, memory_capacity=4, top_k=2).double()
    idx = torch.randint(0, 32, (2, 14))
    with torch.no_grad():
        full, st_full = m(idx)
        a, st = m(idx[:, :3])
        b, st = m(idx[:, 3:9], st)  # closes chunk 0 with pending tokens 0-2, writes 4-7, leaves token 8 open
        c, st = m(idx[:, 9:], st)
    torch.testing.assert_close(torch.cat([a, b, c], 1), full)
    torch.testing.assert_close(st["layers"][0]["memory"]["pending"], st_full["layers"][0]["memory"]["pending"])


def test_state_carries_the_graph_within_a_window_and_a_detached_state_stops_it():
    """The carry/detach API (docs/hope.md): a returned state fed back keeps the graph to the earlier call; the task
    detaches it between truncated-BPTT windows, after which no gradient reaches the earlier call."""
    torch.manual_seed(0)
    m = tiny()
    idx = torch.randint(0, 32, (2, 12))
    emb = m.tok_emb.weight
    _, st = m(idx[:, :8])
    w_after = st["layers"][0]["memory"]["w"]
    assert w_after.requires_grad  # the written weights are a function of the parameters (outer learning)
    logits, _ = m(idx[:, 8:], st)
    (g,) = torch.autograd.grad(logits.sum(), w_after, retain_graph=True)
    assert g.abs().sum() > 0  # the second call's output depends on the carried memory
    detached = torch.utils._pytree.tree_map(lambda t: t.detach(), st)
    assert all(not t.requires_grad for t in torch.utils._pytree.tree_leaves(detached))
    logits2, _ = m(idx[:, 8:], detached)
    torch.testing.assert_close(logits2, logits)  # same values
    logits2.sum().backward()
    assert emb.grad is not None  # this window's parameters learn; earlier windows' graph is gone


def test_defaults_no_nan_and_anomaly_clean():
    torch.manual_seed(0)
    m = Titans(64)
    idx = torch.randint(0, 64, (2, m.seq_len + 40))
    with torch.autograd.set_detect_anomaly(True):
        logits, _ = m(idx)
        torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 64), idx[:, 1:].reshape(-1)).backward()
    assert all(torch.isfinite(p.grad).all() for p in m.parameters() if p.grad is not None)


@pytest.mark.parametrize(
    "kw, field",
    [
        (dict(dim=30, heads=4), "model.heads"),
        (dict(max_len=64, seq_len=128), "model.max_len"),
        (dict(persistent_tokens=-1), "model.persistent_tokens"),
        (dict(base_momentum=1.0), "model.base_momentum"),
        (dict(base_decay=0.0), "model.base_decay"),
        (dict(mem_write=0), "model.mem_write"),
        (dict(mem_hidden_mult=0), "model.mem_hidden_mult"),
        (dict(memory_layers=[0, 9]), "model.memory_layers"),
        (dict(surprise_scale=-1.0), "model.surprise_scale"),
        (dict(mem_max_step_norm=0.0), "model.mem_max_step_norm"),
        (dict(dropout=1.0), "model.dropout"),
    ],
)
def test_config_validation_names_the_field(kw, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        Titans(256, **kw)


def test_board_entry_is_hopes_size():
    from memexp.configs.groups import BOARD_ENTRIES

    entry, hope = BOARD_ENTRIES["titans"], BOARD_ENTRIES["hope"]
    assert {k: v for k, v in entry.items() if k not in ("defaults", "model")} == {
        k: v for k, v in hope.items() if k not in ("defaults", "model")
    }
    n = sum(p.numel() for p in Titans(65, **entry["model"]).parameters())
    assert 800_000 <= n <= 1_000_000, n


# ----------------------------------------------------------------------------- through memexp.run


def _losses(run_dir) -> list[float]:
    with open(f"{run_dir}/csv/metrics.csv") as f:
        return [float(r["train/loss"]) for r in csv.DictReader(f) if r.get("train/loss")]


def test_trains_resumes_and_samples(tmp_path):
    common = [*TITANS_TINY, *QUIET, "debug=fast", "optim.lr=1e-2", "optim.warmup_steps=0", "trainer.log_every_n_steps=1"]
    common += [f"paths.checkpoint_root={tmp_path}/ck"]
    first = run_in_process([*common, "trainer.max_steps=20"], tmp_path / "a")
    losses = _losses(first["run_dir"])
    assert first["metrics"]["global_step"] == 20
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.3, losses
    second = run_in_process([*common, "trainer.max_steps=24", "sample_tokens=12"], tmp_path / "b")
    assert second["resumed_from_step"] == 20 and second["metrics"]["global_step"] == 24
    assert isinstance(second["sample"], str) and len(second["sample"]) >= 12
