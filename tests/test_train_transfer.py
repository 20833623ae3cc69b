"""End to end: a toy run with the full-vocabulary reverse KL whose teacher ships hidden states."""
import json
import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


def test_full_reverse_kl_trains_with_teacher_hidden_states(tmp_path):
    """The toy vocabulary (V=84) is smaller than its hidden size (d=128), so ``auto`` ships log-probs
    there; forced to ``hidden`` the teacher ships [B, T, 128] and the learner forms the logits with
    its copy of the teacher's head. The choice is printed at start-up and the run trains."""
    from omegaconf import OmegaConf

    from opcd.algorithms import algo_spec
    from opcd.config import AlgoConfig, TrainConfig
    from opcd.transfer import transfer_plan

    cfg = OmegaConf.structured(TrainConfig)
    cfg.algo = OmegaConf.merge(OmegaConf.structured(AlgoConfig), {"loss": "full_reverse_kl"})
    cfg.model.dtype = "float32"  # fp32 hidden states (512 B) cost more than the 84 log-probs (336 B)
    auto = transfer_plan(cfg, algo_spec(cfg.algo), cfg.model.path)
    assert auto.mode == "logprobs" and auto.bytes_per_token == 84 * 4 and auto.options["hidden"] == 128 * 4
    cfg.model.dtype = "bfloat16"  # bf16 hidden states (256 B) cost less: auto switches
    auto = transfer_plan(cfg, algo_spec(cfg.algo), cfg.model.path)
    assert auto.mode == "hidden" and auto.bytes_per_token == 128 * 2

    r = subprocess.run([sys.executable, "-m", "opcd.train", f"hydra.run.dir={tmp_path}", "logger=none", "steps=2",
                        "eval_every=0", "prompts_per_step=8", "task.eval_n_per_rule=4", "rollout.num_workers=1",
                        "algo.loss=full_reverse_kl", "algo.teacher_transfer=hidden", "model.dtype=float32"],
                       capture_output=True, text=True, timeout=1200)
    out = r.stdout + r.stderr
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
    line = re.search(r"\[opcd\] teacher transfer: (\w+) \((\d+) B/token.*", out)
    assert line and line.groups() == ("hidden", str(128 * 4)), out[-3000:]
    print(line.group(0))
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all(row["nonfinite"] == 0.0 for row in rows[1:])
    assert all(row["loss/kl"] > 0 for row in rows[1:])
