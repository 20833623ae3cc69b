"""Model/tokenizer loading errors and response-position alignment (opcd.modeling)."""
import json
import shutil

import pytest
import torch

from opcd.chat import encode_answer, encode_prompt
from opcd.modeling import (check_model_dir, check_same_tokenizer, load_causal_lm, load_tokenizer, pad_sequences,
                           response_index, response_logits, torch_dtype)


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    torch.set_num_threads(1)
    return load_causal_lm(tiny_model_dir).eval()


def _seqs(tok):
    """Three (prompt, response) pairs of different prompt and response lengths."""
    pairs = [("abc", "Reverse the string.", "cba"), ("hello", "", "ol"), ("xy", "Examples:\nab -> ba", "yxyxy")]
    prompts = [encode_prompt(tok, p, c) for p, c, _ in pairs]
    resps = [encode_answer(tok, a) for _, _, a in pairs]
    return prompts, resps


# ---------------------------------------------------------------------------------------------
# response_index / pad_sequences
# ---------------------------------------------------------------------------------------------
def test_response_index_hand_example():
    # seq 0: length 5, response 2 -> response tokens at 3, 4 -> predicted by logits at 2, 3.
    # seq 1: length 4, response 3 -> tokens at 1, 2, 3 -> logits at 0, 1, 2.
    # seq 2: length 6, response 0 -> nothing (all masked, index 0).
    idx, mask = response_index([5, 4, 6], [2, 3, 0])
    assert idx.tolist() == [[2, 3, 0], [0, 1, 2], [0, 0, 0]]
    assert mask.tolist() == [[True, True, False], [True, True, True], [False, False, False]]
    assert mask.dtype == torch.bool


def test_response_index_single_and_empty():
    idx, mask = response_index([7], [1])
    assert idx.tolist() == [[5]] and mask.tolist() == [[True]]
    idx, mask = response_index([3, 2], [0, 0])  # T is at least 1
    assert idx.shape == (2, 1) and not mask.any()


def test_pad_sequences():
    ids, attn = pad_sequences([[5, 6, 7], [8]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0]]
    assert attn.tolist() == [[1, 1, 1], [1, 0, 0]]
    assert ids.dtype == torch.long and attn.dtype == torch.long


# ---------------------------------------------------------------------------------------------
# response_logits on the tiny model
# ---------------------------------------------------------------------------------------------
def test_response_logits_matches_manual_slicing(model, tok):
    prompts, resps = _seqs(tok)
    seqs = [p + r for p, r in zip(prompts, resps)]
    lens = [len(r) for r in resps]
    logits, mask = response_logits(model, seqs, lens, tok.pad_token_id)
    V = len(tok)
    assert logits.shape == (3, max(lens), V) and mask.shape == (3, max(lens))
    assert mask.tolist() == [[t < n for t in range(max(lens))] for n in lens]
    with torch.no_grad():
        for b, (p, s) in enumerate(zip(prompts, seqs)):
            full = model(input_ids=torch.tensor([s])).logits[0]  # each sequence alone, no padding
            ref = full[len(p) - 1: len(s) - 1]  # positions len(prompt)-1 .. len(seq)-2
            assert ref.shape[0] == lens[b]
            torch.testing.assert_close(logits[b, :lens[b]], ref, atol=1e-5, rtol=1e-5)
            # The logit at a response position predicts exactly the next response token's slot.
            assert torch.equal(torch.tensor(s[len(p):]), torch.tensor(resps[b]))


def test_response_logits_batch_order_and_padding_invariance(model, tok):
    prompts, resps = _seqs(tok)
    seqs = [p + r for p, r in zip(prompts, resps)]
    lens = [len(r) for r in resps]
    with torch.no_grad():
        batched, _ = response_logits(model, seqs, lens, tok.pad_token_id)
        rev, _ = response_logits(model, seqs[::-1], lens[::-1], tok.pad_token_id)
        for b in range(3):
            alone, m = response_logits(model, [seqs[b]], [lens[b]], tok.pad_token_id)
            assert m.all()
            torch.testing.assert_close(batched[b, :lens[b]], alone[0], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(rev[2 - b, :lens[b]], alone[0], atol=1e-5, rtol=1e-5)


def test_response_logits_hidden_applies_head(model, tok):
    prompts, resps = _seqs(tok)
    seqs = [p + r for p, r in zip(prompts, resps)]
    lens = [len(r) for r in resps]
    with torch.no_grad():
        logits, mask = response_logits(model, seqs, lens, tok.pad_token_id)
        hidden, mask_h = response_logits(model, seqs, lens, tok.pad_token_id, return_hidden=True)
        assert hidden.shape == (3, max(lens), model.config.hidden_size)
        assert torch.equal(mask, mask_h)
        head = model.get_output_embeddings().weight
        torch.testing.assert_close((hidden @ head.T)[mask], logits[mask], atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------------------------------------
# Loading errors
# ---------------------------------------------------------------------------------------------
def test_check_model_dir_ok(tiny_model_dir):
    check_model_dir(tiny_model_dir)


def test_check_model_dir_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        check_model_dir(str(tmp_path / "nope"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        check_model_dir("./relative/missing")
    check_model_dir("some-org/some-model")  # hub ids are left to the hub loader


def test_check_model_dir_without_config(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="no config.json"):
        check_model_dir(str(tmp_path))
    f = tmp_path / "file.txt"
    f.write_text("x")
    with pytest.raises(FileNotFoundError, match="no config.json"):
        check_model_dir(str(f))


def test_check_model_dir_without_weights(tmp_path, tiny_model_dir):
    shutil.copy(f"{tiny_model_dir}/config.json", tmp_path / "config.json")
    with pytest.raises(FileNotFoundError, match="no weights"):
        check_model_dir(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="no weights"):
        load_causal_lm(str(tmp_path))


def test_check_same_tokenizer(tok, tiny_model_dir):
    same = load_tokenizer(tiny_model_dir)
    check_same_tokenizer(tok, same, "s", "t")

    class Other:
        def get_vocab(self):
            v = dict(tok.get_vocab())
            v["<new>"] = len(v)
            a, b = v["a"], v["b"]
            v["a"], v["b"] = b, a  # two swapped ids + one extra token
            return v

    with pytest.raises(ValueError, match="tokenizer mismatch") as e:
        check_same_tokenizer(tok, Other(), "student-dir", "teacher-dir")
    msg = str(e.value)
    assert "'student-dir'" in msg and "'teacher-dir'" in msg
    assert f"({len(tok)} tokens)" in msg and f"({len(tok) + 1} tokens)" in msg
    assert "differ in 5 (token, id) entries" in msg  # a, b on each side (4) + <new>


def test_load_tokenizer_roundtrip(tiny_model_dir, tok):
    t = load_tokenizer(tiny_model_dir)
    assert t.chat_template and t.pad_token_id == tok.pad_token_id
    assert encode_prompt(t, "abc", "ctx") == encode_prompt(tok, "abc", "ctx")


def test_load_tokenizer_without_chat_template(tmp_path, tiny_model_dir):
    d = tmp_path / "m"
    shutil.copytree(tiny_model_dir, d)
    (d / "chat_template.jinja").unlink(missing_ok=True)
    for name in ("tokenizer_config.json",):
        p = d / name
        cfg = json.loads(p.read_text())
        cfg.pop("chat_template", None)
        p.write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="chat template"):
        load_tokenizer(str(d))


def test_load_causal_lm_and_dtype(tiny_model_dir):
    m = load_causal_lm(tiny_model_dir, dtype="bfloat16")
    assert next(m.parameters()).dtype == torch.bfloat16
    assert torch_dtype("fp32") is torch.float32 and torch_dtype("bf16") is torch.bfloat16
    with pytest.raises(ValueError, match="unknown dtype 'float16'"):
        torch_dtype("float16")
