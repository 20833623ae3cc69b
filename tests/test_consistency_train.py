"""The consistency regulariser's variants in the real training system (`python -m opcd.train`: Ray, vLLM,
DeepSpeed on the toy model): options reach the learner, the delay keeps the term off, and the
per-position metrics reach metrics.jsonl."""
import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


def test_variant_options_reach_the_learner_and_its_metrics(tmp_path):
    r = subprocess.run([sys.executable, "-m", "opcd.train", f"hydra.run.dir={tmp_path}", "logger=none", "steps=2",
                        "eval_every=0", "prompts_per_step=8", "task.eval_n_per_rule=4", "rollout.num_workers=1",
                        "algo=opcd_nca", "algo.nca_mode=sg_context", "algo.nca_positions=agree", "algo.nca_support=topk",
                        "algo.nca_after_step=1"], capture_output=True, text=True, timeout=1200)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    step1, step2 = (next(x for x in rows if x.get("step") == s and "loss/total" in x) for s in (1, 2))
    assert "loss/consistency" not in step1  # off until after step 1
    assert step2["loss/nca_beta"] == 0.5 and step2["loss/consistency"] >= 0
    assert 0 <= step2["loss/consistency_kept"] <= 1
    assert {"loss/consistency_first", "loss/consistency_rest"} <= set(step2)


def test_unknown_variant_is_refused_at_startup(tmp_path):
    r = subprocess.run([sys.executable, "-m", "opcd.train", f"hydra.run.dir={tmp_path}", "logger=none", "steps=1",
                        "algo=opcd_nca", "algo.nca_mode=both"], capture_output=True, text=True, timeout=600)
    assert r.returncode != 0 and "unknown algo.nca_mode 'both'; expected one of paper, sg_context" in r.stderr
