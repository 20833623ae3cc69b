"""Which floating-point dtype each phase runs in, chosen from the hardware it runs on.

``model.dtype=auto`` (the default) lets each phase pick for itself:

* ``engine``: the vLLM engines (rollout workers, the teacher's sampler, evaluation, experience);
* ``teacher``: the teacher's scoring forward pass (weights loaded in the chosen dtype);
* ``learner``: the training step (on CPU bf16 means autocast: master weights and AdamW stay fp32).

The rule (``choose_dtype``) is pure and was set by measurement (``benchmarks/bench_dtype.py``,
``benchmarks/results/dtype_choice.json``): bf16 only pays where the CPU multiplies bf16 matrices in
hardware (AMX, or AVX-512 BF16); elsewhere fp32. On a GPU it is bf16 wherever the GPU supports it.
An explicit ``float32`` / ``bfloat16`` is returned unchanged. The choice is made inside each actor
(``local_dtype``: its own machine's flags); the driver logs what its own machine would pick
(``describe``). Losses accumulate in fp32 whatever the dtype (tests/test_losses.py).
"""
from __future__ import annotations

from pathlib import Path

PHASES = ("engine", "teacher", "learner")
DTYPES = ("float32", "bfloat16")
ALIASES = {"fp32": "float32", "float": "float32", "float32": "float32",
           "bf16": "bfloat16", "bfloat16": "bfloat16"}

AMX = ("amx_bf16", "amx_tile")  # Intel Sapphire Rapids and later: bf16 tile matrix multiply
AVX512_BF16 = "avx512_bf16"  # bf16 dot products in AVX-512 (Intel Cooper Lake+, AMD Zen 4+)

# Per phase, the CPU flags under which bf16 was measured faster than fp32 (any one suffices); without
# them (AVX2 only) bf16 was 6-7x slower. AMX (Intel Xeon, issue 20): vLLM-CPU 1.36x, a training step
# 1.32x. avx512_bf16 (AMD EPYC, benchmarks/results/dtype_choice.json, SmolLM2-135M, 2 threads):
# vLLM-CPU 1.54x, teacher forward 2.14x, learner step under autocast 1.54x; the 1M-parameter toy
# model gains little (engine 1.04x: overhead-bound) but loses nothing.
BF16_FLAGS: dict[str, tuple[str, ...]] = {
    "engine": (*AMX, AVX512_BF16),
    "teacher": (*AMX, AVX512_BF16),
    "learner": (*AMX, AVX512_BF16),
}


def cpu_flags(path: str | Path = "/proc/cpuinfo") -> frozenset[str]:
    """The CPU feature flags of this machine (the first processor's ``flags`` line); empty when
    unreadable (not Linux): ``choose_dtype`` then keeps fp32, the safe choice."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_model(path: str | Path = "/proc/cpuinfo") -> str:
    """The CPU's ``model name`` ("" when unknown)."""
    try:
        with open(path) as f:
            return next((x.split(":", 1)[1].strip() for x in f if x.startswith("model name")), "")
    except OSError:
        return ""


def normalise(dtype: str) -> str:
    """``float32`` | ``bfloat16`` | ``auto`` from any accepted spelling; a clear error otherwise."""
    if dtype == "auto":
        return dtype
    try:
        return ALIASES[dtype]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}; expected auto, float32 or bfloat16 "
                         "(fp16 is unsupported on CPU)") from None


def choose_dtype(requested: str, phase: str, flags: frozenset[str] | set[str] = frozenset(),
                 cuda: bool = False, cuda_bf16: bool = True) -> str:
    """The dtype ``phase`` runs in: ``requested`` when explicit, else the hardware's best.

    Args:
      requested: ``auto`` | ``float32`` | ``bfloat16`` (or ``fp32`` / ``bf16``).
      phase: ``engine`` | ``teacher`` | ``learner``.
      flags: the CPU flags of the machine the phase runs on (``cpu_flags()``).
      cuda: the phase runs on a GPU; then ``cuda_bf16`` (``torch.cuda.is_bf16_supported()``) decides.
    Returns ``float32`` or ``bfloat16``.
    """
    if phase not in PHASES:
        raise ValueError(f"unknown phase {phase!r}; expected one of {PHASES}")
    requested = normalise(requested)
    if requested != "auto":
        return requested
    if cuda:
        return "bfloat16" if cuda_bf16 else "float32"
    return "bfloat16" if any(f in flags for f in BF16_FLAGS[phase]) else "float32"


def local_dtype(requested: str, phase: str, cuda: bool = False) -> str:
    """``choose_dtype`` for the machine this process runs on (call it inside the actor)."""
    cuda_bf16 = True
    if cuda and normalise(requested) == "auto":
        import torch

        cuda_bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return choose_dtype(requested, phase, cpu_flags(), cuda, cuda_bf16)


def learner_mode(precision: str, model_dtype: str, flags: frozenset[str] | set[str] = frozenset(),
                 cuda: bool = False, cuda_bf16: bool = True) -> str:
    """How the learner trains: ``fp32`` | ``bf16`` (DeepSpeed bf16) | ``autocast`` (fp32 weights and
    optimizer, forward and backward under ``torch.autocast(bfloat16)``; CPU only).

    ``learner.precision`` ``fp32`` / ``bf16`` are explicit; ``auto`` follows ``model.dtype`` for the
    learner phase: bf16 becomes DeepSpeed's bf16 on a GPU and autocast on a CPU (DeepSpeed's bf16
    optimizer on CPU would keep bf16 weights without fp32 master copies under ZeRO 0).
    """
    if precision in ("fp32", "bf16"):
        return precision
    if precision != "auto":
        raise ValueError(f"unknown learner.precision {precision!r}; expected auto, fp32 or bf16")
    if choose_dtype(model_dtype, "learner", flags, cuda, cuda_bf16) == "float32":
        return "fp32"
    return "bf16" if cuda else "autocast"


def local_learner_mode(precision: str, model_dtype: str, cuda: bool = False) -> str:
    """``learner_mode`` for the machine this process runs on (call it inside the learner actor)."""
    cuda_bf16 = True
    if cuda:
        import torch

        cuda_bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return learner_mode(precision, model_dtype, cpu_flags(), cuda, cuda_bf16)


def bf16_reason(flags: frozenset[str] | set[str]) -> str:
    """Why a CPU gets the dtypes it does, in words, e.g. ``CPU has amx_bf16``."""
    have = [f for f in (*AMX, AVX512_BF16) if f in flags]
    return f"CPU has {', '.join(have)}" if have else "CPU has no bf16 matrix instructions"


def describe(model_dtype: str, precision: str, engine_cuda: bool, learner_cuda: bool,
             flags: frozenset[str] | set[str] | None = None, cuda_bf16: bool | None = None) -> str:
    """The start-up line: what each phase would run in on this machine, and why.

    ``[opcd] dtype: engine bf16, teacher bf16, learner bf16 autocast (CPU has amx_bf16, amx_tile)``

    ``flags`` / ``cuda_bf16`` default to this machine's (a driver without a GPU assumes bf16 support).
    Raises ``ValueError`` on an unknown dtype or precision, before any actor starts.
    """
    flags = cpu_flags() if flags is None else flags
    if cuda_bf16 is None:
        cuda_bf16 = True
        if engine_cuda or learner_cuda:
            import torch

            cuda_bf16 = not torch.cuda.is_available() or torch.cuda.is_bf16_supported()
    short = {"float32": "fp32", "bfloat16": "bf16"}
    engine = short[choose_dtype(model_dtype, "engine", flags, engine_cuda, cuda_bf16)]
    teacher = short[choose_dtype(model_dtype, "teacher", flags, learner_cuda, cuda_bf16)]
    mode = learner_mode(precision, model_dtype, flags, learner_cuda, cuda_bf16)
    learner = {"fp32": "fp32", "bf16": "bf16", "autocast": "bf16 autocast"}[mode]
    if normalise(model_dtype) != "auto":
        why = f"model.dtype={normalise(model_dtype)}"
    elif engine_cuda or learner_cuda:
        why = "GPU " + ("supports" if cuda_bf16 else "lacks") + " bf16"
    else:
        why = bf16_reason(flags)
    if precision != "auto":
        why += f", learner.precision={precision}"
    return f"[opcd] dtype: engine {engine}, teacher {teacher}, learner {learner} ({why})"
