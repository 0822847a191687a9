"""HGD-MemNet: hierarchical gated dynamic memory for multi-turn dialogue (context -> reply).

Shape legend: B batch, Lc context tokens, Lr reply tokens, E embedding width,
H hidden width (`hidden_dim`), S static width (`static_dim`), V vocabulary, T thinking steps.

    context --embed--> encoder (bi-GRU or transformer) --> enc (B, Lc, H)
    static head:   masked attention pooling of enc           --> s (B, S)      global context
    dynamic group: h_t = GRUCell([attend(h_{t-1}, enc); s; step_t], h_{t-1})  short-term memory
    gate:          halting logit per step; ACT (Graves 2016) cumulative halting with
                   min_think <= steps <= max_think; h* = halting-weighted mix of the h_t
    decoder:       GRU over SOS reply[:-1] (input [emb; s], initial state from [h*; s]),
                   masked attention over enc per position --> logits (B, Lr, V)

What differs from the public original (raw-poplar/HGD-MemNet, see seed-origins.md 1.1-1.6):
attention masks padding (the original attended over pads); the gate emits a logit and the
halting probability is one sigmoid of it (the original rebuilt a logit as log(p/(1-p)) from
a sigmoid output, which went inf/NaN when the gate saturated); the reply is decoded token by
token with one distribution per position (the original scored one (B, V) distribution against
every reply token, so it learnt a bag of words); the history is encoded once per forward,
not once per thinking step; gradients flow through all thinking steps.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from memexp.errors import ConfigError
from memexp.models.autocast import at_least_float32, run_recurrent
from memexp.models.sampling import Sampling, sample_next


def masked_softmax(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Softmax over the last dim where mask is True; rows with no True give all zeros (not NaN)."""
    scores = at_least_float32(scores)  # float32 under autocast (memexp.models.autocast)
    scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    return F.softmax(scores, dim=-1) * mask


class MaskedAttention(nn.Module):
    """Scaled dot-product attention of one or many queries over the encoded history."""

    def __init__(self, query_dim: int, key_dim: int, attn_dim: int):
        super().__init__()
        self.q = nn.Linear(query_dim, attn_dim, bias=False)
        self.k = nn.Linear(key_dim, attn_dim, bias=False)
        self.scale = 1.0 / math.sqrt(attn_dim)

    def keys(self, enc: torch.Tensor) -> torch.Tensor:
        return self.k(enc)  # (B, Lc, A), computed once per forward

    def forward(self, query: torch.Tensor, keys: torch.Tensor, enc: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """query (B, H) or (B, T, H) -> context (B, H) or (B, T, H)."""
        single = query.dim() == 2
        q = self.q(query.unsqueeze(1) if single else query)  # (B, T, A)
        scores = q @ keys.transpose(1, 2) * self.scale  # (B, T, Lc)
        weights = masked_softmax(scores, mask[:, None, :])
        ctx = weights @ enc  # (B, T, H)
        return ctx.squeeze(1) if single else ctx


class HistoryEncoder(nn.Module):
    """Bi-GRU (H/2 per direction, padding packed away) or a pre-LN transformer encoder."""

    def __init__(
        self, kind: str, embedding_dim: int, hidden_dim: int, layers: int, heads: int, max_positions: int, dropout: float
    ):
        super().__init__()
        self.kind = kind
        if kind == "gru":
            self.rnn = nn.GRU(
                embedding_dim,
                hidden_dim // 2,
                num_layers=layers,
                batch_first=True,
                bidirectional=True,
                dropout=dropout if layers > 1 else 0.0,
            )
        else:
            self.max_positions = max_positions
            self.inp = nn.Linear(embedding_dim, hidden_dim)
            self.pos = nn.Embedding(max_positions, hidden_dim)
            layer = nn.TransformerEncoderLayer(hidden_dim, heads, 4 * hidden_dim, dropout, batch_first=True, norm_first=True)
            self.tf = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
            self.norm = nn.LayerNorm(hidden_dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x (B, Lc, E), mask (B, Lc) -> (B, Lc, H); padded positions are zero."""
        Lc = x.shape[1]
        if self.kind == "gru":
            lengths = mask.sum(1).clamp(min=1).cpu()
            packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
            out, _ = run_recurrent(self.rnn, packed)  # float32 under autocast (memexp.models.autocast)
            out, _ = pad_packed_sequence(out, batch_first=True, total_length=Lc)
            return out * mask[..., None]
        if Lc > self.max_positions:
            raise ConfigError(
                f"context of {Lc} tokens exceeds model.max_context_len={self.max_positions}; raise it or cut contexts shorter (data.max_context_len)"
            )
        h = self.inp(x) + self.pos(torch.arange(Lc, device=x.device))
        h = self.norm(self.tf(h, src_key_padding_mask=~mask))
        return h * mask[..., None]


class HGDMemNet(nn.Module):
    """HGD-MemNet for (dialogue history -> reply).

    Args:
        vocab_size: tokens in the vocabulary (set from the data).
        pad_id: padding id (its embedding stays zero; padded history is masked everywhere).
        embedding_dim: token embedding width E (tied with the output layer).
        hidden_dim: encoder output, dynamic state and decoder width H.
        static_dim: width S of the static head's global context.
        min_think: thinking steps always taken before the gate may halt.
        max_think: thinking steps at most (the gate is forced to halt there).
        halt_threshold: halt once the summed halting probabilities reach it (ACT's 1 - eps).
        ponder_cost: weight of the ponder loss (mean of N + R, the ACT step count).
        dropout: dropout on embeddings and the decoder's output features.
        encoder: "gru" (bidirectional) or "transformer".
        encoder_layers: layers of the history encoder.
        heads: attention heads of the transformer encoder.
        max_context_len: longest history the transformer encoder takes (learned positions).
    """

    task_kind = "dialogue"
    carries_state = False

    def __init__(
        self,
        vocab_size: int,
        pad_id: int = 0,
        embedding_dim: int = 128,
        hidden_dim: int = 256,
        static_dim: int = 128,
        min_think: int = 1,
        max_think: int = 8,
        halt_threshold: float = 0.99,
        ponder_cost: float = 0.01,
        dropout: float = 0.1,
        encoder: str = "gru",
        encoder_layers: int = 1,
        heads: int = 4,
        max_context_len: int = 512,
    ):
        super().__init__()
        for field, value in (
            ("vocab_size", vocab_size),
            ("embedding_dim", embedding_dim),
            ("hidden_dim", hidden_dim),
            ("static_dim", static_dim),
            ("encoder_layers", encoder_layers),
        ):
            if value < 1:
                raise ConfigError(f"model.{field}={value} must be a positive integer")
        if not 0 <= pad_id < vocab_size:
            raise ConfigError(f"model.pad_id={pad_id} must be a token id below vocab_size={vocab_size}")
        if not 1 <= min_think <= max_think:
            raise ConfigError(
                f"model.min_think={min_think} and model.max_think={max_think} must satisfy 1 <= min_think <= max_think"
            )
        if not 0.0 < halt_threshold <= 1.0:
            raise ConfigError(
                f"model.halt_threshold={halt_threshold} must be in (0, 1] (ACT halts when the summed halting probability reaches it)"
            )
        if ponder_cost < 0:
            raise ConfigError(f"model.ponder_cost={ponder_cost} must be >= 0")
        if encoder not in ("gru", "transformer"):
            raise ConfigError(f"model.encoder={encoder!r}: expected 'gru' or 'transformer'")
        if encoder == "gru" and hidden_dim % 2:
            raise ConfigError(f"model.hidden_dim={hidden_dim} must be even with encoder=gru (half per direction)")
        if encoder == "transformer" and hidden_dim % heads:
            raise ConfigError(f"model.hidden_dim={hidden_dim} must be divisible by model.heads={heads}")
        self.vocab_size, self.pad_id = vocab_size, pad_id
        self.min_think, self.max_think = min_think, max_think
        self.halt_threshold, self.ponder_cost = halt_threshold, ponder_cost
        H, S, E = hidden_dim, static_dim, embedding_dim

        self.embed = nn.Embedding(vocab_size, E, padding_idx=pad_id)
        self.drop = nn.Dropout(dropout)
        self.encoder = HistoryEncoder(encoder, E, H, encoder_layers, heads, max_context_len, dropout)
        # static head: attention pooling over the whole history
        self.static_score = nn.Sequential(nn.Linear(H, H), nn.Tanh(), nn.Linear(H, 1))
        self.static_proj = nn.Linear(H, S)
        # dynamic group and its gate
        self.h0 = nn.Linear(S, H)
        self.step_emb = nn.Embedding(max_think, H)
        self.think_attn = MaskedAttention(H, H, H)
        self.cell = nn.GRUCell(H + S + H, H)
        self.gate = nn.Sequential(nn.Linear(2 * H + S, H), nn.Tanh(), nn.Linear(H, 1))  # -> halting logit
        # decoder
        self.dec_init = nn.Linear(H + S, H)
        self.dec_rnn = nn.GRU(E + S, H, batch_first=True)
        self.dec_attn = MaskedAttention(H, H, H)
        self.out_feat = nn.Linear(3 * H + S, E)
        self.out_bias = nn.Parameter(torch.zeros(vocab_size))

    # -- pieces

    def encode(self, context: torch.Tensor, context_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """-> enc (B, Lc, H), static context s (B, S)."""
        mask = context_mask.bool()
        enc = self.encoder(self.drop(self.embed(context)), mask)  # (B, Lc, H)
        pool = masked_softmax(self.static_score(enc).squeeze(-1), mask)  # (B, Lc)
        s = torch.tanh(self.static_proj((pool[..., None] * enc).sum(1)))  # (B, S)
        return enc, s

    def think(self, enc: torch.Tensor, mask: torch.Tensor, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """ACT over the dynamic state -> h* (B, H), steps N (B,) float, ponder N + R (B,)."""
        B = enc.shape[0]
        keys = self.think_attn.keys(enc)
        h = at_least_float32(torch.tanh(self.h0(s)))  # (B, H); the halting sums below in float32 under autocast
        h_star = torch.zeros_like(h)
        cum = h.new_zeros(B)  # halting probability spent on the steps so far
        running = torch.ones(B, dtype=torch.bool, device=h.device)
        steps = h.new_zeros(B)
        remainder = h.new_zeros(B)
        for t in range(1, self.max_think + 1):
            ctx = self.think_attn(h, keys, enc, mask)  # (B, H)
            step = self.step_emb.weight[t - 1].expand(B, -1)
            h = run_recurrent(self.cell, torch.cat([ctx, s, step], dim=-1), h)  # (B, H)
            logit = at_least_float32(self.gate(torch.cat([h, ctx, s], dim=-1)).squeeze(-1))  # (B,)
            # One sigmoid of a logit: exact 0 / 1 at saturation, never a log of it, so no NaN.
            p = torch.sigmoid(logit) if t >= self.min_think else torch.zeros_like(logit)
            if t == self.max_think:
                halt = running
            else:
                halt = running & (cum + p >= self.halt_threshold)
            # Rows halting now take the remainder R = 1 - sum of earlier p; rows going on take p.
            weight = torch.where(halt, 1.0 - cum, torch.where(running, p, torch.zeros_like(p)))
            h_star = h_star + weight[:, None] * h
            remainder = torch.where(halt, 1.0 - cum, remainder)
            steps = torch.where(halt, torch.full_like(steps, float(t)), steps)
            cum = cum + torch.where(running & ~halt, p, torch.zeros_like(p))
            running = running & ~halt
            if not bool(running.any()):
                break
        return h_star, steps, steps + remainder

    def _decoder_state(self, h_star: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.dec_init(torch.cat([h_star, s], dim=-1))).unsqueeze(0)  # (1, B, H)

    def _logits(
        self, out: torch.Tensor, keys: torch.Tensor, enc: torch.Tensor, mask: torch.Tensor, h_star: torch.Tensor, s: torch.Tensor
    ) -> torch.Tensor:
        """Decoder states out (B, T, H) -> logits (B, T, V).

        keys (B, Lc, A) from `dec_attn.keys(enc)`, enc (B, Lc, H), mask (B, Lc) bool, h_star (B, H), s (B, S).
        """
        T = out.shape[1]
        ctx = self.dec_attn(out, keys, enc, mask)  # (B, T, H)
        cond = torch.cat([h_star, s], dim=-1)[:, None, :].expand(-1, T, -1)  # (B, T, H+S)
        feat = self.drop(torch.tanh(self.out_feat(torch.cat([out, ctx, cond], dim=-1))))  # (B, T, E)
        return F.linear(feat, self.embed.weight, self.out_bias)  # tied output layer

    # -- API

    def forward(self, context: torch.Tensor, context_mask: torch.Tensor, reply_in: torch.Tensor) -> dict[str, torch.Tensor]:
        """Teacher-forced: context (B, Lc), context_mask (B, Lc), reply_in (B, Lr) = SOS reply[:-1].

        Returns logits (B, Lr, V) (position j predicts reply_out[:, j]), ponder_loss (scalar,
        already weighted by ponder_cost) and think_steps (B,) float.
        """
        mask = context_mask.bool()
        enc, s = self.encode(context, mask)
        h_star, steps, ponder = self.think(enc, mask, s)
        Lr = reply_in.shape[1]
        inp = torch.cat([self.drop(self.embed(reply_in)), s[:, None, :].expand(-1, Lr, -1)], dim=-1)  # (B, Lr, E+S)
        out, _ = run_recurrent(self.dec_rnn, inp, self._decoder_state(h_star, s))  # (B, Lr, H)
        logits = self._logits(out, self.dec_attn.keys(enc), enc, mask, h_star, s)
        return {"logits": logits, "ponder_loss": self.ponder_cost * ponder.mean(), "think_steps": steps}

    @torch.no_grad()
    def generate(
        self,
        context: torch.Tensor,
        context_mask: torch.Tensor,
        max_len: int,
        sos_id: int,
        eos_id: int,
        sampling: Sampling = Sampling(),
        min_len: int = 0,
    ) -> torch.Tensor:
        """Replies (B, L), L <= max_len: tokens up to and including EOS, then pad_id; each token chosen as
        `sampling` says (its seed makes one generator for the whole batch).

        Stops when every row has emitted EOS or after max_len tokens; EOS is not chosen
        before `min_len` tokens (e.g. 1: never an empty reply). Call .eval() first
        (dropout is whatever mode the module is in).
        """
        if max_len < 1:
            raise ConfigError(f"max_len={max_len} must be >= 1")
        if not 0 <= min_len <= max_len:
            raise ConfigError(f"min_len={min_len} must be between 0 and max_len={max_len}")
        mask = context_mask.bool()
        enc, s = self.encode(context, mask)
        h_star, _, _ = self.think(enc, mask, s)
        keys = self.dec_attn.keys(enc)
        state = self._decoder_state(h_star, s)
        B = context.shape[0]
        y = torch.full((B,), sos_id, dtype=torch.long, device=context.device)
        done = torch.zeros(B, dtype=torch.bool, device=context.device)
        generator = sampling.generator(context.device)
        out_ids = []
        for t in range(max_len):
            inp = torch.cat([self.embed(y), s], dim=-1)[:, None, :]  # (B, 1, E+S)
            out, state = run_recurrent(self.dec_rnn, inp, state)  # (B, 1, H)
            logits = self._logits(out, keys, enc, mask, h_star, s)[:, 0]  # (B, V)
            if t < min_len:
                logits[:, eos_id] = float("-inf")
            y = sample_next(logits, sampling, generator)
            y = y.masked_fill(done, self.pad_id)
            out_ids.append(y)
            done = done | (y == eos_id)
            if bool(done.all()):
                break
        return torch.stack(out_ids, dim=1)
