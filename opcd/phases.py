"""The phases of one training step, as plain functions with typed inputs and outputs.

choose prompts -> roll out -> score -> learn -> sync -> evaluate / log / checkpoint

Each phase takes the run's fixed inputs (:class:`Prepared`), a :class:`Cluster` (the actors behind
method calls: ``opcd.cluster.RayCluster`` in a run, a fake in the tests) and the previous phase's
output. Which prompt goes to whom is decided by the pure functions of ``opcd.routing``; what an
algorithm means comes from its ``opcd.algorithms.AlgoSpec``.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from threading import Event
from typing import Optional, Protocol

import torch

from opcd import routing
from opcd.algorithms import AlgoSpec
from opcd.batch import LearnBatch, build_learn_batch, pad_3d, response_mask
from opcd.chat import encode_prompt
from opcd.eval.evaluator import EvalSettings, agreement_records, evaluate_records
from opcd.eval.metrics import topk_agreement_kl
from opcd.loop_state import LoopState, Prefetch
from opcd.rollout.episodes import run_episodes


class Cluster(Protocol):
    """The actors of a run, as the phases use them (implemented by ``opcd.cluster.RayCluster``)."""

    failures: int  # actor faults recovered from so far

    def generate(self, prompts: list[list[int]], sampling: dict, seed: Optional[int], *, teacher: bool) -> list: ...
    def score(self, seqs: list[list[int]], resp_lens: list[int], support, k: int, temperature: float) -> dict: ...
    def train(self, batch: LearnBatch) -> dict[str, float]: ...
    def push_weights(self) -> dict[str, float]: ...


@dataclass
class Prepared:
    """A run's fixed inputs, built before any actor starts (building it surfaces every input error)."""

    tok: object  # the student's tokenizer (the teacher's is checked to be identical)
    teacher_path: str  # teacher model directory
    task: object  # TaskData: train/eval records, the verifier, the environment of multi-turn tasks
    records: list[dict]  # training records that fit the model
    views: routing.PromptViews  # each record as the student and as the teacher see it
    spec: AlgoSpec  # what the configured algorithm means
    sampling: dict  # rollout SamplingParams: temperature, top_p, max_tokens, n, top_k_logprobs
    temperature: float  # the loss's distribution temperature (the teacher scores at it)
    max_model_len: int  # longest context + prompt + response, tokens
    transfer: object = None  # opcd.transfer.TransferPlan: what the teacher ships (top-k / full log-probs, hidden states)


@dataclass
class StepPlan:
    """Phase 1: which records step ``step`` trains on, and who answers them."""

    step: int  # the optimizer step this batch feeds (1-based)
    idx: list[int]  # training record indices, one per prompt
    on_policy: bool  # the student answers (without context); else the teacher (with it)
    seed: int  # sampling seed: rollouts are a function of (weights, prompts, seed)


@dataclass
class Rollout:
    """Phase 2: the sampled responses, ``n`` per prompt, prompt-major."""

    plan: StepPlan
    samples: list  # opcd.engine.Sample, len(idx) * n
    rows: list[int]  # record index of each sample
    seconds: float  # wall time of the rollout


@dataclass
class Scored:
    """Phase 3: the learner's batch (responses joined with both prompt views and the teacher's scores)."""

    plan: StepPlan
    batch: LearnBatch
    metrics: dict[str, float]  # rollout/* and teacher/* timings and lengths


def step_seed(rollout_seed: int, step: int) -> int:
    """Sampling seed of optimizer step ``step`` (1-based); a resumed run samples what the
    uninterrupted one would have."""
    return (rollout_seed * 100_003 + (step - 1) * 101) % 2**31


def render(tok, records: list[dict], with_context: bool) -> list[list[int]]:
    """Chat-rendered prompt ids of ``records``, with or without each record's context."""
    return [encode_prompt(tok, r["prompt"], r["context"] if with_context else "") for r in records]


def choose_prompts(state: LoopState, prep: Prepared, step: int, prompts_per_step: int, rollout_seed: int) -> StepPlan:
    """Phase 1: draw optimizer step ``step``'s records (epoch-wise shuffled) and toss the on-/off-policy
    coin. Advances ``state.order`` and ``state.rng``."""
    idx, state.order = routing.draw_prompts(state.order, state.rng, len(prep.records), prompts_per_step)
    on_policy = routing.student_answers(state.rng, prep.spec.p_student)
    return StepPlan(step, idx, on_policy, step_seed(rollout_seed, step))


def respond(cluster: Cluster, prep: Prepared, records: list[dict], prompts: list[list[int]], sampling: dict,
            seed: Optional[int], *, teacher: bool, room: list[int]) -> list:
    """``sampling['n']`` responses per prompt (prompt-major) from the student engines or the teacher.
    Multi-turn tasks play one episode per sample instead; ``room[i]`` tokens may follow prompt i."""
    task = prep.task
    if task.make_env is None:
        return cluster.generate(prompts, sampling, seed, teacher=teacher)
    rows = routing.sample_rows(range(len(prompts)), sampling.get("n", 1))

    def turn(ps: list[list[int]], t: int) -> list:  # each turn seeded on its own: episodes are reproducible
        return cluster.generate(ps, {**sampling, "n": 1}, None if seed is None else seed + 7919 * t, teacher=teacher)

    return run_episodes(turn, prep.tok, [records[i] for i in rows], [prompts[i] for i in rows], task.make_env,
                        task.max_turns, [room[i] for i in rows], sampling["max_tokens"])


def roll_out(cluster: Cluster, prep: Prepared, plan: StepPlan) -> Rollout:
    """Phase 2: the student answers its view of each prompt, or (off-policy) the teacher answers the context view."""
    t0 = time.perf_counter()
    prompts = routing.rollout_prompts(prep.views, plan.idx, plan.on_policy)
    samples = respond(cluster, prep, [prep.records[i] for i in plan.idx], prompts, prep.sampling, plan.seed,
                      teacher=not plan.on_policy, room=[prep.views.room[i] for i in plan.idx])
    rows = routing.sample_rows(plan.idx, prep.sampling.get("n", 1))
    return Rollout(plan, samples, rows, time.perf_counter() - t0)


def score(cluster: Cluster, prep: Prepared, rollout: Rollout) -> Scored:
    """Phase 3: the teacher scores each response after its record's *context* prompt; the learner's
    batch pairs the same response with the *student's* prompt."""
    samples, spec = rollout.samples, prep.spec
    support = spec.teacher_returns
    if spec.student_topk:  # the teacher scores exactly the student's top-k ids at each position
        T = max(len(s.response_ids) for s in samples)
        support = pad_3d([s.topk_ids for s in samples], T, spec.top_k, 0, torch.long)
    seqs = routing.teacher_sequences(prep.views, rollout.rows, [s.response_ids for s in samples])
    scores = cluster.score(seqs, [len(s.response_ids) for s in samples], support, spec.top_k, prep.temperature)
    student_prompts, context_prompts = routing.learner_prompts(prep.views, rollout.rows)
    batch = build_learn_batch(samples, student_prompts, context_prompts, scores)
    tokens = sum(s.policy_tokens for s in samples)
    metrics = {"rollout/seconds": rollout.seconds, "rollout/tokens_per_s": tokens / rollout.seconds,
               "rollout/response_len": tokens / len(samples), "rollout/on_policy": float(rollout.plan.on_policy),
               "teacher/seconds": scores["seconds"], "teacher/tokens_per_s": sum(map(len, seqs)) / scores["seconds"]}
    return Scored(rollout.plan, batch, metrics)


def make_batch(cluster: Cluster, prep: Prepared, plan: StepPlan, rolled: Optional[Event] = None) -> Scored:
    """Phases 2-3 (what ``rollout.overlap`` runs in the background); ``rolled`` is set between them,
    also on failure (the main thread waits for it, then meets the error in the future's result)."""
    try:
        rollout = roll_out(cluster, prep, plan)
    finally:
        if rolled is not None:
            rolled.set()
    return score(cluster, prep, rollout)


def next_batch(cluster: Cluster, prep: Prepared, state: LoopState, step: int, prompts_per_step: int,
               rollout_seed: int) -> Scored:
    """Phases 1-3 for optimizer step ``step``: the batch prefetched during the last step, or made now."""
    if state.prefetch is not None:
        scored, state.prefetch = state.prefetch.future.result(), None
        return scored
    return make_batch(cluster, prep, choose_prompts(state, prep, step, prompts_per_step, rollout_seed))


def start_prefetch(pool, cluster: Cluster, prep: Prepared, state: LoopState, step: int, prompts_per_step: int,
                   rollout_seed: int) -> Prefetch:
    """``rollout.overlap``: draw step ``step``'s prompts now and make its batch in ``pool``'s thread while
    the learner trains on the previous one (so it samples from weights one update behind)."""
    order, rng = list(state.order), state.rng.getstate()
    plan = choose_prompts(state, prep, step, prompts_per_step, rollout_seed)
    rolled = Event()
    return Prefetch(pool.submit(make_batch, cluster, prep, plan, rolled), rolled, order, rng)


def learn(cluster: Cluster, scored: Scored) -> dict[str, float]:
    """Phase 4: one optimizer step over the batch (each learner rank takes its shard)."""
    stats = cluster.train(scored.batch)
    return {**stats, "learner/tokens_per_s": stats["learner/tokens"] / stats["learner/seconds"]}


def sync_weights(cluster: Cluster) -> dict[str, float]:
    """Phase 5: the engines get the learner's new weights."""
    return cluster.push_weights()


def evaluate(cluster: Cluster, prep: Prepared, max_tokens: int) -> dict[str, float]:
    """Phase 6a: greedy answers to the task's evaluation records through the rollout engines (accuracy
    per group and context kind, Harm, BothCorrect, Δlen), plus teacher-student agreement."""
    if not prep.task.eval:
        return {}

    def generate(records: list[dict], prompts: list[list[int]], sampling: dict) -> list:
        room = [prep.max_model_len - len(p) for p in prompts]
        return respond(cluster, prep, records, prompts, sampling, None, teacher=False, room=room)

    settings = EvalSettings(max_tokens=max_tokens)
    return {**evaluate_records(generate, prep.tok, prep.task.eval, prep.task.verify, settings),
            **agreement(cluster, prep, max_tokens)}


def agreement(cluster: Cluster, prep: Prepared, max_tokens: int) -> dict[str, float]:
    """Teacher-student agreement on a fixed set: the student answers each context-bearing record of the
    distilled behaviour greedily *without* its context; the teacher scores that answer *with* it;
    mean per-token KL(student || teacher) over the student's top-k (nats), as ``eval/agreement_kl``."""
    k = prep.spec.top_k
    recs = agreement_records(prep.task.eval)
    if not recs:
        return {}
    with_ctx = render(prep.tok, recs, True)
    samples = respond(cluster, prep, recs, render(prep.tok, recs, False),
                      {"temperature": 0.0, "max_tokens": max_tokens, "top_k_logprobs": k}, None, teacher=False,
                      room=[prep.max_model_len - len(c) for c in with_ctx])
    T = max(len(s.response_ids) for s in samples)
    if T == 0:
        return {}
    support = pad_3d([s.topk_ids for s in samples], T, k, 0, torch.long)
    scores = cluster.score([c + s.response_ids for c, s in zip(with_ctx, samples)],
                           [len(s.response_ids) for s in samples], support, k, 1.0)
    student = pad_3d([s.topk_logprobs for s in samples], T, k, -1e9, torch.float32)
    return {"eval/agreement_kl": topk_agreement_kl(student, scores["logprobs"][:, :T], response_mask(samples, T))}


def log_prompts(out: Path, plan: StepPlan) -> None:
    """Phase 6b: the data order, auditable across resumes (``prompts.jsonl``, one row per step)."""
    with (out / "prompts.jsonl").open("a") as f:
        f.write(json.dumps({"step": plan.step, "prompts": plan.idx}) + "\n")


def progress_postfix(stats: dict[str, float], evaluation: dict[str, float]) -> dict[str, str]:
    """What the progress bar shows (everything else goes to metrics.jsonl and wandb): the loss, and the
    distilled behaviour's accuracy without (Acc_x) and with (Acc_xc) its context."""
    out = {"loss": f"{stats.get('loss/total', float('nan')):.4f}"}
    acc = {k.rsplit("/", 1)[1]: v for k, v in evaluation.items()
           if k.startswith("eval/distilled/") and "_" not in k.rsplit("/", 1)[1]}
    if "none" in acc:
        out["Acc_x"] = f"{acc.pop('none'):.2f}"
    if acc:  # a system prompt or a record's own context before other kinds (demonstrations)
        kind = next((k for k in ("system", "context") if k in acc), sorted(acc)[0])
        out["Acc_xc"] = f"{acc[kind]:.2f}"
    return out
