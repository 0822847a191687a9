"""Which numeric precision a run trains in: `trainer.precision` (Lightning's values, plus `auto`).

`auto` (the `trainer=cpu_bf16` preset) is bf16 autocast (`bf16-mixed`) where the hardware computes bf16 natively,
and float32 elsewhere:
- on a CPU, native bf16 is the `avx512_bf16` or `amx_bf16` instruction flags (x86) or `bf16` (Arm). Without them
  oneDNN emulates bf16 matmuls, which is slower than float32, not faster (on an AVX2 AMD EPYC a training step of
  the default transformer took 1,030 ms under bf16 autocast against 77 ms in float32), so `auto` stays in float32
  and says why;
- on a CUDA GPU, bf16 where the GPU supports it, else fp16 autocast with a gradient scaler (`16-mixed`).

Explicit values are checked here, before any work, so that a combination that cannot run is one `error:` line:
pure half precision (`16-true`, `bf16-true`) is refused (AdamW's updates of weights held in half precision are
lost below the weights' last bit, and the memory models' inner updates with them), fp16 autocast is refused on a
CPU (torch has none; `bf16-mixed` is the CPU's mixed precision), and a GPU preset without a visible CUDA device
names the torch build. The line this module prints sits beside the thread count at the start of a run.
"""

from __future__ import annotations

import functools
import platform
from collections.abc import Callable
from pathlib import Path

from memexp.errors import ConfigError

NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # x86: /proc/cpuinfo flags; Arm's is "bf16" among its Features

# Lightning's spellings -> the canonical name this suite uses (and Lightning accepts)
_CANONICAL = {
    "32": "32-true",
    "32-true": "32-true",
    "64": "64-true",
    "64-true": "64-true",
    "bf16": "bf16-mixed",
    "bf16-mixed": "bf16-mixed",
    "16": "16-mixed",
    "16-mixed": "16-mixed",
}
_REFUSED = {
    "16-true": "weights and optimiser state in fp16",
    "bf16-true": "weights and optimiser state in bf16",
    "transformer-engine": "NVIDIA Transformer Engine layers, which no model here uses",
    "transformer-engine-float16": "NVIDIA Transformer Engine layers, which no model here uses",
}
_GPU_ACCELERATORS = ("gpu", "cuda")


def cpu_flags() -> set[str]:
    """The CPU's feature flags (x86 `flags`, Arm `Features`) from /proc/cpuinfo; empty where there is none."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def native_bf16(flags: set[str] | None = None) -> list[str]:
    """The flags by which this CPU computes bf16 natively (empty: none)."""
    flags = cpu_flags() if flags is None else flags
    arm = platform.machine().lower() in ("aarch64", "arm64")
    return [f for f in (("bf16",) if arm else NATIVE_BF16_FLAGS) if f in flags]


def _canonical(setting: object) -> str:
    if setting is None:  # Lightning's default
        return "32-true"
    value = str(setting).strip().lower()
    if value in _REFUSED:
        raise ConfigError(
            f"trainer.precision={setting}: not supported: it holds {_REFUSED[value]}; AdamW's small updates are lost "
            f"below a half-precision weight's last bit. Use trainer.precision=bf16-mixed (autocast, float32 weights)"
        )
    if value not in _CANONICAL:
        raise ConfigError(
            f"trainer.precision={setting}: expected auto, 32-true, 64-true, bf16-mixed or 16-mixed (or 32, 64, bf16, 16)"
        )
    return _CANONICAL[value]


def _on_gpu(accelerator: object) -> bool:
    """Whether the trainer will run on a CUDA GPU (`gpu`/`cuda`, or `auto` where one is visible)."""
    import torch

    accelerator = str(accelerator or "auto").lower()
    return accelerator in _GPU_ACCELERATORS or (accelerator == "auto" and torch.cuda.is_available())


def require_gpu(accelerator: object) -> None:
    """One ConfigError when a GPU preset meets a machine without a usable CUDA device."""
    import torch

    if str(accelerator or "").lower() not in _GPU_ACCELERATORS or torch.cuda.is_available():
        return
    build = torch.__version__
    why = (
        f"this torch ({build}) is a CPU-only build; install a CUDA build of torch"
        if torch.version.cuda is None
        else f"torch {build} (CUDA {torch.version.cuda}) sees no device: check the driver and CUDA_VISIBLE_DEVICES"
    )
    raise ConfigError(
        f"trainer.accelerator={accelerator}: no CUDA device is visible ({why}); on this machine use trainer=cpu or "
        f"trainer=cpu_bf16"
    )


def plan_precision(setting: object, accelerator: object, flags: set[str] | None = None) -> tuple[str, str]:
    """(Lightning's precision, why) for `trainer.precision=setting` on `accelerator`; a ConfigError for a combination
    that cannot run. `flags` stands in for the CPU's flags (tests)."""
    import torch

    require_gpu(accelerator)
    gpu = _on_gpu(accelerator)
    if str(setting).strip().lower() == "auto":
        if gpu:
            if torch.cuda.is_bf16_supported():
                return "bf16-mixed", "trainer.precision=auto: this GPU computes bf16"
            return "16-mixed", "trainer.precision=auto: this GPU has no bf16; fp16 autocast with a gradient scaler"
        have = native_bf16(flags)
        if have:
            return "bf16-mixed", f"trainer.precision=auto: this CPU computes bf16 natively ({', '.join(have)})"
        return "32-true", (
            "trainer.precision=auto: this CPU has no native bf16 (no avx512_bf16 or amx_bf16), where bf16 autocast "
            "is emulated and slower than float32"
        )
    precision = _canonical(setting)
    if precision == "16-mixed" and not gpu:
        raise ConfigError(
            f"trainer.precision={setting}: fp16 autocast runs on CUDA GPUs only; on a CPU use trainer.precision=bf16-mixed"
        )
    why = "float32, the default" if setting is None or setting == "32-true" else f"trainer.precision={setting}"
    if precision == "bf16-mixed" and not gpu and not native_bf16(flags):
        why += "; this CPU has no native bf16, so bf16 matmuls are emulated (slower than 32-true)"
    return precision, why


def with_precision(trainer: Callable, flags: set[str] | None = None) -> tuple[Callable, str]:
    """The trainer partial with its precision resolved (`auto` made concrete, Lightning's spelling), and the line
    that says which and why."""
    keywords = getattr(trainer, "keywords", {})
    strategy = str(keywords.get("strategy") or "")
    if strategy.startswith("fsdp") and not _on_gpu(keywords.get("accelerator", "auto")):
        raise ConfigError(
            f"trainer.strategy={strategy}: Lightning's FSDP runs on CUDA GPUs only (trainer.accelerator="
            f"{keywords.get('accelerator')}); on CPUs use trainer=ddp"
        )
    precision, why = plan_precision(keywords.get("precision") or "32-true", keywords.get("accelerator", "auto"), flags)
    return with_keywords(trainer, precision=precision), f"precision: {precision} ({why})"


def with_keywords(fn: Callable, **values: object) -> Callable:
    """A copy of the partial `fn` (of its own class: Hydra's partials authorise their target when called) with
    keywords set; callers read the preset's other keywords (callbacks, max_steps), which a partial of the partial
    would hide. A plain callable gets a functools.partial."""
    if not isinstance(fn, functools.partial):
        return functools.partial(fn, **values)
    cls, fargs, (func, args, keywords, namespace) = fn.__reduce__()
    copy = cls(*fargs)
    copy.__setstate__((func, args, {**(keywords or {}), **values}, namespace))
    return copy


def run_key_precision(precision: object) -> str | None:
    """What the run key holds of the precision: nothing for float32 (the runs made before precision was keyed keep
    their folders), else the canonical name (bf16 and float32 runs of one command learn different weights)."""
    if precision is None or str(precision).strip().lower() == "auto":
        return None
    try:
        value = _canonical(precision)
    except ConfigError:
        return str(precision)
    return None if value == "32-true" else value


def hold_frozen_in_bf16(net: object) -> list[str]:
    """Under bf16-mixed, cast the net's frozen pretrained parts (its direct children whose parameters are all frozen:
    ExplicitLM's backbone, ENDEF's BERT embeddings unless fine-tuned) to bf16, and return their names. Autocast would
    otherwise cast every frozen weight to bf16 again at each forward (Lightning turns autocast's cache off); nothing
    is lost, as no gradient ever updates them. Trained parameters stay float32."""
    import torch

    held = []
    for name, child in net.named_children():
        params = list(child.parameters())
        if params and not any(p.requires_grad for p in params) and all(p.is_floating_point() for p in params):
            child.to(torch.bfloat16)
            held.append(name)
    return held
