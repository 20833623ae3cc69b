"""Surviving dead or hung actors: notice, restart, reload weights, re-run the lost work.

Rollout workers and the teacher are restartable Ray actors (``max_restarts`` from config). Their
state is either frozen (the teacher) or a copy of the learner's (the engines), so a restarted one
only needs the current weights pushed again. The learner holds the optimizer state: if a learner
rank dies the run stops and tells the user to resume from the last checkpoint.
"""
from __future__ import annotations

import time
from typing import Callable, TypeVar

T = TypeVar("T")


class ActorFailureError(RuntimeError):
    pass


class Supervisor:
    """Runs the loop's remote calls; on an actor fault, recovers and runs the call again.

    ``timeout_s`` bounds every remote call (a hung actor is killed and restarted);
    after ``max_failures`` faults in one run it raises :class:`ActorFailureError` instead of looping.
    """

    def __init__(self, actors, timeout_s: float, max_failures: int, push_weights: Callable[[], dict]):
        self.actors = actors
        self.timeout_s = timeout_s
        self.max_failures = max_failures
        self.push_weights = push_weights  # re-syncs every engine with the learner's weights
        self.failures = 0

    def call(self, what: str, fn: Callable[[float], T]) -> T:
        """``fn(timeout_s)`` with recovery; ``what`` names the phase in messages."""
        from ray.exceptions import GetTimeoutError, RayActorError

        while True:
            try:
                return fn(self.timeout_s)
            except (RayActorError, GetTimeoutError) as e:
                self.failures += 1
                kind = "timed out" if isinstance(e, GetTimeoutError) else "lost an actor"
                print(f"[opcd] {what} {kind} (failure {self.failures} of at most {self.max_failures}): "
                      f"{type(e).__name__}; restarting and re-running it", flush=True)
                if self.failures > self.max_failures:
                    raise ActorFailureError(
                        f"{what}: {self.failures} actor failures in this run (max_actor_failures="
                        f"{self.max_failures}); last: {type(e).__name__}: {str(e)[:300]}. Check the Ray logs "
                        "(out of memory? a crashing engine?), then continue with resume=auto") from e
                self.recover()

    def learner_call(self, fn: Callable[[], T]) -> T:
        """A call into the learner ranks: their optimizer state cannot be rebuilt, so a dead rank
        stops the run with the way to continue instead of a Ray traceback."""
        from ray.exceptions import RayActorError

        try:
            return fn()
        except RayActorError as e:
            raise ActorFailureError(f"a learner rank died ({type(e).__name__}); its optimizer state is lost. "
                                    "Restart the run with resume=auto to continue from the last checkpoint") from e

    def recover(self) -> None:
        """Wait for every rollout worker and the teacher to answer (killing hung ones so Ray restarts
        them), then push the learner's weights into all engines."""
        import ray
        from ray.exceptions import GetTimeoutError, RayActorError

        for rank, learner in enumerate(self.actors.learners):
            try:
                ray.get(learner.ping.remote(), timeout=self.timeout_s)
            except (RayActorError, GetTimeoutError) as e:
                raise ActorFailureError(f"learner rank {rank} died ({type(e).__name__}); its optimizer state is "
                                        "lost. Restart the run with resume=auto to continue from the last "
                                        "checkpoint") from e
        t0 = time.perf_counter()
        for name, actor in self._restartable():
            try:
                self._wait_alive(name, actor)
            except GetTimeoutError:
                print(f"[opcd] {name} does not answer within {self.timeout_s:.0f} s; killing it for a restart")
                ray.kill(actor, no_restart=False)
                self._wait_alive(name, actor)
        self.push_weights()
        print(f"[opcd] actors back and weights reloaded in {time.perf_counter() - t0:.1f} s", flush=True)

    def _wait_alive(self, name: str, actor) -> None:
        """Ping until ``actor`` answers; a restarting actor is 'unavailable' for a while, a dead one for good."""
        import ray
        from ray.exceptions import ActorDiedError, ActorUnavailableError

        deadline = time.monotonic() + self.timeout_s
        while True:
            try:
                ray.get(actor.ping.remote(), timeout=max(1.0, deadline - time.monotonic()))
                return
            except ActorUnavailableError as e:
                if time.monotonic() > deadline:
                    raise ActorFailureError(f"{name} did not come back within {self.timeout_s:.0f} s "
                                            "(actor_timeout_s)") from e
                time.sleep(0.5)
            except ActorDiedError as e:
                raise ActorFailureError(f"{name} is dead and out of restarts ({str(e)[:300]}); raise "
                                        "max_actor_failures or fix the cause, then continue with resume=auto") from e

    def _restartable(self):
        return [*((f"rollout worker {i}", w) for i, w in enumerate(self.actors.workers)),
                ("teacher", self.actors.teacher)]
