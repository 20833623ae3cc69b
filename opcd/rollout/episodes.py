"""Multi-turn rollouts: the policy acts, the environment replies, until the episode ends.

An episode is returned as one :class:`~opcd.engine.Sample` whose ``response_ids`` hold the
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

import numpy as np

from opcd.chat import encode_next_turn
from opcd.engine import Sample
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
    parts: list[list[tuple]] = [[] for _ in records]  # per episode: (log-probs, top-k ids, top-k log-probs) pieces
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
            parts[i].append(_policy_piece(s, n))
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
            parts[i].append(_environment_piece(len(nxt), parts[i][-1][1].shape[1]))
            still.append(i)
        active = still
    for ep, texts, pieces in zip(eps, replies, parts):
        ep.text = TURN_SEP.join(texts)
        if pieces:
            ep.logprobs, ep.topk_ids, ep.topk_logprobs = (np.concatenate(a) for a in zip(*pieces))
    return eps



def _policy_piece(s: Sample, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A reply's per-position arrays ([n], [n, k], [n, k]); zeros where the engine returned none."""
    k = s.topk_ids.shape[1] if len(s.topk_ids) == n else 0
    lp = s.logprobs if len(s.logprobs) == n else np.zeros(n, np.float32)
    ids = s.topk_ids if k else np.zeros((n, 0), np.int64)
    lps = s.topk_logprobs if k else np.zeros((n, 0), np.float32)
    return lp, ids, lps


def _environment_piece(n: int, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """An environment turn of ``n`` tokens: no behaviour log-prob, no top-k (id 0 at -1e9, as padding)."""
    return np.zeros(n, np.float32), np.zeros((n, k), np.int64), np.full((n, k), -1e9, np.float32)
