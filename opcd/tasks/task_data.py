"""What a task loader returns: the training and evaluation records and the verifier."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional


@dataclass
class TaskData:
    train: list[dict]  # records the student is trained on (their contexts go to the teacher)
    eval: list[dict]  # records evaluated with and without context
    verify: Callable[[str, dict], bool]  # (response text, record) -> correct? (games: the episode transcript)
    make_env: Optional[Callable[[dict], object]] = None  # multi-turn tasks: record -> environment (opcd.rollout.episodes)
    max_turns: int = 1  # multi-turn tasks: student turns per episode
