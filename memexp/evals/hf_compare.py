"""Optional comparison with a local Hugging Face causal LM: bits per character on a text.

Bits per character (total NLL in bits / characters) is comparable across tokenizers, so a
char-level memexp model's test/bpc and a subword HF model's number can sit in one table.
Nothing is downloaded: `hf_model` must be a local folder; when it is missing, the
comparison is skipped with a note.
"""

from __future__ import annotations

import math
from pathlib import Path


def hf_bits_per_char(hf_model: str | None, text: str, max_chars: int = 20_000, window: int = 512) -> tuple[float | None, str]:
    """(bpc or None, a one-line note for the report)."""
    if not hf_model:
        return None, "Skipped: no hf_model=PATH given (a local Hugging Face causal LM folder)."
    if not Path(hf_model).is_dir():
        return None, f"Skipped: hf_model={hf_model} is not a local folder (nothing is downloaded)."
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(hf_model, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(hf_model, local_files_only=True).eval()
    text = text[:max_chars]
    ids = torch.tensor(tok(text)["input_ids"])
    nll, n = 0.0, 0
    with torch.no_grad():
        for s in range(0, len(ids) - 1, window):
            chunk = ids[s : s + window + 1]
            if len(chunk) < 2:
                break
            logits = model(chunk[None, :-1]).logits[0]
            nll += torch.nn.functional.cross_entropy(logits.float(), chunk[1:], reduction="sum").item()
            n += len(chunk) - 1
    bpc = nll / math.log(2) / len(text)
    return bpc, f"{hf_model}: {bpc:.4f} bits per character on the first {len(text)} characters ({n} tokens)."
