"""The head-to-heads give TRL and opcd the same job: both sides' settings are built by the benchmarks'
own code (opcd: the ``python -m opcd.train`` overrides, composed by Hydra; TRL: the worker's
``SDFTConfig``), without training, and compared field by field, for both TRL configurations. The
loss (kind, direction, temperature, aggregation) is compared by running TRL's own loss code and
opcd's on the same logits."""
import dataclasses
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from hydra import compose, initialize_config_dir

import benchmarks.bench_vs_trl_toy as toy
import benchmarks.vs_trl_smollm2 as smollm2
from benchmarks.common import trl_sdft as T
from opcd import config as C
from opcd import losses

REPO = Path(__file__).resolve().parents[2]
C.register_configs()
pytest.importorskip("trl")


def _compose(overrides):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose("train", overrides=[o for o in overrides if not o.startswith("hydra.")])


def _sides(bench: str, method: str, tmp_path):
    """(opcd's composed train config, TRL's SDFTConfig) of one benchmark's default job."""
    if bench == "smollm2":
        s = smollm2.full_settings()
        cfg = _compose(smollm2.opcd_command("opcd", s, tmp_path / "opcd")[3:])
        job = smollm2.trl_job(s, tmp_path / method, method)
    elif bench == "smollm2_quick":
        s = smollm2.quick_settings()
        cfg = _compose(smollm2.opcd_command("opcd", s, tmp_path / "opcd")[3:])
        job = smollm2.trl_job(s, tmp_path / method, method)
    else:
        s = toy.Settings()
        cfg = _compose(toy.opcd_command(s, tmp_path / "opcd")[3:])
        job = toy.trl_job(s, tmp_path / method, method)
    return cfg, T.trl_config(job)


def trl_loss(args, student_logits, teacher_logits, mask):
    """TRL's own loss code (``SDFTTrainer._compute_self_distillation_loss``) on given logits, with the
    temperature scaling its ``_forward_logits`` applies to both sides' logits first."""
    from trl.experimental.sdft.sdft_trainer import DistillationLogits, SDFTTrainer

    trainer = SimpleNamespace(args=args, accelerator=SimpleNamespace(gather=lambda x: x),
                              _log_self_distillation_metric=lambda *a: None)
    logits = DistillationLogits(completion_ids=torch.zeros(mask.shape, dtype=torch.long), loss_mask=mask,
                                student_logits=student_logits / args.temperature,
                                teacher_logits=teacher_logits / args.temperature)
    return SDFTTrainer._compute_self_distillation_loss(trainer, SimpleNamespace(training=True), {}, logits)


def opcd_loss(algo, student_logits, teacher_logits, mask, aggregation=None):
    """opcd's loss function named by ``algo.loss``, with the run's temperature and aggregation."""
    loss, _ = getattr(losses, algo.loss)(student_logits, teacher_logits, mask, temperature=algo.temperature,
                                         aggregation=aggregation or algo.aggregation)
    return loss


BENCHES = ["smollm2", "smollm2_quick", "toy"]


@pytest.mark.parametrize("method", list(T.TRL_CONFIGS))
@pytest.mark.parametrize("bench", BENCHES)
def test_both_sides_run_the_same_job(bench, method, tmp_path):
    cfg, trl = _sides(bench, method, tmp_path)
    # Steps, batch (prompts x samples per step, one process, no accumulation), lengths.
    assert trl.max_steps == cfg.steps
    assert trl.num_generations == cfg.rollout.n == 1
    assert trl.per_device_train_batch_size * trl.gradient_accumulation_steps == cfg.prompts_per_step * cfg.rollout.n
    assert trl.generation_batch_size == cfg.prompts_per_step * cfg.rollout.n  # one generation batch per step
    assert trl.max_completion_length == cfg.rollout.max_tokens
    assert trl.max_prompt_length + trl.max_completion_length == cfg.model.max_model_len
    # Sampling: temperature, no nucleus, no top-k (opcd's rollout has no top-k to set).
    assert trl.temperature == cfg.rollout.temperature == cfg.algo.temperature  # TRL's loss uses the sampling T
    assert trl.top_p == cfg.rollout.top_p == 1.0 and trl.top_k in (0, None) and "top_k" not in cfg.rollout
    # Loss kind: full-vocabulary reverse KL against the frozen initial model; aggregation.
    assert cfg.algo.loss == "full_reverse_kl"
    assert (trl.distillation_mode, trl.distillation_alpha, trl.num_loss_tokens_to_skip) == ("full_logits", 1.0, 0)
    assert trl.teacher_model_kind == "base" and cfg.model.teacher_path is None
    assert cfg.algo.aggregation == T.AGGREGATION == "seq_mean"
    # Optimiser: AdamW at a constant lr, no warm-up, no weight decay, grad-norm clip.
    assert trl.learning_rate == pytest.approx(cfg.algo.lr) and trl.optim == "adamw_torch"
    assert trl.lr_scheduler_type == "constant" and trl.warmup_steps == cfg.algo.warmup_steps == 0
    assert trl.weight_decay == cfg.algo.weight_decay == 0.0 and trl.max_grad_norm == cfg.algo.grad_clip == 1.0
    # Precision and seed.
    from opcd.hardware import local_dtype  # fp32 weights on both sides; bf16 autocast where opcd's learner uses it

    assert trl.model_init_kwargs["dtype"] == "float32" and not trl.fp16
    assert trl.bf16 == (local_dtype(cfg.model.dtype, "learner") == "bfloat16") and cfg.learner.precision == "auto"
    assert trl.seed == cfg.seed == cfg.rollout.seed
    # The configuration itself.
    assert trl.use_vllm == (method == "trl_vllm")
    if trl.use_vllm:
        assert trl.vllm_mode == "colocate" and trl.vllm_max_model_length == cfg.model.max_model_len


@pytest.mark.parametrize("bench", BENCHES)
def test_trl_and_opcd_compute_the_same_loss(bench, tmp_path):
    """Both sides' own loss code on the same logits (responses of 5, 2 and 1 tokens): equal, and
    distinguishable from the other aggregation, so a mismatch in kind, direction or aggregation shows."""
    cfg, trl = _sides(bench, "trl", tmp_path)
    g = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(3, 5, 11, generator=g) * 2, torch.randn(3, 5, 11, generator=g) * 2
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 0, 0, 0, 0]], dtype=torch.float32)
    ours = opcd_loss(cfg.algo, student, teacher, mask)
    assert float(trl_loss(trl, student, teacher, mask)) == pytest.approx(float(ours), rel=1e-5)
    other = opcd_loss(cfg.algo, student, teacher, mask, aggregation="token_mean")
    assert float(ours) != pytest.approx(float(other), rel=1e-3)  # the check can tell the two apart


def test_sdft_has_no_loss_type_to_set():
    """TRL 1.16's SDFTConfig has no ``loss_type`` (its aggregation is fixed, checked above). If a TRL
    release adds one, ``trl_config`` must set it to opcd's aggregation: this test says so."""
    from trl.experimental.sdft import SDFTConfig

    names = {f.name for f in dataclasses.fields(SDFTConfig)}
    assert "loss_type" not in names, "SDFTConfig now has loss_type: set it in benchmarks.common.trl_sdft.trl_config"
    with pytest.raises(TypeError):
        SDFTConfig(output_dir="x", loss_type="seq_mean")


def test_the_two_trl_configurations_differ_only_in_generation(tmp_path):
    s = toy.quick_settings()
    hf = T.trl_config(toy.trl_job(s, tmp_path, "trl")).to_dict()
    vllm = T.trl_config(toy.trl_job(s, tmp_path, "trl_vllm")).to_dict()
    diff = {k for k in hf if hf[k] != vllm[k]}
    assert diff == {"use_vllm", "vllm_max_model_length"}  # vllm_mode is "colocate" in both (TRL's default)
    assert vllm["use_vllm"] and vllm["vllm_mode"] == "colocate" and vllm["vllm_enable_sleep_mode"] is False


def test_jobs_name_their_configuration(tmp_path):
    job = toy.trl_job(toy.quick_settings(), tmp_path, "trl_vllm")
    assert job["generation"] == "vllm_colocate" and len(job["contexts"]) == len(job["prompts"])
    with pytest.raises(ValueError, match="not a TRL configuration"):
        toy.trl_job(toy.quick_settings(), tmp_path, "opcd")
    with pytest.raises(ValueError, match="unknown TRL generation"):
        T.trl_config({**job, "generation": "sglang"})
    with pytest.raises(ValueError, match="one context"):
        T.make_job("trl", model="m", output_dir="o", steps=1, batch=1, max_tokens=1, temperature=1.0, lr=1e-3,
                   seed=0, save_steps=1, threads=1, max_model_len=8, prompts=["p"], context="c", contexts=["c"])
