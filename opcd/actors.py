"""Starting the Ray actors of a run (rollout workers, teacher, learner ranks) from config.

Resources (CPUs/GPUs per actor, engine threads) and the device choice all come from the config;
this is the only place that turns them into Ray options.
"""
from __future__ import annotations

import socket
from dataclasses import dataclass

from opcd.rollout.engine import engine_env, engine_kwargs


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Actors:
    workers: list  # RolloutWorker handles
    teacher: object  # TeacherActor handle
    learners: list  # LearnerActor handles, rank order
    pids: dict  # actor name -> process id at start-up (written to actors.json; fault-injection tests use it)


def start_actors(cfg, teacher_path: str, batch_size: int) -> Actors:
    """Create every actor and wait until all have loaded their models."""
    import ray

    from opcd.learner.actor import LearnerActor
    from opcd.rollout.worker import RolloutWorker
    from opcd.teacher.actor import TeacherActor

    r, t, lc = cfg.rollout, cfg.teacher, cfg.learner
    env = {"env_vars": engine_env(r.engine, r.kv_cache_gb, r.threads)}
    # Engines and the teacher are restartable (their state is the learner's weights or frozen);
    # the controller re-runs lost calls itself (opcd.recovery), so Ray retries no task on its own.
    restart = dict(max_restarts=cfg.max_actor_failures, max_task_retries=0)
    workers = [ray.remote(RolloutWorker).options(num_cpus=r.num_cpus, num_gpus=r.num_gpus * r.tensor_parallel_size,
                                                 runtime_env=env, **restart)
               .remote(cfg.model.path, engine_kwargs(cfg.model, r, seed_offset=i, top_k=cfg.algo.top_k))
               for i in range(r.num_workers)]
    tenv = {"env_vars": engine_env(r.engine, r.kv_cache_gb, t.threads)}
    teacher = ray.remote(TeacherActor).options(num_cpus=t.num_cpus, num_gpus=t.num_gpus, runtime_env=tenv,
                                               **restart).remote(
        teacher_path, cfg.model.dtype, lc.device, t.threads, t.micro_batch_size,
        engine_kwargs(cfg.model, r, seed_offset=1000, threads=t.threads, top_k=cfg.algo.top_k))
    port = free_port()
    lenv = {"env_vars": {"DS_ACCELERATOR": "cpu"} if lc.device == "cpu" else {}}
    learners = [ray.remote(LearnerActor).options(num_cpus=lc.num_cpus, num_gpus=lc.num_gpus, runtime_env=lenv)
                .remote(cfg.model.path, lc, cfg.algo, cfg.model.dtype, batch_size, rank, lc.num_ranks,
                        "127.0.0.1", port, cfg.seed) for rank in range(lc.num_ranks)]
    pids = ray.get([a.ping.remote() for a in [*workers, teacher, *learners]])
    names = [*(f"rollout_{i}" for i in range(len(workers))), "teacher", *(f"learner_{i}" for i in range(len(learners)))]
    return Actors(workers, teacher, learners, dict(zip(names, pids)))
