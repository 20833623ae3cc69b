"""Shared fixtures: the character tokenizer and a tiny *random* Llama saved as an HF model directory.

The shipped model (opcd/assets/toy-model) is never used here: tests must not depend on (or race
with) its pretraining.
"""
import pytest
import torch


@pytest.fixture(scope="session")
def tok():
    from opcd.models.toy.char_tokenizer import build_char_tokenizer

    return build_char_tokenizer()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> str:
    """Path (str) of a directory holding a 1-layer, hidden-32 random Llama and the char tokenizer."""
    from opcd.models.toy.char_tokenizer import build_char_tokenizer
    from opcd.models.toy.pretrain import build_model

    d = tmp_path_factory.mktemp("tiny-model")
    tokenizer = build_char_tokenizer()
    torch.manual_seed(0)
    model = build_model(tokenizer, hidden=64, layers=1, heads=2)  # head_dim 32: the smallest vLLM-CPU supports
    model.save_pretrained(d)
    tokenizer.save_pretrained(d)
    return str(d)
