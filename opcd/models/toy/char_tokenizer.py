"""A character-level tokenizer saved as a real Hugging Face *fast* tokenizer.

Every character is one token (a BPE model with no merges), special tokens mark chat roles, and a
Jinja chat template renders system/user/assistant turns. Any transformers or vLLM code can then
load the model directory like any other HF model.

Rendered chat (``add_generation_prompt=True``)::

    <|system|>Reverse the string.<|end|><|user|>abc<|end|><|assistant|>

and the assistant's answer ends with ``<|end|>`` (the EOS token).
"""
from __future__ import annotations

import string

SPECIAL_TOKENS = ["<pad>", "<unk>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]
# Every character the toy world's descriptions, demonstrations and answers can contain.
CHARACTERS = list(string.ascii_lowercase + string.ascii_uppercase + string.digits + " .,:;!?'\"-()>*/\n")

CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{ '<|' + message['role'] + '|>' + message['content'] + '<|end|>' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|assistant|>' }}{%- endif -%}"
)


def build_char_tokenizer():
    """Return a ``PreTrainedTokenizerFast`` over SPECIAL_TOKENS + CHARACTERS (ids in that order)."""
    from tokenizers import Tokenizer, decoders, models
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS + CHARACTERS)}
    core = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    core.decoder = decoders.Fuse()  # join characters without inserting spaces
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core, unk_token="<unk>", pad_token="<pad>", eos_token="<|end|>",
        additional_special_tokens=SPECIAL_TOKENS[2:5],
    )
    tok.chat_template = CHAT_TEMPLATE
    tok.padding_side = "left"
    return tok
