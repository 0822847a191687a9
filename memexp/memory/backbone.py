"""The frozen backbone of `model=explicit_lm`, found from one setting, `model.backbone`:

    tiny                 a tiny random Qwen3 (seeded, so the same one is rebuilt when a checkpoint loads)
    <folder>             a local Hugging Face Qwen3 folder (config.json + weights), e.g. a download of Qwen/Qwen3-0.6B
    <hub id>             Qwen/Qwen3-0.6B ... Qwen/Qwen3-4B, fetched by transformers (needs the network or its cache)
    <run>/last.ckpt      a `model=qwen3` checkpoint the suite trained itself (the knowledge study's backbone)

This is the layer that reads files for the model: `memexp.models.explicit_lm` only receives the module.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from memexp.errors import ConfigError
from memexp.models.explicit_lm import ExplicitLM
from memexp.models.qwen3 import Qwen3LM


def _check_vocab(backbone: nn.Module, vocab_size: int, name: str) -> nn.Module:
    rows = backbone.get_input_embeddings().weight.shape[0]
    if vocab_size > rows:
        raise ConfigError(
            f"model.backbone={name} embeds {rows} token ids, but the data's tokenizer has {vocab_size}; "
            "use the backbone's own tokenizer (data.tokenizer=<the backbone folder>)"
        )
    return backbone


def tiny_backbone(vocab_size: int, pad_id: int | None, dim: int, depth: int, heads: int, seed: int) -> nn.Module:
    """A tiny random Qwen3ForCausalLM, the same for the same arguments (its own random stream)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return Qwen3LM(vocab_size, dim=dim, depth=depth, heads=heads, kv_heads=max(1, heads // 2), pad_id=pad_id).hf


def suite_backbone(path: Path) -> nn.Module:
    """The Qwen3 of a `model=qwen3` checkpoint written by memexp.run."""
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated, not a torch file
        raise ConfigError(f"model.backbone={path}: could not be read ({type(e).__name__}); expected a memexp .ckpt") from None
    cfg = ((ck.get("memexp") or {}).get("config") or {}).get("model") or {} if isinstance(ck, dict) else {}
    if not str(cfg.get("_target_", "")).endswith("Qwen3LM"):
        raise ConfigError(
            f"model.backbone={path}: not a checkpoint of model=qwen3 (its model is {cfg.get('_target_', 'unknown')}); "
            "train a backbone with `python -m memexp.run model=qwen3 ...` or pass a Hugging Face Qwen3 folder"
        )
    state = {k.removeprefix("net."): v for k, v in ck["state_dict"].items() if k.startswith("net.")}
    vocab = state["hf.model.embed_tokens.weight"].shape[0]
    kwargs = {k: v for k, v in cfg.items() if not k.startswith("_") and k != "vocab_size"}
    net = Qwen3LM(vocab, **kwargs)
    net.load_state_dict(state)
    return net.hf


def pretrained_backbone(name: str) -> nn.Module:
    """A Hugging Face Qwen3 from a local folder or the hub, in fp32."""
    from transformers import Qwen3ForCausalLM

    path = Path(name)
    if path.exists():
        config = path / "config.json"
        if not path.is_dir() or not config.is_file():
            raise ConfigError(f"model.backbone={name}: expected a folder with config.json and the weights of a Qwen3 model")
        try:
            model_type = json.loads(config.read_text(encoding="utf-8")).get("model_type")
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
            raise ConfigError(f"model.backbone={name}: {config} is not a JSON object") from None
        if model_type != "qwen3":
            raise ConfigError(
                f"model.backbone={name}: {config} says model_type={model_type!r}; ExplicitLM is built on Qwen3 (model_type 'qwen3')"
            )
        weights = [*path.glob("*.safetensors"), *path.glob("pytorch_model*.bin")]
        if not weights:
            raise ConfigError(
                f"model.backbone={name}: {path} has config.json but no weights (model.safetensors or pytorch_model.bin); "
                f"copy the model's weight files into that folder"
            )
        try:
            return Qwen3ForCausalLM.from_pretrained(path, dtype=torch.float32)
        except Exception as e:  # the folder's files are at fault (truncated, mismatched; safetensors has its own error type)
            raise ConfigError(
                f"model.backbone={name}: its weights could not be loaded ({type(e).__name__}: {e})".splitlines()[0]
            ) from None
    try:
        return Qwen3ForCausalLM.from_pretrained(name, dtype=torch.float32)
    except OSError as e:
        folder = f"models/{name.rsplit('/', 1)[-1]}"
        offline = " (HF_HUB_OFFLINE is set)" if os.environ.get("HF_HUB_OFFLINE") else ""
        raise ConfigError(
            f"model.backbone={name}: not a local folder, and the hub could not provide it{offline} ({type(e).__name__}); "
            f"download it where the network reaches (`hf download {name} --local-dir {folder}`), copy that folder here, "
            f"and pass model.backbone={folder}"
        ) from None


def load_backbone(backbone: str, vocab_size: int, pad_id: int | None = None, tiny: dict[str, Any] | None = None) -> nn.Module:
    """The frozen backbone named by `model.backbone` (see the module docstring)."""
    if backbone == "tiny":
        t = {"dim": 64, "depth": 2, "heads": 4, "seed": 0} | (tiny or {})
        return tiny_backbone(vocab_size, pad_id, t["dim"], t["depth"], t["heads"], t["seed"])
    if backbone.endswith(".ckpt"):
        path = Path(backbone)
        if not path.is_file():
            raise ConfigError(f"model.backbone={backbone}: no such checkpoint; expected a last.ckpt of a model=qwen3 run")
        return _check_vocab(suite_backbone(path), vocab_size, backbone)
    return _check_vocab(pretrained_backbone(backbone), vocab_size, backbone)


def build_explicit_lm(
    vocab_size: int,
    backbone: str = "tiny",
    pad_id: int | None = None,
    tiny_dim: int = 64,
    tiny_depth: int = 2,
    tiny_heads: int = 4,
    tiny_seed: int = 0,
    **memory: Any,
) -> ExplicitLM:
    """`model=explicit_lm`: load the backbone, then wrap it with the memory (`memory`: ExplicitLM's arguments).

    tiny_*: the size and seed of `backbone=tiny` (ignored for any other backbone).
    """
    net = load_backbone(
        str(backbone), vocab_size, pad_id, {"dim": tiny_dim, "depth": tiny_depth, "heads": tiny_heads, "seed": tiny_seed}
    )
    return ExplicitLM(net, pad_id=pad_id, **memory)
