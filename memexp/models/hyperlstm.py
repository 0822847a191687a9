"""HyperLSTM (Ha, Dai, Le 2016): a small LSTM generates the weight scalings of the main LSTM.

Shape legend: B batch, T time (tokens in this call), I input width of a layer,
H main hidden units (`hidden_size`), N hyper units (`hyper_num_units`),
Z hyper embedding (`hyper_embedding_size`), V vocabulary, G = 4 gates (i, j, f, o).

One step of a layer (paper eq. 11-12, with the reference initialisation of
hardmaru/supercell):

    hyper:  (ĥ, ĉ) = LN-LSTM_N([x; h], (ĥ, ĉ))                    reads the main state
    for each gate y in (i, j, f, o):
        z_x = Wzx ĥ + bzx     z_h = Wzh ĥ + bzh     z_b = Wzb ĥ     (N -> Z)
        d_x = Wdx z_x         d_h = Wdh z_h         β   = Wdb z_b    (Z -> H)
        y   = LN_y(d_x ⊙ W_x x + d_h ⊙ W_h h + β + b)
    c' = σ(f + forget_bias) c + σ(i) dropout(tanh(j));   h' = σ(o) tanh(LN_c(c'))

Initial values: Wzx = Wzh = 0 with bias 1 and Wdx = Wdh = 0.1/Z, so every scaling d
starts at exactly 0.1 (Cooijmans' recurrent-norm init); Wzb ~ N(0, 0.01), Wdb = 0 and
b = 0, so the additive term starts at 0; W_h orthogonal per gate; W_x Glorot uniform.
The hyper cell is a layer-normed LSTM (plain when `use_layer_norm=False`) without
recurrent dropout, as in the reference.

Why the code looks the way it does: the time loop is sequential, so its cost is the
number of small ops per step, not FLOPs. Everything that does not depend on the
previous step is hoisted out of the loop: the input projections of the whole sequence
(main W_x x and the x-half of the hyper input) are one matmul; the main recurrent matmul
and the h-half of the hyper input are one (H, 4H + 4N) matmul; the 12 z-projections are
one (N, 12Z) matmul; the 12 d-projections are one batched matmul over a (12, Z, H)
stack; biases and the forget bias are folded into the LayerNorm shifts. The loops
themselves live in `memexp.kernels` (this file only prepares their inputs). The fused
step_impls run the loop without autograd and differentiate it by hand: the backward loop
carries only the gradients through time and the weight gradients of all T steps are a few
large matmuls. The default on CPU ("auto" -> "cpp", `memexp.kernels.hyperlstm_cpp._CppScan`)
runs both loops in C++ (memexp/kernels/hyperlstm_ext.cpp, built at first use): per step
every matmul goes through the GEMM path chosen for the CPU (`memexp.kernels.hyperlstm_cpp.gemm_path`:
packed-panel AVX-512 kernels where torch runs AVX-512, the register-blocked AVX2 small-batch GEMM
elsewhere, at::mm when forced with "cpp_blas") and one hand-written loop over (B, units) does
everything element-wise (~1.7x faster than TorchScript in experiments/bench_hyperlstm.py on AVX2). Where it does not apply (no
compiler: one warning; GPU; other dtypes) "fused_script" runs: the same BPTT
(`memexp.kernels.hyperlstm_scan._FusedScan`) as TorchScript loops (deprecated, but the
cheapest op dispatch; Python if unavailable). torch.compile of the per-step bodies was
measured and gave no gain worth its ~50 s compile on CPU, so it is not offered. "python"
is the plain autograd loop (reference, `memexp.kernels.hyperlstm_scan._scan`).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from memexp.errors import ConfigError, require_positive_ints
from memexp.kernels.hyperlstm_cpp import _CppScan, _load_cpp_ext, gemm_path
from memexp.kernels.hyperlstm_fused import GATES, PARTS, LayerState, ScanResult
from memexp.kernels.hyperlstm_scan import _fused_scan, _fused_scripted_scan, _scan
from memexp.models.autocast import autocast_off, cast_state
from memexp.models.renamed import renamed_argument

STEP_IMPLS = ("auto", "cpp", "cpp_avx512", "cpp_avx2", "cpp_blas", "fused_script", "fused", "python")
CPP_IMPLS = ("auto", "cpp", "cpp_avx512", "cpp_avx2", "cpp_blas")  # the C++ loops; "cpp_<path>" forces a GEMM path


def _orthogonal_per_gate_(w: Tensor) -> None:
    """w (rows, G*units): an independent orthogonal block for each gate (the reference's init)."""
    for block in w.chunk(GATES, dim=1):
        nn.init.orthogonal_(block)


class HyperLSTMCell(nn.Module):
    """One HyperLSTM layer: a main LSTM of `hidden_size` whose gate terms are scaled by a hyper LSTM.

    Args:
        input_size: width I of the input at each step.
        hidden_size: main LSTM units H.
        hyper_num_units: hyper LSTM units N.
        hyper_embedding_size: width Z of the hyper embeddings z.
        use_layer_norm: layer-normalise every gate and the cell (main and hyper LSTM).
        use_recurrent_dropout: dropout on the main candidate tanh(j) (Semeniuta et al.), training only.
        dropout_keep_prob: keep probability of the recurrent dropout.
        forget_bias: added to the forget gate before its sigmoid.
        step_impl: how the per-step loop runs: "auto" (= "cpp" where it applies), "cpp" (hand-written BPTT,
            loops in C++ built at first use; CPU float32/float64 only, else falls back to "fused_script"; its
            per-step GEMMs take the path for this CPU, `memexp.kernels.hyperlstm_cpp.gemm_path`),
            "cpp_avx512" / "cpp_avx2" / "cpp_blas" ("cpp" with that GEMM path forced, for tests and benchmarks;
            an error where the CPU cannot run it), "fused_script" (the same BPTT, loops in TorchScript),
            "fused" (loops in Python) or "python" (plain autograd).
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        hyper_num_units: int = 128,
        hyper_embedding_size: int = 16,
        use_layer_norm: bool = True,
        use_recurrent_dropout: bool = False,
        dropout_keep_prob: float = 0.9,
        forget_bias: float = 1.0,
        step_impl: str = "auto",
    ) -> None:
        super().__init__()
        I, H, N, Z = input_size, hidden_size, hyper_num_units, hyper_embedding_size
        self.input_size, self.hidden_size, self.hyper_num_units, self.hyper_embedding_size = I, H, N, Z
        self.use_layer_norm = use_layer_norm
        self.use_recurrent_dropout = use_recurrent_dropout
        self.dropout_keep_prob = dropout_keep_prob
        self.forget_bias = forget_bias
        self.step_impl = step_impl

        # main LSTM
        self.weight_x = nn.Parameter(torch.empty(I, GATES * H))  # W_x, gate blocks i|j|f|o
        self.weight_h = nn.Parameter(torch.empty(H, GATES * H))  # W_h
        self.bias = nn.Parameter(torch.zeros(GATES * H))  # b (b0 of eq. 12)
        # hyper LSTM, input [x; h]
        self.hyper_weight_x = nn.Parameter(torch.empty(I + H, GATES * N))
        self.hyper_weight_h = nn.Parameter(torch.empty(N, GATES * N))
        # hyper -> z, column blocks (part, gate) in the order x_i x_j x_f x_o h_i .. h_o b_i .. b_o
        self.z_weight = nn.Parameter(torch.empty(N, PARTS * GATES * Z))
        self.z_bias = nn.Parameter(torch.ones(2 * GATES * Z))  # z_x and z_h only; z_b has no bias
        # z -> d (x, h parts: scalings) and z -> β (b part: additive term), one (Z, H) block each
        self.d_weight = nn.Parameter(torch.empty(PARTS * GATES, Z, H))
        if use_layer_norm:
            self.ln_gates_weight = nn.Parameter(torch.ones(GATES, H))
            self.ln_gates_bias = nn.Parameter(torch.zeros(GATES, H))
            self.ln_cell_weight = nn.Parameter(torch.ones(H))
            self.ln_cell_bias = nn.Parameter(torch.zeros(H))
            self.hyper_ln_gates_weight = nn.Parameter(torch.ones(GATES, N))
            self.hyper_ln_gates_bias = nn.Parameter(torch.zeros(GATES, N))
            self.hyper_ln_cell_weight = nn.Parameter(torch.ones(N))
            self.hyper_ln_cell_bias = nn.Parameter(torch.zeros(N))
        else:  # the reference's plain hyper LSTM has a bias; with LN the LN shift plays that role
            self.hyper_bias = nn.Parameter(torch.zeros(GATES * N))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        Z = self.hyper_embedding_size
        nn.init.xavier_uniform_(self.weight_x)
        _orthogonal_per_gate_(self.weight_h)
        self.bias.zero_()
        nn.init.xavier_uniform_(self.hyper_weight_x)
        _orthogonal_per_gate_(self.hyper_weight_h)
        self.z_weight.zero_()  # z_x, z_h: W = 0, bias 1 -> z = 1
        nn.init.normal_(self.z_weight[:, 2 * GATES * Z :], std=0.01)  # z_b ~ N(0, 0.01)
        self.z_bias.fill_(1.0)
        self.d_weight[: 2 * GATES].fill_(0.1 / Z)  # d = 0.1 at start
        self.d_weight[2 * GATES :].zero_()  # additive term starts at 0
        for name, p in self.named_parameters():
            if name.endswith("ln_gates_weight") or name.endswith("ln_cell_weight"):
                p.fill_(1.0)
            elif name.endswith("ln_gates_bias") or name.endswith("ln_cell_bias") or name == "hyper_bias":
                p.zero_()

    def zero_state(self, batch_size: int, device: torch.device | None = None, dtype: torch.dtype | None = None) -> LayerState:
        H, N = self.hidden_size, self.hyper_num_units
        dtype = dtype or self.weight_x.dtype
        device = device or self.weight_x.device
        return tuple(torch.zeros(batch_size, n, device=device, dtype=dtype) for n in (H, H, N, N))

    def _forget_shift(self, units: int) -> Tensor:
        """(G, units): forget_bias on the f gate, zero elsewhere."""
        s = torch.zeros(GATES, units, device=self.weight_x.device, dtype=self.weight_x.dtype)
        s[2] = self.forget_bias
        return s

    def forward(self, x: Tensor, state: LayerState | None = None) -> tuple[Tensor, LayerState]:
        """x (B, T, I) -> hidden states (B, T, H) and the final state (h, c, hyper_h, hyper_c).

        Under autocast (bf16-mixed) the layer runs in its parameters' dtype (float32) with autocast off: the C++
        loops have no bf16 path, and the state would lose its low bits over T steps (memexp.models.autocast)."""
        with autocast_off(x) as cast:
            if cast:
                x, state = x.to(self.weight_x.dtype), cast_state(state, self.weight_x.dtype)
            return self._layer(x, state)

    def _layer(self, x: Tensor, state: LayerState | None) -> tuple[Tensor, LayerState]:
        B, T, I = x.shape
        H, N = self.hidden_size, self.hyper_num_units
        if state is None:
            state = self.zero_state(B, x.device, x.dtype)
        h, c, hh, hc = state
        ln = self.use_layer_norm

        # Input terms of the whole sequence in one matmul: [W_x x | x-half of the hyper input (+ bias)].
        w_in = torch.cat([self.weight_x, self.hyper_weight_x[:I]], dim=1)  # (I, G*H + G*N)
        hyper_in_bias = torch.zeros(GATES * N, device=x.device, dtype=x.dtype) if ln else self.hyper_bias
        if not ln:  # without LN the forget bias rides along with the input term
            hyper_in_bias = hyper_in_bias + self._forget_shift(N).flatten()
        b_in = torch.cat([torch.zeros(GATES * H, device=x.device, dtype=x.dtype), hyper_in_bias])
        x_tb = x.transpose(0, 1).reshape(T * B, I)  # time-major
        # with LN b_in is zero: mm skips addmm's copy of the broadcast bias into the (T*B, G*H + G*N) result
        xin = (torch.mm(x_tb, w_in) if ln else torch.addmm(b_in, x_tb, w_in)).view(T, B, -1)

        w_h = torch.cat([self.weight_h, self.hyper_weight_x[I:]], dim=1)  # (H, G*H + G*N)
        b_z = torch.cat([self.z_bias, self.z_bias.new_zeros(GATES * self.hyper_embedding_size)])
        b_d = torch.cat([self.bias.new_zeros(2 * GATES, 1, H), self.bias.view(GATES, 1, H)])  # (P*G, 1, H)
        if ln:
            gamma = self.ln_gates_weight.unsqueeze(1)  # (G, 1, H)
            shift = (self.ln_gates_bias + self._forget_shift(H)).unsqueeze(1)
            hyper_gamma, hyper_shift = self.hyper_ln_gates_weight, self.hyper_ln_gates_bias + self._forget_shift(N)
            ln_c = (self.ln_cell_weight, self.ln_cell_bias, self.hyper_ln_cell_weight, self.hyper_ln_cell_bias)
        else:
            gamma, shift = None, self._forget_shift(H).unsqueeze(1)
            hyper_gamma, hyper_shift = None, torch.zeros_like(self._forget_shift(N))
            ln_c = (None, None, None, None)

        mask = None
        if self.use_recurrent_dropout and self.training and self.dropout_keep_prob < 1.0:
            keep = self.dropout_keep_prob
            mask = torch.bernoulli(torch.full((T, B, H), keep, device=x.device, dtype=x.dtype)) / keep

        weights = (
            w_h,
            self.hyper_weight_h,
            self.z_weight,
            b_z,
            self.d_weight,
            b_d,
            gamma,
            shift,
            ln_c[0],
            ln_c[1],
            hyper_gamma,
            hyper_shift,
            ln_c[2],
            ln_c[3],
        )
        if self._uses_cpp(x):
            path = gemm_path(self.step_impl[4:] if self.step_impl.startswith("cpp_") else "auto")
            hs, h, c, hh, hc = _CppScan.apply(path, xin, mask, h, c, hh, hc, *weights)
        else:
            xm = xin[..., : GATES * H].reshape(T, B, GATES, H).transpose(1, 2).contiguous()  # (T, G, B, H)
            xy = xin[..., GATES * H :]  # (T, B, G*N)
            hs, h, c, hh, hc = self._scan_fn()(xm, xy, mask, h, c, hh, hc, *weights)
        return hs.transpose(0, 1), (h, c, hh, hc)

    def _uses_cpp(self, x: Tensor) -> bool:
        """C++ loops for "cpp"/"cpp_*"/"auto" on CPU float32/float64, when they build; else the TorchScript loops."""
        return (
            self.step_impl in CPP_IMPLS
            and x.device.type == "cpu"
            and x.dtype in (torch.float32, torch.float64)
            and _load_cpp_ext() is not None
        )

    def _scan_fn(self) -> Callable[..., ScanResult]:
        if self.step_impl == "fused":
            return _fused_scan
        if self.step_impl == "python":
            return _scan
        return _fused_scripted_scan  # "fused_script", and "auto"/"cpp*" where the C++ loops do not apply


class HyperLSTM(nn.Module):
    """Character/byte-level causal LM: embedding -> stacked HyperLSTM layers -> Linear head.

    Args:
        vocab_size: tokens in the vocabulary (set from the data).
        embedding_size: width of the token embedding fed to the first layer.
        hidden_size: main LSTM units per layer.
        depth: stacked HyperLSTM layers, each with its own hyper LSTM (the suite's name for layers in every model).
        hyper_num_units: units of each hyper LSTM (paper: 128 on PTB, 256 on enwik8).
        hyper_embedding_size: width of the hyper embeddings z (paper: 4, or 16 "large embedding").
        use_layer_norm: layer norm on gates and cells of main and hyper LSTMs.
        use_recurrent_dropout: dropout on the candidate tanh(j) of the main LSTMs, training only.
        dropout_keep_prob: keep probability of that recurrent dropout (the paper's convention).
        dropout: dropout probability on the outputs of every layer but the last.
        forget_bias: added to the forget gates before their sigmoid.
        step_impl: per-step loop: "auto" (default: "cpp" on CPU when the C++ loops build, else
            "fused_script"), "cpp" (hand-written BPTT in C++; GEMM path by CPU capability), "cpp_avx512" /
            "cpp_avx2" / "cpp_blas" (a GEMM path forced), "fused_script" (the same in TorchScript),
            "fused" (in Python) or "python" (plain autograd).
        num_layers: deprecated name of `depth` (accepted, with a warning, until memexp 0.3).
    """

    task_kind = "causal_lm"
    carries_state = True  # the recurrent state may be carried across training windows (TBPTT)
    max_len = None  # unbounded context

    def __init__(
        self,
        vocab_size: int,
        embedding_size: int = 64,
        hidden_size: int = 352,
        depth: int = 1,
        hyper_num_units: int = 128,
        hyper_embedding_size: int = 16,
        use_layer_norm: bool = True,
        use_recurrent_dropout: bool = False,
        dropout_keep_prob: float = 0.9,
        dropout: float = 0.0,
        forget_bias: float = 1.0,
        step_impl: str = "auto",
        num_layers: int | None = None,
    ) -> None:
        super().__init__()
        depth, depth_key = renamed_argument("num_layers", num_layers, "depth", depth)
        require_positive_ints(
            "model",
            {
                "vocab_size": vocab_size,
                "embedding_size": embedding_size,
                "hidden_size": hidden_size,
                depth_key: depth,
                "hyper_num_units": hyper_num_units,
                "hyper_embedding_size": hyper_embedding_size,
            },
        )
        if not 0.0 < dropout_keep_prob <= 1.0:
            raise ConfigError(
                f"model.dropout_keep_prob={dropout_keep_prob} must be in (0, 1]: it is the probability "
                f"of KEEPING a unit (0.9 drops 10%)"
            )
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"model.dropout={dropout} must be in [0, 1): it is the probability of dropping a unit")
        if not math.isfinite(forget_bias):
            raise ConfigError(f"model.forget_bias={forget_bias} must be a finite number (the reference uses 1.0)")
        if step_impl not in STEP_IMPLS:
            raise ConfigError(f"model.step_impl={step_impl!r} must be one of {', '.join(map(repr, STEP_IMPLS))}")
        self.embedding = nn.Embedding(vocab_size, embedding_size)
        self.layers = nn.ModuleList(
            HyperLSTMCell(
                embedding_size if i == 0 else hidden_size,
                hidden_size,
                hyper_num_units=hyper_num_units,
                hyper_embedding_size=hyper_embedding_size,
                use_layer_norm=use_layer_norm,
                use_recurrent_dropout=use_recurrent_dropout,
                dropout_keep_prob=dropout_keep_prob,
                forget_bias=forget_bias,
                step_impl=step_impl,
            )
            for i in range(depth)
        )
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(hidden_size, vocab_size)

    def forward(self, idx: Tensor, state: tuple[LayerState, ...] | None = None) -> tuple[Tensor, tuple[LayerState, ...]]:
        """idx (B, T) long -> logits (B, T, V) and the state after these T tokens (one 4-tuple per layer)."""
        x, new_state = self.features(idx, state)
        return self.readout(x), new_state  # (B, T, V)

    def readout(self, x: Tensor) -> Tensor:
        """x (..., H) from `features` -> logits (..., V)."""
        return self.head(x)

    def features(self, idx: Tensor, state: tuple[LayerState, ...] | None = None) -> tuple[Tensor, tuple[LayerState, ...]]:
        """idx (B, T) long -> the last layer's output (B, T, H) and the state after these T tokens."""
        x = self.embedding(idx)  # (B, T, E)
        new_state = []
        for i, layer in enumerate(self.layers):
            if i > 0:
                x = self.drop(x)  # between layers only
            x, s = layer(x, None if state is None else state[i])  # (B, T, H)
            new_state.append(s)
        return x, tuple(new_state)
