"""python -m memexp.generate ckpt=PATH prompt="ROMEO:" [max_new_tokens=300] [temperature=0.8] [top_k=0] [top_p=1.0] [seed=0]

Prints the prompt followed by the generated continuation.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from memexp.entry import chosen_model, launch
from memexp.errors import ConfigError

if TYPE_CHECKING:
    from omegaconf import DictConfig

    from memexp.models.sampling import Sampling


def generate_text(
    ckpt: str,
    prompt: str,
    max_new_tokens: int = 300,
    sampling: Sampling | None = None,
    data_dir: str | None = None,
    model: str | None = None,
) -> str:
    """`prompt` and its continuation by the model of `ckpt`; sampling None: temperature 0.8, seed 0."""
    if max_new_tokens < 0:
        raise ConfigError(f"max_new_tokens={max_new_tokens} must be >= 0")
    from memexp.configs.rebuild import load_checkpoint  # here, so that `--help` answers at once
    from memexp.models.sampling import Sampling
    from memexp.runs.checkpoints import read_checkpoint

    checkpoint = read_checkpoint(Path(ckpt))
    kind = checkpoint["memexp"].get("task_kind")
    if kind in ("dialogue", "classification"):
        raise ConfigError(
            f"ckpt={ckpt} holds a {kind} model, which does not continue a text prompt; "
            + (
                "talk to it with python -m memexp.chat ckpt=<it>"
                if kind == "dialogue"
                else "evaluate it with python -m memexp.evaluate ckpt=<it>"
            )
        )
    loaded = load_checkpoint(ckpt, data_dir=data_dir, expect_model=model, checkpoint=checkpoint)
    tok = loaded.datamodule.tokenizer
    if sampling is None:
        sampling = Sampling(temperature=0.8, seed=0)
    ids = loaded.task.generate(tok.encode(prompt), max_new_tokens, sampling)
    return prompt + tok.decode(ids)


def generate(
    ckpt: str,
    model: str | None,
    prompt: str,
    max_new_tokens: int,
    temperature: float,
    top_k: int,
    top_p: float,
    seed: int,
    paths: DictConfig,
) -> str:
    """The Hydra task of `python -m memexp.generate` (arguments: `GenerateConfig`; `model` is read back by `chosen_model`)."""
    from memexp.models.sampling import Sampling

    sampling = Sampling.from_settings(temperature, top_k, top_p, seed=seed)
    text = generate_text(str(ckpt), str(prompt), max_new_tokens, sampling, paths.data_dir, chosen_model())
    print(text)
    return text


def main() -> None:
    launch(generate, "memexp_generate", "generate")


if __name__ == "__main__":
    main()
