"""The shipped tiny model: loads in transformers and vLLM with matching log-probs, and meets its bars."""
import pytest
import torch

from opcd.chat import encode_prompt
from opcd.models.toy.model_card import (BAR_DEMOS_MEAN, BAR_NOCTX_DISTILLED, BAR_SYSTEM_EVERY_RULE, DISTILLED,
                                   eval_config)
from opcd.models.toy import DEFAULT_OUT
from opcd.tasks.toy_world import generate

pytestmark = pytest.mark.slow
MODEL = str(DEFAULT_OUT)


def test_shipped_model_is_small_and_complete():
    files = {p.name for p in DEFAULT_OUT.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "README.md"} <= files
    size = sum(p.stat().st_size for p in DEFAULT_OUT.iterdir())
    assert size <= 20 * 2**20


def test_transformers_and_vllm_logprobs_match():
    from opcd.modeling import load_causal_lm, load_tokenizer
    from opcd.engine import make_llm, sample
    from opcd.teacher.scoring import score_responses

    tok = load_tokenizer(MODEL)
    recs = generate("test", n_per_rule=2, seed=1)
    prompts = [encode_prompt(tok, r["prompt"], r["context"]) for r in recs]
    llm = make_llm(MODEL, "vllm_cpu", threads=2)
    samples = sample(llm, prompts, temperature=1.0, max_tokens=16, top_k_logprobs=5)
    model = load_causal_lm(MODEL).eval()
    seqs = [s.prompt_ids + s.response_ids for s in samples]
    lens = [len(s.response_ids) for s in samples]
    ids = torch.tensor([[i for i in row] for row in _pad([s.topk_ids for s in samples], 5)])
    scores = score_responses(model, seqs, lens, tok.pad_token_id, support=ids, k=5)
    worst = 0.0
    for b, s in enumerate(samples):
        T = len(s.response_ids)
        hf_tok = scores["token_logprobs"][b, :T]
        worst = max(worst, (hf_tok - torch.tensor(s.logprobs)).abs().max().item())
        hf_top = scores["logprobs"][b, :T]
        worst = max(worst, (hf_top - torch.tensor(s.topk_logprobs)).abs().max().item())
    assert worst < 1e-3, f"max |logprob_HF - logprob_vLLM| = {worst}"


def _pad(topk_rows, k):
    T = max(len(r) for r in topk_rows)
    return [[row[t] if t < len(row) else [0] * k for t in range(T)] for row in topk_rows]


def test_accuracy_bars_from_a_real_evaluation(tmp_path):
    from opcd.eval.__main__ import run_eval

    acc = run_eval(eval_config(MODEL, out=str(tmp_path / "eval.json")))["accuracy"]
    rules = [r for r in acc if r != "mean"]
    assert len(rules) >= 8
    for r in rules:
        assert acc[r]["system"] >= BAR_SYSTEM_EVERY_RULE, (r, acc[r])
    assert acc["mean"]["demos"] >= BAR_DEMOS_MEAN, acc["mean"]
    assert acc[DISTILLED]["none"] <= BAR_NOCTX_DISTILLED, acc[DISTILLED]
    assert (tmp_path / "eval.json").exists()
