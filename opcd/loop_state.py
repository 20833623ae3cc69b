"""The training loop's state: one object, saved by the checkpoint as it is and restored from it.

Everything a resumed run needs to repeat the uninterrupted one lives here: the optimizer steps done,
the rest of the epoch's data order, the controller's RNG (data order and the on-/off-policy coin),
the non-finite-loss streak, and the batch being prefetched under ``rollout.overlap``.
"""
from __future__ import annotations

import random
from concurrent.futures import Future
from dataclasses import dataclass, field
from threading import Event
from typing import Optional


class NonFiniteLossError(RuntimeError):
    pass


@dataclass
class Prefetch:
    """The next step's rollout and scoring, running in a background thread (``rollout.overlap``)."""

    future: Future  # resolves to that step's phases.Scored
    rolled: Event  # set once its rollout is done (the learner must not push weights before)
    order: list[int]  # the data order *before* its prompts were drawn
    rng: tuple  # the RNG state before its draw: a checkpoint rewinds to it, so the resumed run redraws it


@dataclass
class LoopState:
    """Mutable state of one run. ``step`` counts optimizer steps done (the next one is ``step + 1``)."""

    rng: random.Random  # data order and the on-/off-policy coin of GKD
    step: int = 0  # optimizer steps done
    order: list[int] = field(default_factory=list)  # record indices left in the current epoch
    nonfinite_streak: int = 0  # consecutive steps skipped for a NaN/inf loss
    prefetch: Optional[Prefetch] = None  # next step's batch in flight (rollout.overlap), else None

    @classmethod
    def fresh(cls, seed: int) -> "LoopState":
        return cls(rng=random.Random(seed))

    def to_checkpoint(self) -> dict:
        """The JSON-able part a checkpoint stores. A prefetched batch is not saved: the data order and
        RNG are rewound to before its draw, so the resumed run draws the same prompts again."""
        order, rng = (self.prefetch.order, self.prefetch.rng) if self.prefetch else (self.order, self.rng.getstate())
        return {"step": self.step, "order": list(order), "rng": [rng[0], list(rng[1]), rng[2]],
                "nonfinite_streak": self.nonfinite_streak}

    @classmethod
    def from_checkpoint(cls, saved: dict) -> "LoopState":
        rng = random.Random()
        version, internal, gauss = saved["rng"]
        rng.setstate((version, tuple(internal), gauss))
        return cls(rng=rng, step=saved["step"], order=list(saved["order"]),
                   nonfinite_streak=saved["nonfinite_streak"])

    def count_nonfinite(self, nonfinite: bool, limit: int) -> None:
        """Update the streak of skipped (NaN/inf) steps after step ``self.step``; raise at ``limit``.

        The learner already skipped the update, so nothing corrupt reaches the weights; raising here
        (before the step's checkpoint) means no checkpoint is written from a diverging run either.
        """
        if not nonfinite:
            self.nonfinite_streak = 0
            return
        self.nonfinite_streak += 1
        print(f"[opcd] step {self.step}: non-finite loss, update skipped ({self.nonfinite_streak} in a row)",
              flush=True)
        if self.nonfinite_streak >= limit:
            raise NonFiniteLossError(f"{self.nonfinite_streak} consecutive non-finite losses at step {self.step}; "
                                     "lower algo.lr, check the data, or raise algo.max_nonfinite_steps")
