"""ExplicitLM: a frozen Qwen3 that reads an explicit, human-readable token memory bank.

Shape legend: B batch, T tokens in this call, D backbone width, K query width (`knowledge_dim`),
R = sqrt(N) keys per half, C candidates (`num_candidates`), N bank entries (`knowledge_num`),
L tokens per entry (`knowledge_length`), V vocabulary.

After each chosen decoder layer of the backbone (a forward hook, so the backbone's state-dict keys
and its own `generate` with the KV cache are untouched), a `MemoryFusion` does, per token:

    u   = RMSNorm(h)                                    (B, T, D)
    q   = W_q u, split in halves q1, q2                 (B, T, K/2) each
    top-C of q1.keys[0] and of q2.keys[1], the C*C sums, top-C kept      -> entry ids (B, T, C)
    mem = mean of the frozen input embeddings of each candidate's non-pad tokens   (B, T, C, D)
    cs  = cos(q, W_m mem) * scale;  w = Gumbel-softmax straight-through (hard at evaluation)
    (entries rewritten at inference, `content_rows`, also join the candidates by that cosine: their keys
    were learned for what the entries held in training)
    sel = sum_c w_c mem_c                               (B, T, D)
    out = h + alpha(sim) * SwiGLU([u; sel])             alpha in [0, 1], one per token

Retrieval is causal: position t reads only h_t, which the backbone computed from tokens <= t (the
original's later version mean-pools the whole sequence and leaks the future). The bank holds token
ids (int32 buffer), never an [N, D] table: candidates are embedded when they are retrieved. The
first floor(N * freeze_ratio) entries are frozen (`freeze_mask`): updaters never write them.

Auxiliary losses (weighted by their coefficients, averaged over memory layers): similarity
(-sum_c w_c cs_c), diversity (probability-weighted cosine between candidates: the original's has no
gradient, its candidates are constants), and a router loss (cross-entropy of both key halves and of
the candidate choice toward a known entry) when the batch names one.
"""

from __future__ import annotations

import hashlib
import math

import torch
import torch.nn.functional as F
from torch import nn

from memexp.errors import CheckpointError, ConfigError
from memexp.models.autocast import at_least_float32
from memexp.models.product_keys import ProductKeys


class MemoryFusion(nn.Module):
    """Retrieve, select and fuse one bank entry into the hidden state of one decoder layer."""

    def __init__(
        self,
        dim: int,
        knowledge_num: int,
        knowledge_dim: int,
        num_candidates: int,
        gumbel_temperature: float,
        fusion_dim: int,
        query_hidden: int = 0,
        eps: float = 1e-6,
    ):
        super().__init__()
        self.norm = nn.RMSNorm(dim, eps=eps)
        self.memory_norm = nn.RMSNorm(dim, eps=eps)  # the selected embedding mean is far smaller than u
        self.keys = ProductKeys(dim, knowledge_num, knowledge_dim, num_candidates, query_hidden)
        self.project = nn.Linear(dim, knowledge_dim, bias=False)  # candidate embedding -> query space
        self.log_scale = nn.Parameter(torch.tensor(math.log(10.0)))  # cosine -> selection logits
        self.gumbel_temperature = gumbel_temperature
        self.gate = nn.Linear(2 * dim, fusion_dim, bias=False)
        self.up = nn.Linear(2 * dim, fusion_dim, bias=False)
        self.down = nn.Linear(fusion_dim, dim, bias=False)
        nn.init.zeros_(self.down.weight)  # starts as the backbone alone
        self.alpha = nn.Sequential(nn.Linear(1, 16), nn.SiLU(), nn.Linear(16, 1))

    def queries(self, u: torch.Tensor) -> torch.Tensor:
        """The states retrieval reads: u itself, one per token (causal)."""
        return u

    def forward(
        self,
        h: torch.Tensor,
        bank: torch.Tensor,
        embedding: torch.Tensor,
        pad_id: int,
        target: torch.Tensor | None = None,
        position: torch.Tensor | None = None,
        content: tuple[torch.Tensor, torch.Tensor, int] | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
        """h (B, T, D) -> (new h, unweighted losses, selected entry ids (B, T)).

        content: (entry ids (M,), their embeddings (M, D), k): entries rewritten since training, whose
        product keys know nothing of their text; the k of them nearest each query by the selection's own
        cosine join the candidates.
        """
        B, T, D = h.shape
        # Under autocast the projections run in bf16, while norms, cosines, the selection's softmax and the residual
        # sum stay float32: a cosine scaled by up to 100 in bf16 (8 bits) moves a logit by ~0.4 and flips selections.
        u = self.norm(at_least_float32(h))
        q = at_least_float32(self.keys.query(self.queries(u)))  # (B, T, K)
        s1, s2 = self.keys.half_scores(q)  # (B, T, R) each
        ids, _ = self.keys.top(s1, s2)  # (B, T, C)
        if content is not None:
            content_ids, content_mem, k = content
            by_content = F.normalize(q, dim=-1) @ F.normalize(at_least_float32(self.project(content_mem)), dim=-1).T  # (B, T, M)
            nearest = by_content.topk(min(k, len(content_ids)), dim=-1).indices  # (B, T, k)
            ids = torch.cat([ids, content_ids[nearest]], -1)  # (B, T, C + k)
        C = ids.shape[-1]
        rows = bank[ids.flatten()]  # (B*T*C, L) token ids
        mem = F.embedding_bag(rows, embedding, mode="mean", padding_idx=pad_id).view(B, T, C, D)  # all-pad entry -> 0
        keys_m = F.normalize(at_least_float32(self.project(mem)), dim=-1)  # (B, T, C, K)
        cs = (F.normalize(q, dim=-1).unsqueeze(-2) * keys_m).sum(-1)  # (B, T, C) cosine
        logits = cs * self.log_scale.clamp(max=math.log(100.0)).exp()
        if self.training:
            w = F.gumbel_softmax(logits, tau=self.gumbel_temperature, hard=True)  # one-hot forward, soft gradient
        else:
            w = F.one_hot(logits.argmax(-1), C).to(logits.dtype)
        sel = (w.unsqueeze(-1) * at_least_float32(mem)).sum(-2)  # (B, T, D)
        sim = (w * cs).sum(-1, keepdim=True)  # (B, T, 1) similarity of the selected entry
        x = torch.cat([u, self.memory_norm(sel)], -1)  # (B, T, 2D)
        fused = self.down(F.silu(self.gate(x)) * self.up(x))
        alpha = torch.sigmoid(self.alpha(sim))  # (B, T, 1) in [0, 1]
        chosen = ids.gather(-1, w.argmax(-1, keepdim=True)).squeeze(-1)  # (B, T)
        losses = {"similarity": -sim.mean()}
        if self.training or target is not None:
            p = logits.softmax(-1)  # (B, T, C)
            gram = keys_m @ keys_m.transpose(-1, -2)  # (B, T, C, C)
            off = 1.0 - torch.eye(C, dtype=gram.dtype, device=h.device)
            losses["diversity"] = (p.unsqueeze(-1) * p.unsqueeze(-2) * gram * off).sum((-1, -2)).mean()
        if target is not None:
            losses["router"] = self.router_loss(s1, s2, ids, logits, target, position)
        self.last_alpha = alpha.detach()
        if not self.training:  # what this layer read, for tools that show retrieval (memexp.memory search)
            self.last_candidates = (ids.detach(), cs.detach())  # (B, T, C') entry ids and their cosines
        return (h + alpha * at_least_float32(fused)).to(h.dtype), losses, chosen

    def router_loss(
        self,
        s1: torch.Tensor,
        s2: torch.Tensor,
        ids: torch.Tensor,
        logits: torch.Tensor,
        target: torch.Tensor,
        position: torch.Tensor,
    ) -> torch.Tensor:
        """Cross-entropy toward the named entry at the named position of each row (target -1: none)."""
        rows = (target >= 0).nonzero().squeeze(-1)
        if rows.numel() == 0:
            return s1.sum() * 0.0
        pos, gold = position[rows], target[rows]
        R = self.keys.R
        loss = F.cross_entropy(s1[rows, pos], gold // R) + F.cross_entropy(s2[rows, pos], gold % R)
        hit = ids[rows, pos] == gold.unsqueeze(-1)  # (n, C) the gold entry among the candidates
        found = hit.any(-1)
        if found.any():
            loss = loss + F.cross_entropy(logits[rows, pos][found], hit[found].float().argmax(-1))
        return loss


class ExplicitLM(nn.Module):
    """A frozen causal LM backbone (a transformers Qwen3ForCausalLM) plus an explicit memory bank.

    Args:
        backbone: the pretrained model; its weights are frozen here and never trained.
        knowledge_num: N bank entries (a perfect square).
        knowledge_length: L token ids per entry.
        knowledge_dim: K, the width of retrieval queries and keys.
        num_candidates: C entries kept by product-key retrieval for the final selection.
        gumbel_temperature: temperature of the straight-through Gumbel-softmax selection (training).
        freeze_ratio: the first floor(N * freeze_ratio) entries are frozen (never written by updaters).
        memory_layers: indices of the decoder layers followed by a memory fusion (None: all).
        fusion_dim: hidden width of each SwiGLU fusion.
        query_hidden: hidden width of the retrieval query network (0: one linear map).
        similarity_loss_coef, diversity_loss_coef, router_loss_coef: weights of the auxiliary losses.
        pad_id: the padding id of bank rows (None: the backbone config's pad id, else 0).
        content_candidates: how many entries rewritten at inference (`content_rows`: dual-path facts,
            edits) join each query's candidates by content. Product keys are learned per entry index, so
            a fact written into an arbitrary entry is otherwise never found (the original's updates were
            unreadable this way); 0 turns this off. No entry is content-addressed until one is rewritten.
    """

    task_kind = "causal_lm"
    carries_state = False
    batch_inputs = ("memory_target", "memory_position")  # batch entries the task passes to forward

    def __init__(
        self,
        backbone: nn.Module,
        knowledge_num: int = 1024,
        knowledge_length: int = 16,
        knowledge_dim: int = 128,
        num_candidates: int = 8,
        gumbel_temperature: float = 1.0,
        freeze_ratio: float = 0.2,
        memory_layers: list[int] | None = None,
        fusion_dim: int = 256,
        query_hidden: int = 256,
        similarity_loss_coef: float = 0.1,
        diversity_loss_coef: float = 0.05,
        router_loss_coef: float = 1.0,
        pad_id: int | None = None,
        content_candidates: int = 4,
    ):
        super().__init__()
        config = backbone.config
        if content_candidates < 0:
            raise ConfigError(f"model.content_candidates={content_candidates}: must be >= 0")
        self.content_candidates = content_candidates
        layers = backbone.model.layers
        if knowledge_length < 1:
            raise ConfigError(f"model.knowledge_length={knowledge_length}: must be >= 1")
        if not 0.0 <= freeze_ratio <= 1.0:
            raise ConfigError(f"model.freeze_ratio={freeze_ratio}: must be in [0, 1]")
        if gumbel_temperature <= 0:
            raise ConfigError(f"model.gumbel_temperature={gumbel_temperature}: must be > 0")
        chosen = list(range(len(layers))) if memory_layers is None else [int(i) for i in memory_layers]
        bad = [i for i in chosen if not 0 <= i < len(layers)]
        if bad or not chosen or len(set(chosen)) != len(chosen):
            raise ConfigError(
                f"model.memory_layers={memory_layers}: expected distinct layer indices in 0..{len(layers) - 1} (None: all)"
            )
        self.backbone = backbone.requires_grad_(False).eval()
        self._fingerprint = None
        self.backbone_fingerprint()  # now, in the weights' own dtype
        self.max_len = config.max_position_embeddings
        self.pad_id = pad_id if pad_id is not None else (config.pad_token_id if config.pad_token_id is not None else 0)
        self.coefs = {"similarity": similarity_loss_coef, "diversity": diversity_loss_coef, "router": router_loss_coef}
        self.register_buffer("memory_bank", torch.full((knowledge_num, knowledge_length), self.pad_id, dtype=torch.int32))
        self.register_buffer("freeze_mask", torch.arange(knowledge_num) < int(knowledge_num * freeze_ratio))
        # entries rewritten at inference, found by content as well as by their keys (`content_candidates`)
        self.register_buffer("content_rows", torch.zeros(knowledge_num, dtype=torch.bool))
        self._content: tuple[torch.Tensor, torch.Tensor, int] | None = None
        self._content_key: tuple | None = None
        dim = config.hidden_size
        self.fusions = nn.ModuleDict(
            {
                str(i): MemoryFusion(
                    dim, knowledge_num, knowledge_dim, num_candidates, gumbel_temperature, fusion_dim, query_hidden
                )
                for i in chosen
            }
        )
        self.memory_enabled = True
        self._target: tuple[torch.Tensor, torch.Tensor] | None = None
        self._losses: list[dict[str, torch.Tensor]] = []
        self.last_selection: dict[int, torch.Tensor] = {}  # layer -> selected entry ids (B, T) of the last call
        self.selection_listener = None  # called with each layer's selected entry ids (B, T), when set
        for i in chosen:
            # The hook finds its ExplicitLM through a plain attribute of the layer (not a registered submodule,
            # not a closure), so a deep copy (EMA weights, averaged models) reads its own copy's memory.
            object.__setattr__(layers[i], "_explicit_memory", (self, i))
            layers[i].register_forward_hook(_memory_hook)
        # Checkpoints keep the memory and the bank, and name the backbone instead of copying it.
        self.register_state_dict_post_hook(_drop_backbone)
        self.register_load_state_dict_pre_hook(_keep_backbone)

    # -- the memory path -------------------------------------------------------------------
    def fuse(self, layer: int, output: torch.Tensor | tuple) -> torch.Tensor | tuple:
        """The memory step after decoder layer `layer` (its output: a tensor, or a tuple led by one)."""
        if not self.memory_enabled:
            return output
        h = output[0] if isinstance(output, tuple) else output
        target, position = self._target if self._target is not None else (None, None)
        embedding = self.backbone.get_input_embeddings().weight
        content = self._content_entries(embedding) if self.content_candidates else None
        new_h, losses, chosen = self.fusions[str(layer)](h, self.memory_bank, embedding, self.pad_id, target, position, content)
        if self.training or target is not None:  # inference (generate's many calls) keeps no losses
            self._losses.append(losses)
        self.last_selection[layer] = chosen
        if self.selection_listener is not None:  # e.g. a bank updater counting how often entries are read
            self.selection_listener(chosen)
        return (new_h, *output[1:]) if isinstance(output, tuple) else new_h

    def _content_entries(self, embedding: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int] | None:
        """The content-addressed entries (ids, embedding means, k), or None when there are none. Cached until
        the bank, the mask or the embeddings change: in-place writes bump a tensor's `_version`, so the cache
        stays right across forwards, the backbone's own generate loop and updater writes alike."""
        key = (self.memory_bank._version, self.content_rows._version, self.content_candidates, embedding.data_ptr())
        if self._content_key != key:
            rows = self.content_rows.nonzero().squeeze(-1)
            mem = F.embedding_bag(self.memory_bank[rows], embedding, mode="mean", padding_idx=self.pad_id)
            self._content = (rows, mem, self.content_candidates) if len(rows) else None
            self._content_key = key
        return self._content

    def forward(
        self,
        idx: torch.Tensor,
        state: object = None,
        memory_target: torch.Tensor | None = None,
        memory_position: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, object]:
        """idx (B, T) -> logits (B, T, V) and the backbone's KV cache (when evaluating or continuing).

        memory_target (B,) entry ids (-1: none) and memory_position (B,) token positions: where the
        router loss pulls retrieval toward a known entry.
        """
        self._losses = []
        self._target = (memory_target, memory_position) if memory_target is not None else None
        use_cache = state is not None or not self.training
        try:
            out = self.backbone(input_ids=idx, cache=state, use_cache=use_cache)
        finally:
            self._target = None
        return out.logits, out.cache if use_cache else None

    def auxiliary_losses(self) -> dict[str, torch.Tensor]:
        """The weighted auxiliary losses of the last forward, averaged over memory layers (train/<name>)."""
        if not self._losses:
            return {}
        names = {k for d in self._losses for k in d}
        mean = {k: torch.stack([d[k] for d in self._losses if k in d]).mean() for k in names}
        return {k: self.coefs[k] * v for k, v in mean.items() if self.coefs.get(k, 0.0)}

    def train(self, mode: bool = True) -> ExplicitLM:
        super().train(mode)
        self.backbone.eval()  # frozen: no dropout, whatever the task's mode
        return self

    # -- the bank ---------------------------------------------------------------------------
    def load_bank(self, tokens: torch.Tensor) -> None:
        """Fill the bank with token ids (n, L), n <= N; rows past n become all pad."""
        N, L = self.memory_bank.shape
        if tokens.dim() != 2 or tokens.shape[1] != L or tokens.shape[0] > N:
            raise ConfigError(
                f"the knowledge cache holds a bank of shape {tuple(tokens.shape)}; model.knowledge_num={N} and "
                f"model.knowledge_length={L} need at most {N} rows of {L} tokens"
            )
        self.memory_bank.fill_(self.pad_id)
        self.memory_bank[: tokens.shape[0]] = tokens.to(torch.int32)
        self.content_rows.zero_()

    def write_entries(
        self, rows: torch.Tensor, tokens: torch.Tensor, allow_frozen: bool = False, by_content: bool = False
    ) -> None:
        """Overwrite bank rows (n,) with token ids (n, L). Frozen rows are refused unless allow_frozen.
        by_content: the rows now hold text their keys were not trained for (inference writes, edits): retrieval
        also finds them by content (`content_candidates`). Episodic training keeps each fact in its own entry."""
        if not allow_frozen and bool(self.freeze_mask[rows].any()):
            frozen = rows[self.freeze_mask[rows]].tolist()[:5]
            raise ValueError(f"bank entries {frozen} are frozen (the first {int(self.freeze_mask.sum())} entries)")
        self.memory_bank[rows] = tokens.to(torch.int32)
        if by_content:
            self.content_rows[rows] = True

    def backbone_fingerprint(self) -> str:
        """A cheap digest of the backbone's weights (shapes and the first 4096 values of each tensor), taken once when
        the model is built: the frozen backbone never changes, and a run may hold it in bf16 (bf16-mixed) later."""
        if self._fingerprint is None:
            self._fingerprint = self._digest_backbone()
        return self._fingerprint

    def _digest_backbone(self) -> str:
        h = hashlib.sha1()
        for name, p in self.backbone.state_dict().items():
            h.update(f"{name}{tuple(p.shape)}".encode())
            h.update(p.detach().flatten()[:4096].float().cpu().numpy().tobytes())
        return h.hexdigest()[:16]

    def get_extra_state(self) -> dict:
        return {"backbone_fingerprint": self.backbone_fingerprint()}

    def set_extra_state(self, state: dict) -> None:
        saved, now = state.get("backbone_fingerprint"), self.backbone_fingerprint()
        if saved is not None and saved != now:
            raise CheckpointError(
                f"this ExplicitLM was trained on a backbone with fingerprint {saved}, but model.backbone gives one with {now}; "
                "pass the backbone it was trained on"
            )


def _memory_hook(module: nn.Module, args: tuple, output: torch.Tensor | tuple) -> torch.Tensor | tuple:
    owner, layer = module._explicit_memory
    return owner.fuse(layer, output)


def _drop_backbone(module: nn.Module, state_dict: dict, prefix: str, local_metadata: dict) -> None:
    for key in [k for k in state_dict if k.startswith(prefix + "backbone.")]:
        del state_dict[key]


def _keep_backbone(module: nn.Module, state_dict: dict, prefix: str, *args: object) -> None:
    """Loading a saved ExplicitLM state keeps the backbone it was built with (checked by fingerprint)."""
    for key, value in module.backbone.state_dict().items():
        state_dict.setdefault(f"{prefix}backbone.{key}", value)
    state_dict.setdefault(f"{prefix}content_rows", torch.zeros_like(module.content_rows))  # saved before it existed
