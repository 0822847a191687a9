"""`--help` of every entry point: usage, the config groups and their options, the top-level settings with their
defaults, the most used commands and the other entry points, printed in well under a second.

Hydra's own help composes the whole store first, which imports every model, torch and Lightning (10 s and
more); this reads the app configs (memexp.configs.apps: hydra-zen only), the option catalog
(memexp.configs.catalog) and the YAML presets on the search path, and nothing else.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class App:
    config: str  # the stored app config
    cls: str  # its class in memexp.configs.apps
    usage: str
    about: str
    examples: tuple[str, ...]


APPS: dict[str, App] = {
    "run": App(
        "memexp_run",
        "RunConfig",
        "python -m memexp.run [group=option ...] [key=value ...]      sweep: python -m memexp.run -m key=a,b ...",
        "Train a model on data, test it (the best validation checkpoint), print the val/test metrics and a sample.\n"
        "The same command resumes from its last.ckpt (fresh=true starts over); a -m sweep writes its report when it ends.",
        (
            "python -m memexp.run experiment=nanogpt_shakespeare",
            "python -m memexp.run model=hope data=shakespeare trainer.max_steps=500 optim.lr=3e-4",
            "python -m memexp.run model=hgd data=lccc debug=fast",
            "python -m memexp.run -m experiment=hope_vs_baseline seed=0,1,2",
            "python -m memexp.run -m hparams_search=transformer_optuna hydra.sweeper.n_trials=20",
        ),
    ),
    "evaluate": App(
        "memexp_evaluate",
        "EvaluateConfig",
        "python -m memexp.evaluate ckpt=<checkpoint> [eval=metrics|recall|binned_ppl] [key=value ...]",
        "Evaluate a checkpoint: loss, perplexity, accuracy (or reply BLEU/distinct) on its splits or on another file,\n"
        "recall by gap, or perplexity by context length. Writes metrics.json in its run folder.",
        (
            "python -m memexp.evaluate ckpt=outputs/checkpoints/<experiment>/<run>/last.ckpt",
            "python -m memexp.evaluate ckpt=<ckpt> splits=[test] data_path=<another text or LCCC file>",
            "python -m memexp.evaluate ckpt=<recall ckpt> eval=recall gaps=[16,64,256]",
            "python -m memexp.evaluate ckpt=<ckpt> eval=binned_ppl lengths=[64,128,256,512]",
            "python -m memexp.evaluate ckpt=<ckpt> model=hope   (refuses a checkpoint of another model)",
        ),
    ),
    "generate": App(
        "memexp_generate",
        "GenerateConfig",
        "python -m memexp.generate ckpt=<checkpoint> [prompt=...] [key=value ...]",
        "Sample text from a causal LM checkpoint.",
        (
            "python -m memexp.generate ckpt=<ckpt> prompt='ROMEO:' max_new_tokens=200",
            "python -m memexp.generate ckpt=<ckpt> temperature=0.6 top_k=40",
            "python -m memexp.generate ckpt=<ckpt> top_p=0.9 seed=1",
            "python -m memexp.generate ckpt=<ckpt> temperature=0   (greedy)",
            "python -m memexp.generate ckpt=<ckpt> model=transformer",
        ),
    ),
    "prepare": App(
        "memexp_prepare",
        "PrepareConfig",
        "python -m memexp.prepare [data=option] [data.key=value ...]",
        "Build a data option's prepared cache without training (dialogue chunks, vocabulary) and print what is in it.",
        (
            "python -m memexp.prepare data=lccc",
            "python -m memexp.prepare data=lccc data.source=<LCCC json or TSV>",
            "python -m memexp.prepare data=lccc_full",
            "python -m memexp.prepare data=lccc data.cache_dir=<folder>",
            "python -m memexp.prepare data=news_synthetic",
        ),
    ),
    "chat": App(
        "memexp_chat",
        "ChatConfig",
        "python -m memexp.chat ckpt=<hgd or explicit_lm checkpoint, or a bank file> [key=value ...]",
        "Chat with a dialogue model; with ExplicitLM each user turn's facts are written into its memory bank.\n"
        "Commands: /memory, /memory stats, /reset, /quit; standard input can be piped.",
        (
            "python -m memexp.chat ckpt=outputs/checkpoints/hgd_lccc/<run>/last.ckpt",
            "python -m memexp.chat ckpt=<explicit_lm ckpt> save_bank=bank.pt",
            "python -m memexp.chat ckpt=<ckpt> greedy=true history=4",
            "python -m memexp.chat ckpt=<explicit_lm ckpt> extractor=llmlingua update_strategy=similarity",
            "echo 'hello' | python -m memexp.chat ckpt=<ckpt>",
        ),
    ),
    "report": App(
        "memexp_report",
        "ReportConfig",
        "python -m memexp.report [dir=<sweep folder>] [key=value ...]",
        "Aggregate a sweep (mean and spread over seeds, paired tests, plots) into <dir>/reports; sweeps run it\n"
        "themselves when they end, this re-runs it (e.g. after adding seeds).",
        (
            "python -m memexp.report",
            "python -m memexp.report dir=outputs/multirun/<date>/<time>",
            "python -m memexp.report dir=<sweep> reports_dir=<folder>",
            "python -m memexp.report dir=<sweep> wandb=true",
            "python -m memexp.report dir=<sweep> hf_model=<local HF causal LM folder>",
        ),
    ),
    "memory": App(
        "memexp_memory",
        "MemoryConfig",
        "python -m memexp.memory <show|search|edit|delete|add|export|import> ckpt=<explicit_lm ckpt or bank file> [...]",
        "Read and edit ExplicitLM's memory bank; writes go to out=<new bank file> (inplace=true rewrites ckpt=).",
        (
            "python -m memexp.memory show ckpt=<ckpt> start=0 count=20",
            "python -m memexp.memory search ckpt=<ckpt> query='Where does Alice live?'",
            "python -m memexp.memory edit ckpt=<ckpt> index=12 text='Alice lives in Paris.' out=bank.pt",
            "python -m memexp.memory add ckpt=bank.pt text=['Bob is a baker.'] inplace=true",
            "python -m memexp.memory export ckpt=<ckpt> out=bank.jsonl",
        ),
    ),
}

OTHER = {
    "run": "train, test, sample; sweeps with -m",
    "evaluate": "metrics, recall by gap, binned perplexity of a checkpoint",
    "generate": "sample text from a checkpoint",
    "prepare": "build a dataset's prepared cache",
    "chat": "talk to a dialogue model or ExplicitLM",
    "report": "aggregate a sweep into tables and plots",
    "memory": "show, search and edit ExplicitLM's memory bank",
}


def wants_help(argv: list[str]) -> bool:
    return any(a in ("--help", "-h") for a in argv)


def _preset_lines(group: str) -> dict[str, str]:
    """YAML presets of a group on the search path, with their first comment line."""
    from memexp.configs.search import preset_dirs

    found: dict[str, str] = {}
    roots = preset_dirs()
    for root in roots:
        for path in sorted((root / group).glob("*.yaml")):
            if path.stem in found:
                continue
            lines = [ln.lstrip("# ").strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.startswith("#")]
            about = next((ln for ln in lines if ln and not ln.startswith("@package")), "").rstrip(":")
            found[path.stem] = f"{about} [{path}]" if root != roots[-1] else about  # the package's own: no path
    return found


def _settings(node: dict, prefix: str = "") -> list[str]:
    out = []
    for key, value in node.items():
        if isinstance(value, dict) and value:
            out += _settings(value, f"{prefix}{key}.")
        else:
            text = "null" if value is None else str(value).lower() if isinstance(value, bool) else repr(value)
            out.append(f"{prefix}{key}={text.strip(chr(39)) if isinstance(value, str) and ' ' not in value else text}")
    return out


def help_text(name: str) -> str:
    from omegaconf import OmegaConf

    from memexp.configs import apps as app_configs
    from memexp.configs.catalog import GROUPS

    app = APPS[name]
    cfg = OmegaConf.to_container(OmegaConf.structured(getattr(app_configs, app.cls)), resolve=False)
    defaults: dict[str, str | None] = {}
    for entry in cfg.pop("defaults", []):
        if isinstance(entry, dict):
            ((group, option),) = entry.items()
            defaults[group.removeprefix("optional ")] = option
    lines = [f"usage: {app.usage}", "", app.about, ""]
    if defaults:
        lines.append("Config groups (group=option, * marks the default):")
        listed = {group: dict(GROUPS.get(group, {})) | _preset_lines(group) for group in defaults}
        width = max((len(o) for options in listed.values() for o in options), default=0) + 2
        for group, options in listed.items():
            default = defaults[group]
            for i, (option, about) in enumerate(options.items()):
                mark = "*" if option == default else " "
                lines.append(f"  {group if i == 0 else '':<15}{mark}{option:<{width}}{about}")
            if not options:
                lines.append(f"  {group}")
        lines.append("")
    settings = _settings({k: v for k, v in cfg.items() if k not in defaults})
    if settings:
        lines.append("Settings (key=value, with their defaults):")
        row = "  "
        for s in settings:
            if len(row) + len(s) > 110:
                lines.append(row.rstrip())
                row = "  "
            row += s + "  "
        lines += [row.rstrip(), ""]
    if defaults:
        lines.append(f"A group option's fields: python -m memexp.{name} <group>=<option> --cfg job (prints the composed config).")
    lines += ["", "Most used:", *(f"  {e}" for e in app.examples), ""]
    lines.append("Other entry points (each answers --help):")
    lines += [f"  python -m memexp.{other:<9} {about}" for other, about in OTHER.items() if other != name]
    lines += [
        "",
        "Hydra's flags: -m/--multirun (sweep), --cfg job|hydra|all (print the config), --info, --hydra-help.",
        "Presets of your own: conf/<group>/<name>.yaml in the working directory (or $MEMEXP_CONF_PATH).",
    ]
    return "\n".join(lines)


def answer_help(config_name: str, argv: list[str] | None = None) -> None:
    """Print the help of the app stored as `config_name` and exit, when the command line asks for it."""
    argv = sys.argv[1:] if argv is None else argv
    if not wants_help(argv):
        return
    name = next(n for n, a in APPS.items() if a.config == config_name)
    try:
        print(help_text(name), flush=True)
    except BrokenPipeError:  # `--help | head`
        sys.stdout = None
    raise SystemExit(0)
