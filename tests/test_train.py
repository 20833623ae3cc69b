"""The real training system end to end: `python -m opcd.train` with Ray, vLLM and DeepSpeed."""
import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


def _train(tmp_path, *overrides, timeout=1200):
    r = subprocess.run([sys.executable, "-m", "opcd.train", f"hydra.run.dir={tmp_path}", "logger=none", *overrides],
                       capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    return r, rows


def assert_quiet(out: str) -> None:
    """A normal run prints no warning a user would have to look up (issue 18): none of the known
    third-party messages opcd.quiet drops, no torch C++ note, no Python or library WARNING line."""
    import re

    from opcd.quiet import KNOWN

    assert "[opcd] dtype: engine " in out  # the dtype choice is stated once at start-up
    for text in [k.text for k in KNOWN] + ["Failed to load weights", "NUMA binding"]:
        assert text not in out, text
    noisy = [line for line in out.splitlines() if re.search(r"WARNING|\w+Warning\b|Warning:", line)]
    assert not noisy, "\n".join(noisy[:20])


def test_short_default_run_raises_no_context_accuracy(tmp_path):
    """A shortened default experiment: no-context accuracy on the distilled rule must rise."""
    r, rows = _train(tmp_path, "steps=20", "eval_every=20", "task.eval_n_per_rule=48")
    assert_quiet(r.stdout + r.stderr)
    start, end = rows[0], rows[-1]
    key = "eval/distilled/none"
    assert end[key] >= start[key] + 0.2, (start[key], end[key])
    assert all(r["nonfinite"] == 0.0 for r in rows[1:])
    assert {"loss/kl", "rollout/tokens_per_s", "teacher/tokens_per_s", "learner/tokens_per_s",
            "sync/seconds", "rollout/response_len"} <= set(rows[1])
    # The checkpoint is a plain HF directory that transformers and vLLM load, with the trained weights:
    # greedy vLLM decoding from it reproduces the final no-context accuracy measured in the loop.
    from transformers import AutoModelForCausalLM

    from opcd.eval.__main__ import run_eval
    from opcd.models.toy.model_card import eval_config

    ckpt = tmp_path / "checkpoints" / "step_20"
    assert (ckpt / "model.safetensors").exists() and (ckpt / "tokenizer.json").exists()
    AutoModelForCausalLM.from_pretrained(ckpt)
    cfg = eval_config(str(ckpt), n_per_rule=48, out=str(tmp_path / "ckpt_eval.json"))
    cfg.rules = ["reverse"]
    acc = run_eval(cfg)["accuracy"]["reverse"]
    assert acc["none"] == pytest.approx(end[key], abs=1.5 / 48)  # thread counts differ: allow one argmax flip


@pytest.mark.parametrize("algo", ["opcd_nca", "offpolicy_cd", "gkd", "sft", "icl"])
def test_every_algo_runs_a_step(tmp_path, algo):
    overrides = ["steps=2", "eval_every=0", "prompts_per_step=8", "task.eval_n_per_rule=4", f"algo={algo}",
                 "rollout.num_workers=1"]
    if algo == "gkd":
        overrides.append("algo.top_k=84")  # full-vocabulary JSD on the 84-token toy vocabulary
    _, rows = _train(tmp_path, *overrides)
    if algo == "icl":  # the in-context baseline: evaluated once, nothing trained or saved
        assert len(rows) == 1 and "eval/distilled/system" in rows[0] and not (tmp_path / "checkpoints").exists()
        return
    assert len(rows) == 3 and all(r["nonfinite"] == 0.0 for r in rows[1:])
    loss_key = {"opcd_nca": "loss/consistency", "offpolicy_cd": "loss/kl", "gkd": "loss/jsd", "sft": "loss/nll"}[algo]
    assert loss_key in rows[1]


def test_hydra_multirun_runs_each_job_in_its_own_directory(tmp_path):
    """`-m` sweeps run their jobs one after another (Ray is shut down and restarted between jobs)."""
    r = subprocess.run([sys.executable, "-m", "opcd.train", "-m", "steps=1,2", "eval_every=0", "prompts_per_step=8",
                        "task.eval_n_per_rule=4", "logger=none", "rollout.num_workers=1",
                        f"hydra.sweep.dir={tmp_path}"], capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-5000:]
    finals = sorted(tmp_path.glob("*/final_metrics.json"))
    assert len(finals) == 2
    steps = sorted(len((f.parent / "metrics.jsonl").read_text().splitlines()) - 1 for f in finals)
    assert steps == [1, 2]
    # One combined table for the sweep: a row per job, both done, with their final metrics.
    t = subprocess.run([sys.executable, "-m", "opcd.sweeps", str(tmp_path), "--out", str(tmp_path / "table.md")],
                       capture_output=True, text=True, timeout=60)
    assert t.returncode == 0, t.stderr
    lines = (tmp_path / "table.md").read_text().splitlines()
    header = next(line for line in lines if line.startswith("| job"))
    rows = [line for line in lines if line.startswith("| 0 ") or line.startswith("| 1 ")]
    assert "eval/distilled/none" in header and len(rows) == 2
    assert all("| done |" in r for r in rows) and "steps=1" in rows[0] and "steps=2" in rows[1]
    assert (tmp_path / "table.csv").exists()


@pytest.fixture(scope="module")
def long_tiny_model_dir(tmp_path_factory) -> str:
    """A random 1-layer char-level Llama with a 1024-token window: room for a few game turns."""
    import torch

    from opcd.models.toy.char_tokenizer import build_char_tokenizer
    from opcd.models.toy.pretrain import build_model

    d = tmp_path_factory.mktemp("long-tiny-model")
    tokenizer = build_char_tokenizer()
    torch.manual_seed(0)
    build_model(tokenizer, hidden=64, layers=1, heads=2, max_len=1024).save_pretrained(d)
    tokenizer.save_pretrained(d)
    return str(d)


@pytest.mark.parametrize("algo", ["opcd", "offpolicy_cd"])
def test_multi_turn_game_trains_on_whole_episodes(tmp_path, long_tiny_model_dir, algo):
    """FrozenLake through the real stack: episodes of several turns from the student (opcd) or the
    teacher (off-policy CD), scored by the teacher with the experience, learned from on the replies only."""
    pytest.importorskip("gymnasium")
    _, rows = _train(tmp_path, "task=frozenlake", f"algo={algo}", f"model.path={long_tiny_model_dir}",
                     "model.max_model_len=1024", "task.context=Find a safe path to G.", "task.train_size=8",
                     "task.eval_n_per_rule=2", "task.game_size=3", "task.max_turns=4", "rollout.max_tokens=8", "rollout.num_workers=1",
                     "prompts_per_step=4", "steps=2", "eval_every=0")
    assert {"eval/distilled/experience", "eval/distilled/none"} <= set(rows[0])
    assert "eval/agreement_kl" in rows[0]
    for row in rows[1:]:
        assert row["nonfinite"] == 0.0
        # The learner reads whole trajectories (replies + environment turns); the rollout counts the
        # policy's replies only, at most max_turns x max_tokens per episode.
        policy = row["rollout/response_len"]
        assert 0 < policy <= 4 * 8 and row["learner/tokens"] > 4 * policy
