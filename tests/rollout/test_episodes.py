"""Multi-turn episodes with a scripted policy: the trajectory is exactly the chat template's rendering
of the conversation, only the policy's tokens are learning targets, and episodes end when they should."""
import pytest

pytest.importorskip("gymnasium")

from opcd.batch import response_mask  # noqa: E402
from opcd.chat import encode_next_turn, encode_prompt  # noqa: E402
from opcd.engine import Sample  # noqa: E402
from opcd.rollout.episodes import run_episodes  # noqa: E402
from opcd.tasks import games  # noqa: E402
from opcd.tasks.games import TURN_SEP, GameSession  # noqa: E402


def _levels(n=2):
    return games.levels("frozenlake", 4, n, seed=0, max_moves=8)


def _scripted(tok, prompts, plans, calls):
    """A policy that plays ``plans[i]`` (reply texts) in episode i, identified by its opening prompt."""
    def generate(batch, turn):
        calls.append((len(batch), turn))
        out = []
        for seq in batch:
            i = next(j for j, p in enumerate(prompts) if seq[:len(p)] == p)
            text = plans[i][turn]
            ids = tok.encode(text, add_special_tokens=False) + [tok.eos_token_id]
            out.append(Sample(prompt_ids=seq, response_ids=ids, logprobs=[-0.5] * len(ids),
                              topk_ids=[[t] for t in ids], topk_logprobs=[[-0.5]] * len(ids), text=text, finished=True))
        return out
    return generate


def test_episode_is_the_rendered_conversation_and_only_replies_are_targets(tok):
    recs = _levels()
    prompts = [encode_prompt(tok, r["prompt"]) for r in recs]
    solve = [f"<answer>{m}</answer>" for m in recs[0]["answer"].split()]
    stuck = ["<answer>Up</answer>"] * 5  # walks into the top edge: never ends on its own
    calls: list = []
    eps = run_episodes(_scripted(tok, prompts, [solve, stuck + stuck], calls), tok, recs, prompts, GameSession,
                       max_turns=8, room=[10_000] * 2, max_tokens=32)
    solved, cut = eps
    assert solved.finished and games.verify(solved.text, recs[0]) and solved.text.split(TURN_SEP) == solve
    assert not cut.finished and cut.text.split(TURN_SEP) == stuck + stuck[:3] and not games.verify(cut.text, recs[1])
    # One batched call per turn; the solved episode drops out once it is over.
    assert calls == [(2, t) for t in range(len(solve))] + [(1, t) for t in range(len(solve), 8)]
    for ep, plan, rec in ((solved, solve, recs[0]), (cut, stuck + stuck[:3], recs[1])):
        # prompt + trajectory == the chat template's own rendering of the whole conversation
        session, msgs = GameSession(rec), [{"role": "user", "content": rec["prompt"]}]
        for reply in plan:
            msgs.append({"role": "assistant", "content": reply})
            user_text, done = session.step(reply)
            if not done:
                msgs.append({"role": "user", "content": user_text})
        if msgs[-1]["role"] == "user":  # cut at max_turns: the last environment turn is never appended
            msgs.pop()
        full = tok.apply_chat_template(msgs, tokenize=True)
        full = list(full["input_ids"] if hasattr(full, "keys") else full)
        assert ep.prompt_ids + ep.response_ids == full
        # Learning targets: exactly the replies' tokens (with their EOS), never the environment's turns.
        targets = [t for t, m in zip(ep.response_ids, ep.loss_mask) if m]
        assert targets == [t for reply in plan for t in tok.encode(reply, add_special_tokens=False) + [tok.eos_token_id]]
        assert ep.policy_tokens == len(targets) < len(ep.response_ids)
        env = [i for i, m in enumerate(ep.loss_mask) if not m]
        # per-position arrays cover the whole trajectory; the environment's rows carry padding values
        assert ep.logprobs.shape == (len(ep.response_ids),) and ep.topk_ids.shape == (len(ep.response_ids), 1)
        assert all(ep.logprobs[i] == 0.0 and ep.topk_ids[i, 0] == 0 and ep.topk_logprobs[i, 0] == -1e9 for i in env)
        pol = [i for i, m in enumerate(ep.loss_mask) if m]
        assert ep.topk_ids[pol, 0].tolist() == targets and all(ep.logprobs[pol] == -0.5)
        assert len(ep.logprobs) == len(ep.topk_ids) == len(ep.topk_logprobs) == len(ep.response_ids)
    mask = response_mask(eps, max(len(e.response_ids) for e in eps))
    assert mask.sum().item() == solved.policy_tokens + cut.policy_tokens


def test_an_episode_that_would_overflow_the_context_window_ends(tok):
    recs = _levels()
    prompts = [encode_prompt(tok, r["prompt"]) for r in recs]
    plans = [["<answer>Up</answer>"] * 8] * 2
    first = len(tok.encode(plans[0][0], add_special_tokens=False)) + 1
    env_turn = len(encode_next_turn(tok, GameSession(recs[0]).step(plans[0][0])[0], True))
    # Room for one reply and an environment turn, but not for a second reply of max_tokens as well.
    eps = run_episodes(_scripted(tok, prompts, plans, []), tok, recs, prompts, GameSession, max_turns=8,
                       room=[first + env_turn + 31, 10_000], max_tokens=32)
    assert len(eps[0].text.split(TURN_SEP)) == 1 and len(eps[0].response_ids) == first
    assert len(eps[1].text.split(TURN_SEP)) == 8
