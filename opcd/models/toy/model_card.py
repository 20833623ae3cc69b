"""Measure the shipped toy model with the vLLM evaluator and write its model card.

    python -m opcd.models.toy.model_card [model_dir]

The card's numbers come from ``opcd.eval`` on the test split (fixed seed), so they can be
reproduced with one command; ``tests/models/test_toy_model.py`` asserts the same bars.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from omegaconf import OmegaConf

from opcd.config import EvalConfig
from opcd.models.toy import DEFAULT_OUT

# The bars the shipped model must meet (issue: foundation). The default experiment distils DISTILLED.
BAR_SYSTEM_EVERY_RULE = 0.90
BAR_DEMOS_MEAN = 0.70
BAR_NOCTX_DISTILLED = 0.30
DISTILLED = "reverse"


def eval_config(model_dir: str, paraphrases: str = "train", n_per_rule: int = 100, out: str = "/dev/null",
                context_kinds: tuple[str, ...] = ("system", "demos", "none")):
    cfg = OmegaConf.structured(EvalConfig(split="test", n_per_rule=n_per_rule, paraphrases=paraphrases, out=out,
                                          context_kinds=list(context_kinds)))
    cfg.model.path = str(model_dir)
    cfg.rollout.threads = 2
    return cfg


def write_model_card(model_dir: Path) -> dict:
    from opcd.eval.__main__ import run_eval
    from opcd.eval.toy import format_table

    model_dir = Path(model_dir)
    main = run_eval(eval_config(model_dir, out=str(model_dir / "eval_test.json")))["accuracy"]
    # Held-out wordings only change the system-prompt condition: evaluate just that one.
    ood = run_eval(eval_config(model_dir, paraphrases="heldout", out=str(model_dir / "eval_test_heldout.json"),
                               context_kinds=("system",)))
    log = json.loads((model_dir / "pretrain_log.json").read_text())
    rules = [r for r in main if r != "mean"]
    checks = {
        f"with system prompt, every rule >= {BAR_SYSTEM_EVERY_RULE:.0%}": min(main[r]["system"] for r in rules) >= BAR_SYSTEM_EVERY_RULE,
        f"with 4 demonstrations, mean >= {BAR_DEMOS_MEAN:.0%}": main["mean"]["demos"] >= BAR_DEMOS_MEAN,
        f"no context, `{DISTILLED}` <= {BAR_NOCTX_DISTILLED:.0%}": main[DISTILLED]["none"] <= BAR_NOCTX_DISTILLED,
    }
    card = f"""# opcd toy model: character-level Llama for the rule world

A {log['params'] / 1e6:.2f}M-parameter `LlamaForCausalLM` (hidden 128, 4 layers, 4 heads, tied
embeddings, {len(json.loads((model_dir / 'tokenizer.json').read_text())['model']['vocab'])}-token
character vocabulary with a system/user/assistant chat template), pretrained from scratch by
`python -m opcd.models.toy.pretrain` on the synthetic toy world of `opcd.tasks.toy_world`
({log['steps']} steps of {log['batch']} sequences, lr {log['lr']}, seed {log['seed']}, {log['train_minutes']} min
on {log['torch_threads']} CPU threads). It is the embedded default model of opcd: the context it is given
(a rule description or demonstrations) changes its answer, which is what context distillation moves into
the weights.

## Accuracy on the test split (exact match, greedy, vLLM; 100 prompts per rule and condition)

Reproduce: `python -m opcd.models.toy.model_card` (or `python -m opcd.eval`).

```
{format_table(main)}
```

Bars: {"; ".join(f"{k}: {'PASS' if v else 'FAIL'}" for k, v in checks.items())}.

## Held-out paraphrases (out of distribution)

The last description of each rule was never seen in pretraining. System-prompt accuracy with it:

```
{format_table({r: {"system": v["system"]} for r, v in ood["accuracy"].items()})}
```

A model this small memorises its training wordings, so unseen paraphrases transfer poorly; opcd
reports this as the toy world's out-of-distribution test.

## Intended use

Tests, examples and the default `python -m opcd.train` experiment (distilling the `{DISTILLED}` rule's
description). Not a general language model.
"""
    (model_dir / "README.md").write_text(card)
    print(card)
    return {"accuracy": main, "heldout": ood["accuracy"], "checks": checks}


if __name__ == "__main__":
    write_model_card(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_OUT)
