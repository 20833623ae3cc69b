"""The fast data-path tests must catch every silent mix-up of the step's data path.

Each case below breaks one rule in a private copy of the package (a one-line mutation of the real
source) and runs the fast data-path tests against that copy: they must fail. If a refactor makes a
mutation's source line disappear, the case fails too, so the list stays in step with the code.
"""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
TESTS = ["tests/test_phases.py", "tests/test_routing.py", "tests/test_loop_state.py", "tests/learner/test_objective.py"]
MUTATIONS = {  # name: (file, original, mutated)
    "the student gets the context": (
        "opcd/routing.py", "student = [c if student_sees_context(r) else render(r, False)",
        "student = [c if True else render(r, False)"),
    "on-policy rollouts start from the context prompts": (
        "opcd/routing.py", "source = views.student if on_policy else views.context",
        "source = views.context if on_policy else views.context"),
    "the wrong policy answers": ("opcd/phases.py", "teacher=not plan.on_policy", "teacher=plan.on_policy"),
    "the teacher scores without the context": (
        "opcd/routing.py", "return [views.context[i] + list(r)", "return [views.student[i] + list(r)"),
    "student and context prompts swapped into build_learn_batch": (
        "opcd/phases.py", "build_learn_batch(samples, student_prompts, context_prompts, scores)",
        "build_learn_batch(samples, context_prompts, student_prompts, scores)"),
    "wrong pairing for n > 1": (
        "opcd/routing.py", "return [i for i in idx for _ in range(n)]", "return [i for _ in range(n) for i in idx]"),
    "environment-turn mask dropped in the objective": (
        "opcd/learner/objective.py", "mask = mask & mb.mask.to(dev)\n        if name == \"topk_reverse_kl\"",
        "mask = mask\n        if name == \"topk_reverse_kl\""),
    "environment-turn mask dropped in the batch": (
        "opcd/batch.py", "pad_2d([s.loss_mask if s.loss_mask is not None else", "pad_2d([None if s.loss_mask is not None else"),
    "sampled loss without its temperature": (
        "opcd/learner/objective.py", "torch.log_softmax(logits.float() / T, -1).gather",
        "torch.log_softmax(logits.float(), -1).gather"),
    "the student's top-k misaligned with its positions": (
        "opcd/phases.py", "support = pad_3d([s.topk_ids for s in samples], T, spec.top_k",
        "support = pad_3d([s.topk_ids[::-1] for s in samples], T, spec.top_k"),
    "learner prompts reordered": (
        "opcd/routing.py", "return [views.student[i] for i in rows], [views.context[i] for i in rows]",
        "return [views.student[i] for i in sorted(rows)], [views.context[i] for i in rows]"),
}


@pytest.fixture(scope="module")
def copy_root(tmp_path_factory):
    dst = tmp_path_factory.mktemp("mutant")
    shutil.copytree(ROOT / "opcd", dst / "opcd", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "tests", dst / "tests", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", dst / "pyproject.toml")
    return dst


@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_fast_tests_catch(copy_root, name):
    rel, old, new = MUTATIONS[name]
    path = copy_root / rel
    source = path.read_text()
    assert source.count(old) == 1, f"{name}: the line to mutate is gone from {rel}; update MUTATIONS"
    path.write_text(source.replace(old, new))
    try:
        # PYTHONPATH first: the copy's opcd shadows the installed (editable) one.
        r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-m", "not slow", "-p", "no:cacheprovider", *TESTS],
                           cwd=copy_root, capture_output=True, text=True, timeout=600,
                           env={**__import__("os").environ, "PYTHONPATH": str(copy_root)})
    finally:
        path.write_text(source)
    assert r.returncode == 1, f"{name} survived the fast tests:\n{r.stdout[-2000:]}"
    assert "failed" in r.stdout
