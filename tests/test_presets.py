"""GPU presets in conf/: real-model choices (conf/model) and the paper's experiments (conf/experiment)."""
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from opcd import config as C

CONF = Path(__file__).resolve().parents[1] / "conf"
C.register_configs()

MODELS = {
    "qwen3_1.7b": ("Qwen/Qwen3-1.7B", None),
    "qwen3_4b": ("Qwen/Qwen3-4B", None),
    "qwen3_8b": ("Qwen/Qwen3-8B", None),
    "llama3.2_3b_instruct": ("meta-llama/Llama-3.2-3B-Instruct", None),
    "llama3.1_8b_instruct": ("meta-llama/Llama-3.1-8B-Instruct", None),
    "qwen3_1.7b_teacher8b": ("Qwen/Qwen3-1.7B", "Qwen/Qwen3-8B"),
    "qwen3_4b_teacher8b": ("Qwen/Qwen3-4B", "Qwen/Qwen3-8B"),
    "llama3.2_3b_instruct_teacher8b": ("meta-llama/Llama-3.2-3B-Instruct", "meta-llama/Llama-3.1-8B-Instruct"),
}
# experiment: (temperature, prompts per step, model preset's student, task)
PAPER = {"paper_math": (0.6, 128, "Qwen/Qwen3-8B", "math"), "paper_games": (0.7, 64, "Qwen/Qwen3-1.7B", "frozenlake"),
         "paper_sysprompt": (1.0, 128, "meta-llama/Llama-3.1-8B-Instruct", "safety"),
         "paper_cross_size": (0.6, 128, "Qwen/Qwen3-1.7B", "math")}


def _compose(overrides):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("train", overrides=overrides)


def test_real_model_presets_exist():
    assert {"toy", *MODELS} <= {p.stem for p in (CONF / "model").glob("*.yaml")}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_model_presets(name):
    m = _compose([f"model={name}"]).model
    assert (m.path, m.teacher_path) == MODELS[name]
    assert m.dtype == "bfloat16" and 4096 <= m.max_model_len <= 40960
    if m.teacher_path:  # the per-token KL needs one vocabulary: same family
        assert m.teacher_path.split("/")[0] == m.path.split("/")[0]


@pytest.mark.parametrize("name", sorted(PAPER))
def test_paper_experiments(name):
    cfg = _compose([f"experiment={name}"])
    temperature, prompts, student, task = PAPER[name]
    assert cfg.experiment == name and cfg.task.name == task and cfg.task.get("train_file") is None  # the user's data (games have none)
    assert cfg.model.path == student
    assert cfg.model.teacher_path == ("Qwen/Qwen3-8B" if name == "paper_cross_size" else None)
    assert cfg.algo.name == "opcd" and cfg.algo.loss == "topk_reverse_kl" and cfg.algo.top_k == 256
    assert cfg.algo.lr == pytest.approx(5e-6) and cfg.algo.weight_decay == pytest.approx(0.01)
    assert cfg.algo.warmup_steps == 0 and cfg.learner.grad_accum_steps == 0
    assert cfg.rollout.engine == "vllm_cuda" and cfg.learner.device == "cuda" and cfg.learner.backend == "nccl"
    assert cfg.rollout.temperature == temperature and cfg.rollout.n == 1 and cfg.prompts_per_step == prompts
    assert cfg.model.dtype == "bfloat16"
    assert cfg.rollout.max_tokens < cfg.model.max_model_len
    if name == "paper_games":  # the authors' FrozenLake: 3x3 lakes, at most 5 moves
        assert cfg.task.game_size == 3 and cfg.task.max_turns == 5


def test_paper_experiment_takes_other_models_algos_and_devices():
    cfg = _compose(["experiment=paper_math", "model=qwen3_4b_teacher8b", "algo=opcd_nca", "rollout=cpu"])
    assert cfg.model.teacher_path == "Qwen/Qwen3-8B" and cfg.algo.nca_beta == 0.5
    assert cfg.algo.lr == pytest.approx(5e-6) and cfg.rollout.engine == "vllm_cpu" and cfg.rollout.temperature == 0.6
