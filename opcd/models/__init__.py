"""Models opcd prepares locally: the shipped toy model's tooling (``opcd.models.toy``) and real models,
e.g. ``python -m opcd.models.smollm2``."""
