"""Chat rendering shared by rollout, teacher, learner and evaluation.

The privileged context always goes into the *system* message (a description, demonstrations or
experience text); the query is the user message. Everyone renders through the model's own chat
template, so the student, the teacher and the evaluator see byte-identical prompts.
"""
from __future__ import annotations


def chat_messages(prompt: str, context: str = "") -> list[dict]:
    """Messages for one query: ``[system(context)?, user(prompt)]`` (no system turn if context is empty)."""
    msgs = [{"role": "system", "content": context}] if context else []
    msgs.append({"role": "user", "content": prompt})
    return msgs


def encode_prompt(tokenizer, prompt: str, context: str = "") -> list[int]:
    """Token ids of the rendered chat prompt, ending with the assistant header (generation prompt)."""
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(
            f"tokenizer {getattr(tokenizer, 'name_or_path', '?')!r} has no chat template; "
            "opcd renders contexts as system messages and needs one (set tokenizer.chat_template "
            "or use an instruct model)")
    ids = tokenizer.apply_chat_template(chat_messages(prompt, context), add_generation_prompt=True,
                                        tokenize=True)
    # transformers 5 may return a BatchEncoding-like mapping; normalise to a list of ints.
    if hasattr(ids, "keys"):
        ids = ids["input_ids"]
    return list(ids)


def encode_answer(tokenizer, answer: str) -> list[int]:
    """Token ids of an assistant answer followed by EOS (the end-of-turn token)."""
    return tokenizer.encode(answer, add_special_tokens=False) + [tokenizer.eos_token_id]


def encode_next_turn(tokenizer, user_text: str, reply_finished: bool) -> list[int]:
    """Token ids that follow an assistant reply in a multi-turn episode: the end of that reply (unless
    it already ended with EOS), then a user turn ``user_text``, then the next assistant header.

    Derived from the model's own chat template by rendering a conversation around a marker reply, so
    the ids are exactly what the template would give the whole conversation at that point.
    """
    marker = "\u2063opcd-reply\u2063"
    msgs = [{"role": "user", "content": "?"}, {"role": "assistant", "content": marker},
            {"role": "user", "content": user_text}]
    text = tokenizer.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    if marker not in text:
        raise ValueError(f"the chat template of {getattr(tokenizer, 'name_or_path', '?')!r} drops earlier "
                         "assistant turns; multi-turn tasks need a template that keeps them")
    tail = text[text.index(marker) + len(marker):]
    if reply_finished and tokenizer.eos_token and tail.startswith(tokenizer.eos_token):
        tail = tail[len(tokenizer.eos_token):]  # the sampled reply already holds its end-of-turn token
    return tokenizer.encode(tail, add_special_tokens=False)
