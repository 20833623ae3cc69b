"""Evaluate an HF model directory on the toy world with vLLM.

    python -m opcd.eval                                   # the shipped tiny model, test split
    python -m opcd.eval model.path=outputs/.../final n_per_rule=200 split=validation

Prints a per-rule table (with system prompt / with demos / without context) and writes it as JSON
to ``out``. Bad input (wrong path, no chat template, unknown split) exits with a one-line error.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from opcd.config import register_configs

register_configs()


def run_eval(cfg) -> dict:
    from opcd.eval.evaluator import EvalSettings, local_generate
    from opcd.eval.toy import evaluate, format_table
    from opcd.modeling import check_model_path, load_tokenizer
    from opcd.engine import engine_kwargs, make_llm
    from opcd.tasks.toy_world import SPLITS, generate

    if cfg.split not in SPLITS:
        raise ValueError(f"unknown split {cfg.split!r}; the toy world has splits {', '.join(SPLITS)}")
    check_model_path(cfg.model.path, cfg.model.hub)  # one line for a missing path or a damaged checkpoint
    tok = load_tokenizer(cfg.model.path)
    records = generate(cfg.split, rules=list(cfg.rules) or None, n_per_rule=cfg.n_per_rule, seed=cfg.seed,
                       context_kinds=tuple(cfg.context_kinds), k_demos=cfg.k_demos, paraphrases=cfg.paraphrases)
    r = cfg.rollout
    llm = make_llm(cfg.model.path, **engine_kwargs(cfg.model, r))
    # Greedy decoding (EvalSettings' defaults), whatever the rollout's sampling settings say.
    table = evaluate(local_generate(llm, use_tqdm=True), tok, records, EvalSettings(max_tokens=r.max_tokens))
    print(format_table(table, f"{cfg.model.path} | split={cfg.split} | n={cfg.n_per_rule} per rule and context"))
    result = {"model": cfg.model.path, "split": cfg.split, "n_per_rule": cfg.n_per_rule, "seed": cfg.seed,
              "paraphrases": cfg.paraphrases, "k_demos": cfg.k_demos, "accuracy": table}
    out = Path(cfg.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")
    return result


@hydra.main(config_path="../../conf", config_name="eval", version_base="1.3")
def main(cfg: DictConfig) -> None:
    try:
        run_eval(cfg)
    except (FileNotFoundError, ValueError, OSError) as e:
        sys.exit(f"opcd.eval: error: {e}")


if __name__ == "__main__":
    main()
