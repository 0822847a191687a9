"""The config store without its imports: a JSON snapshot of Hydra's ConfigStore as memexp fills it for one app.

Filling the store imports every model, data module, torch and Lightning (10-20 s), which a mistyped key should not
wait for. The first command line of an app fills the store as before and writes the snapshot; later ones check
their overrides against the snapshot (hydra-zen and OmegaConf only: well under 2 s), and fill the real store only
once the command line is known to compose. The snapshot is keyed by the memexp sources (path, size, mtime) and
the versions of the libraries whose signatures the configs copy, so an edit or an upgrade makes a new one.

OmegaConf can pickle a config, but the store's nodes are hydra-zen dataclasses made at run time (not importable)
and a pickle in a cache folder would run code when read; so each node is written as its typed tree (a value node's
type, optional flag and raw value; a container's flags) and rebuilt from that.
"""

from __future__ import annotations

import hashlib
import json
import os
from importlib import metadata
from pathlib import Path
from typing import Any

from omegaconf import AnyNode, BooleanNode, BytesNode, DictConfig, FloatNode, IntegerNode, ListConfig, PathNode, StringNode
from omegaconf.base import Node

FORMAT = 1
_LEAVES = {c.__name__: c for c in (AnyNode, BooleanNode, BytesNode, FloatNode, IntegerNode, PathNode, StringNode)}
_ELEMENTS = {"int": int, "float": float, "str": str, "bool": bool}
_VERSIONED = ("hydra-core", "hydra-zen", "omegaconf", "lightning", "torch", "transformers", "torchmetrics", "wandb")


def source_digest() -> str:
    """A digest of memexp's sources and the library versions the stored configs depend on."""
    root = Path(__file__).resolve().parents[1]
    h = hashlib.sha256(f"format {FORMAT}".encode())
    for path in sorted(root.rglob("*.py")):
        st = path.stat()
        h.update(f"{path.relative_to(root)} {st.st_size} {st.st_mtime_ns}\n".encode())
    for name in _VERSIONED:
        try:
            h.update(f"{name} {metadata.version(name)}\n".encode())
        except metadata.PackageNotFoundError:
            h.update(f"{name} -\n".encode())
    return h.hexdigest()[:16]


def snapshot_path(config_name: str, digest: str | None = None) -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "memexp" / "store" / f"{config_name}-{digest or source_digest()}.json"


# -- writing ------------------------------------------------------------------------------------------------------
def _flags(node: Node) -> dict:
    return {k: v for k, v in (node._metadata.flags or {}).items() if v is not None}


def _dump(node: Node) -> dict:
    meta = node._metadata
    if isinstance(node, DictConfig | ListConfig):
        out: dict[str, Any] = {"kind": "dict" if isinstance(node, DictConfig) else "list", "optional": meta.optional}
        out["flags"] = _flags(node)
        if node._is_none() or node._is_missing() or node._is_interpolation():
            out["value"] = node._value()
        elif isinstance(node, DictConfig):
            out["items"] = {str(k): _dump(node._get_node(k)) for k in node.keys()}
        else:
            element = getattr(meta, "element_type", Any)
            out["element"] = getattr(element, "__name__", "Any") if element in _ELEMENTS.values() else "Any"
            out["items"] = [_dump(node._get_node(i)) for i in range(len(node))]
        return out
    kind = type(node).__name__
    value = node._value()
    if kind not in _LEAVES or not isinstance(value, str | int | float | bool | type(None)):
        kind, value = "AnyNode", value if isinstance(value, str | int | float | bool | type(None)) else str(value)
    return {"kind": kind, "optional": meta.optional, "value": value, "flags": _flags(node)}


def plugin_schema(path: str, provider: str | None) -> bool:
    """An entry Hydra's plugins store themselves (hydra/sweeper/basic, ...) when a process first composes. It is never
    snapshotted: a process that composed before filling the store would save them, and a process that loads them
    would lose its own registration when the store is restored (`restore` keeps only what the snapshot did not hold).
    """
    return path.startswith("hydra/") and provider is not None


def save_snapshot(config_name: str) -> Path | None:
    """Write the ConfigStore as it is now (filled for `config_name`) to the snapshot; None when it cannot be written."""
    from hydra.core.config_store import ConfigStore

    entries = []

    def walk(tree: dict, prefix: str) -> None:
        for key, value in tree.items():
            if isinstance(value, dict):
                walk(value, f"{prefix}{key}/")
            elif not plugin_schema(prefix + key, value.provider):
                entries.append(
                    {
                        "path": prefix + key,
                        "name": value.name,
                        "group": value.group,
                        "package": value.package,
                        "provider": value.provider,
                        "node": _dump(value.node),
                    }
                )

    walk(ConfigStore.instance().repo, "")
    target = snapshot_path(config_name)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"format": FORMAT, "entries": entries}), encoding="utf-8")
        tmp.replace(target)  # whole or not at all
    except OSError:
        return None
    return target


# -- reading ------------------------------------------------------------------------------------------------------
def _load(data: dict) -> Node:
    kind, optional = data["kind"], data.get("optional", True)
    if kind in ("dict", "list"):
        if "items" not in data:
            node: Node = (DictConfig if kind == "dict" else ListConfig)(content=data["value"], is_optional=optional)
        elif kind == "dict":  # the children are new nodes: set, not copied (OmegaConf deep-copies them otherwise)
            content = {k: _load(v) for k, v in data["items"].items()}
            node = DictConfig(content=content, is_optional=optional, flags={"no_deepcopy_set_nodes": True})
        else:
            element = _ELEMENTS.get(data.get("element", "Any"), Any)
            content = [_load(v) for v in data["items"]]
            node = ListConfig(content, element_type=element, is_optional=optional, flags={"no_deepcopy_set_nodes": True})
        node._set_flag("no_deepcopy_set_nodes", None)
    else:
        node = AnyNode(value=data["value"]) if kind == "AnyNode" else _LEAVES[kind](value=data["value"], is_optional=optional)
    for flag, value in (data.get("flags") or {}).items():
        node._set_flag(flag, value)
    return node


def load_snapshot(config_name: str) -> dict | None:
    """Put the snapshot of `config_name` in Hydra's ConfigStore; returns the store's repository it replaced (give it to
    `restore`), or None when there is no snapshot of these sources."""
    from hydra.core.config_store import ConfigNode, ConfigStore

    path = snapshot_path(config_name)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if data.get("format") != FORMAT:
        return None
    cs = ConfigStore.instance()

    def copy(tree: dict) -> dict:
        return {k: copy(v) if isinstance(v, dict) else v for k, v in tree.items()}

    repo = copy(cs.repo)  # what Hydra and its plugins stored themselves stays; the snapshot's entries go over it
    data["entries"] = [e for e in data["entries"] if not plugin_schema(e["path"], e["provider"])]  # older snapshots
    for e in data["entries"]:
        *folders, leaf = e["path"].split("/")
        tree = repo
        for f in folders:
            tree = tree.setdefault(f, {})
        tree[leaf] = ConfigNode(
            name=e["name"], node=_load(e["node"]), group=e["group"], package=e["package"], provider=e["provider"]
        )
    primary = repo.get(f"{config_name}.yaml")
    if primary is None:
        return None
    from memexp.configs.search import preset_dirs

    primary.node.hydra.searchpath = [p.as_uri() for p in preset_dirs()]  # this working directory's presets
    saved, cs.repo = cs.repo, repo
    _from_snapshot.clear()
    _from_snapshot.update(e["path"] for e in data["entries"])
    return saved


_from_snapshot: set[str] = set()  # the entries the loaded snapshot put in the store


def _leaves(tree: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in tree.items():
        out |= _leaves(value, f"{prefix}{key}/") if isinstance(value, dict) else {prefix + key: value}
    return out


def restore(saved: dict) -> None:
    """Hydra's ConfigStore as it was before `load_snapshot`, plus what was stored meanwhile by others than the snapshot:
    Hydra registers its plugins' schemas (hydra/sweeper/basic, ...) once per process, when it first composes."""
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    added = {p: node for p, node in _leaves(cs.repo).items() if p not in _from_snapshot}
    for path, node in added.items():
        *folders, leaf = path.split("/")
        tree = saved
        for f in folders:
            tree = tree.setdefault(f, {})
        tree.setdefault(leaf, node)
    cs.repo = saved
