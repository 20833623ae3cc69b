"""The learner: a DeepSpeed engine inside a Ray actor (one actor per data-parallel rank).

ZeRO stage, offload, precision, micro-batch, gradient accumulation and the optimizer all come from
``LearnerConfig``/``AlgoConfig``. CPU runs use the gloo backend and torch's AdamW (DeepSpeed's
fused CPU Adam needs a ~70 s JIT build); CUDA runs use NCCL.
"""
from __future__ import annotations

import math
import os
import sys
import time

import torch

from opcd.batch import LearnBatch
from opcd.learner.objective import micro_batch_weight, student_loss
from opcd.hardware import local_dtype, local_learner_mode
from opcd.modeling import load_causal_lm, load_tokenizer
from opcd.net import rendezvous_address


def deepspeed_config(learner, algo, batch_size: int, world_size: int, precision: str | None = None) -> dict:
    """DeepSpeed JSON config for one optimizer step per rollout batch of ``batch_size`` sequences.

    ``precision`` is the resolved ``opcd.hardware.learner_mode`` (fp32 | bf16 | autocast; default
    ``learner.precision``): only ``bf16`` turns on DeepSpeed's bf16 (autocast keeps fp32 weights)."""
    per_rank = math.ceil(batch_size / world_size)
    mbs = min(learner.micro_batch_size, per_rank)
    gas = learner.grad_accum_steps or math.ceil(per_rank / mbs)
    zero = {"stage": learner.zero_stage}
    params = {"lr": algo.lr, "weight_decay": algo.weight_decay}
    if learner.optimizer.lower().startswith("adam"):
        # torch's Adam(W): DeepSpeed's fused CPU Adam needs a ~70 s JIT build on every fresh machine.
        params.update(betas=list(learner.betas), eps=1e-8, torch_adam=True)
    optimizer = {"type": learner.optimizer, "params": params}
    if learner.offload and learner.zero_stage >= 1:
        zero["offload_optimizer"] = {"device": "cpu"}
    cfg = {
        "train_micro_batch_size_per_gpu": mbs,
        "gradient_accumulation_steps": gas,
        "train_batch_size": mbs * gas * world_size,
        "optimizer": optimizer,
        "zero_optimization": zero,
        "gradient_clipping": algo.grad_clip,
        "bf16": {"enabled": (precision or learner.precision) == "bf16"},
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
    return cfg  # no DeepSpeed scheduler: LearnerActor sets the (warm-up, then constant) lr itself


def merge_rank_stats(per_rank: list[dict[str, float]]) -> dict[str, float]:
    """One step's metrics from every rank's ``train_step`` result.

    Loss terms are each rank's share of the batch mean (they sum to it); tokens add up; time is
    the slowest rank's; a skip on any rank is a skip.
    """
    out = dict(per_rank[0])
    for k in out:
        vals = [r[k] for r in per_rank]
        if k.startswith("loss/") or k == "learner/tokens":
            out[k] = sum(vals)
        elif k in ("nonfinite", "learner/seconds"):
            out[k] = max(vals)
    return out


class LearnerActor:
    """One data-parallel rank. ``train_step`` runs forward/backward over its shard of a batch."""

    def __init__(self, model_path: str, learner, algo, dtype: str, batch_size: int, rank: int,
                 world_size: int, master_addr: str, master_port: int, seed: int, teacher_head_path: str | None = None):
        os.environ.update({"MASTER_ADDR": master_addr, "MASTER_PORT": str(master_port), "RANK": str(rank),
                           "WORLD_SIZE": str(world_size), "LOCAL_RANK": "0"})
        if learner.device == "cpu":
            os.environ["DS_ACCELERATOR"] = "cpu"
            # DeepSpeed's CPU accelerator JIT-builds its shared-memory comm op into the torch extension
            # cache; one cache per environment, or every other virtualenv (a fresh clone's CI) rebuilds it (~40 s).
            os.environ.setdefault("TORCH_EXTENSIONS_DIR", os.path.join(sys.prefix, "torch_extensions"))
            torch.set_num_threads(learner.threads)
        torch.manual_seed(seed)
        import deepspeed

        deepspeed.init_distributed(dist_backend=learner.backend, auto_mpi_discovery=False)
        self.rank, self.world_size, self.algo = rank, world_size, algo
        self.pad_id = load_tokenizer(model_path).pad_token_id
        # fp32 | bf16 (DeepSpeed bf16) | autocast (CPU: fp32 weights and AdamW, bf16 forward), from
        # learner.precision and model.dtype on this actor's machine (opcd.hardware).
        cuda = learner.device == "cuda"
        self.precision = local_learner_mode(learner.precision, dtype, cuda)
        model = load_causal_lm(model_path, local_dtype(dtype, "learner", cuda) if self.precision == "bf16" else "float32")
        if self.precision == "autocast":
            # Only the model's forward (and its recomputation in backward) runs in bf16: the losses
            # take its logits outside, upcast to fp32 (opcd.loss_utils.upcast), and apply an LM head
            # themselves in fp32 (chunked_kl), so they accumulate in fp32. The decoder is wrapped too:
            # the full-vocabulary losses call it directly for hidden states (modeling.response_logits).
            # One autocast object per wrapper: an object entered twice (nested) restores the wrong state.
            model.forward = torch.autocast("cpu", dtype=torch.bfloat16)(model.forward)
            decoder = getattr(model, model.base_model_prefix, None)
            if decoder is not None and decoder is not model:
                decoder.forward = torch.autocast("cpu", dtype=torch.bfloat16)(decoder.forward)
        if learner.gradient_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self.ds_config = deepspeed_config(learner, algo, batch_size, world_size, self.precision)
        self.engine, *_ = deepspeed.initialize(model=model, model_parameters=model.parameters(),
                                               config=self.ds_config)
        # algo.teacher_transfer=hidden: the teacher ships hidden states; its head forms the logits here.
        self.teacher_head = None
        if teacher_head_path is not None:
            from opcd.learner.teacher_head import load_teacher_head

            self.teacher_head = load_teacher_head(teacher_head_path, model.config.get_text_config().vocab_size,
                                                  next(self.engine.module.parameters()).device)
        self.steps_done = 0  # optimizer steps taken (drives the warm-up)

    def train_step(self, batch: LearnBatch) -> dict[str, float]:
        """One optimizer step over this rank's shard of ``batch``; returns averaged metrics.

        Non-finite losses skip the whole step (no optimizer update) and are reported in
        ``nonfinite``; the controller decides when to stop.
        """
        t0 = time.perf_counter()
        per_rank = math.ceil(len(batch) / self.world_size)
        shard = batch.slice(self.rank * per_rank, min(len(batch), (self.rank + 1) * per_rank))
        mbs = self.ds_config["train_micro_batch_size_per_gpu"]
        gas = self.ds_config["gradient_accumulation_steps"]
        self.engine.train()
        self.steps_done += 1
        lr = self.algo.lr * min(1.0, self.steps_done / max(1, self.algo.warmup_steps))
        for g in self.engine.optimizer.param_groups:
            g["lr"] = lr
        metrics: dict[str, float] = {}
        skipped = False
        for i in range(0, gas * mbs, mbs):
            mb = shard.slice(i, min(i + mbs, len(shard))) if i < len(shard) else None
            if mb is None or len(mb) == 0:
                # An empty micro-batch still has to advance DeepSpeed's accumulation counter.
                loss = sum(p.sum() * 0.0 for p in self.engine.module.parameters())
            else:
                loss, m = student_loss(self.engine.module, mb, self.algo, self.pad_id, step=self.steps_done,
                                       teacher_head=self.teacher_head)
                w = micro_batch_weight(mb, batch, self.algo.aggregation, self.world_size, gas)
                for k, v in m.items():  # this rank's share of the batch mean: ranks' shares sum to it
                    metrics[k] = metrics.get(k, 0.0) + v * w / (self.world_size * gas)
                if torch.isfinite(loss):
                    loss = loss * w
                else:
                    skipped = True
                    loss = sum(p.sum() * 0.0 for p in self.engine.module.parameters())
            self.engine.backward(loss)
            if self.engine.is_gradient_accumulation_boundary() and self._any_rank(skipped):
                skipped = True
                self._step_without_update()  # every rank skips, or ZeRO shards would diverge
            else:
                self.engine.step()
        out = dict(metrics)
        out["nonfinite"] = float(skipped)
        out["learner/seconds"] = time.perf_counter() - t0
        out["learner/tokens"] = float(sum(shard.resp_lens))
        out["learner/lr"] = float(self.engine.get_lr()[0])
        return out

    def _any_rank(self, flag: bool) -> bool:
        if self.world_size == 1:
            return flag
        import torch.distributed as dist

        t = torch.tensor([float(flag)])
        dist.all_reduce(t, op=dist.ReduceOp.MAX)  # gloo: a CPU tensor; NCCL would want it on the GPU
        return bool(t.item())

    def _step_without_update(self) -> None:
        """Advance DeepSpeed's step bookkeeping without changing any weight (a skipped NaN step).

        Gradients are zeroed and the optimizer runs with lr = 0, so AdamW leaves every parameter
        unchanged (weight decay is scaled by lr too); only its moment estimates decay slightly.
        """
        for p in self.engine.module.parameters():
            if p.grad is not None:
                p.grad.zero_()  # in place: DeepSpeed's clipping expects every gradient to exist
        opt = self.engine.optimizer
        saved = [g["lr"] for g in opt.param_groups]
        for g in opt.param_groups:
            g["lr"] = 0.0
        self.engine.step()
        for g, lr in zip(opt.param_groups, saved):
            g["lr"] = lr

    def _gathered(self, fn):
        """``fn(named_parameters)`` with full parameters (ZeRO-3 gathers its shards: collective)."""
        module = self.engine.module
        if self.ds_config["zero_optimization"]["stage"] == 3:
            import deepspeed

            with deepspeed.zero.GatheredParameters(list(module.parameters()), modifier_rank=None):
                return fn(list(module.named_parameters()))
        return fn(list(module.named_parameters()))

    def named_weights(self) -> list[tuple[str, torch.Tensor]]:
        """Full HF-named weights on CPU, for pushing into the vLLM engines through the object store."""
        # A copy: under ZeRO-3 the gathered tensors are freed on leaving the gather. (Without it, for
        # ZeRO 0-2, benchmarks/bench_sync.py measured no difference within its noise.)
        return self._gathered(lambda named: [(n, p.detach().float().cpu().clone()) for n, p in named])

    # --- bucketed broadcast sync (opcd.sync.broadcast); only rank 0 sends, every rank gathers ---
    def weight_specs(self) -> list:
        from opcd.sync.broadcast import specs_of

        return self._gathered(specs_of)

    def rendezvous(self) -> tuple[str, int]:
        """(this node's IP, a free port): where the weight-sync group's store will listen."""
        return rendezvous_address()

    def join_sync_group(self, host: str, port: int, world: int, backend: str, timeout_s: float) -> None:
        from opcd.sync.broadcast import make_group

        if self.rank == 0:
            self.sync_group = make_group(backend, host, port, 0, world, timeout_s)

    def broadcast_weights(self, buckets: list[list[int]]) -> None:
        from opcd.sync.broadcast import send_buckets

        self._gathered(lambda named: send_buckets(self.sync_group, named, buckets) if self.rank == 0 else None)

    def save_hf(self, path: str, tokenizer_path: str) -> None:
        """Write an HF safetensors directory (rank 0 only), loadable by transformers and vLLM."""
        named = dict(self.named_weights())
        if self.rank != 0:
            return
        from transformers import AutoTokenizer

        module = self.engine.module
        module.save_pretrained(path, state_dict={k: v for k, v in named.items()}, safe_serialization=True)
        AutoTokenizer.from_pretrained(tokenizer_path).save_pretrained(path)

    def save_state(self, path: str) -> None:
        """DeepSpeed checkpoint of this rank (weights, optimizer moments, counters) under ``path``.

        Collective: every rank must call it.
        """
        self.engine.save_checkpoint(path, tag="state", client_state={
            "steps_done": self.steps_done, "torch_rng": torch.get_rng_state()})

    def load_state(self, path: str) -> int:
        """Restore what ``save_state`` wrote; returns the optimizer steps done. Collective."""
        load_path, client = self.engine.load_checkpoint(path, tag="state", load_optimizer_states=True,
                                                        load_lr_scheduler_states=True)
        if load_path is None:
            raise FileNotFoundError(f"no DeepSpeed checkpoint under {path}")
        self.steps_done = client["steps_done"]
        torch.set_rng_state(client["torch_rng"])
        return self.steps_done

    def ping(self) -> int:
        return os.getpid()
