"""Placing and starting the Ray actors of a run (rollout workers, teacher, learner ranks) from config.

Resources (CPUs/GPUs per actor, engine threads), the device choice and the placement all come from
the config; this is the only place that turns them into Ray options. Every actor gets a bundle of
one Ray placement group, reserved all at once: a run that cannot fit fails at start-up with the
numbers, instead of half its actors waiting forever for resources.

- A rollout engine's bundle holds ``tensor_parallel_size`` GPUs (vLLM's tensor-parallel workers run
  inside it, on one node).
- With ``placement.colocate`` the learner ranks share the engines' bundles (rank i with engine i,
  half of each GPU): the engines sleep while the learner trains (vLLM sleep mode, CUDA only).
"""
from __future__ import annotations

from dataclasses import dataclass

from opcd.engine import engine_env, engine_kwargs
from opcd.hardware import describe
from opcd.net import rendezvous_address


@dataclass
class Actors:
    workers: list  # RolloutWorker handles
    teacher: object  # TeacherActor handle
    learners: list  # LearnerActor handles, rank order
    pids: dict  # actor name -> process id at start-up (written to actors.json; fault-injection tests use it)
    placement_group: object = None  # the Ray placement group holding every actor's bundle


def _res(cpus: float, gpus: float) -> dict:
    return {"CPU": cpus, **({"GPU": gpus} if gpus else {})}


def plan_bundles(cfg) -> tuple[list[dict], dict[str, list[int]]]:
    """Placement-group bundles and which bundle each actor uses.

    Returns ``(bundles, {"rollout": [...], "teacher": [i], "learner": [...]})``. Colocated learner
    ranks reuse the rollout bundles, which then hold both actors' CPUs (GPUs are shared).
    """
    r, t, lc = cfg.rollout, cfg.teacher, cfg.learner
    colocate = cfg.placement.colocate
    if colocate and lc.num_ranks != r.num_workers:
        raise ValueError(f"placement.colocate pairs learner rank i with rollout engine i: set learner.num_ranks "
                         f"({lc.num_ranks}) equal to rollout.num_workers ({r.num_workers})")
    engine_gpus = r.num_gpus * r.tensor_parallel_size
    bundles = [_res(r.num_cpus + (lc.num_cpus if colocate else 0), max(engine_gpus, lc.num_gpus if colocate else 0))
               for _ in range(r.num_workers)]
    where = {"rollout": list(range(r.num_workers)), "teacher": [len(bundles)]}
    bundles.append(_res(t.num_cpus, t.num_gpus))
    if colocate:
        where["learner"] = list(range(r.num_workers))
    else:
        where["learner"] = list(range(len(bundles), len(bundles) + lc.num_ranks))
        bundles += [_res(lc.num_cpus, lc.num_gpus) for _ in range(lc.num_ranks)]
    return bundles, where


def reserve(cfg, bundles: list[dict]):
    """Create the placement group and wait for it; a clear error when the cluster cannot hold it."""
    import ray
    from ray.util.placement_group import placement_group, remove_placement_group

    need = {k: sum(b.get(k, 0) for b in bundles) for k in ("CPU", "GPU")}
    have = ray.cluster_resources()

    def refuse(why: str) -> ValueError:
        return ValueError(f"cannot place the run's {len(bundles)} actors ({need['CPU']:g} CPUs, {need['GPU']:g} GPUs, "
                          f"strategy {cfg.placement.strategy}): {why}; the cluster has {have.get('CPU', 0):g} CPUs and "
                          f"{have.get('GPU', 0):g} GPUs. Lower rollout.num_workers, learner.num_ranks or the "
                          "*.num_cpus / *.num_gpus shares, or add nodes")

    if any(need[k] > have.get(k, 0) + 1e-9 for k in need):
        raise refuse("more than the whole cluster")  # fail now rather than after placement.timeout_s
    pg = placement_group(bundles, strategy=cfg.placement.strategy)
    ready, _ = ray.wait([pg.ready()], timeout=cfg.placement.timeout_s)
    if not ready:
        remove_placement_group(pg)
        raise refuse(f"not free within placement.timeout_s={cfg.placement.timeout_s:.0f} s")
    return pg


def start_actors(cfg, teacher_path: str, batch_size: int, transfer=None) -> Actors:
    """Reserve the placement group, create every actor in its bundle, wait until all are loaded.

    ``transfer``: the run's ``opcd.transfer.TransferPlan`` (what the teacher ships); computed and
    printed here when the caller did not make it at start-up.
    """
    import ray
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    from opcd.learner.actor import LearnerActor
    from opcd.rollout.worker import RolloutWorker
    from opcd.teacher.actor import TeacherActor

    r, t, lc = cfg.rollout, cfg.teacher, cfg.learner
    # Each actor resolves model.dtype=auto on its own machine; this is the choice on the driver's.
    print(describe(cfg.model.dtype, lc.precision, r.engine == "vllm_cuda", lc.device == "cuda"), flush=True)
    if transfer is None:
        from opcd.algorithms import algo_spec
        from opcd.transfer import transfer_plan

        transfer = transfer_plan(cfg, algo_spec(cfg.algo), teacher_path)
        print(transfer.line, flush=True)
    hidden = transfer.mode == "hidden"  # the learner needs its own copy of the teacher's LM head
    bundles, where = plan_bundles(cfg)
    pg = reserve(cfg, bundles)
    share = 0.5 if cfg.placement.colocate else 1.0  # colocated engine + learner rank split a GPU

    def at(i: int) -> dict:
        return {"scheduling_strategy": PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=i)}

    # Engines and the teacher are restartable (their state is the learner's weights or frozen);
    # the controller re-runs lost calls itself (opcd.recovery), so Ray retries no task on its own.
    restart = dict(max_restarts=cfg.max_actor_failures, max_task_retries=0)
    env = {"env_vars": engine_env(r.engine, r.kv_cache_gb, r.threads)}
    kw = dict(sleep_mode=cfg.placement.colocate)
    workers = [ray.remote(RolloutWorker).options(num_cpus=r.num_cpus, num_gpus=r.num_gpus * r.tensor_parallel_size * share,
                                                 runtime_env=env, **restart, **at(b))
               .remote(cfg.model.path, engine_kwargs(cfg.model, r, seed_offset=i, top_k=cfg.algo.top_k, **kw))
               for i, b in enumerate(where["rollout"])]
    tenv = {"env_vars": engine_env(r.engine, r.kv_cache_gb, t.threads)}
    teacher = ray.remote(TeacherActor).options(num_cpus=t.num_cpus, num_gpus=t.num_gpus, runtime_env=tenv,
                                               **restart, **at(where["teacher"][0])).remote(
        teacher_path, cfg.model.dtype, lc.device, t.threads, t.micro_batch_size,
        engine_kwargs(cfg.model, r, seed_offset=1000, threads=t.threads, top_k=cfg.algo.top_k), transfer.mode)
    # Rank 0 hosts the torch.distributed rendezvous: its node's address (not localhost) on a cluster.
    addr, port = ray.get(ray.remote(num_cpus=0)(rendezvous_address).options(**at(where["learner"][0])).remote())
    lenv = {"env_vars": {"DS_ACCELERATOR": "cpu"} if lc.device == "cpu" else {}}
    learners = [ray.remote(LearnerActor).options(num_cpus=lc.num_cpus, num_gpus=lc.num_gpus * share,
                                                 runtime_env=lenv, **at(b))
                .remote(cfg.model.path, lc, cfg.algo, cfg.model.dtype, batch_size, rank, lc.num_ranks,
                        addr, port, cfg.seed, teacher_path if hidden else None)
                for rank, b in enumerate(where["learner"])]
    pids = ray.get([a.ping.remote() for a in [*workers, teacher, *learners]])
    names = [*(f"rollout_{i}" for i in range(len(workers))), "teacher", *(f"learner_{i}" for i in range(len(learners)))]
    return Actors(workers, teacher, learners, dict(zip(names, pids)), pg)


def stop_actors(actors: Actors) -> None:
    """Kill every actor and release the placement group (Ray stays up for whatever runs next)."""
    import ray
    from ray.util.placement_group import remove_placement_group

    for a in [*actors.workers, actors.teacher, *actors.learners]:
        ray.kill(a, no_restart=True)
    if actors.placement_group is not None:
        remove_placement_group(actors.placement_group)
