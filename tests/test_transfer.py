"""What the teacher ships (opcd.transfer): bytes per token, the auto choice, and the start-up refusals."""
import pytest
from omegaconf import OmegaConf

from opcd.algorithms import algo_spec
from opcd.config import AlgoConfig, TrainConfig
from opcd.transfer import ModelDims, bytes_per_token, model_dims, plan_transfer, response_tokens_bound, transfer_plan

SMOLLM2 = ModelDims(vocab_size=49152, hidden_size=576)
QWEN3_8B = ModelDims(vocab_size=151936, hidden_size=4096)
TOY = ModelDims(vocab_size=84, hidden_size=128)


def plan(loss="full_reverse_kl", returns="full", setting="auto", top_k=16, student=SMOLLM2, teacher=None,
         dtype_bytes=4, tokens=8 * 64, bound=512.0):
    return plan_transfer(loss=loss, teacher_returns=returns, setting=setting, top_k=top_k, student=student,
                         teacher=teacher or student, hidden_dtype_bytes=dtype_bytes, tokens_per_step=tokens,
                         max_transfer_mb=bound)


def test_bytes_per_token_formulas():
    assert bytes_per_token(49152, 576, 256, 4) == {"full_logprobs": 196608, "topk_logprobs": 3072, "hidden": 2304}
    assert bytes_per_token(151936, 4096, 256, 2) == {"full_logprobs": 607744, "topk_logprobs": 3072, "hidden": 8192}


@pytest.mark.parametrize("dims,dtype_bytes,hidden_bytes",
                         [(SMOLLM2, 4, 2304), (QWEN3_8B, 2, 8192), (QWEN3_8B, 4, 16384)])
def test_auto_ships_hidden_states_for_real_vocabularies(dims, dtype_bytes, hidden_bytes):
    p = plan(student=dims, dtype_bytes=dtype_bytes)
    assert p.mode == "hidden" and p.bytes_per_token == hidden_bytes
    assert p.options["full_logprobs"] == dims.vocab_size * 4
    assert p.mb_per_step == pytest.approx(8 * 64 * hidden_bytes / 2**20)
    assert "teacher transfer: hidden" in p.line and f"{hidden_bytes} B/token" in p.line


def test_auto_ships_log_probs_when_the_vocabulary_is_smaller_than_the_hidden_size():
    """The toy model: V=84 < d=128, so 336 B of log-probs beat 512 B of hidden states."""
    p = plan(student=TOY)
    assert p.mode == "logprobs" and p.bytes_per_token == 84 * 4
    assert plan(student=TOY, setting="hidden").mode == "hidden"  # forced: allowed, just larger


def test_jsd_uses_the_same_choice_and_top_k_losses_keep_log_probs():
    assert plan(loss="jsd").mode == "hidden"
    for loss, returns in [("topk_reverse_kl", "student_topk"), ("forward_kl", "topk"), ("nll", "topk")]:
        p = plan(loss=loss, returns=returns, top_k=256)
        # SmolLM2 fp32 at k=256: hidden (2304 B) would be smaller than top-k (3072 B), but shipping the
        # ids back would cost 8 B each: never worth it, and not implemented
        assert p.mode == "logprobs" and p.bytes_per_token == 256 * 12
        with pytest.raises(ValueError, match="implemented for full-vocabulary losses"):
            plan(loss=loss, returns=returns, setting="hidden")


def test_transfer_over_the_bound_is_refused_with_the_size_and_the_fix():
    tokens = 128 * 16384  # paper_math: 128 prompts x 16k tokens
    with pytest.raises(ValueError) as e:
        plan(student=QWEN3_8B, setting="logprobs", tokens=tokens, dtype_bytes=2)
    msg = str(e.value)
    assert "\n" not in msg and f"{tokens * 151936 * 4 / 2**20:.1f} MiB per step" in msg
    assert "teacher.max_transfer_mb=512" in msg and "algo.teacher_transfer=hidden" in msg
    # the same run ships hidden states under auto, and a raised bound lets log-probs through
    assert plan(student=QWEN3_8B, tokens=tokens, dtype_bytes=2).mode == "hidden"
    assert plan(student=QWEN3_8B, setting="logprobs", tokens=tokens, bound=2e6).mode == "logprobs"
    # top-k log-probs are not [B, T, V]: the bound does not apply to them
    assert plan(loss="topk_reverse_kl", returns="student_topk", top_k=256, tokens=tokens, bound=1).mode == "logprobs"


def test_top_k_beyond_the_vocabulary_is_refused():
    with pytest.raises(ValueError, match=r"algo.top_k=85 is outside 1..84.*at most 84"):
        plan(student=TOY, top_k=85)
    with pytest.raises(ValueError, match="algo.top_k=0"):
        plan(top_k=0)
    assert plan(student=TOY, top_k=84).mode == "logprobs"


def test_vocabulary_mismatch_is_refused_where_a_kl_cannot_bridge_it():
    small = ModelDims(vocab_size=151669, hidden_size=2048)
    with pytest.raises(ValueError, match=r"vocabulary has 151936 entries and the teacher's 151669"):
        plan(student=QWEN3_8B, teacher=small)
    with pytest.raises(ValueError, match="larger than the teacher's"):
        plan(loss="topk_reverse_kl", returns="student_topk", student=QWEN3_8B, teacher=small)
    # a teacher with *more* (padding) rows still scores every student top-k id
    assert plan(loss="topk_reverse_kl", returns="student_topk", student=small, teacher=QWEN3_8B).mode == "logprobs"


def test_hidden_size_is_the_teachers_own():
    """Cross-size: the learner applies the *teacher's* head, so d is the teacher's (4096), not the student's."""
    student = ModelDims(vocab_size=151936, hidden_size=2048)
    p = plan(student=student, teacher=QWEN3_8B, dtype_bytes=2)
    assert p.mode == "hidden" and p.bytes_per_token == 4096 * 2


def test_a_teacher_whose_logits_are_not_a_plain_matmul_keeps_log_probs():
    capped = ModelDims(vocab_size=49152, hidden_size=576, head_issue="x (gemma2) sets final_logit_softcapping=30.0")
    assert plan(teacher=capped).mode == "logprobs"
    with pytest.raises(ValueError, match="final_logit_softcapping"):
        plan(teacher=capped, setting="hidden")


def test_unknown_setting_is_refused():
    with pytest.raises(ValueError, match="unknown algo.teacher_transfer 'hiden'"):
        plan(setting="hiden")


def test_model_dims_reads_the_config(tiny_model_dir):
    assert model_dims(tiny_model_dir) == ModelDims(vocab_size=84, hidden_size=64)


def _cfg(**algo):
    cfg = OmegaConf.structured(TrainConfig)
    cfg.algo = OmegaConf.merge(OmegaConf.structured(AlgoConfig), algo)
    return cfg


def test_transfer_plan_of_a_config(tiny_model_dir):
    cfg = _cfg(loss="full_reverse_kl")
    cfg.model.path = tiny_model_dir
    cfg.prompts_per_step, cfg.rollout.n, cfg.rollout.max_tokens = 4, 2, 10
    assert response_tokens_bound(cfg) == 80
    p = transfer_plan(cfg, algo_spec(cfg.algo), tiny_model_dir)
    assert p.mode == "hidden" and p.tokens_per_step == 80  # d=64 x 4 B = 256 B < V=84 x 4 B = 336 B
    cfg.algo.teacher_transfer = "logprobs"
    cfg.teacher.max_transfer_mb = 80 * 84 * 4 / 2**20 * 0.99
    with pytest.raises(ValueError, match="over teacher.max_transfer_mb"):
        transfer_plan(cfg, algo_spec(cfg.algo), tiny_model_dir)


def test_hidden_bytes_follow_the_teachers_dtype(tiny_model_dir):
    """model.dtype=auto: the teacher on a GPU scores in bf16, so it ships d x 2 bytes per token."""
    cfg = _cfg(loss="full_reverse_kl")
    cfg.model.path = tiny_model_dir
    cfg.model.dtype, cfg.learner.device = "auto", "cuda"
    assert transfer_plan(cfg, algo_spec(cfg.algo), tiny_model_dir).bytes_per_token == 64 * 2
    cfg.model.dtype = "float32"
    assert transfer_plan(cfg, algo_spec(cfg.algo), tiny_model_dir).bytes_per_token == 64 * 4
