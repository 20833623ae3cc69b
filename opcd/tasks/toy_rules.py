"""Task ``toy_rules``: the synthetic rule world (``opcd.tasks.toy_world``), generated deterministically.

Training: the distilled rules with their context (plus retain records of the other rules, whose context
the student sees too). Evaluation: the distilled rules in every context kind, the other rules with
their context, and the distilled rules described by the held-out paraphrase (``system_heldout``).
"""
from __future__ import annotations

from opcd.tasks import toy_world
from opcd.tasks.task_data import TaskData


def verify_exact(response: str, record: dict) -> bool:
    """Exact match of the response with ``record["answer"]`` (the toy world's verifier)."""
    return toy_world.verify(response, record["answer"])


def load(cfg) -> TaskData:
    """``load_task`` for ``task=toy_rules`` (``opcd.config.ToyRulesTaskConfig``)."""
    for r in cfg.distill_rules:
        toy_world.get_rule(r)  # clear error on a typo
    if cfg.context_kind not in ("system", "demos"):
        raise ValueError(f"task.context_kind must be system or demos, got {cfg.context_kind!r}")
    train = toy_world.generate("train", rules=list(cfg.distill_rules), context_kinds=(cfg.context_kind,),
                               n_per_rule=cfg.train_size, seed=cfg.seed, k_demos=cfg.k_demos)
    others = [r.name for r in toy_world.RULES if r.name not in cfg.distill_rules]
    n_retain = round(cfg.retain_ratio * len(train) / max(1, len(others)))
    if n_retain and others:
        # Retain records keep the context on the student side as well: their reverse KL anchors the
        # with-context behaviour of the other rules to the frozen teacher while the distilled rule's
        # context is being removed (without them a 1M-parameter student turns into a reverser).
        for rec in toy_world.generate("train", rules=others, context_kinds=(cfg.context_kind,),
                                      n_per_rule=n_retain, seed=cfg.seed, k_demos=cfg.k_demos):
            rec["metadata"]["retain"] = True
            train.append(rec)
    # Distilled rules: every context kind (no-context accuracy is the target). Other rules: with
    # context only, to see whether distillation harmed what the context still has to do.
    evals = []
    for rec in toy_world.generate("test", n_per_rule=cfg.eval_n_per_rule, seed=cfg.seed, k_demos=cfg.k_demos):
        distilled = rec["metadata"]["rule"] in cfg.distill_rules
        if distilled or rec["metadata"]["context_kind"] == cfg.context_kind:
            rec["metadata"]["group"] = "distilled" if distilled else "other"
            evals.append(rec)
    # Out of distribution: the distilled rules described by the paraphrase held out of pretraining.
    for rec in toy_world.generate("test", rules=list(cfg.distill_rules), context_kinds=("system",),
                                  n_per_rule=cfg.eval_n_per_rule, seed=cfg.seed, paraphrases="heldout"):
        rec["metadata"].update(group="distilled", context_kind="system_heldout")
        evals.append(rec)
    return TaskData(train, evals, verify_exact)
