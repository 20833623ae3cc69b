"""The learner's frozen copy of the teacher's LM head (``algo.teacher_transfer=hidden``).

Only the one ``[V, d]`` weight is read from the teacher's safetensors (a sharded checkpoint's index
says which file holds it), not the whole model: for Qwen3-8B that is 0.6 B parameters of 8 B. Its
name is found on a weightless (meta-device) copy of the architecture, so tied heads
(``tie_word_embeddings``: the input embedding *is* the head) and each architecture's naming are
handled by transformers itself. A checkpoint without safetensors falls back to loading the model.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from opcd.transfer import ModelDims, model_dims

INDEX = "model.safetensors.index.json"
SINGLE = "model.safetensors"


def _head_names(path: str) -> tuple[list[str], bool]:
    """Every parameter name the output embedding goes by (tied heads have two), and whether it has a bias."""
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(path))
    head = skeleton.get_output_embeddings()
    names = [n for n, p in skeleton.named_parameters(remove_duplicate=False) if p is head.weight]
    return names, getattr(head, "bias", None) is not None


def _find(path: str, name: str) -> str | None:
    """Local path of file ``name`` of model ``path`` (a directory, or a hub id via the HF cache), or None."""
    p = Path(path)
    if p.is_dir():
        return str(p / name) if (p / name).exists() else None
    from huggingface_hub import hf_hub_download

    try:
        return hf_hub_download(path, name)
    except Exception:  # not in the repository (e.g. no index for an unsharded model)
        return None


def _read_tensor(path: str, names: list[str]) -> torch.Tensor | None:
    """The first of ``names`` found in the model's safetensors (sharded or not), or None."""
    from safetensors import safe_open

    index = _find(path, INDEX)
    if index is not None:
        where = json.loads(Path(index).read_text())["weight_map"]
        name = next((n for n in names if n in where), None)
        files = [(name, _find(path, where[name]))] if name else []
    else:
        single = _find(path, SINGLE)
        files = [(n, single) for n in names] if single else []
    for name, file in files:
        if file is None:
            continue
        with safe_open(file, framework="pt") as f:
            if name in f.keys():
                return f.get_tensor(name)
    return None


def check_head(shape: tuple[int, int], teacher: ModelDims, student_vocab: int, path: str) -> None:
    """One-line ValueError unless the head is [V, d] of the teacher's config and V is the student's."""
    if tuple(shape) != (teacher.vocab_size, teacher.hidden_size):
        raise ValueError(f"the teacher LM head read from {path} is {list(shape)}, but its config says "
                         f"[vocab_size, hidden_size] = [{teacher.vocab_size}, {teacher.hidden_size}]; "
                         "its hidden states would not fit this head: set algo.teacher_transfer=logprobs")
    if shape[0] != student_vocab:
        raise ValueError(f"the teacher LM head read from {path} has {shape[0]} vocabulary rows, the student's "
                         f"{student_vocab}; a full-vocabulary KL needs one vocabulary "
                         "(pick a teacher with the same vocab_size)")


def load_teacher_head(path: str, student_vocab: int, device: str | torch.device = "cpu") -> torch.Tensor:
    """The teacher's LM-head weight [V, d] as a frozen fp32 tensor on ``device``, checked against its
    config and the student's vocabulary size (one-line ValueError)."""
    dims = model_dims(path)
    if dims.head_issue:
        raise ValueError(f"algo.teacher_transfer=hidden needs teacher logits = hidden @ lm_head.T, but "
                         f"{dims.head_issue}; set algo.teacher_transfer=logprobs")
    names, has_bias = _head_names(path)
    if has_bias:
        raise ValueError(f"the teacher at {path} has an LM-head bias, which the hidden-state transfer does not "
                         "carry; set algo.teacher_transfer=logprobs")
    weight = _read_tensor(path, names)
    if weight is None:  # *.bin checkpoints and unusual layouts: load the model once, keep the head
        from opcd.modeling import load_causal_lm

        weight = load_causal_lm(path).get_output_embeddings().weight.detach()
    check_head(tuple(weight.shape), dims, student_vocab, path)
    return weight.to(device=device, dtype=torch.float32).requires_grad_(False)
