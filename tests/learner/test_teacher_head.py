"""The learner's frozen copy of the teacher's LM head (opcd.learner.teacher_head): read from the
teacher's safetensors alone (tied, untied, sharded), checked against the configs at start-up."""
import json
from pathlib import Path

import pytest
import torch

from opcd.learner.teacher_head import check_head, load_teacher_head
from opcd.models.toy.pretrain import build_model
from opcd.transfer import ModelDims


def _save(model, tok, d: Path, **kw) -> str:
    model.save_pretrained(d, **kw)
    tok.save_pretrained(d)
    return str(d)


@pytest.fixture(scope="module")
def untied(tok, tmp_path_factory):
    """An untied, sharded random Llama: the head is its own tensor, in another file than the embedding."""
    torch.manual_seed(3)
    model = build_model(tok, hidden=32, layers=1, heads=1)
    model.config.tie_word_embeddings = False
    model.lm_head.weight = torch.nn.Parameter(torch.randn_like(model.lm_head.weight))
    d = tmp_path_factory.mktemp("untied")
    return model, _save(model, tok, d, max_shard_size="20KB")


def test_tied_head_is_the_input_embedding(tiny_model_dir):
    from opcd.modeling import load_causal_lm

    ref = load_causal_lm(tiny_model_dir).get_output_embeddings().weight
    head = load_teacher_head(tiny_model_dir, student_vocab=84)
    assert head.dtype == torch.float32 and not head.requires_grad and head.device.type == "cpu"
    assert torch.equal(head, ref.detach())


def test_untied_head_is_read_from_its_shard(untied):
    model, path = untied
    assert (Path(path) / "model.safetensors.index.json").exists()
    head = load_teacher_head(path, student_vocab=84)
    assert head.shape == (84, 32) and torch.equal(head, model.lm_head.weight.detach())
    assert not torch.equal(head, model.model.embed_tokens.weight.detach())


def test_a_bf16_teacher_head_is_kept_in_fp32(tok, tmp_path):
    torch.manual_seed(4)
    model = build_model(tok, hidden=32, layers=1, heads=1).to(torch.bfloat16)
    head = load_teacher_head(_save(model, tok, tmp_path), student_vocab=84)
    assert head.dtype == torch.float32 and torch.equal(head, model.lm_head.weight.float())


def test_vocabulary_mismatch_with_the_student_is_one_line(tiny_model_dir):
    with pytest.raises(ValueError) as e:
        load_teacher_head(tiny_model_dir, student_vocab=96)
    assert "\n" not in str(e.value) and "84 vocabulary rows, the student's 96" in str(e.value)


def test_head_that_does_not_fit_the_teachers_hidden_size_is_one_line(tok, tmp_path):
    """A config whose hidden_size is not the head's width: its hidden states would not fit this head."""
    path = _save(build_model(tok, hidden=64, layers=1, heads=2), tok, tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg.update(hidden_size=32, head_dim=16)  # still a buildable architecture, now 32 wide
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"is \[84, 64\], but its config says .* = \[84, 32\]"):
        load_teacher_head(path, student_vocab=84)


def test_check_head():
    check_head((84, 64), ModelDims(84, 64), 84, "t")
    with pytest.raises(ValueError, match="config says"):
        check_head((84, 64), ModelDims(84, 128), 84, "t")
    with pytest.raises(ValueError, match="the student's 85"):
        check_head((84, 64), ModelDims(84, 64), 85, "t")


def test_a_head_followed_by_a_logit_transform_is_refused(tok, tmp_path):
    path = _save(build_model(tok, hidden=32, layers=1, heads=1), tok, tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**cfg, "final_logit_softcapping": 30.0}))
    with pytest.raises(ValueError, match="final_logit_softcapping=30.0; set algo.teacher_transfer=logprobs"):
        load_teacher_head(path, student_vocab=84)
