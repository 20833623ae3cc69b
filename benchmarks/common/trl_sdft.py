"""The TRL side of the head-to-heads: ``trl.experimental.sdft.SDFTTrainer`` set up as opcd's run.

Two TRL configurations, each a method of the head-to-head scripts (``TRL_CONFIGS``):

* ``trl``      -- generation with HF ``generate`` in the training process;
* ``trl_vllm`` -- generation with vLLM in colocate mode (``use_vllm=True, vllm_mode="colocate"``):
  an in-process engine whose weights TRL reloads from the trained model before each step.

Everything else is the same job as opcd's: full-vocabulary reverse KL (``distillation_mode=
"full_logits"``, ``distillation_alpha=1.0``), the frozen initial model as teacher, AdamW at a
constant lr with grad-norm clip 1.0, N prompts x 1 sample per step, float32 on the CPU, and the
context as the teacher's *system* message (``system_message_prompt``; the worker swaps it into
SDFT's context builder).

Loss aggregation: TRL 1.16's ``SDFTConfig`` has no ``loss_type`` field (passing one is a
``TypeError``). ``SDFTTrainer._compute_self_distillation_loss`` averages each response's per-token
loss over that response's tokens, then averages over the batch: opcd's ``algo.aggregation=seq_mean``
(``AGGREGATION``). ``tests/benchmarks/test_trl_parity.py`` runs TRL's own loss code next to opcd's
to hold both to it, so a TRL release that changes the aggregation fails a fast test.
"""
from __future__ import annotations

TRL_CONFIGS = {"trl": "hf_generate", "trl_vllm": "vllm_colocate"}  # method -> how TRL generates
LABELS = {"trl": "TRL SDFTTrainer", "trl_vllm": "TRL SDFTTrainer, vLLM colocate"}
AGGREGATION = "seq_mean"  # what SDFTTrainer's loss does (no loss_type to set): per-response mean, then batch mean


def is_trl(method: str) -> bool:
    return method in TRL_CONFIGS


def make_job(method: str, *, model: str, output_dir: str, steps: int, batch: int, max_tokens: int,
             temperature: float, lr: float, seed: int, save_steps: int, threads: int, max_model_len: int,
             prompts: list[str], context: str | None = None, contexts: list[str] | None = None,
             kv_cache_gb: int = 1) -> dict:
    """Everything the TRL worker process needs (JSON-serialisable): ``batch`` prompts x 1 sample per
    step, ``max_tokens`` new tokens, and either one ``context`` for every prompt or one per prompt.
    ``kv_cache_gb``: the vLLM CPU KV cache of ``trl_vllm`` (opcd's ``rollout.kv_cache_gb``)."""
    if not is_trl(method):
        raise ValueError(f"not a TRL configuration: {method!r}; expected one of {sorted(TRL_CONFIGS)}")
    if (context is None) == (contexts is None):
        raise ValueError("give one context for all prompts or one per prompt")
    job = {"model": model, "output_dir": output_dir, "steps": steps, "batch": batch, "max_tokens": max_tokens,
           "temperature": temperature, "lr": lr, "seed": seed, "save_steps": save_steps, "threads": threads,
           "max_prompt_length": max_model_len - max_tokens, "generation": TRL_CONFIGS[method],
           "kv_cache_gb": kv_cache_gb, "prompts": prompts}
    return {**job, "context": context} if context is not None else {**job, "contexts": contexts}


def trl_config(job: dict):
    """The ``SDFTConfig`` of the TRL side (CPU, no logging service). Precision: opcd's learner choice on
    this machine (``opcd.hardware``, ``job["dtype"]``, default auto): fp32 weights and AdamW, plus TRL's
    ``bf16`` flag (autocast) where opcd's learner autocasts in bf16."""
    from trl.experimental.sdft import SDFTConfig

    from opcd.hardware import local_dtype

    bf16 = local_dtype(job.get("dtype", "auto"), "learner") == "bfloat16"

    generation = job.get("generation", "hf_generate")
    if generation not in TRL_CONFIGS.values():
        raise ValueError(f"unknown TRL generation {generation!r}; expected one of {sorted(TRL_CONFIGS.values())}")
    vllm = {}
    if generation == "vllm_colocate":
        vllm = {"vllm_mode": "colocate", "vllm_max_model_length": job["max_prompt_length"] + job["max_tokens"],
                "vllm_enable_sleep_mode": False}
    return SDFTConfig(
        output_dir=job["output_dir"], max_steps=job["steps"], per_device_train_batch_size=job["batch"],
        gradient_accumulation_steps=1, num_generations=1, max_completion_length=job["max_tokens"],
        max_prompt_length=job["max_prompt_length"], temperature=job["temperature"], top_p=1.0, top_k=0,
        distillation_mode="full_logits", distillation_alpha=1.0, teacher_model_kind="base",
        learning_rate=job["lr"], lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0,
        max_grad_norm=1.0, optim="adamw_torch", seed=job["seed"], use_cpu=True, bf16=bf16, fp16=False,
        model_init_kwargs={"dtype": "float32"}, save_strategy="steps", save_steps=job["save_steps"],
        save_only_model=False, logging_steps=1, report_to="none", dataloader_num_workers=0,
        dataloader_pin_memory=False, disable_tqdm=True, use_vllm=bool(vllm), **vllm)


def dataset_rows(job: dict) -> list[dict]:
    """Conversational SDFT rows: the user turn only; the context travels as ``privileged_context``
    (``job["contexts"]``, one per prompt, or ``job["context"]`` for all)."""
    contexts = job.get("contexts") or [job["context"]] * len(job["prompts"])
    return [{"prompt": [{"role": "user", "content": p}], "privileged_context": c}
            for p, c in zip(job["prompts"], contexts, strict=True)]


def system_message_prompt(prompt: list[dict], context: str) -> list[dict]:
    """The teacher's conversation: the context as the system message (what opcd renders), replacing
    any system turn; stock SDFT instead appends it to the last user turn."""
    return [{"role": "system", "content": context}, *[m for m in prompt if m.get("role") != "system"]]


def configuration_of(method: str, rec: dict) -> dict:
    """Which TRL configuration produced a run record: the worker's ``config`` event (what actually
    ran: generation, use_vllm, vllm_mode, trl and vllm versions), or, for a record without one, what
    the method asks for."""
    row = next((r for r in rec.get("rows", []) if r.get("event") == "config"), None)
    if row:
        return {k: v for k, v in row.items() if k not in ("event", "time")}
    return {"generation": TRL_CONFIGS[method]}
