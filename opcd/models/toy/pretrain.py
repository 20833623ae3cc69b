"""Pretrain the shipped tiny model on the toy world.

    python -m opcd.models.toy.pretrain             # ~25 min on a 2-core CPU, writes opcd/assets/toy-model

A character-level Llama (hidden 128, 4 layers, ~1M parameters) is trained from scratch on freshly
generated toy-world records: 50% with the rule's description as system prompt, 35% with 2-4
demonstrations, 15% without context (so that without context it still answers with *some* rule,
which is the behaviour OPCD later corrects). The loss covers the assistant answer only.

Afterwards the model is evaluated with vLLM (``opcd.eval``) and the numbers go into its model card.
"""
from __future__ import annotations

import argparse
import json
import math
import random
import time
from pathlib import Path

import torch

from opcd.batch import pad_2d
from opcd.chat import encode_answer, encode_prompt
from opcd.modeling import pad_sequences
from opcd.models.toy import DEFAULT_OUT
from opcd.models.toy.char_tokenizer import build_char_tokenizer
from opcd.tasks.toy_world import CONTEXT_KINDS, RULES, generate, sample_pretraining_example


def build_model(tokenizer, hidden: int = 128, layers: int = 4, heads: int = 4, max_len: int = 256):
    """A small tied-embedding Llama over the character vocabulary."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=4 * hidden,
        num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
        max_position_embeddings=max_len, tie_word_embeddings=True, rms_norm_eps=1e-5,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, bos_token_id=None,
    )
    return LlamaForCausalLM(cfg)


def collate(tokenizer, records: list[dict], context_loss: bool = False) -> dict[str, torch.Tensor]:
    """Right-padded ``input_ids``/``attention_mask``/``labels`` [B, T].

    Labels cover the answer; with ``context_loss`` they also cover the system turn, whose
    demonstrations are extra worked examples of the rule (the user's random input string is never
    a target: it is unpredictable by construction).
    """
    seqs, labs = [], []
    user = tokenizer.convert_tokens_to_ids("<|user|>")
    for r in records:
        p = encode_prompt(tokenizer, r["prompt"], r["context"])
        a = encode_answer(tokenizer, r["answer"])
        seqs.append(p + a)
        head = p.index(user) if context_loss else 0
        labs.append(p[:head] + [-100] * (len(p) - head) + a)
    ids, mask = pad_sequences(seqs, tokenizer.pad_token_id)
    labels = pad_2d(labs, ids.shape[1], -100, torch.long)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


@torch.no_grad()
def greedy_exact_match(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Per-sequence bool [B]: greedy decoding would reproduce the answer exactly.

    Greedy decoding emits the target iff the argmax at every answer position (teacher-forced)
    equals the target, so one forward pass measures it exactly.
    """
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    pred = logits[:, :-1].argmax(-1)
    tgt = batch["labels"][:, 1:]
    ok = (pred == tgt) | (tgt == -100)
    return ok.all(dim=1)


def evaluate_tf(model, tokenizer, records: list[dict], bs: int = 256) -> dict[str, dict[str, float]]:
    """Teacher-forced greedy exact match per rule and context kind (fast progress signal)."""
    model.eval()
    hits: dict[tuple[str, str], list[bool]] = {}
    for i in range(0, len(records), bs):
        chunk = records[i:i + bs]
        ok = greedy_exact_match(model, collate(tokenizer, chunk)).tolist()
        for r, o in zip(chunk, ok):
            hits.setdefault((r["metadata"]["rule"], r["metadata"]["context_kind"]), []).append(o)
    model.train()
    table: dict[str, dict[str, float]] = {}
    for (rule, kind), v in hits.items():
        table.setdefault(rule, {})[kind] = sum(v) / len(v)
    return table


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output model directory")
    ap.add_argument("--steps", type=int, default=3200, help="optimizer steps")
    ap.add_argument("--batch", type=int, default=64, help="sequences per step")
    ap.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (cosine decay to 10%%)")
    ap.add_argument("--warmup", type=int, default=50, help="linear warm-up steps")
    ap.add_argument("--hidden", type=int, default=128, help="model width")
    ap.add_argument("--layers", type=int, default=4, help="transformer layers")
    ap.add_argument("--seed", type=int, default=0, help="seed for weights and data")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = all cores)")
    ap.add_argument("--eval-every", type=int, default=200, help="steps between validation checks")
    ap.add_argument("--skip-card", action="store_true", help="do not run the vLLM evaluation / model card")
    args = ap.parse_args(argv)

    from tqdm import tqdm

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    tok = build_char_tokenizer()
    model = build_model(tok, hidden=args.hidden, layers=args.layers)
    n_params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.98), weight_decay=0.01)

    def lr_at(step: int) -> float:
        if step < args.warmup:
            return args.lr * (step + 1) / args.warmup
        frac = (step - args.warmup) / max(1, args.steps - args.warmup)
        return args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))

    val = generate("validation", n_per_rule=32, seed=args.seed)
    model.train()
    t0, tokens, log = time.time(), 0, []
    bar = tqdm(range(args.steps), desc="pretrain", unit="step")
    for step in bar:
        batch = collate(tok, [sample_pretraining_example(rng) for _ in range(args.batch)], context_loss=True)
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        loss = model(**batch).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        tokens += int(batch["attention_mask"].sum())
        bar.set_postfix(loss=f"{loss.item():.3f}", tok_s=f"{tokens / (time.time() - t0):.0f}")
        if (step + 1) % args.eval_every == 0 or step + 1 == args.steps:
            table = evaluate_tf(model, tok, val)
            mean = {k: sum(table[r.name][k] for r in RULES) / len(RULES) for k in CONTEXT_KINDS}
            log.append({"step": step + 1, "minutes": (time.time() - t0) / 60, "loss": loss.item(),
                        "val_mean": mean, "val_min_system": min(table[r.name]["system"] for r in RULES)})
            tqdm.write(json.dumps(log[-1]))
    minutes = (time.time() - t0) / 60

    args.out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(args.out, safe_serialization=True)
    tok.save_pretrained(args.out)
    meta = {"params": n_params, "steps": args.steps, "batch": args.batch, "lr": args.lr,
            "seed": args.seed, "train_minutes": round(minutes, 1), "train_tokens": tokens,
            "torch_threads": torch.get_num_threads(), "log": log}
    (args.out / "pretrain_log.json").write_text(json.dumps(meta, indent=1))
    print(f"saved {n_params / 1e6:.2f}M-parameter model to {args.out} after {minutes:.1f} min")
    if not args.skip_card:
        from opcd.models.toy.model_card import write_model_card

        write_model_card(args.out)


if __name__ == "__main__":
    main()
