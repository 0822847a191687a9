"""The command line checked before Hydra runs it: Hydra's multi-line composition errors as one sentence, and
every numeric setting's range (memexp.configs.ranges).

Hydra reports a mistyped key, a value of the wrong type or an unknown group option in several lines (and for
some, a stack-trace hint). `check_command_line` composes the app's config from the overrides (under -m once
per value of each sweep) and turns those failures into a ConfigError that names the override and, for a
near miss, what was meant. Composition takes a fraction of a second; Hydra composes again when it runs.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence

from hydra import compose, initialize
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from memexp.configs.ranges import RangeError, check_ranges
from memexp.errors import ConfigError

# Flags after which Hydra does something other than run the app (print, complete): nothing to check.
_NOT_A_RUN = ("--cfg", "-c", "--info", "-i", "--hydra-help", "--shell-completion", "-sc", "--resolve", "--package", "-p")


def _combinations(overrides: list[str]) -> list[list[str]]:
    """The command lines to check: each sweep's first value with the rest, then each other value of each sweep
    (not every combination: a setting's range does not depend on the others)."""
    parsed = OverridesParser.create().parse_overrides(overrides)
    values = [
        [f"{o.get_key_element()}={v}" for v in o.sweep_string_iterator()] if o.is_sweep_override() else [text]
        for text, o in zip(overrides, parsed, strict=True)
    ]
    first = [v[0] for v in values if v]
    out = [first]
    for i, vs in enumerate(values):
        out += [first[:i] + [v] + first[i + 1 :] for v in vs[1:]]
    return out


def _suggest(word: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean {close[0]}?" if close else ""


def _keys_at(cfg: DictConfig, dotted: str) -> list[str]:
    node = OmegaConf.select(cfg, dotted) if dotted else cfg
    return [str(k) for k in node.keys()] if isinstance(node, DictConfig) else []


def _reworded(e: Exception, overrides: list[str], config_name: str) -> str:
    cause = e.__cause__
    if isinstance(e, MissingConfigException):
        m = re.search(r"Could not find '([^']+)/([^']+)'", str(e))
        if m:
            group, option = m.groups()
            options = re.findall(r"^\t(\S+)$", str(e), flags=re.M)
            listed = ", ".join(options)
            return f"{group}={option}: no such option{_suggest(option, options)} (options: {listed})"
        return str(e).splitlines()[0]
    if isinstance(e, OverrideParseException):
        bad = next((o for o in overrides if o in str(e) or "[" in o or "{" in o), overrides[-1] if overrides else "")
        return f"{bad}: not a valid override ({str(e).splitlines()[0]}); quote values with spaces or brackets"
    m = re.match(r"Could not override '([^']+)'\. No match in the defaults list", str(e))
    if m:
        app = config_name.removeprefix("memexp_")
        return f"{m.group(1)}: memexp.{app} has no config group {m.group(1)!r} (python -m memexp.{app} --help lists its settings)"
    if isinstance(cause, OmegaConfBaseException):
        key = getattr(cause, "full_key", None) or ""
        text = str(cause).splitlines()[0]
        if text.startswith("Key ") and " not in " in text:
            parent, _, leaf = key.rpartition(".")
            try:
                with initialize(version_base="1.3", config_path=None):
                    base = compose(config_name, overrides=[o for o in overrides if not o.startswith(f"{key}=")])
                keys = _keys_at(base, parent)
            except Exception:
                keys = []
            hint = _suggest(leaf, keys).replace("mean ", f"mean {parent}." if parent else "mean ")
            where = f"the {parent} settings" if parent else "the top-level settings"
            return f"{key}: no such setting among {where}{hint} (add a new key with +{key}=...)"
        value = next((o.split("=", 1)[1] for o in overrides if o.split("=", 1)[0].lstrip("+~") == key), None)
        m = re.search(r"could not be converted to (\w+)", text)
        if m:
            kind = {"integer": "an integer", "float": "a number", "boolean": "true or false"}.get(m.group(1).lower(), m.group(1))
            return f"{key}={value}: expected {kind}"
        return f"{key}: {text}"
    return str(e).splitlines()[0]


def check_command_line(config_name: str, argv: Sequence[str]) -> None:
    """Compose `config_name` from the key=value arguments of `argv`; a ConfigError in one line when that fails."""
    if any(a in _NOT_A_RUN or a.startswith(tuple(f"{f}=" for f in _NOT_A_RUN)) for a in argv):
        return
    overrides = [a for a in argv if not a.startswith("-") and "=" in a]
    try:
        lines = _combinations(overrides)
    except OverrideParseException as e:
        raise ConfigError(_reworded(e, overrides, config_name)) from None
    for line in lines:
        _check_one(config_name, line)


def _check_one(config_name: str, overrides: list[str]) -> None:
    try:
        with initialize(version_base="1.3", config_path=None):
            cfg = compose(config_name, overrides=overrides, return_hydra_config=True)
    except (ConfigCompositionException, MissingConfigException, OverrideParseException) as e:
        raise ConfigError(_reworded(e, overrides, config_name)) from None
    with open_dict(cfg):
        del cfg["hydra"]
    try:
        plain = OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException:
        return  # an interpolation only the run resolves (a Hydra resolver): the constructors check their values
    try:
        check_ranges(plain)
    except RangeError as e:  # name the value as it was typed (3, not the 3.0 a float field made of it)
        typed = next((o.split("=", 1)[1] for o in overrides if o.split("=", 1)[0].lstrip("+~") == e.key), None)
        if typed is None:
            raise
        raise ConfigError(f"{e.key}={typed}: expected {e.range}") from None
