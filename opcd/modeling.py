"""Loading HF models/tokenizers with clear errors, and the response-position forward pass.

Every phase that needs per-token distributions over a response (teacher scoring, the learner's
loss, benchmarks) goes through :func:`response_logits`, so they all align positions identically:
the logit at sequence index ``i`` predicts token ``i + 1``, hence response token ``t`` of a
sequence whose response starts at ``s`` is predicted by the logit at ``s - 1 + t``.
"""
from __future__ import annotations

import re
from pathlib import Path

import torch

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "fp32": torch.float32, "bf16": torch.bfloat16}


def torch_dtype(name: str) -> torch.dtype:
    try:
        return _DTYPES[name]
    except KeyError:
        raise ValueError(f"unknown dtype {name!r}; expected float32 or bfloat16 (fp16 is unsupported on CPU)") from None


# A name that can only be a Hugging Face hub id: "org/name", nothing that reads as a file system path.
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
# Files that hold a tokenizer's vocabulary (one of them is enough: fast, sentencepiece, BPE, WordPiece).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt")


def looks_like_hub_id(path: str) -> bool:
    return bool(_HUB_ID.match(path)) and not path.startswith(".")


def check_model_dir(path: str) -> None:
    """Fail early, in one line, on a path that cannot be a model (missing dir, no weights)."""
    p = Path(path)
    if not p.exists():
        if looks_like_hub_id(path):
            return  # a hub id that the start-up check (check_model_path) already allowed
        raise FileNotFoundError(f"model path {path!r} does not exist; pass model.path=<HF model directory>")
    if not p.is_dir() or not (p / "config.json").exists():
        raise FileNotFoundError(f"{path!r} is not a Hugging Face model directory (no config.json)")
    if not any(p.glob("*.safetensors")) and not any(p.glob("*.bin")):
        raise FileNotFoundError(f"model directory {path!r} has no weights (*.safetensors or *.bin); "
                                "re-save the model with save_pretrained")


def check_tokenizer_files(path: str) -> None:
    """A local model directory must hold its tokenizer, or transformers guesses a slow tokenizer class
    and fails with an unrelated hint (install sentencepiece or tiktoken)."""
    p = Path(path)
    if p.is_dir() and not any((p / f).exists() for f in TOKENIZER_FILES) and not any(p.glob("*.tiktoken")):
        raise FileNotFoundError(f"model directory {path!r} has no tokenizer files (none of "
                                f"{', '.join(TOKENIZER_FILES)}); copy them from the model it was trained from, "
                                f"e.g. AutoTokenizer.from_pretrained(<base model>).save_pretrained({path!r})")


def _check_hub_model(path: str, what: str) -> None:
    """A hub id allowed by ``model.hub``: fine when cached; else one quick question to the hub."""
    import os

    from huggingface_hub import model_info, try_to_load_from_cache

    if isinstance(try_to_load_from_cache(path, "config.json"), str):
        return  # downloaded before: loads offline too
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        raise FileNotFoundError(f"{what}={path!r} is not a local directory nor in the Hugging Face cache, and "
                                f"HF_HUB_OFFLINE is set; download it first (huggingface-cli download {path}) "
                                "or pass a local directory")
    try:
        model_info(path, timeout=15)
    except Exception as e:  # offline, unknown repository, gated without a token: all end the same way
        reason = (str(e).strip().splitlines() or [""])[0][:200]
        raise FileNotFoundError(f"{what}={path!r} is not a local directory, and the Hugging Face hub did not "
                                f"confirm it ({type(e).__name__}: {reason}); check the id and the network "
                                "(gated models also need HF_TOKEN)") from None


def check_model_path(path: str, hub: bool = False, what: str = "model.path") -> None:
    """Start-up check of a configured model, one line on failure, before anything is loaded.

    A local directory needs config.json, weights and tokenizer files; an opcd checkpoint must also
    pass its manifest (``opcd.checkpoint.verify_checkpoint``). A path that does not exist is an error,
    unless it reads as a hub id (``org/name``) and ``hub`` (``model.hub=true``) allows downloading it:
    a relative path like ``models/mine`` is never sent to the hub by accident.
    """
    p = Path(path).expanduser()
    if p.exists():
        from opcd.checkpoint import COMPLETE, MANIFEST, verify_checkpoint

        if (p / COMPLETE).exists() or (p / MANIFEST).exists():
            why = verify_checkpoint(p, model_only=True)  # what loading the model reads (not deepspeed/)
            if why is not None:
                raise ValueError(f"{what}={path} is a damaged opcd checkpoint: {why}; "
                                 "use another checkpoints/step_<N>")
        check_model_dir(str(p))
        check_tokenizer_files(str(p))
        return
    if looks_like_hub_id(path) and hub:
        return _check_hub_model(path, what)
    hint = (f"; if it is a Hugging Face hub id, add model.hub=true to download it" if looks_like_hub_id(path)
            else "; pass an HF model directory")
    raise FileNotFoundError(f"{what}={path!r} does not exist (looked for {p.absolute()}){hint}")


def load_tokenizer(path: str):
    """Load a tokenizer that has a chat template (opcd renders every context through it)."""
    from transformers import AutoTokenizer

    check_model_dir(path)
    check_tokenizer_files(path)
    tok = AutoTokenizer.from_pretrained(path)
    if not getattr(tok, "chat_template", None):
        raise ValueError(f"tokenizer at {path!r} has no chat template; opcd puts the context in the "
                         "system message and needs one (use an instruct model or add a template)")
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def check_same_tokenizer(student, teacher, student_path: str, teacher_path: str) -> None:
    """Per-token KL needs one vocabulary: refuse to start when student and teacher tokenizers differ."""
    sv, tv = student.get_vocab(), teacher.get_vocab()
    if sv != tv:
        diff = len(set(sv.items()) ^ set(tv.items()))
        raise ValueError(f"tokenizer mismatch: student {student_path!r} ({len(sv)} tokens) and teacher "
                         f"{teacher_path!r} ({len(tv)} tokens) differ in {diff} (token, id) entries; "
                         "token-level distillation needs the same tokenizer (pick a teacher of the same family)")


def load_causal_lm(path: str, dtype: str = "float32", device: str = "cpu"):
    from transformers import AutoModelForCausalLM

    check_model_dir(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype(dtype))
    return model.to(device)


def pad_sequences(seqs: list[list[int]], pad_id: int, device="cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad token lists -> (input_ids [B, L], attention_mask [B, L])."""
    L = max(map(len, seqs))
    ids = torch.full((len(seqs), L), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), L), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, :len(s)] = torch.tensor(s, dtype=torch.long)
        mask[i, :len(s)] = 1
    return ids.to(device), mask.to(device)


def response_index(seq_lens: list[int], resp_lens: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Gather index [B, T] of the logits that predict each response token, and the mask [B, T]."""
    T = max(max(resp_lens), 1)
    t = torch.arange(T)
    start = torch.tensor([n - r - 1 for n, r in zip(seq_lens, resp_lens)])
    mask = t[None, :] < torch.tensor(resp_lens)[:, None]
    idx = (start[:, None] + t[None, :]).clamp(min=0) * mask  # padded slots point at position 0
    return idx, mask


def response_logits(model, seqs: list[list[int]], resp_lens: list[int], pad_id: int,
                    return_hidden: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward full sequences; return logits over response positions [B, T, V] and mask [B, T].

    ``seqs[b]`` = prompt (with or without context) followed by its ``resp_lens[b]`` response tokens.
    With ``return_hidden`` the final hidden states [B, T, H] are returned instead of logits (for
    the chunked full-vocabulary loss, which applies the LM head chunk by chunk).
    """
    device = next(model.parameters()).device
    ids, attn = pad_sequences(seqs, pad_id, device)
    idx, mask = response_index([len(s) for s in seqs], resp_lens)
    idx = idx.to(device)
    if return_hidden:
        out = model.model(input_ids=ids, attention_mask=attn)
        h = out.last_hidden_state
        return torch.gather(h, 1, idx[..., None].expand(-1, -1, h.shape[-1])), mask.to(device)
    logits = model(input_ids=ids, attention_mask=attn).logits
    return torch.gather(logits, 1, idx[..., None].expand(-1, -1, logits.shape[-1])), mask.to(device)
