"""One record -> one training sample for a causal LM over a (frozen) chat-model backbone.

Shapes: T = seq_len.
  input   (T,) long    ids[:-1] of the record's ids cut or padded (pad id) to T + 1
  target  (T,) long    ids[1:], IGNORE_INDEX (-100) where nothing is predicted
Pretraining text is wrapped as `<|im_start|>user\\n{text}<|im_end|>` when the tokenizer has those
tokens (else text + eos); every real token is a target, the closing end token included: padding
is masked by position, never by id, so a tokenizer whose pad equals its eos cannot hide the end.
SFT conversations go through the tokenizer's chat template and only the assistant turns are
targets: their content and their closing end token, not the role header nor the newline after.
"""

from __future__ import annotations

from typing import Any

import torch

from memexp.data.spec import IGNORE_INDEX
from memexp.errors import DataError


def wrap_pretrain(tokenizer: Any, text: str) -> list[int]:
    """The ids of one pretraining text, ChatML-wrapped when the tokenizer has ChatML tokens."""
    start, end = tokenizer.special_id("<|im_start|>"), tokenizer.special_id("<|im_end|>")
    if start is not None and end is not None:
        return [start] + tokenizer.encode(f"user\n{text}") + [end]
    eos = tokenizer.eos_id
    return tokenizer.encode(text) + ([] if eos is None else [eos])


def chat_ids_and_mask(tokenizer: Any, turns: list[dict[str, str]]) -> tuple[list[int], list[bool]]:
    """(ids of the rendered conversation, True at tokens of assistant turns).

    An assistant turn's tokens are found by rendering the conversation up to it (with the
    generation prompt, i.e. the role header) and through it: the template must render a
    conversation as the concatenation of its turns, which ChatML does.
    """
    ids = tokenizer.apply_chat(turns)
    mask = [False] * len(ids)
    end_id = tokenizer.eos_id
    for i, turn in enumerate(turns):
        if turn["role"] != "assistant":
            continue
        if i:
            start = len(tokenizer.apply_chat(turns[:i], add_generation_prompt=True))
        else:  # a conversation opening with the assistant: its header is an empty turn up to the end token
            empty = tokenizer.apply_chat([{"role": "assistant", "content": ""}])
            start = empty.index(end_id) if end_id in empty else len(empty)
        through = tokenizer.apply_chat(turns[: i + 1])
        if ids[: len(through)] != through or start > len(through):
            raise DataError("the tokenizer's chat template does not render a conversation turn after turn")
        stop = len(through)
        closing = [j for j in range(start, stop) if ids[j] == end_id]
        if closing:
            stop = closing[-1] + 1  # keep the end token, drop what follows it (the newline)
        for j in range(start, stop):
            mask[j] = True
    return ids, mask


def to_sample(ids: list[int], is_target: list[bool], seq_len: int, pad_id: int) -> dict[str, torch.Tensor]:
    """ids (and which of them are targets) -> dict(input=(T,), target=(T,)), cut or padded to T + 1."""
    ids, is_target = ids[: seq_len + 1], is_target[: seq_len + 1]
    n = len(ids)
    full = torch.full((seq_len + 1,), pad_id, dtype=torch.long)  # (T+1,)
    full[:n] = torch.tensor(ids, dtype=torch.long)
    keep = torch.zeros(seq_len + 1, dtype=torch.bool)
    keep[:n] = torch.tensor(is_target, dtype=torch.bool)
    target = torch.where(keep[1:], full[1:], torch.full((seq_len,), IGNORE_INDEX, dtype=torch.long))  # (T,)
    return {"input": full[:-1], "target": target}


def pretrain_sample(tokenizer: Any, text: str, seq_len: int) -> dict[str, torch.Tensor]:
    ids = wrap_pretrain(tokenizer, text)
    return to_sample(ids, [True] * len(ids), seq_len, tokenizer.pad_id)


def sft_sample(tokenizer: Any, turns: list[dict[str, str]], seq_len: int) -> dict[str, torch.Tensor]:
    ids, mask = chat_ids_and_mask(tokenizer, turns)
    return to_sample(ids, mask, seq_len, tokenizer.pad_id)
