"""The record format every task uses, and strict loading of user datasets.

A record is a dict ``{"prompt": str, "context": str, "answer": str, "metadata": dict}``:
``prompt`` is the user turn, ``context`` the privileged context (system prompt, demonstrations or
experience; may be empty), ``answer`` the reference for the verifier (may be empty for tasks that
have none). ``metadata.retain = true`` marks a *retain* record: the student sees the context too,
so the loss keeps its with-context behaviour close to the teacher's. Bad data fails loudly with the file, the line and the fix.
"""
from __future__ import annotations

import json
from pathlib import Path

REQUIRED = ("prompt", "context")


class DatasetError(ValueError):
    """A dataset that cannot be used as given; the message names the file/row and the fix."""


def validate_record(rec, where: str) -> dict:
    """Check one record and fill optional fields; ``where`` is e.g. ``'data.jsonl:12'``."""
    if not isinstance(rec, dict):
        raise DatasetError(f"{where}: expected a JSON object per line, got {type(rec).__name__}")
    missing = [k for k in REQUIRED if k not in rec]
    if missing:
        raise DatasetError(f"{where}: missing column(s) {missing}; every record needs 'prompt' and 'context' "
                           "(use an empty string for no context)")
    for k in ("prompt", "context", "answer"):
        if k in rec and not isinstance(rec[k], str):
            raise DatasetError(f"{where}: column {k!r} must be a string, got {type(rec[k]).__name__}")
    if not rec["prompt"].strip():
        raise DatasetError(f"{where}: empty 'prompt'")
    return {"prompt": rec["prompt"], "context": rec["context"], "answer": rec.get("answer", ""),
            "metadata": dict(rec.get("metadata") or {})}


def iter_jsonl(path: str):
    """``(location "file:line", object)`` for every non-blank line of a JSONL file.

    Raises DatasetError naming the file and line (counted from 1) for a missing file, invalid UTF-8,
    malformed JSON or a line that is not a JSON object.
    """
    p = Path(path)
    if not p.exists():
        raise DatasetError(f"dataset file {path!r} does not exist")
    with p.open("rb") as f:  # bytes, decoded line by line: a bad byte is reported at its line, not its buffer offset
        for i, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DatasetError(f"{path}:{i}: invalid UTF-8 (byte 0x{raw[e.start]:02x} at byte {e.start + 1} "
                                   "of the line); save the file as UTF-8") from None
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DatasetError(f"{path}:{i}: malformed JSON ({e.msg} at column {e.colno}); "
                                   "each line must be one JSON object") from None
            if not isinstance(row, dict):
                raise DatasetError(f"{path}:{i}: expected a JSON object per line, got {type(row).__name__}")
            yield f"{path}:{i}", row


def load_jsonl(path: str) -> list[dict]:
    """Read and validate a JSONL dataset. Raises DatasetError on the first bad line or if empty."""
    out = []
    for where, rec in iter_jsonl(path):
        r = validate_record(rec, where)
        r["metadata"].setdefault("row", where)  # the location later errors name (e.g. an over-long record)
        out.append(r)
    if not out:
        raise DatasetError(f"dataset {path!r} is empty; it needs at least one record")
    return out


def check_lengths(records: list[dict], lengths: list[int], max_len: int, policy: str, what: str) -> list[dict]:
    """Apply the too-long policy: ``refuse`` (raise with the count) or ``skip`` (drop, and say so).

    The refusal names the first offending record by its file location (``metadata.row``, e.g.
    ``data.jsonl:12``) when it has one, else by its position among ``records``, counted from 1.
    """
    bad = [i for i, n in enumerate(lengths) if n > max_len]
    if not bad:
        return records
    if policy == "refuse":
        first = records[bad[0]]
        where = (first.get("metadata") or {}).get("row") if isinstance(first, dict) else None
        where = where or f"row {bad[0] + 1}"
        raise DatasetError(f"{len(bad)} of {len(records)} {what} records exceed the model's maximum length "
                           f"({max_len} tokens; first offending: {where}, {lengths[bad[0]]} tokens). "
                           "Shorten them, raise model.max_model_len, or set task.too_long=skip")
    if policy == "skip":
        print(f"[opcd] skipping {len(bad)} of {len(records)} {what} records longer than {max_len} tokens")
        keep = set(range(len(records))) - set(bad)
        return [r for i, r in enumerate(records) if i in keep]
    raise ValueError(f"unknown task.too_long policy {policy!r}; expected refuse or skip")
