"""HyperLSTM: the fused cell against the paper's equations, initial values, layer norm,
recurrent dropout, gradients, carried state, learning, and config errors."""

import math

import pytest
import torch
import torch.nn.functional as F

from memexp.errors import ConfigError
from memexp.kernels.hyperlstm_cpp import GEMM_PATHS, gemm_unavailable_reason
from memexp.models.hyperlstm import HyperLSTM, HyperLSTMCell

IMPLS = ["cpp", "fused_script", "fused", "python"]
# the C++ loops with each GEMM path forced: every path the dispatcher (gemm_path) can pick
CPP_PATH_IMPLS = [f"cpp_{p}" for p in GEMM_PATHS]


def _skip_unless_runs(impl):
    """Skip a forced GEMM path this CPU (or build) cannot run, saying why."""
    if impl.startswith("cpp_"):
        reason = gemm_unavailable_reason(impl.removeprefix("cpp_"))
        if reason is not None:
            pytest.skip(f"step_impl={impl!r} cannot run here: {reason}")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny ops: OpenMP threads only add contention (seconds per step on a busy 2-core machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _perturb(module, scale=0.3, seed=0):
    """Move every parameter off its initial value, so zero/constant inits hide no bug."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))


def _reference_step(cell, x, h, c, hh, hc, mask=None):
    """Paper eq. 11-12 + LN-LSTM, gate by gate, written out plainly from the cell's parameters."""
    H, N, Z = cell.hidden_size, cell.hyper_num_units, cell.hyper_embedding_size
    ln, fb, eps = cell.use_layer_norm, cell.forget_bias, 1e-3

    def norm(v, w, b):
        mu = v.mean(-1, keepdim=True)
        var = ((v - mu) ** 2).mean(-1, keepdim=True)
        return w * (v - mu) / torch.sqrt(var + eps) + b

    def blk(w, k, size):  # gate block k of a (rows, 4*size) weight
        return w[:, k * size : (k + 1) * size]

    # hyper LSTM on [x; h]
    xh = torch.cat([x, h], 1)
    pre_y = []
    for k in range(4):
        v = xh @ blk(cell.hyper_weight_x, k, N) + hh @ blk(cell.hyper_weight_h, k, N)
        v = (
            norm(v, cell.hyper_ln_gates_weight[k], cell.hyper_ln_gates_bias[k])
            if ln
            else v + cell.hyper_bias[k * N : (k + 1) * N]
        )
        pre_y.append(v)
    i, j, f, o = pre_y
    hc = torch.sigmoid(f + fb) * hc + torch.sigmoid(i) * torch.tanh(j)
    hh = torch.sigmoid(o) * torch.tanh(norm(hc, cell.hyper_ln_cell_weight, cell.hyper_ln_cell_bias) if ln else hc)
    # per gate: z_x, z_h, z_b -> d_x, d_h, beta
    Wz, bz, Wd = cell.z_weight, cell.z_bias, cell.d_weight
    pre = []
    for k in range(4):
        z_x = hh @ Wz[:, k * Z : (k + 1) * Z] + bz[k * Z : (k + 1) * Z]
        z_h = hh @ Wz[:, (4 + k) * Z : (5 + k) * Z] + bz[(4 + k) * Z : (5 + k) * Z]
        z_b = hh @ Wz[:, (8 + k) * Z : (9 + k) * Z]
        d_x, d_h, beta = z_x @ Wd[k], z_h @ Wd[4 + k], z_b @ Wd[8 + k]
        y = d_x * (x @ blk(cell.weight_x, k, H)) + d_h * (h @ blk(cell.weight_h, k, H)) + beta + cell.bias[k * H : (k + 1) * H]
        pre.append(norm(y, cell.ln_gates_weight[k], cell.ln_gates_bias[k]) if ln else y)
    i, j, f, o = pre
    g = torch.tanh(j) if mask is None else torch.tanh(j) * mask
    c = torch.sigmoid(f + fb) * c + torch.sigmoid(i) * g
    h = torch.sigmoid(o) * torch.tanh(norm(c, cell.ln_cell_weight, cell.ln_cell_bias) if ln else c)
    return h, c, hh, hc


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("use_layer_norm", [True, False])
def test_cell_matches_the_papers_equations(impl, use_layer_norm):
    torch.manual_seed(0)
    cell = HyperLSTMCell(
        5, 6, hyper_num_units=4, hyper_embedding_size=3, use_layer_norm=use_layer_norm, forget_bias=0.7, step_impl=impl
    ).double()
    _perturb(cell)
    B, T = 2, 4
    x = torch.randn(B, T, 5, dtype=torch.float64)
    state = tuple(torch.randn(B, n, dtype=torch.float64) for n in (6, 6, 4, 4))
    out, final = cell(x, state)
    h, c, hh, hc = state
    for t in range(T):
        h, c, hh, hc = _reference_step(cell, x[:, t], h, c, hh, hc)
        torch.testing.assert_close(out[:, t], h, rtol=1e-10, atol=1e-10)
    for got, want in zip(final, (h, c, hh, hc)):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def test_initial_values_follow_the_reference():
    torch.manual_seed(0)
    H, N, Z = 32, 64, 8
    cell = HyperLSTMCell(7, H, hyper_num_units=N, hyper_embedding_size=Z)
    torch.testing.assert_close(cell.z_weight[:, : 8 * Z], torch.zeros(N, 8 * Z))  # z_x, z_h weights 0
    torch.testing.assert_close(cell.z_bias, torch.ones(8 * Z))  # ... with bias 1
    zb = cell.z_weight[:, 8 * Z :]
    assert abs(zb.std().item() - 0.01) < 0.002 and abs(zb.mean().item()) < 0.002  # z_b ~ N(0, 0.01)
    torch.testing.assert_close(cell.d_weight[:8], torch.full((8, Z, H), 0.1 / Z))  # z -> d: 0.1/Z
    torch.testing.assert_close(cell.d_weight[8:], torch.zeros(4, Z, H))  # bias projection zero
    torch.testing.assert_close(cell.bias, torch.zeros(4 * H))
    for w, n in ((cell.weight_h, H), (cell.hyper_weight_h, N)):  # orthogonal per gate
        for k in range(4):
            blk = w[:, k * n : (k + 1) * n]
            torch.testing.assert_close(blk.T @ blk, torch.eye(n), atol=1e-5, rtol=0)
        assert not torch.allclose(w[:, :n], w[:, n : 2 * n])  # independent blocks
    # so every scaling d starts at exactly 0.1 whatever the hyper state, and beta at 0
    hh = torch.randn(3, N)
    z = hh @ cell.z_weight[:, : 8 * Z] + cell.z_bias
    d = torch.stack([z[:, k * Z : (k + 1) * Z] @ cell.d_weight[k] for k in range(8)])
    torch.testing.assert_close(d, torch.full_like(d, 0.1))


def test_forget_bias_is_added_to_the_forget_gate():
    # all weights zero and LN off: every pre-activation is 0, so c' = σ(fb)·c + σ(0)·tanh(0) = σ(fb)·c
    cell = HyperLSTMCell(3, 4, hyper_num_units=2, hyper_embedding_size=2, use_layer_norm=False, forget_bias=1.5)
    with torch.no_grad():
        for p in cell.parameters():
            p.zero_()
    c0 = torch.randn(1, 4)
    _, (_, c, _, _) = cell(torch.randn(1, 1, 3), (torch.zeros(1, 4), c0, torch.zeros(1, 2), torch.zeros(1, 2)))
    torch.testing.assert_close(c, torch.sigmoid(torch.tensor(1.5)) * c0)


@pytest.mark.parametrize("impl", IMPLS)
def test_layer_norm_makes_gates_invariant_to_the_scale_of_their_input(impl):
    """Scaling W_x, W_h, the bias projection and b by k scales every gate pre-activation by k:
    with LN the output is unchanged (once the 1e-3 epsilon is negligible); without LN it changes."""
    for ln in (True, False):
        torch.manual_seed(1)
        cell = HyperLSTMCell(5, 6, hyper_num_units=4, hyper_embedding_size=3, use_layer_norm=ln, step_impl=impl).double()
        _perturb(cell)
        x = torch.randn(2, 3, 5, dtype=torch.float64)
        scaled = (cell.weight_x, cell.weight_h, cell.bias, cell.d_weight[8:])
        out, _ = cell(x)
        with torch.no_grad():
            for p in scaled:
                p.mul_(3.0)
        out3, _ = cell(x)
        if ln:
            assert (out3 - out).abs().max() < 1e-2  # only the epsilon differs
            with torch.no_grad():
                for p in scaled:
                    p.mul_(1e3)
            big, _ = cell(x)
            with torch.no_grad():
                for p in scaled:
                    p.mul_(10.0)
            bigger, _ = cell(x)
            torch.testing.assert_close(bigger, big, rtol=1e-6, atol=1e-7)
        else:
            assert (out3 - out).abs().max() > 1e-2
    assert not any("ln_" in n for n, _ in HyperLSTMCell(3, 4, use_layer_norm=False).named_parameters())


@pytest.mark.parametrize("impl", IMPLS)
def test_recurrent_dropout_only_in_training(impl):
    torch.manual_seed(0)
    kw = dict(embedding_size=8, hidden_size=16, hyper_num_units=8, hyper_embedding_size=4, step_impl=impl)
    m = HyperLSTM(11, use_recurrent_dropout=True, dropout_keep_prob=0.5, **kw)
    plain = HyperLSTM(11, use_recurrent_dropout=False, **kw)
    plain.load_state_dict(m.state_dict())
    idx = torch.randint(0, 11, (3, 6))
    a, _ = m(idx)
    b, _ = m(idx)
    assert (a - b).abs().max() > 1e-3  # a new mask each call in training
    m.eval()
    plain.eval()
    e1, _ = m(idx)
    e2, _ = m(idx)
    torch.testing.assert_close(e1, e2, rtol=0, atol=0)  # deterministic in eval
    torch.testing.assert_close(e1, plain(idx)[0])  # and the same as no recurrent dropout


def test_recurrent_dropout_drops_only_the_candidate():
    """With keep -> tiny and the mask forced to zero, the cell can only forget: c' = σ(f) c."""
    torch.manual_seed(0)
    cell = HyperLSTMCell(
        3, 4, hyper_num_units=2, hyper_embedding_size=2, use_recurrent_dropout=True, dropout_keep_prob=1e-9
    ).double()
    _perturb(cell)
    x = torch.randn(2, 1, 3, dtype=torch.float64)
    state = tuple(torch.randn(2, n, dtype=torch.float64) for n in (4, 4, 2, 2))
    _, (h, c, hh, hc) = cell(x, state)
    # reference with a zero mask (bernoulli(1e-9) is 0 everywhere)
    rh, rc, rhh, rhc = _reference_step(cell, x[:, 0], *state, mask=torch.zeros(2, 4, dtype=torch.float64))
    torch.testing.assert_close(c, rc)
    torch.testing.assert_close(hh, rhh)  # the hyper LSTM has no recurrent dropout


@pytest.mark.parametrize("impl", ["cpp", *CPP_PATH_IMPLS, "fused_script", "fused"])
@pytest.mark.parametrize("use_layer_norm,use_recurrent_dropout", [(True, False), (True, True), (False, True), (False, False)])
def test_hand_written_backward_equals_autograd(impl, use_layer_norm, use_recurrent_dropout):
    _skip_unless_runs(impl)
    torch.manual_seed(0)
    kw = dict(
        embedding_size=5,
        hidden_size=6,
        depth=2,
        hyper_num_units=4,
        hyper_embedding_size=3,
        use_layer_norm=use_layer_norm,
        use_recurrent_dropout=use_recurrent_dropout,
        dropout_keep_prob=0.7,
    )
    ref = HyperLSTM(9, step_impl="python", **kw).double()
    _perturb(ref)
    fused = HyperLSTM(9, step_impl=impl, **kw).double()
    fused.load_state_dict(ref.state_dict())
    idx = torch.randint(0, 9, (3, 5))
    grads = []
    for m in (ref, fused):
        state = tuple(
            tuple(
                torch.randn(3, n, dtype=torch.float64, generator=torch.Generator().manual_seed(i)).requires_grad_()
                for i, n in enumerate((6, 6, 4, 4))
            )
            for _ in range(2)
        )
        torch.manual_seed(3)  # same dropout masks
        logits, new_state = m(idx, state)
        w = torch.randn(logits.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
        loss = (logits * w).sum() + sum((s**2).sum() for layer in new_state for s in layer)
        grads.append(torch.autograd.grad(loss, list(m.parameters()) + [s for layer in state for s in layer]))
    for g_ref, g_fused in zip(*grads):
        torch.testing.assert_close(g_fused, g_ref, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("impl", IMPLS)
def test_gradients_reach_every_parameter(impl):
    torch.manual_seed(0)
    m = HyperLSTM(10, embedding_size=6, hidden_size=8, depth=2, hyper_num_units=4, hyper_embedding_size=3, step_impl=impl)
    _perturb(m, scale=0.1)
    idx = torch.randint(0, 10, (2, 7))
    logits, _ = m(idx)
    F.cross_entropy(logits.reshape(-1, 10), idx.reshape(-1)).backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().max() > 0, name
    hyper = [n for n, _ in m.named_parameters() if "hyper" in n or n.split(".")[-1].startswith(("z_", "d_"))]
    assert len(hyper) == 2 * 9  # hyper_weight_x/h, z_weight/bias, d_weight, 4 hyper LN params, per layer


@pytest.mark.parametrize("impl", IMPLS)
def test_carried_state_equals_the_concatenated_sequence(impl):
    torch.manual_seed(0)
    m = HyperLSTM(
        12, embedding_size=6, hidden_size=8, depth=2, hyper_num_units=4, hyper_embedding_size=3, dropout=0.5, step_impl=impl
    ).eval()
    _perturb(m, scale=0.1)
    idx = torch.randint(0, 12, (3, 10))
    full, full_state = m(idx)
    first, state = m(idx[:, :4])
    state = torch.utils._pytree.tree_map(lambda t: t.detach(), state)  # what the LM task does between windows
    second, second_state = m(idx[:, 4:], state)
    torch.testing.assert_close(torch.cat([first, second], 1), full, rtol=1e-5, atol=1e-6)
    for a, b in zip(torch.utils._pytree.tree_leaves(second_state), torch.utils._pytree.tree_leaves(full_state)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert len(full_state) == 2 and all(len(layer) == 4 for layer in full_state)


def test_contract():
    m = HyperLSTM(13, embedding_size=4, hidden_size=8, hyper_num_units=4, hyper_embedding_size=2)
    assert (m.task_kind, m.carries_state, m.max_len) == ("causal_lm", True, None)
    logits, state = m(torch.randint(0, 13, (2, 5)))
    assert logits.shape == (2, 5, 13)
    assert m.head.in_features == 8 and m.head.out_features == 13


def test_loss_falls_on_tiny_data():
    torch.manual_seed(0)
    text = "abcabdabcabd" * 8
    vocab = sorted(set(text))
    data = torch.tensor([vocab.index(ch) for ch in text])
    m = HyperLSTM(len(vocab), embedding_size=8, hidden_size=24, hyper_num_units=8, hyper_embedding_size=4)
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    x, y = data[:-1].view(1, -1), data[1:].view(1, -1)
    losses = []
    for _ in range(40):
        logits, _ = m(x)
        loss = F.cross_entropy(logits.reshape(-1, len(vocab)), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[0] > 0.9 * math.log(len(vocab))
    # the pattern is deterministic after 2 chars except 'c'/'d' after "ab" (1 bit per 3 chars)
    assert losses[-1] < 0.4, losses[-1]


@pytest.mark.parametrize(
    "kwargs,field",
    [
        (dict(vocab_size=0), "model.vocab_size"),
        (dict(hidden_size=0), "model.hidden_size"),
        (dict(embedding_size=-3), "model.embedding_size"),
        (dict(num_layers=0), "model.num_layers"),  # the deprecated name, as the user wrote it
        (dict(depth=0), "model.depth"),
        (dict(hyper_num_units=0), "model.hyper_num_units"),
        (dict(hyper_embedding_size=1.5), "model.hyper_embedding_size"),
        (dict(dropout_keep_prob=0.0), "model.dropout_keep_prob"),
        (dict(dropout_keep_prob=1.2), "model.dropout_keep_prob"),
        (dict(dropout=1.0), "model.dropout"),
        (dict(forget_bias=float("nan")), "model.forget_bias"),
        (dict(step_impl="jit"), "model.step_impl"),
    ],
)
def test_bad_args_raise_config_error_naming_the_field(kwargs, field):
    args = dict(vocab_size=10) | kwargs
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        HyperLSTM(**args)


def _cpp_built():
    from memexp.kernels import hyperlstm_cpp as hyperlstm

    return hyperlstm._load_cpp_ext() is not None


@pytest.mark.parametrize("impl", ["cpp", *CPP_PATH_IMPLS])
@pytest.mark.parametrize(
    "batch, hidden, hyper, z, dtype, threads",
    [
        (3, 7, 6, 3, torch.float64, 1),  # smaller than one register block: the scalar edges
        # rows 11 = 6 + 4 + 1 and 9 = 6 + 2 + 1 (avx2), one block of 11 or 9 (avx512); columns: full panels,
        # a half panel, a tail (avx2) or a zero-padded last panel (avx512)
        (11, 37, 20, 16, torch.float64, 1),
        (9, 44, 24, 17, torch.float32, 1),  # float32 rounding
        (13, 33, 9, 5, torch.float64, 1),  # rows 13 = 12 + 1 (avx512's 12-row block and a rest)
        # two threads: batch rows and (at 4H + 4N = 384 columns) GEMM column panels split between them
        (11, 64, 32, 16, torch.float64, 2),
    ],
)
def test_cpp_loops_run_and_agree_with_autograd(impl, batch, hidden, hyper, z, dtype, threads):
    """The C++ path (each GEMM path) really runs (no silent fallback) and matches autograd, both in `dtype`, within
    the rounding of `dtype` over the longest chain of sums (`accumulation_tolerance`): the two sum in different
    orders (and each GEMM path, and each CPU's vector width, in its own), so no CPU's order is the reference."""
    if not _cpp_built():
        pytest.skip("no C++ compiler: step_impl='cpp' falls back to 'fused_script' (tested elsewhere)")
    _skip_unless_runs(impl)
    torch.manual_seed(0)
    cell = HyperLSTMCell(5, hidden, hyper_num_units=hyper, hyper_embedding_size=z, step_impl="python").to(dtype)
    _perturb(cell)
    x = torch.randn(batch, 6, 5, dtype=dtype, requires_grad=True)
    state = tuple((0.5 * torch.randn(batch, n, dtype=dtype)).requires_grad_() for n in (hidden, hidden, hyper, hyper))
    assert HyperLSTMCell(5, 7, step_impl="cpp")._uses_cpp(x) and HyperLSTMCell(5, 7)._uses_cpp(x)  # "auto" -> cpp
    results = []
    for step_impl in ("python", impl):
        cell.step_impl = step_impl
        torch.set_num_threads(threads if step_impl != "python" else 1)
        try:
            hs, new_state = cell(x, state)
            w = torch.linspace(-1, 1, hs.numel(), dtype=torch.float64).view_as(hs)
            loss = (hs * w).sum() + sum((s**2).sum() for s in new_state)
            results.append((hs, *new_state, *torch.autograd.grad(loss, [x, *state, *cell.parameters()])))
        finally:
            torch.set_num_threads(1)
    T, I = x.shape[1], x.shape[2]
    for ref, got in zip(*results):
        torch.testing.assert_close(got, ref, rtol=0, atol=accumulation_tolerance(ref, dtype, T * (I + hidden + hyper)))


def accumulation_tolerance(ref: torch.Tensor, dtype: torch.dtype, length: int) -> float:
    """How far two computations of `ref` in `dtype` may lie apart when each sums `length` rounded terms in its own
    order: each is within length x eps x (the terms' size) of the exact value (the standard bound on a
    recursive sum), so together within 2 x length x eps x scale, where scale is the tensor's largest magnitude
    (at least 1, for outputs near zero). `length` is the longest chain of sums an element depends on: the steps
    through time times the widest inner dimension a step sums over."""
    scale = max(1.0, float(ref.detach().abs().max()))
    return 2 * length * torch.finfo(dtype).eps * scale


def test_accumulation_tolerance_follows_the_dtype_and_the_length():
    ref = torch.tensor([0.5, -3.0])
    assert accumulation_tolerance(ref, torch.float32, 100) == pytest.approx(2 * 100 * 2**-23 * 3.0)
    assert accumulation_tolerance(ref, torch.float64, 100) == pytest.approx(2 * 100 * 2**-52 * 3.0)
    # measured float32 spread between summation orders at the kernel test's size (4.6e-5 on AMD Zen 4) is inside it
    assert accumulation_tolerance(torch.ones(1), torch.float32, 6 * (5 + 44 + 24)) > 4.6e-5


def test_gemm_path_follows_the_cpu_capability(monkeypatch):
    from memexp.kernels import hyperlstm_cpp

    if not _cpp_built():
        pytest.skip("no C++ compiler: no GEMM path to pick")
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    assert hyperlstm_cpp.gemm_path() == "avx2"  # the AVX2 path stays where torch runs AVX2
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    expected = "avx512" if gemm_unavailable_reason("avx512") is None else "avx2"
    assert hyperlstm_cpp.gemm_path() == expected
    for path in GEMM_PATHS:  # forcing a path that runs returns it
        if gemm_unavailable_reason(path) is None:
            assert hyperlstm_cpp.gemm_path(path) == path


def test_forcing_a_gemm_path_the_cpu_cannot_run_says_why(monkeypatch):
    from memexp.kernels import hyperlstm_cpp

    if not _cpp_built():
        pytest.skip("no C++ compiler: no GEMM path to force")
    monkeypatch.setattr(hyperlstm_cpp._load_cpp_ext(), "hyperlstm_has_avx512", lambda: False)  # as on an AVX2 CPU
    assert "avx512" not in hyperlstm_cpp.available_gemm_paths()
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    assert hyperlstm_cpp.gemm_path() == "avx2"
    cell = HyperLSTMCell(4, 6, hyper_num_units=4, hyper_embedding_size=2, step_impl="cpp_avx512")
    with pytest.raises(RuntimeError, match="'avx512' cannot run here: the C\\+\\+ build does not target AVX-512"):
        cell(torch.randn(2, 3, 4))


def test_cpp_falls_back_to_torchscript_with_one_warning(monkeypatch):
    from memexp.kernels import hyperlstm_cpp as hyperlstm

    def no_compiler(*args, **kwargs):
        raise RuntimeError("g++ not found")

    monkeypatch.setattr(hyperlstm, "_cpp_ext", None)
    monkeypatch.setattr(torch.utils.cpp_extension, "load_inline", no_compiler)
    torch.manual_seed(0)
    m = HyperLSTM(9, embedding_size=4, hidden_size=6, hyper_num_units=4, hyper_embedding_size=2, step_impl="cpp")
    ref = HyperLSTM(9, embedding_size=4, hidden_size=6, hyper_num_units=4, hyper_embedding_size=2, step_impl="fused_script")
    ref.load_state_dict(m.state_dict())
    idx = torch.randint(0, 9, (2, 5))
    with pytest.warns(RuntimeWarning, match="could not be built"):
        out, _ = m(idx)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # only once
        out2, _ = m(idx)
    torch.testing.assert_close(out, ref(idx)[0])
    torch.testing.assert_close(out2, out)


def test_cpp_is_not_used_off_cpu_or_for_other_dtypes():
    cell = HyperLSTMCell(4, 6, hyper_num_units=4, hyper_embedding_size=2)
    assert not cell._uses_cpp(torch.empty(1, device="meta"))
    assert not cell._uses_cpp(torch.empty(1, dtype=torch.bfloat16))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_gpu_runs_the_fused_path_and_matches_cpu():
    torch.manual_seed(0)
    m = HyperLSTM(9, embedding_size=4, hidden_size=6, hyper_num_units=4, hyper_embedding_size=2).double()
    _perturb(m, scale=0.1)
    idx = torch.randint(0, 9, (2, 5))
    out_cpu, _ = m(idx)
    out_cpu.sum().backward()
    g_cpu = [p.grad.clone() for p in m.parameters()]
    m.zero_grad()
    m.cuda()
    out_gpu, _ = m(idx.cuda())
    out_gpu.sum().backward()
    torch.testing.assert_close(out_gpu.cpu(), out_cpu)
    for p, g in zip(m.parameters(), g_cpu):
        torch.testing.assert_close(p.grad.cpu(), g)
