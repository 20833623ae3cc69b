"""The loop's view of the started Ray actors: each remote call it needs, supervised.

:class:`RayCluster` implements :class:`opcd.phases.Cluster` on real actors. Every call runs under
the :class:`~opcd.recovery.Supervisor` (a dead or hung rollout worker / teacher is restarted and the
call re-run), and weights are pushed into the engines from one method, :meth:`RayCluster.push_weights`,
which the supervisor also uses after a restart. The phases (``opcd.phases``) take any object with
these methods, so they are tested without Ray against a fake.
"""
from __future__ import annotations

import threading

from opcd.actors import Actors
from opcd.learner.actor import merge_rank_stats
from opcd.recovery import Supervisor
from opcd.rollout.worker import generate_on
from opcd.sync import WeightSync


class RayCluster:
    """Rollout workers, the teacher and the learner ranks of one run, behind plain method calls."""

    def __init__(self, cfg, actors: Actors):
        self.actors = actors
        self.colocate = cfg.placement.colocate
        self.weights = WeightSync(cfg.sync, cfg.learner.device, actors.learners, actors.workers)
        # With rollout.overlap the prefetch thread may restart an engine and resync while the main
        # thread pushes: one push at a time, or two broadcasts would interleave on one process group.
        self._push_lock = threading.Lock()
        self.supervisor = Supervisor(actors, cfg.actor_timeout_s, cfg.max_actor_failures, self._resync)

    @property
    def failures(self) -> int:
        """Actor faults recovered from so far in this run."""
        return self.supervisor.failures

    def generate(self, prompts: list[list[int]], sampling: dict, seed: int | None, *, teacher: bool) -> list:
        """Samples for ``prompts`` from the student engines, or from the teacher's engine (prompt-major)."""
        import ray

        what = "teacher sampling" if teacher else "rollout"
        if teacher:
            return self.supervisor.call(what, lambda t: ray.get(
                self.actors.teacher.sample.remote(prompts, seed, **sampling), timeout=t))
        return self.supervisor.call(what, lambda t: generate_on(self.actors.workers, prompts, sampling, seed, t))

    def score(self, seqs: list[list[int]], resp_lens: list[int], support, k: int, temperature: float) -> dict:
        """The teacher's scores of ``seqs`` (see ``opcd.teacher.scoring.score_responses``), plus ``seconds``."""
        import ray

        return self.supervisor.call("teacher scoring", lambda t: ray.get(
            self.actors.teacher.score.remote(seqs, resp_lens, support, k, temperature), timeout=t))

    def train(self, batch) -> dict[str, float]:
        """One optimizer step on every learner rank (each takes its shard); merged metrics."""
        import ray

        if self.colocate:  # the engines hand their GPU memory to the learner ranks beside them
            ray.get([w.sleep.remote() for w in self.actors.workers])
        stats = merge_rank_stats(self.supervisor.learner_call(
            lambda: ray.get([lr.train_step.remote(batch) for lr in self.actors.learners])))
        if self.colocate:
            ray.get([w.wake_up.remote() for w in self.actors.workers])
        return stats

    def push_weights(self) -> dict[str, float]:
        """Push the learner's weights into every engine (the only place that does)."""
        return self.supervisor.call("weight sync", lambda _: self._push())

    def _push(self) -> dict[str, float]:
        with self._push_lock:
            return self.weights.push()

    def _resync(self) -> dict[str, float]:
        """After an engine restart: a fresh broadcast group (if any), then the weights."""
        with self._push_lock:
            self.weights.reset()
            return self.weights.push()

    def save_learner(self, tmp_dir: str, tokenizer_path: str) -> None:
        """Write the HF model (rank 0) and every rank's DeepSpeed state into a checkpoint being built."""
        import ray

        ray.get([lr.save_hf.remote(tmp_dir, tokenizer_path) for lr in self.actors.learners])
        ray.get([lr.save_state.remote(f"{tmp_dir}/deepspeed") for lr in self.actors.learners])

    def load_learner(self, ckpt_dir: str) -> None:
        """Restore every rank's weights, optimizer moments and counters from a checkpoint."""
        import ray

        ray.get([lr.load_state.remote(f"{ckpt_dir}/deepspeed") for lr in self.actors.learners])
