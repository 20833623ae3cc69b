"""Multi-turn rollouts: the policy acts, the environment replies, until the episode ends.

An episode is returned as one :class:`~opcd.rollout.engine.Sample` whose ``response_ids`` hold the
whole trajectory after the opening prompt -- the policy's replies *and* the environment's turns
between them (rendered by the model's chat template) -- with ``loss_mask`` 1 on the policy's tokens
and 0 on the environment's. Everything downstream is unchanged: the teacher scores ``[context
prompt; trajectory]`` (so it sees the experience and every environment reply), the learner's KL
runs over the masked positions only, and ``text`` is the replies joined by ``TURN_SEP`` for the
task's verifier to replay.

All episodes of a batch advance together, one batched ``generate`` call per turn, so the engines
see as large batches as single-turn rollouts; finished episodes drop out of later turns.
"""
from __future__ import annotations

from typing import Callable

from opcd.chat import encode_next_turn
from opcd.rollout.engine import Sample
from opcd.tasks.games import TURN_SEP

Generate = Callable[[list[list[int]], int], list[Sample]]  # (prompt ids, turn) -> one Sample per prompt


def run_episodes(generate: Generate, tok, records: list[dict], prompts: list[list[int]], make_env,
                 max_turns: int, room: list[int], max_tokens: int) -> list[Sample]:
    """Play one episode per record; returns one trajectory Sample per record, in order.

    ``prompts[i]`` is the opening prompt the policy sees for ``records[i]`` (with or without the
    context); ``make_env(record)`` builds its environment (``step(reply) -> (next user text, done)``);
    ``room[i]`` is how many trajectory tokens may follow the *longest* view of the prompt (student or
    teacher) within the model's context window: an episode whose next turn plus a ``max_tokens`` reply
    would not fit ends there, like one that hits ``max_turns``. ``generate(prompts, turn)`` samples one reply per prompt
    (``n = 1``; the caller repeats records for several samples).
    """
    envs = [make_env(r) for r in records]
    eps = [Sample(prompt_ids=list(p), response_ids=[], loss_mask=[]) for p in prompts]
    replies: list[list[str]] = [[] for _ in records]
    active = list(range(len(records)))
    for turn in range(max_turns):
        if not active:
            break
        outs = generate([eps[i].prompt_ids + eps[i].response_ids for i in active], turn)
        still = []
        for i, s in zip(active, outs):
            ep = eps[i]
            n = len(s.response_ids)
            ep.response_ids += s.response_ids
            ep.loss_mask += [1] * n
            ep.logprobs += s.logprobs or [0.0] * n
            ep.topk_ids += s.topk_ids or [[] for _ in range(n)]
            ep.topk_logprobs += s.topk_logprobs or [[] for _ in range(n)]
            replies[i].append(s.text)
            user_text, done = envs[i].step(s.text)
            ep.finished = done
            if done or turn + 1 == max_turns:
                continue
            nxt = encode_next_turn(tok, user_text, s.finished)
            if len(ep.response_ids) + len(nxt) + max_tokens > room[i]:
                continue  # the next reply would not fit the context window: the episode is cut here
            # The environment's turn: part of the sequence both models read, never a learning target.
            ep.response_ids += nxt
            ep.loss_mask += [0] * len(nxt)
            ep.logprobs += [0.0] * len(nxt)
            ep.topk_ids += [[] for _ in nxt]
            ep.topk_logprobs += [[] for _ in nxt]
            still.append(i)
        active = still
    for ep, texts in zip(eps, replies):
        ep.text = TURN_SEP.join(texts)
    return eps

