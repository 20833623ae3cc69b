"""The scaling model's inputs and arithmetic (``benchmarks/scaling_model.py``): pure, nothing measured.

Every number here is either quoted from a public source (model configs, GPU data sheets, the one
figure measured in issue 15) or a named assumption with the reason for its value; the functions
are arithmetic on them. Units: bytes, FLOP, seconds; ``GB`` = 1e9 bytes.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

GB = 1e9


@dataclass(frozen=True)
class Dims:
    """A model's shape, from its public ``config.json`` on the Hugging Face Hub."""

    vocab: int  # vocab_size (V)
    hidden: int  # hidden_size (d)
    layers: int  # num_hidden_layers
    heads: int  # num_attention_heads
    kv_heads: int  # num_key_value_heads (grouped-query attention)
    head_dim: int  # head_dim (hidden_size / heads where the config has none)
    intermediate: int  # intermediate_size (SwiGLU MLP: gate, up and down projections)
    tied: bool  # tie_word_embeddings: one [V, d] matrix is both the embedding and the LM head
    card_params: float  # the parameter count on the model card: a check on params(), not used in the arithmetic


# Quoted from each model's config.json on the Hub (Qwen3 family: Qwen/Qwen3-{1.7B,4B,8B}; Llama:
# meta-llama/Llama-3.2-3B-Instruct, meta-llama/Llama-3.1-8B-Instruct). Card counts: Qwen3 model cards
# (1.7B, 4.0B, 8.2B), Meta's cards (3.21B, 8.03B).
MODELS: dict[str, Dims] = {
    "Qwen/Qwen3-1.7B": Dims(151936, 2048, 28, 16, 8, 128, 6144, True, 1.7e9),
    "Qwen/Qwen3-4B": Dims(151936, 2560, 36, 32, 8, 128, 9728, True, 4.0e9),
    "Qwen/Qwen3-8B": Dims(151936, 4096, 36, 32, 8, 128, 12288, False, 8.2e9),
    "meta-llama/Llama-3.2-3B-Instruct": Dims(128256, 3072, 28, 24, 8, 128, 8192, True, 3.21e9),
    "meta-llama/Llama-3.1-8B-Instruct": Dims(128256, 4096, 32, 32, 8, 128, 14336, False, 8.03e9),
}


@dataclass(frozen=True)
class Gpu:
    memory: float  # bytes of HBM (decimal GB as on the data sheet; nvidia-smi shows slightly more, so this errs low)
    flops: float  # dense bf16 tensor-core FLOP/s (data sheet, without sparsity)
    hbm: float  # HBM bandwidth, bytes/s


# NVIDIA data sheets, SXM parts: H100 80 GB HBM3, 3.35 TB/s, 989 TFLOP/s dense bf16; H200 141 GB
# HBM3e, 4.8 TB/s, the same 989 TFLOP/s.
GPUS: dict[str, Gpu] = {"H200": Gpu(141 * GB, 989e12, 4.8e12), "H100": Gpu(80 * GB, 989e12, 3.35e12)}

# name -> (value, unit, why). Every figure the model uses that is neither a config value nor quoted above.
ASSUMPTIONS: dict[str, tuple[float, str, str]] = {
    "mfu_learner": (0.40, "of peak FLOP/s", "DeepSpeed bf16 training of 2-8B models on long sequences; the usual 35-45%"),
    "mfu_teacher": (0.50, "of peak FLOP/s", "forward only, one long sequence per micro-batch: large matmuls, no backward"),
    "mfu_prefill": (0.50, "of peak FLOP/s", "vLLM prefill of the prompts (a small share of the rollout)"),
    "mfu_decode": (0.50, "of peak FLOP/s", "the compute bound of a decode step when the batch is large enough to reach it"),
    "mbu_decode": (0.60, "of HBM bandwidth", "vLLM decode reading weights + KV cache each step; paged attention "
                   "reaches 50-70%"),
    "nvlink_bytes_per_s": (150e9, "B/s", "NCCL broadcast / all-gather bus bandwidth within one 8-GPU NVLink node "
                           "(a third of NVLink 4's 450 GB/s per direction)"),
    "object_store_bytes_per_s": (2e9, "B/s", "Ray object store within one node: serialising numpy arrays, a shared-"
                                 "memory copy and the read on the other side"),
    "data_path_before_us_per_token": (71.0, "µs per response token", "measured in issue 15 (opcd's conversion of vLLM's "
                                      "per-position top-256 dicts + padding one token at a time, SmolLM2 on vLLM-CPU); "
                                      "counted serially over the step's tokens, as the issue does"),
    "engine_overhead_bytes": (4 * GB, "bytes per engine", "inside vLLM's gpu_memory_utilization share: activation "
                              "peak of its profiling run and the sampler's buffers"),
    "process_overhead_bytes": (2 * GB, "bytes per GPU process", "CUDA context, NCCL buffers, allocator fragmentation"),
    "activation_bytes_per_token_layer": (34, "× d bytes", "one transformer layer's saved activations in bf16 per "
                                         "token (Korthikanti et al. 2022, without the T² term: flash attention)"),
    "responses_run_to_max_tokens": (1, "flag", "every response (every turn) runs to rollout.max_tokens: the longest "
                                    "response sets a phase's time, so this bounds the step from above"),
}

# Tokens per task that the configs do not fix: the prompt the student sees, the context (experience
# text or system prompt) only the teacher sees, and per turn the environment's reply (games).
TASK_TOKENS: dict[str, dict[str, int]] = {
    "math": {"prompt": 256, "context": 1024, "observation": 0},  # a DAPO problem + instruction; an experience text
    "frozenlake": {"prompt": 256, "context": 512, "observation": 64},  # rules + 3x3 board; shipped experience; next board
    "safety": {"prompt": 128, "context": 256, "observation": 0},  # one user message; the shipped safety.txt (735 chars)
}
DEFAULT_TOKENS = {"prompt": 256, "context": 1024, "observation": 0}
TASK_TOKENS_WHY = ("chat-templated lengths estimated from the data sets and shipped texts (about 4 characters per "
                   "token); the teacher's sequences are context + prompt + response, the student's prompt + response")


def assumption_values(**over: float) -> dict[str, float]:
    """``{name: value}`` of :data:`ASSUMPTIONS`, with ``over`` replacing some (tests, what-ifs)."""
    unknown = set(over) - set(ASSUMPTIONS)
    if unknown:
        raise KeyError(f"unknown assumptions: {sorted(unknown)}")
    return {k: over.get(k, v[0]) for k, v in ASSUMPTIONS.items()}


# ---------------------------------------------------------------------------------------------- model
def params(d: Dims) -> int:
    """Parameter count from the shape: embeddings (twice when untied), per layer q/k/v/o, the SwiGLU
    MLP and two RMSNorms, and the final norm (Qwen3's per-head q/k norms, 2 x head_dim, included)."""
    attn = d.hidden * d.heads * d.head_dim * 2 + d.hidden * d.kv_heads * d.head_dim * 2
    layer = attn + 3 * d.hidden * d.intermediate + 2 * d.hidden + 2 * d.head_dim
    return d.vocab * d.hidden * (1 if d.tied else 2) + d.layers * layer + d.hidden


def kv_bytes_per_token(d: Dims, dtype_bytes: int = 2) -> int:
    """KV cache per token: K and V, every layer, every KV head (bf16)."""
    return 2 * d.layers * d.kv_heads * d.head_dim * dtype_bytes


def attention_flops_per_token(d: Dims, context: float) -> float:
    """Forward attention FLOP of one token attending to ``context`` tokens: QK^T and AV, 2 FLOP per MAC."""
    return 4.0 * d.layers * d.heads * d.head_dim * context


def forward_flops(n_params: float, d: Dims, tokens: float, mean_context: float) -> float:
    """A forward pass over ``tokens``: 2·N per token (N counts every parameter, embeddings included:
    conservative by the input embedding) plus attention at the mean context."""
    return tokens * (2.0 * n_params + attention_flops_per_token(d, mean_context))


def learner_flops(n_params: float, d: Dims, tokens: float, mean_context: float, checkpointing: bool) -> float:
    """Forward + backward = 3 forwards (6·N·T plus attention); gradient checkpointing recomputes the forward (8·N·T)."""
    return (3 + int(checkpointing)) * forward_flops(n_params, d, tokens, mean_context)


def learner_state_bytes(n_params: float, stage: int, ranks: int, offload: bool) -> dict[str, float]:
    """Per-rank GPU bytes of mixed-precision AdamW under ZeRO ``stage``: bf16 weights (2N, sharded at
    stage 3), bf16 gradients (2N, sharded from stage 2), fp32 master weights + two moments (12N,
    sharded from stage 1; on the host with ``offload``)."""
    shard = lambda s: ranks if stage >= s else 1  # noqa: E731
    opt = 12.0 * n_params / shard(1)
    return {"weights": 2.0 * n_params / shard(3), "gradients": 2.0 * n_params / shard(2),
            "optimizer": 0.0 if offload else opt, "host_optimizer": opt if offload else 0.0}


def activation_bytes(d: Dims, seq_tokens: float, micro_batch: int, checkpointing: bool, per_token_layer: float) -> float:
    """Saved activations of one micro-batch: with checkpointing, each layer's input (d bf16 values per
    token) plus one layer's full activations while it is recomputed; without, every layer's."""
    tokens = seq_tokens * micro_batch
    one_layer = per_token_layer * d.hidden * tokens
    return d.layers * 2.0 * d.hidden * tokens + one_layer if checkpointing else d.layers * one_layer


def learner_logit_bytes(d: Dims, loss: str, seq_tokens: float, resp_tokens: float, micro_batch: int,
                        temperature: float) -> float:
    """The [T, V] tensors of one micro-batch's loss (``opcd.learner.objective``): the model's bf16 logits
    over the whole sequence and their gradient (4·S·V), the response positions gathered (bf16), upcast
    to fp32 and kept for backward, and their gradients (12·L·V; +4·L·V for a division by the
    temperature). ``full_reverse_kl`` applies the head chunk by chunk (1,024 rows at a time)."""
    if loss == "full_reverse_kl":
        return 12.0 * 1024 * d.vocab
    per_seq = 4.0 * seq_tokens + 12.0 * resp_tokens + (4.0 * resp_tokens if temperature != 1.0 else 0.0)
    return micro_batch * per_seq * d.vocab


def teacher_logit_bytes(d: Dims, mode: str, seq_tokens: float, resp_tokens: float, micro_batch: int) -> float:
    """Peak [T, V] bytes of one teacher micro-batch (``opcd.teacher.scoring``): the bf16 logits of the
    whole sequence plus the gathered response rows during the forward, then bf16 logits + the fp32
    division by the temperature + the fp32 log-softmax (10·L·V). Shipping hidden states applies the
    head 1,024 rows at a time."""
    if mode == "hidden":
        return 10.0 * 1024 * d.vocab
    return micro_batch * max(2.0 * seq_tokens + 2.0 * resp_tokens, 10.0 * resp_tokens) * d.vocab


def rollout_seconds(*, n_params: float, d: Dims, gpu: Gpu, tp: int, seqs: int, prompt_tokens: float,
                    prefill_tokens: float, decode_steps: int, final_tokens: float, kv_capacity: float,
                    asm: dict[str, float]) -> dict:
    """One engine's rollout of ``seqs`` sequences (the engines run in parallel, so this is the phase).

    The KV cache holds ``concurrency`` sequences at their final length at once; the rest wait (vLLM
    preempts and resumes them: ``waves`` rounds). A decode step of ``c`` sequences reads the weights
    once and each sequence's KV cache at the mean context, and costs ``c`` tokens of forward FLOP:
    its time is the larger of the two at the stated MBU / MFU. Prefill: ``prefill_tokens`` per
    sequence at ``mfu_prefill``. Returns seconds, HBM bytes read, concurrency and waves.
    """
    kv_tok = kv_bytes_per_token(d)
    per_seq = kv_tok * final_tokens
    conc = min(seqs, int(kv_capacity // per_seq)) if kv_capacity > 0 else 0
    if conc < 1:
        return {"seconds": math.inf, "hbm_bytes": math.inf, "concurrency": 0, "waves": 0, "bound": "KV cache"}
    mean_ctx = prompt_tokens + (final_tokens - prompt_tokens) / 2
    bw, peak = gpu.hbm * tp * asm["mbu_decode"], gpu.flops * tp * asm["mfu_decode"]
    seconds = hbm = 0.0
    bounds = set()
    waves = math.ceil(seqs / conc)
    for w in range(waves):
        c = min(conc, seqs - w * conc)
        step_bytes = 2.0 * n_params + c * kv_tok * mean_ctx
        step_flops = c * (2.0 * n_params + attention_flops_per_token(d, mean_ctx))
        t_mem, t_flop = step_bytes / bw, step_flops / peak
        bounds.add("HBM bandwidth" if t_mem >= t_flop else "compute")
        seconds += decode_steps * max(t_mem, t_flop)
        hbm += decode_steps * step_bytes
    prefill = forward_flops(n_params, d, seqs * prefill_tokens, prefill_tokens / 2) / (gpu.flops * tp * asm["mfu_prefill"])
    return {"seconds": seconds + prefill, "prefill_seconds": prefill, "hbm_bytes": hbm, "concurrency": conc,
            "waves": waves, "bound": " / ".join(sorted(bounds))}
