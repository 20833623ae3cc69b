"""Real (non-toy) models opcd can prepare locally, e.g. ``python -m opcd.models.smollm2``."""
