"""The character-level HF fast tokenizer and the chat rendering (opcd.chat)."""
import random

import pytest

from opcd.chat import chat_messages, encode_answer, encode_prompt
from opcd.models.toy.char_tokenizer import CHARACTERS, SPECIAL_TOKENS


def _random_text(rng, n):
    return "".join(rng.choice(CHARACTERS) for _ in range(n))


def test_vocab_layout(tok):
    vocab = tok.get_vocab()
    assert len(tok) == len(SPECIAL_TOKENS) + len(CHARACTERS)
    for i, t in enumerate(SPECIAL_TOKENS + CHARACTERS):
        assert vocab[t] == i
    assert tok.pad_token == "<pad>" and tok.pad_token_id == 0
    assert tok.unk_token == "<unk>"


def test_eos_is_end_token(tok):
    assert tok.eos_token == "<|end|>"
    assert tok.eos_token_id == SPECIAL_TOKENS.index("<|end|>")


@pytest.mark.parametrize("text", ["abc", "Hello, World!", "a b  c", "line1\nline2\n", " leading and trailing ",
                                  "x -> y", "Examples:\nabc -> cba\nxy -> yx", "(a/b)*'q'\"-;"])
def test_round_trip_fixed_strings(tok, text):
    ids = tok.encode(text, add_special_tokens=False)
    assert len(ids) == len(text)  # one token per character
    assert ids == [CHARACTERS.index(c) + len(SPECIAL_TOKENS) for c in text]
    assert tok.decode(ids) == text


def test_round_trip_random_strings(tok):
    rng = random.Random(0)
    for _ in range(200):
        text = _random_text(rng, rng.randint(1, 40))
        ids = tok.encode(text, add_special_tokens=False)
        assert len(ids) == len(text)
        assert tok.decode(ids) == text


def test_all_characters_are_single_tokens(tok):
    text = "".join(CHARACTERS)
    ids = tok.encode(text, add_special_tokens=False)
    assert ids == list(range(len(SPECIAL_TOKENS), len(SPECIAL_TOKENS) + len(CHARACTERS)))
    assert tok.unk_token_id not in ids


def test_chat_template_with_context(tok):
    ids = encode_prompt(tok, "abc", "ctx")
    assert tok.decode(ids) == "<|system|>ctx<|end|><|user|>abc<|end|><|assistant|>"
    sys_id, user_id, asst_id, end_id = (tok.convert_tokens_to_ids(t) for t in
                                        ("<|system|>", "<|user|>", "<|assistant|>", "<|end|>"))
    c = lambda s: tok.encode(s, add_special_tokens=False)  # noqa: E731
    assert ids == [sys_id, *c("ctx"), end_id, user_id, *c("abc"), end_id, asst_id]
    assert all(isinstance(i, int) for i in ids)


def test_chat_template_without_context_has_no_system_turn(tok):
    ids = encode_prompt(tok, "abc", "")
    assert tok.decode(ids) == "<|user|>abc<|end|><|assistant|>"
    assert tok.convert_tokens_to_ids("<|system|>") not in ids
    assert chat_messages("abc") == [{"role": "user", "content": "abc"}]
    assert chat_messages("abc", "ctx") == [{"role": "system", "content": "ctx"},
                                           {"role": "user", "content": "abc"}]


def test_multiline_context_renders_verbatim(tok):
    ctx = "Examples:\nabc -> cba\nxyz -> zyx"
    assert tok.decode(encode_prompt(tok, "qwe", ctx)) == f"<|system|>{ctx}<|end|><|user|>qwe<|end|><|assistant|>"


def test_encode_answer_ends_with_eos(tok):
    ids = encode_answer(tok, "cba")
    assert ids[-1] == tok.eos_token_id and tok.decode(ids[:-1]) == "cba" and len(ids) == 4


def test_encode_prompt_without_template_raises(tok):
    import copy

    t = copy.deepcopy(tok)
    t.chat_template = None
    with pytest.raises(ValueError, match="chat template"):
        encode_prompt(t, "abc", "ctx")


def test_save_and_reload_identical(tok, tmp_path):
    from transformers import AutoTokenizer

    tok.save_pretrained(tmp_path)
    tok2 = AutoTokenizer.from_pretrained(tmp_path)
    assert tok2.get_vocab() == tok.get_vocab()
    assert tok2.chat_template == tok.chat_template
    assert tok2.eos_token == "<|end|>" and tok2.pad_token_id == tok.pad_token_id
    rng = random.Random(1)
    for _ in range(50):
        text = _random_text(rng, rng.randint(1, 30))
        assert tok2.encode(text, add_special_tokens=False) == tok.encode(text, add_special_tokens=False)
        assert tok2.decode(tok2.encode(text, add_special_tokens=False)) == text
    for prompt, ctx in [("abc", "Reverse the string."), ("xyz", ""), ("qq", "Examples:\na -> a")]:
        assert encode_prompt(tok2, prompt, ctx) == encode_prompt(tok, prompt, ctx)
