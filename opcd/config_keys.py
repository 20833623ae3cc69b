"""Refusing config keys that no schema has.

Hydra applies a ``+key=value`` (and ``++key=value``) override with ``force_add``, which bypasses the
struct flag of the typed configs: ``+algo.lrr=1e-3`` (the fix Hydra itself suggests for a misspelled
``algo.lrr=1e-3``) would add a key that nothing reads, and the run would silently ignore it. The
composed config still remembers which dataclass each node was built from, so every key can be
checked against that dataclass's fields after composition.
"""
from __future__ import annotations

import dataclasses
import difflib

from omegaconf import DictConfig, OmegaConf


def unknown_keys(cfg: DictConfig, prefix: str = "") -> list[tuple[str, list[str]]]:
    """``[(dotted key, close field names), ...]`` for every key of a dataclass-typed node of ``cfg``
    that the dataclass has no field for (nested nodes are checked against their own dataclass)."""
    out: list[tuple[str, list[str]]] = []
    schema = OmegaConf.get_type(cfg)
    fields = [f.name for f in dataclasses.fields(schema)] if dataclasses.is_dataclass(schema) else None
    for key in cfg.keys():
        if fields is not None and key not in fields:
            out.append((f"{prefix}{key}", difflib.get_close_matches(str(key), fields, n=2)))
            continue
        child = cfg._get_node(key)
        if isinstance(child, DictConfig) and not child._is_missing() and not child._is_none():
            out.extend(unknown_keys(child, f"{prefix}{key}."))
    return out


def check_known_keys(cfg: DictConfig) -> None:
    """ValueError, one line naming each unknown key (and the field it probably meant)."""
    bad = unknown_keys(cfg)
    if not bad:
        return
    parts = []
    for key, close in bad:
        section = key.rsplit(".", 1)[0] + "." if "." in key else ""
        hint = f" (did you mean {' or '.join(section + c for c in close)}?)" if close else ""
        parts.append(f"{key}{hint}")
    raise ValueError(f"unknown config key{'s' if len(bad) > 1 else ''} {', '.join(parts)}: no config has "
                     "such a field, so the run would ignore it (every field is listed in opcd/config.py)")
