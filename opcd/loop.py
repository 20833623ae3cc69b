"""The training loop: choose prompts -> roll out -> score -> learn -> sync -> evaluate / log / checkpoint.

Read top to bottom: :func:`prepare` builds the run's fixed inputs (every input error surfaces here,
before any actor starts), :func:`train` starts the actors, and :func:`run` is the loop. The phases
themselves are in ``opcd.phases``, the prompt routing in ``opcd.routing``, the state in
``opcd.loop_state`` and the algorithm's meaning in ``opcd.algorithms``.
"""
from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from opcd import phases, routing
from opcd.algorithms import algo_spec
from opcd.checkpoint import find_resume_checkpoint, load_state, remove_partial, truncate_jsonl, write_checkpoint
from opcd.loop_state import LoopState, NonFiniteLossError
from opcd.modeling import check_same_tokenizer, load_tokenizer
from opcd.tasks import load_task
from opcd.tasks.records import check_lengths
from opcd.tracking import Tracker
from opcd.transfer import transfer_plan

__all__ = ["NonFiniteLossError", "prepare", "train", "run"]


def prepare(cfg) -> phases.Prepared:
    """The run's fixed inputs: tokenizer, task, the records that fit, both prompt views, the algorithm."""
    spec = algo_spec(cfg.algo)
    if cfg.rollout.temperature < 0:
        raise ValueError(f"rollout.temperature must be >= 0 (got {cfg.rollout.temperature})")
    if cfg.rollout.overlap and cfg.placement.colocate:
        raise ValueError("rollout.overlap=true needs the engines awake while the learner trains, but "
                         "placement.colocate=true puts them to sleep; set one of them to false")
    tok = load_tokenizer(cfg.model.path)
    teacher_path = cfg.model.teacher_path or cfg.model.path
    if teacher_path != cfg.model.path:
        check_same_tokenizer(tok, load_tokenizer(teacher_path), cfg.model.path, teacher_path)
    transfer = transfer_plan(cfg, spec, teacher_path)  # what the teacher ships; refuses sizes over the bound
    print(transfer.line, flush=True)
    task = load_task(cfg.task)
    limit = cfg.model.max_model_len - cfg.rollout.max_tokens
    records = check_lengths(task.train, [len(p) for p in phases.render(tok, task.train, True)], limit,
                            cfg.task.too_long, "training")
    views = routing.prompt_views(records, lambda r, ctx: phases.render(tok, [r], ctx)[0], cfg.model.max_model_len)
    ro = cfg.rollout
    sampling = {"temperature": ro.temperature, "top_p": ro.top_p, "max_tokens": ro.max_tokens, "n": ro.n,
                "top_k_logprobs": spec.rollout_logprobs}
    return phases.Prepared(tok, teacher_path, task, records, views, spec, sampling, cfg.algo.temperature,
                           cfg.model.max_model_len, transfer)


def train(cfg, config_dict: dict) -> dict:
    """Run ``cfg.steps`` steps of ``cfg.algo``; returns the final evaluation metrics."""
    import ray

    from opcd.actors import start_actors, stop_actors
    from opcd.cluster import RayCluster

    prep = prepare(cfg)
    ckpt = find_resume_checkpoint(cfg.resume, Path(cfg.output_dir))
    saved = load_state(ckpt, config_dict) if ckpt else None  # refuses a changed config before any actor starts
    if not ray.is_initialized():
        ray.init(address=cfg.ray_address, include_dashboard=False, log_to_driver=True, configure_logging=False)
    actors = start_actors(cfg, prep.teacher_path, cfg.prompts_per_step * cfg.rollout.n, transfer=prep.transfer)
    try:
        return run(cfg, config_dict, prep, RayCluster(cfg, actors), actors.pids, ckpt, saved)
    finally:
        stop_actors(actors)  # frees the cluster's resources, also when Ray outlives this run


def run(cfg, config_dict: dict, prep: phases.Prepared, cluster, pids: dict, ckpt, saved) -> dict:
    """The loop itself, on started actors, from a fresh start or from checkpoint ``ckpt`` (``saved`` state)."""
    from tqdm import tqdm

    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "actors.json").write_text(json.dumps(pids))
    remove_partial(out)
    state = resume(cluster, out, ckpt, saved, cfg.steps) if saved else LoopState.fresh(cfg.seed)
    tracker = Tracker(cfg, out, config_dict, run_id=saved and saved.get("run_id"))
    # The experience text in use (task.experience_file) travels with every checkpoint.
    experience = Path(cfg.task.experience_file).read_text() if cfg.task.experience_file else None
    steps = prep.spec.steps(cfg.steps)
    evaluation = phases.evaluate(cluster, prep, cfg.rollout.max_tokens) if state.step >= steps or not saved else {}
    if not saved:
        tracker.log(evaluation, step=0)
    pool = ThreadPoolExecutor(1, thread_name_prefix="opcd-prefetch") if cfg.rollout.overlap else None
    k, seed = cfg.prompts_per_step, cfg.rollout.seed
    bar = tqdm(range(state.step + 1, steps + 1), initial=state.step, total=steps, desc=f"opcd[{prep.spec.name}]",
               unit="step")
    for step in bar:  # the optimizer step being made, 1-based
        t_step = time.perf_counter()
        # 1-3. choose prompts, roll out, score (or take the batch prefetched during the last step)
        scored = phases.next_batch(cluster, prep, state, step, k, seed)
        if pool is not None and step < steps:  # rollout.overlap: the next batch, one update behind
            state.prefetch = phases.start_prefetch(pool, cluster, prep, state, step + 1, k, seed)
        # 4. learn
        stats = phases.learn(cluster, scored)
        if state.prefetch:  # the prefetched rollout must not see this step's weights: exactly one behind
            state.prefetch.rolled.wait()
        state.step = step
        state.count_nonfinite(bool(stats["nonfinite"]), cfg.algo.max_nonfinite_steps)
        # 5. sync the new weights into every engine
        evaluating = routing.eval_due(state.step, steps, cfg.eval_every)
        synced = phases.sync_weights(cluster) if routing.push_due(state.step, cfg.sync_every, evaluating) else {}
        metrics = {**stats, **synced, **scored.metrics, "faults/actor_failures": cluster.failures,
                   "step/seconds": time.perf_counter() - t_step}
        # 6. evaluate, log, checkpoint
        if evaluating:
            evaluation = phases.evaluate(cluster, prep, cfg.rollout.max_tokens)
            metrics.update(evaluation)
        tracker.log(metrics, step=state.step)
        phases.log_prompts(out, scored.plan)
        bar.set_postfix(phases.progress_postfix(stats, evaluation))
        if routing.save_due(state.step, steps, cfg.save_every):
            save(cluster, cfg, out, state, config_dict, tracker.run_id, experience)
    if pool is not None:
        pool.shutdown()
    (out / "final_metrics.json").write_text(json.dumps(evaluation, indent=2))
    tracker.finish()
    return evaluation


def resume(cluster, out: Path, ckpt: Path, saved: dict, steps: int) -> LoopState:
    """The learner's state and the loop's state from ``ckpt``; the engines get its weights; the crashed
    run's log rows after the checkpoint are dropped (they are redone)."""
    cluster.load_learner(str(ckpt))
    phases.sync_weights(cluster)
    state = LoopState.from_checkpoint(saved)
    for log in ("metrics.jsonl", "prompts.jsonl"):
        truncate_jsonl(out / log, state.step)
    print(f"[opcd] resumed from {ckpt} at step {state.step} of {steps}", flush=True)
    return state


def save(cluster, cfg, out: Path, state: LoopState, config_dict: dict, run_id, experience) -> None:
    """A checkpoint of step ``state.step``: the learner (HF model + DeepSpeed state) and the loop's state."""
    write_checkpoint(out, state.step, {**state.to_checkpoint(), "run_id": run_id, "experience": experience},
                     config_dict, lambda tmp: cluster.save_learner(str(tmp), cfg.model.path), cfg.keep_checkpoints)
