"""Text games: seeded levels, move parsing, the environment's rules, and the replaying verifier."""
from types import SimpleNamespace

import pytest

pytest.importorskip("gymnasium")

from opcd.tasks import games  # noqa: E402
from opcd.tasks.games import TURN_SEP, FrozenLake, GameSession, Sokoban, parse_move, verify  # noqa: E402


def _cfg(name, **kw):
    base = dict(name=name, game_size=4 if name == "frozenlake" else 6, train_size=40, eval_n_per_rule=10, seed=0,
                max_turns=10, context="", context_file=None)
    return SimpleNamespace(**{**base, **kw})


def _play(moves):
    return TURN_SEP.join(f"I will go {m.lower()}. <answer>{m}</answer>" for m in moves)


@pytest.mark.parametrize("text,move", [("<answer>Left</answer>", "Left"), ("go <answer> down </answer>", "Down"),
                                       ("<answer>Up</answer> no, <answer>RIGHT</answer>", "Right"), ("up.", "Up"),
                                       ("Left or Right", None), ("<answer>jump</answer>", None), ("", None),
                                       ("I move [down]", "Down"), ("[Left] then [up]", "Up"), ("[x] [Right]", "Right"),
                                       ("[down] <answer>Left</answer>", "Left"), ("[jump]", None)])
def test_parse_move(text, move):
    assert parse_move(text) == move


def test_frozenlake_without_gymnasium_names_the_install(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "gymnasium", None)  # makes `import gymnasium` raise ImportError
    with pytest.raises(ImportError, match=r"task=frozenlake needs gymnasium; run: pip install gymnasium"):
        FrozenLake(3, seed=0)


@pytest.mark.parametrize("name", games.GAMES)
def test_levels_are_seeded_distinct_solvable_and_the_test_split_is_disjoint(name):
    a, b = games.load(_cfg(name)), games.load(_cfg(name))
    assert [r["prompt"] for r in a.train] == [r["prompt"] for r in b.train]  # a pure function of the seed
    prompts = [r["prompt"] for r in a.train]
    assert len(set(prompts)) == len(prompts) == 40
    tests = {r["prompt"] for r in a.eval}
    assert len(tests) == 10 and not tests & set(prompts)
    for rec in a.train[:15] + a.eval[:6]:
        moves = rec["answer"].split()
        assert 1 <= len(moves) <= 10
        assert verify(_play(moves), rec)  # the stored shortest solution solves the level
        assert not verify(_play(moves[:-1]), rec)  # one move short does not
    # Evaluation: every level with the shipped experience text and without any context.
    kinds = [r["metadata"]["context_kind"] for r in a.eval]
    assert kinds.count("experience") == kinds.count("none") == 10
    assert all(r["context"].startswith(f"Experience from earlier") for r in a.eval if r["metadata"]["context_kind"] == "experience")
    assert a.make_env is GameSession and a.max_turns == 10


def test_frozenlake_rules():
    lake = FrozenLake(4, seed=3)  # SFHF / FFFF / FFFF / FFFG
    assert lake.board().splitlines() == ["PFHF", "FFFF", "FFFF", "FFFG"]
    assert lake.move("Up") == "" and lake.board().startswith("PFHF")  # off the grid: stays put
    lake.move("Right")
    assert lake.move("Right") == "You fell into a hole." and lake.done and not lake.success
    rec = {"metadata": {"game": "frozenlake", "size": 4, "seed": 3}}
    assert verify(_play(["Down"] * 3 + ["Right"] * 3), rec)
    # Moves after the episode ended do not count: a hole ends it even if a later path would win.
    assert not verify(_play(["Right", "Right", "Down", "Down", "Down", "Right"]), rec)


def test_sokoban_pushes_but_never_pulls_and_walls_block():
    game = Sokoban(6, seed=0)
    game.walls = {(r, c) for r in range(6) for c in range(6) if r in (0, 5) or c in (0, 5)}
    game.player, game.box, game.target = (2, 1), (2, 2), (2, 4)
    assert game.board().splitlines()[2] == "#PB_T#"
    assert game.move("Left") == "You walked into a wall." and game.player == (2, 1)
    game.move("Right")
    assert game.box == (2, 3) and game.player == (2, 2)
    game.move("Left")
    assert game.box == (2, 3)  # walking away does not pull the box
    game.player = (2, 2)
    assert game.move("Right") == "The box is on the target." and game.success and game.done
    game.box, game.player = (2, 4), (2, 3)
    assert game.move("Right").startswith("The box does not move") and game.box == (2, 4)


def test_session_replies_with_the_new_board_and_rejects_non_moves():
    rec = {"metadata": {"game": "frozenlake", "size": 4, "seed": 3}}
    s = GameSession(rec)
    text, done = s.step("hmm")
    assert not done and text.startswith("That is not a move.") and "<answer>Left</answer>" in text
    text, done = s.step("<answer>Down</answer>")
    assert not done and text.startswith("You moved Down.") and "SFHF\nPFFF" in text
    # An invalid turn costs a turn, not the episode; the last tag of a reply is its move.
    replies = ["<answer>Down</answer>", "no move", "<answer>Down</answer>", "<answer>Down</answer><answer>Right</answer>",
               "<answer>Right</answer>", "<answer>Down</answer>", "<answer>Right</answer>"]
    assert verify(TURN_SEP.join(replies), rec)
    assert not verify(TURN_SEP.join(replies[:-1]), rec)


def test_bad_settings_raise_with_the_fix():
    with pytest.raises(ValueError, match="max_turns must be >= 1"):
        games.load(_cfg("frozenlake", max_turns=0))
    with pytest.raises(ValueError, match="game_size must be >= 5"):
        games.load(_cfg("sokoban", game_size=4))
    with pytest.raises(ValueError, match="raise task.game_size / task.max_turns"):
        games.load(_cfg("frozenlake", max_turns=3))  # 4x4 lakes need 6 moves
    with pytest.raises(ValueError, match="unknown game"):
        games.make_game("chess", 4, 0)
