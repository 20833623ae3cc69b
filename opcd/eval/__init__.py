"""Evaluation: toy-world accuracy tables (``opcd.eval.toy``) and the ``python -m opcd.eval`` CLI."""
