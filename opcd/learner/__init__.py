"""Learner: DeepSpeed engine (actor.py) and the loss it minimises (objective.py)."""
