"""opcd.loop_state: the loop's state round-trips through a checkpoint, and the NaN streak stops a run."""
import json

import pytest

from opcd.loop_state import LoopState, NonFiniteLossError


def test_checkpoint_round_trip_continues_the_same_random_stream():
    s = LoopState.fresh(3)
    s.rng.random()
    s.step, s.order, s.nonfinite_streak = 4, [2, 0], 1
    saved = json.loads(json.dumps(s.to_checkpoint()))  # what the checkpoint stores is JSON
    r = LoopState.from_checkpoint(saved)
    assert (r.step, r.order, r.nonfinite_streak, r.prefetch) == (4, [2, 0], 1, None)
    assert [r.rng.random() for _ in range(3)] == [s.rng.random() for _ in range(3)]


def test_nonfinite_streak_counts_resets_and_stops():
    s = LoopState.fresh(0)
    for step in (1, 2):
        s.step = step
        s.count_nonfinite(True, limit=3)
    assert s.nonfinite_streak == 2
    s.count_nonfinite(False, limit=3)
    assert s.nonfinite_streak == 0
    s.nonfinite_streak, s.step = 2, 5
    with pytest.raises(NonFiniteLossError, match="3 consecutive non-finite losses at step 5; lower algo.lr"):
        s.count_nonfinite(True, limit=3)
