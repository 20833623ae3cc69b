"""Actor faults: the supervisor's retry policy (fast), and (slow) a rollout worker killed mid-run."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from ray.exceptions import ActorDiedError, GetTimeoutError

from opcd.recovery import ActorFailureError, Supervisor


class _Counting(Supervisor):
    """The real retry policy; recovery itself (Ray) is replaced by a counter."""

    def __init__(self, max_failures):
        super().__init__(actors=None, timeout_s=5.0, max_failures=max_failures, push_weights=dict)
        self.recoveries = 0

    def recover(self):
        self.recoveries += 1


def _flaky(failures: list):
    """A remote call that raises each exception in ``failures`` once, then succeeds."""
    def fn(timeout):
        assert timeout == 5.0
        if failures:
            raise failures.pop(0)
        return "done"
    return fn


def test_lost_work_is_rerun_after_recovery(capsys):
    sup = _Counting(max_failures=3)
    assert sup.call("rollout", _flaky([ActorDiedError(), GetTimeoutError()])) == "done"
    assert sup.failures == 2 and sup.recoveries == 2
    log = capsys.readouterr().out
    assert "rollout lost an actor (failure 1 of at most 3)" in log and "rollout timed out (failure 2" in log


def test_too_many_failures_stop_with_a_clear_error():
    sup = _Counting(max_failures=1)
    with pytest.raises(ActorFailureError, match="2 actor failures in this run .*max_actor_failures=1.*resume=auto"):
        sup.call("teacher scoring", _flaky([ActorDiedError(), ActorDiedError(), ActorDiedError()]))
    assert sup.recoveries == 1


def test_other_errors_are_not_swallowed():
    sup = _Counting(max_failures=3)
    with pytest.raises(ZeroDivisionError):
        sup.call("rollout", lambda t: 1 / 0)
    assert sup.failures == 0


@pytest.mark.slow
def test_killed_rollout_worker_is_restarted_and_the_run_finishes(tmp_path):
    steps = 6
    p = subprocess.Popen([sys.executable, "-m", "opcd.train", f"hydra.run.dir={tmp_path}", "logger=none",
                          f"steps={steps}", "eval_every=3", "prompts_per_step=8", "task.eval_n_per_rule=4"],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    metrics = tmp_path / "metrics.jsonl"
    deadline = time.time() + 600
    while time.time() < deadline and p.poll() is None:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 3:  # steps 0 (eval), 1 and 2 logged
            break
        time.sleep(0.2)
    assert p.poll() is None, p.stdout.read()[-3000:]
    pid = json.loads((tmp_path / "actors.json").read_text())["rollout_0"]
    os.kill(pid, signal.SIGKILL)
    try:
        out, _ = p.communicate(timeout=600)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
    assert p.returncode == 0, out[-4000:]
    rows = [json.loads(x) for x in metrics.read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(steps + 1))
    assert rows[-1]["faults/actor_failures"] >= 1
    assert "restarting and re-running it" in out and "weights reloaded" in out
    # After the restart the engines hold the learner's weights again: evaluation still works.
    assert rows[-1]["eval/other/system"] > 0.5


def test_dead_learner_stops_with_the_way_to_continue():
    sup = _Counting(max_failures=3)

    def dead():
        raise ActorDiedError()

    with pytest.raises(ActorFailureError, match="learner rank died .*resume=auto"):
        sup.learner_call(dead)
    assert sup.recoveries == 0 and sup.learner_call(lambda: 7) == 7
