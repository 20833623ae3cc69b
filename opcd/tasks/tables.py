"""Reading raw dataset rows (local JSONL / Parquet or a Hugging Face dataset) for the real-data tasks.

``math``, ``medical_qa``, ``safety`` and ``fewshot`` all start from rows in *someone else's* column
layout (GSM8K, DAPO-Math, MedQA, GLUE, ...). This module reads those rows, keeps a location string
for every row (``data.jsonl:12``, ``data.parquet row 3``, ``openai/gsm8k[train] row 7``) so that every
error names the file, the row and the fix, and turns finished rows into validated common records
(``opcd.tasks.records``).
"""
from __future__ import annotations

import json
from pathlib import Path

from opcd.tasks.records import DatasetError, iter_jsonl, validate_record

Rows = list[tuple[str, dict]]  # (where, row) pairs
JSONL_SUFFIXES = (".jsonl", ".json")
PARQUET_SUFFIXES = (".parquet", ".pq")


def read_file(path: str) -> Rows:
    """Rows of a local ``.jsonl`` (one JSON object per line) or ``.parquet`` file, with their locations."""
    p = Path(path)
    if not p.exists():
        raise DatasetError(f"dataset file {path!r} does not exist")
    suffix = p.suffix.lower()
    rows: Rows = []
    if suffix in JSONL_SUFFIXES:
        rows = list(iter_jsonl(path))
    elif suffix in PARQUET_SUFFIXES:
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(p)
        except Exception as e:  # pyarrow raises several types (ArrowInvalid, OSError) for a broken file
            raise DatasetError(f"{path}: not a readable Parquet file ({type(e).__name__}: {e})") from None
        # to_pylist gives plain Python values (lists and dicts for nested columns), like json.loads.
        rows = [(f"{path} row {i}", row) for i, row in enumerate(table.to_pylist(), 1)]
    else:
        raise DatasetError(f"{path}: unknown file type {suffix or '(none)'!r}; use .jsonl (one JSON object per "
                           "line) or .parquet")
    if not rows:
        raise DatasetError(f"dataset {path!r} is empty; it needs at least one row")
    return rows


def write_rows(path, rows: Rows) -> str:
    """Write ``rows`` as ``.jsonl`` or ``.parquet`` (by suffix), the formats :func:`read_file` reads;
    e.g. to save a Hugging Face split once online (``write_rows("train.parquet", list(ds))``). Returns the path."""
    path = Path(path)
    if path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(list(rows)), path)
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def read_hub(name: str, config: str | None, split: str) -> Rows:
    """Rows of one split of a Hugging Face dataset (``datasets.load_dataset``; needs network access once)."""
    local = ("save the split as Parquet on a machine with network access "
             f"(datasets.load_dataset({name!r}, {config!r}, split={split!r}).to_parquet('{split}.parquet')) "
             "and pass task.train_file=... / task.eval_file=... instead of task.dataset")
    try:
        import datasets  # heavy and optional: imported only when a hub dataset is asked for
    except ImportError:
        raise DatasetError(f"task.dataset={name!r} needs the datasets library: pip install datasets; "
                           f"or {local}") from None
    try:
        ds = datasets.load_dataset(name, config or None, split=split)
    except Exception as e:  # offline: ConnectionError, OSError, HF hub errors; wrong split: ValueError
        raise DatasetError(f"could not load Hugging Face dataset {name!r} (config {config!r}, split {split!r}): "
                           f"{type(e).__name__}: {e}. Check the name, task.dataset_config and the split; "
                           f"without network access, {local}") from None
    rows = [(f"{name}[{split}] row {i}", dict(row)) for i, row in enumerate(ds, 1)]
    if not rows:
        raise DatasetError(f"Hugging Face dataset {name!r} split {split!r} is empty")
    return rows


def split_rows(cfg, which: str) -> Rows | None:
    """Rows of the ``train`` or ``eval`` split: ``task.train_file``/``task.eval_file`` when set, else the
    ``task.train_split``/``task.eval_split`` of ``task.dataset``. ``None`` when no evaluation data is given;
    missing training data is an error naming both ways to give it."""
    path = cfg.train_file if which == "train" else cfg.eval_file
    if path:
        return read_file(path)
    split = cfg.train_split if which == "train" else cfg.eval_split
    if cfg.dataset and split:
        return read_hub(cfg.dataset, cfg.dataset_config, split)
    if which == "train":
        raise DatasetError(f"task={cfg.name} needs training rows: task.train_file=<rows.jsonl|rows.parquet> "
                           "or task.dataset=<Hugging Face dataset name> (with network access)")
    return None


def column(row: dict, name: str, where: str, option: str):
    """Value of column ``name`` in ``row``; ``a.b`` reaches into nested dicts (e.g. DAPO's
    ``reward_model.ground_truth``). A missing or null column names the row, the columns there are and
    the ``task.<option>`` that picks another column."""
    cur = row
    for part in name.split("."):
        if not isinstance(cur, dict) or part not in cur:
            raise DatasetError(f"{where}: missing column {name!r} (the row has {sorted(row)}); "
                               f"set task.{option}=<column name>")
        cur = cur[part]
    if cur is None:
        raise DatasetError(f"{where}: column {name!r} is null; fill it or drop the row")
    return cur


def as_text(value, where: str, name: str) -> str:
    """A column value as text: strings as they are, numbers printed, and a chat-message list (as in
    DAPO-Math-17k's ``prompt``) reduced to its last user turn, which is the question itself."""
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, list) and value and all(isinstance(m, dict) and "content" in m for m in value):
        users = [m for m in value if m.get("role") == "user"] or value
        return str(users[-1]["content"])
    raise DatasetError(f"{where}: column {name!r} must be text (or a number / chat-message list), "
                       f"got {type(value).__name__}")


def read_context(cfg, default: str = "") -> str:
    """The task's context text: ``task.context_file`` if set, else ``task.context``, else ``default``."""
    if cfg.context_file:
        p = Path(cfg.context_file)
        if not p.is_file():
            raise DatasetError(f"task.context_file {cfg.context_file!r} does not exist; give a text file or "
                               "set task.context_file=null")
        return p.read_text()
    return cfg.context or default


def first(items: list, n: int) -> list:
    """The first ``n`` items (all of them when ``n <= 0``)."""
    return items[:n] if n and n > 0 else items


def record(prompt: str, context: str, answer: str, where: str, **metadata) -> dict:
    """A validated common record (``opcd.tasks.records``); ``metadata.row`` keeps where it came from."""
    return validate_record({"prompt": prompt, "context": context, "answer": answer,
                            "metadata": {**metadata, "row": where}}, where)


def with_and_without(records: list[dict], kind: str, group: str = "distilled") -> list[dict]:
    """Evaluation view: every record with its context (``context_kind=kind``) and without it
    (``none``), in one group, so the loop reports both and the metrics can pair them by prompt. A record
    with an empty context is only evaluated once (both views would be the same prompt)."""
    out = []
    for r in records:
        if r["context"]:
            out.append({**r, "metadata": {**r["metadata"], "group": group, "context_kind": kind}})
        out.append({**r, "context": "", "metadata": {**r["metadata"], "group": group, "context_kind": "none"}})
    return out
