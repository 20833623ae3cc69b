"""The shipped toy model's tooling: its character tokenizer, its pretraining and its model card.

    python -m opcd.models.toy.pretrain      # ~25 min on a 2-core CPU, writes opcd/assets/toy-model
    python -m opcd.models.toy.model_card    # re-measure it with the vLLM evaluator, rewrite its README.md

The toy world itself (rules, records, verifier) is task data and lives in ``opcd.tasks.toy_world``.
"""
from pathlib import Path

# Where the shipped model lives (the default of model.path, conf/model/toy.yaml); both CLIs write here.
DEFAULT_OUT = Path(__file__).resolve().parents[2] / "assets" / "toy-model"
