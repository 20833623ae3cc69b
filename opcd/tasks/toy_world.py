"""The toy world: a synthetic rule-following task where context really matters.

Each query is a short random lowercase string; the answer is the string transformed by a hidden
*rule*. Without context a model can only guess which rule is meant; with the rule's description
(a system prompt) or k worked demonstrations (the "experience" form) it can answer exactly.

The rules are chosen so that their outputs mostly *diverge at the first character* (reverse starts
with the last input character, shift_next with the successor of the first, ...). A model without
context therefore cannot score on one rule by sharing a prefix with another, which keeps the
no-context accuracy of the distilled rule near 1/len(RULES) (see shared/toy-world-facts.md for why
this matters).

Records use the same format as real datasets (see ``opcd.tasks.records``):
``{"prompt", "context", "answer", "metadata": {...}}``.
"""
from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from typing import Callable, Iterator

ALPHABET = "abcdefghijklmnopqrstuvwxyz"
CONTEXT_KINDS = ("system", "demos", "none")
SPLITS = ("train", "validation", "test")
PARAPHRASE_SETS = ("train", "heldout", "all")


def _shift(s: str, k: int) -> str:
    return "".join(ALPHABET[(ALPHABET.index(ch) + k) % 26] for ch in s)


def _swap_pairs(s: str) -> str:
    out = list(s)
    for i in range(0, len(s) - 1, 2):
        out[i], out[i + 1] = out[i + 1], out[i]
    return "".join(out)


@dataclass(frozen=True)
class Rule:
    """One string transformation with its paraphrased descriptions."""

    name: str  # short identifier used in configs and tables
    fn: Callable[[str], str]  # the transformation itself
    descriptions: tuple[str, ...]  # paraphrases; the last N_HELDOUT_PARAPHRASES are never pretrained on


# The last paraphrase of each rule is held out of pretraining: it measures out-of-distribution
# generalisation of the description form (expected to be poor for a tiny model; see model card).
N_HELDOUT_PARAPHRASES = 1

RULES: tuple[Rule, ...] = (
    Rule("reverse", lambda s: s[::-1], (
        "Reverse the string.",
        "Write the letters in reverse order.",
        "Output the input backwards.",
        "Read the word from right to left.",
        "Flip the order of all characters.",
        "Give the string spelled back to front.",
    )),
    Rule("shift_next", lambda s: _shift(s, 1), (
        "Replace each letter with the next letter of the alphabet.",
        "Shift every letter forward by one (z becomes a).",
        "Move each character one step up the alphabet.",
        "Change a to b, b to c, and so on; z wraps to a.",
        "Advance every letter by one position.",
        "Each letter becomes its successor in the alphabet.",
    )),
    Rule("shift_prev", lambda s: _shift(s, -1), (
        "Replace each letter with the previous letter of the alphabet.",
        "Shift every letter back by one (a becomes z).",
        "Move each character one step down the alphabet.",
        "Change b to a, c to b, and so on; a wraps to z.",
        "Step every letter back by one position.",
        "Each letter becomes its predecessor in the alphabet.",
    )),
    Rule("upper", str.upper, (
        "Convert the string to uppercase.",
        "Write every letter as a capital.",
        "Make all characters upper case.",
        "Capitalize each letter of the input.",
        "Output the same letters in caps.",
        "Turn the lowercase letters into capitals.",
    )),
    Rule("double", lambda s: "".join(ch * 2 for ch in s), (
        "Repeat each character twice.",
        "Double every letter in place.",
        "Write each letter two times.",
        "Duplicate each character of the string.",
        "Every letter appears twice in a row.",
        "Echo each letter once right after itself.",
    )),
    Rule("swap_pairs", _swap_pairs, (
        "Swap each pair of adjacent characters.",
        "Exchange letters one and two, three and four, and so on.",
        "Swap neighbouring letters in pairs.",
        "Trade places within each consecutive pair of letters.",
        "Switch every two letters; a last odd letter stays.",
        "Flip the order inside each pair of characters.",
    )),
    Rule("sort", lambda s: "".join(sorted(s)), (
        "Sort the letters alphabetically.",
        "Put the characters in alphabetical order.",
        "Arrange the letters from a to z.",
        "Order the string's letters as in a dictionary.",
        "Rearrange the letters into sorted order.",
        "List the letters in ascending alphabetical order.",
    )),
    Rule("mirror", lambda s: s + s[::-1], (
        "Write the string followed by its reverse.",
        "Append the reversed string to the original.",
        "Output the word and then the word backwards.",
        "Make a palindrome: the input, then the input reversed.",
        "Copy the string, then add it again from right to left.",
        "Follow the input with its mirror image.",
    )),
)
RULES_BY_NAME = {r.name: r for r in RULES}


def get_rule(name: str) -> Rule:
    """Look a rule up by name, with an error listing the valid names."""
    try:
        return RULES_BY_NAME[name]
    except KeyError:
        raise ValueError(f"unknown toy-world rule {name!r}; valid rules: {', '.join(RULES_BY_NAME)}") from None


def split_of(s: str) -> str:
    """Deterministically assign an input string to a split, so splits never share an input."""
    h = int.from_bytes(hashlib.blake2b(s.encode(), digest_size=4).digest(), "little") % 20
    return "test" if h == 0 else "validation" if h == 1 else "train"


def random_input(rng: random.Random, split: str, min_len: int = 3, max_len: int = 6) -> str:
    """A random lowercase string of length in [min_len, max_len] that belongs to ``split``."""
    while True:
        s = "".join(rng.choice(ALPHABET) for _ in range(rng.randint(min_len, max_len)))
        if split_of(s) == split:
            return s


def format_demo_pairs(pairs: list[tuple[str, str]]) -> str:
    """The demonstration ("experience") context: one ``input -> output`` line per (input, output) pair.

    Also renders ``opcd.experience``'s demos, whose outputs are the model's own correct answers.
    """
    return "Examples:\n" + "\n".join(f"{x} -> {y}" for x, y in pairs)


def format_demos(rule: Rule, inputs: list[str]) -> str:
    """The demonstration context for ``rule``: one ``input -> rule(input)`` line per example."""
    return format_demo_pairs([(x, rule.fn(x)) for x in inputs])


def make_context(rule: Rule, kind: str, rng: random.Random, split: str, k_demos: int = 4,
                 paraphrases: str = "train", min_len: int = 3, max_len: int = 6) -> tuple[str, dict]:
    """Build a context string of ``kind`` ('system' | 'demos' | 'none') and its metadata.

    ``paraphrases`` picks descriptions from the pretraining set ('train'), the held-out set
    ('heldout') or both ('all').
    """
    if paraphrases not in PARAPHRASE_SETS:
        raise ValueError(f"unknown paraphrases {paraphrases!r}; expected one of {PARAPHRASE_SETS}")
    if kind == "none":
        return "", {}
    if kind == "system":
        n_train = len(rule.descriptions) - N_HELDOUT_PARAPHRASES
        ids = {"train": range(n_train), "heldout": range(n_train, len(rule.descriptions)),
               "all": range(len(rule.descriptions))}[paraphrases]
        pid = rng.choice(list(ids))
        return rule.descriptions[pid], {"paraphrase_id": pid}
    if kind == "demos":
        demos = [random_input(rng, split, min_len, max_len) for _ in range(k_demos)]
        return format_demos(rule, demos), {"k_demos": k_demos}
    raise ValueError(f"unknown context kind {kind!r}; expected one of {CONTEXT_KINDS}")


def generate(split: str, rules: list[str] | None = None, n_per_rule: int = 100,
             context_kinds: tuple[str, ...] = CONTEXT_KINDS, seed: int = 0, k_demos: int = 4,
             paraphrases: str = "train", min_len: int = 3, max_len: int = 6) -> list[dict]:
    """Deterministically generate toy-world records.

    Returns ``len(rules) * len(context_kinds) * n_per_rule`` records; for each rule the same
    ``n_per_rule`` query strings are used under every context kind, so with/without-context
    accuracies are measured on identical prompts. Same arguments -> same records.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    if paraphrases not in PARAPHRASE_SETS:
        raise ValueError(f"unknown paraphrases {paraphrases!r}; expected one of {PARAPHRASE_SETS}")
    names = list(rules) if rules else [r.name for r in RULES]
    out: list[dict] = []
    for name in names:
        rule = get_rule(name)
        # One RNG per (split, rule, seed) so adding a rule never changes another rule's data.
        rng = random.Random(f"{seed}/{split}/{name}")
        queries = [random_input(rng, split, min_len, max_len) for _ in range(n_per_rule)]
        for kind in context_kinds:
            crng = random.Random(f"{seed}/{split}/{name}/{kind}")
            for q in queries:
                context, meta = make_context(rule, kind, crng, split, k_demos, paraphrases, min_len, max_len)
                out.append({"prompt": q, "context": context, "answer": rule.fn(q),
                            "metadata": {"task": "toy_rules", "rule": name, "context_kind": kind, **meta}})
    return out


def sample_pretraining_example(rng: random.Random, mix: tuple[float, float, float] = (0.5, 0.35, 0.15),
                               max_demos: int = 4) -> dict:
    """One fresh pretraining record: a random rule under a random context kind (system/demos/none).

    Pretraining uses only the 'train' split's inputs and the non-held-out paraphrases.
    """
    rule = rng.choice(RULES)
    kind = rng.choices(CONTEXT_KINDS, weights=mix)[0]
    q = random_input(rng, "train")
    context, _ = make_context(rule, kind, rng, "train", k_demos=rng.randint(2, max_demos))
    return {"prompt": q, "context": context, "answer": rule.fn(q),
            "metadata": {"task": "toy_rules", "rule": rule.name, "context_kind": kind}}


def verify(response: str, answer: str) -> bool:
    """Exact-match verifier (surrounding whitespace ignored)."""
    return response.strip() == answer.strip()


def iter_rules() -> Iterator[str]:
    return (r.name for r in RULES)
