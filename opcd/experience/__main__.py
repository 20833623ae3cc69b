"""Build an experience context from the model's own solutions, and keep the best of several.

    python -m opcd.experience                                  # toy model, reverse rule, demos extractor
    python -m opcd.experience task.distill_rules=[sort] candidates=8 max_experience_tokens=64
    python -m opcd.experience task=jsonl task.train_file=train.jsonl validation_file=val.jsonl \
        model.path=/path/to/instruct-model extractor=llm max_experience_tokens=1024
    python -m opcd.train task.experience_file=outputs/experience/<time>/experience.txt   # distil it

Writes the chosen text to ``out`` and every candidate's validation score to ``report`` (JSON). Bad
input (wrong path, no chat template, unknown extractor, too few problems) exits with a one-line error.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from opcd.config import register_configs

register_configs()


def run_experience(cfg) -> dict:
    from opcd.experience.pipeline import format_report, load_problems, run_pipeline

    problems, validation, verify = load_problems(cfg)  # config errors first: before torch, vLLM or the model load
    from opcd.modeling import load_tokenizer
    from opcd.engine import engine_kwargs, make_llm, sample, seed_engine

    tok = load_tokenizer(cfg.model.path)
    llm = make_llm(cfg.model.path, **engine_kwargs(cfg.model, cfg.rollout))

    def generate(prompts, *, temperature, top_p, max_tokens, seed):
        if seed is not None:
            seed_engine(llm, seed)  # request order is fixed, so one seed per batch makes it reproducible
        return [s.text for s in sample(llm, prompts, temperature=temperature, top_p=top_p, max_tokens=max_tokens)]

    report = run_pipeline(cfg, problems, validation, verify, tok, generate)
    rules = list(cfg.task.distill_rules) if cfg.task.name == "toy_rules" else None
    report = {"model": cfg.model.path, "task": cfg.task.name, "rules": rules, "experience_file": str(Path(cfg.out)),
              **report}
    print(format_report(report))
    out, rep = Path(cfg.out), Path(cfg.report)
    for p in (out, rep):
        p.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report["experience"] + "\n")  # read back with the trailing newline dropped
    rep.write_text(json.dumps(report, indent=2))
    print(f"wrote {out} (candidate {report['chosen']}, validation accuracy "
          f"{100 * report['chosen_accuracy']:.1f}% vs {100 * report['no_context_accuracy']:.1f}% without context) "
          f"and {rep}")
    if report["chosen_accuracy"] is not None and report["chosen_accuracy"] < report["no_context_accuracy"]:
        # Not an error (a weak model's lessons can hurt), but distilling it would teach a worse behaviour.
        print("opcd.experience: warning: every candidate scores below no context; distilling it would make the "
              "student worse. Try more problems per candidate, extractor=demos, or a stronger model.")
    print(f"distil it: python -m opcd.train task.experience_file={out.resolve()}")
    return report


@hydra.main(config_path="../../conf", config_name="experience", version_base="1.3")
def main(cfg: DictConfig) -> None:
    try:
        run_experience(cfg)
    except (FileNotFoundError, ValueError, OSError) as e:
        sys.exit(f"opcd.experience: error: {e}")


if __name__ == "__main__":
    main()
