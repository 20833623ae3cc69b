"""Toy-world evaluation: accuracy per rule with system prompt / with demonstrations / without context.

Engine-agnostic: it takes a ``generate`` callable (token-id prompts -> response texts), so the CLI
can pass a local vLLM engine and the training loop its Ray rollout workers.
"""
from __future__ import annotations

from typing import Callable

from opcd.chat import encode_prompt
from opcd.tasks.toy_world import CONTEXT_KINDS, verify

Table = dict[str, dict[str, float]]  # rule -> context kind -> accuracy in [0, 1]


def accuracy_table(records: list[dict], responses: list[str]) -> Table:
    """Exact-match accuracy per (rule, context kind), plus a ``mean`` row over rules."""
    hits: dict[tuple[str, str], list[bool]] = {}
    for rec, resp in zip(records, responses, strict=True):
        key = (rec["metadata"]["rule"], rec["metadata"]["context_kind"])
        hits.setdefault(key, []).append(verify(resp, rec["answer"]))
    table: Table = {}
    for (rule, kind), v in hits.items():
        table.setdefault(rule, {})[kind] = sum(v) / len(v)
    kinds = [k for k in CONTEXT_KINDS if any(k in row for row in table.values())]
    table["mean"] = {k: sum(row[k] for row in table.values() if k in row) /
                     sum(1 for row in table.values() if k in row) for k in kinds}
    return table


def evaluate(records: list[dict], tokenizer, generate: Callable[[list[list[int]]], list[str]]) -> Table:
    """Greedy-decode every record's prompt (rendered with its context) and score it."""
    prompts = [encode_prompt(tokenizer, r["prompt"], r["context"]) for r in records]
    return accuracy_table(records, generate(prompts))


def format_table(table: Table, title: str = "") -> str:
    """A fixed-width text table: rows = rules, columns = context kinds, cells in percent."""
    kinds = [k for k in CONTEXT_KINDS if any(k in row for row in table.values())]
    head = f"{'rule':<12}" + "".join(f"{('with ' + k) if k != 'none' else 'no context':>14}" for k in kinds)
    lines = [title] if title else []
    lines += [head, "-" * len(head)]
    for rule, row in table.items():
        lines.append(f"{rule:<12}" + "".join(f"{100 * row[k]:>13.1f}%" if k in row else f"{'-':>14}" for k in kinds))
    return "\n".join(lines)
