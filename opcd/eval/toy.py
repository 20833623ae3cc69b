"""Toy-world evaluation: accuracy per rule with system prompt / with demonstrations / without context.

The answers come from the shared evaluator (``opcd.eval.evaluator``); this module only scores them
against the toy world's exact-match verifier and lays them out per rule.
"""
from __future__ import annotations

from opcd.eval.evaluator import EvalSettings, Generate, evaluate_results
from opcd.eval.metrics import Result
from opcd.tasks.toy_world import CONTEXT_KINDS, verify

Table = dict[str, dict[str, float]]  # rule -> context kind -> accuracy in [0, 1]


def verify_record(response: str, record: dict) -> bool:
    """The toy world's exact match of ``response`` against ``record["answer"]``."""
    return verify(response, record["answer"])


def table_of(results: list[Result]) -> Table:
    """Accuracy per (rule, context kind) over the results, plus a ``mean`` row (macro average over rules)."""
    hits: dict[tuple[str, str], list[bool]] = {}
    for r in results:
        key = (r.record["metadata"]["rule"], r.record["metadata"]["context_kind"])
        hits.setdefault(key, []).append(r.correct)
    table: Table = {}
    for (rule, kind), v in hits.items():
        table.setdefault(rule, {})[kind] = sum(v) / len(v)
    kinds = [k for k in CONTEXT_KINDS if any(k in row for row in table.values())]
    table["mean"] = {k: sum(row[k] for row in table.values() if k in row) /
                     sum(1 for row in table.values() if k in row) for k in kinds}
    return table


def evaluate(generate: Generate, tok, records: list[dict], settings: EvalSettings) -> Table:
    """Answer every record's prompt (rendered with its context) through the shared evaluator and tabulate."""
    return table_of(evaluate_results(generate, tok, records, verify_record, settings))


def format_table(table: Table, title: str = "") -> str:
    """A fixed-width text table: rows = rules, columns = context kinds, cells in percent."""
    kinds = [k for k in CONTEXT_KINDS if any(k in row for row in table.values())]
    head = f"{'rule':<12}" + "".join(f"{('with ' + k) if k != 'none' else 'no context':>14}" for k in kinds)
    lines = [title] if title else []
    lines += [head, "-" * len(head)]
    for rule, row in table.items():
        lines.append(f"{rule:<12}" + "".join(f"{100 * row[k]:>13.1f}%" if k in row else f"{'-':>14}" for k in kinds))
    return "\n".join(lines)
