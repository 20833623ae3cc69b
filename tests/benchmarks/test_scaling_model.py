"""The scaling model (``benchmarks/scaling_model.py``): its arithmetic on hand-checked cases, every paper
preset present, a layout that does not fit reported as such, and the committed JSON up to date."""
import json

import pytest

from benchmarks import scaling_model as S
from benchmarks.common import paper_scale as P
from benchmarks.regions import scaling as R

TINY = P.Dims(vocab=10, hidden=8, layers=1, heads=1, kv_heads=1, head_dim=8, intermediate=8, tied=True, card_params=0)
ASM = P.assumption_values()
ONE_RANK = ["rollout.num_workers=6", "teacher.num_gpus=1", "learner.num_gpus=1"]  # what local.sh adds on 8 GPUs


@pytest.fixture(scope="module")
def built():
    return json.loads(json.dumps(S.rounded(S.build())))


# ------------------------------------------------------------------------------------------ arithmetic
def test_parameter_counts_match_the_model_cards():
    for name, d in P.MODELS.items():
        assert P.params(d) == pytest.approx(d.card_params, rel=0.02), name
    # Qwen3-8B by hand: untied 151936 x 4096 twice; per layer q, o 4096^2, k, v 4096 x 1024, MLP 3 x 4096 x 12288
    layer = 2 * 4096 ** 2 + 2 * 4096 * 1024 + 3 * 4096 * 12288 + 2 * 4096 + 2 * 128
    assert P.params(P.MODELS["Qwen/Qwen3-8B"]) == 2 * 151936 * 4096 + 36 * layer + 4096


def test_learner_flops_are_6NT_and_8NT_with_checkpointing():
    assert P.learner_flops(1e9, TINY, tokens=1000, mean_context=0, checkpointing=False) == 6e12
    assert P.learner_flops(1e9, TINY, tokens=1000, mean_context=0, checkpointing=True) == 8e12
    # attention: 4 x layers x heads x head_dim x context per token, forward
    assert P.attention_flops_per_token(TINY, 10) == 4 * 1 * 1 * 8 * 10
    assert P.forward_flops(100, TINY, tokens=3, mean_context=10) == 3 * (200 + 320)


def test_kv_cache_and_zero_states_by_hand():
    assert P.kv_bytes_per_token(P.MODELS["Qwen/Qwen3-8B"]) == 2 * 36 * 8 * 128 * 2 == 147456
    z2 = P.learner_state_bytes(1e9, stage=2, ranks=4, offload=False)
    assert (z2["weights"], z2["gradients"], z2["optimizer"]) == (2e9, 0.5e9, 3e9)
    z3 = P.learner_state_bytes(1e9, stage=3, ranks=4, offload=False)
    assert z3["weights"] == 0.5e9
    z0 = P.learner_state_bytes(1e9, stage=0, ranks=4, offload=False)
    assert sum(z0.values()) == 16e9
    off = P.learner_state_bytes(1e9, stage=1, ranks=2, offload=True)
    assert off["optimizer"] == 0 and off["host_optimizer"] == 6e9


def test_rollout_waves_and_memory_bound_by_hand():
    gpu = P.Gpu(memory=1e12, flops=1e18, hbm=1e12)
    asm = {**ASM, "mbu_decode": 1.0, "mfu_decode": 1.0, "mfu_prefill": 1.0}
    kv_seq = P.kv_bytes_per_token(TINY) * 100  # 32 B/token x 100 tokens
    r = P.rollout_seconds(n_params=1e9, d=TINY, gpu=gpu, tp=1, seqs=4, prompt_tokens=0, prefill_tokens=0,
                          decode_steps=100, final_tokens=100, kv_capacity=2 * kv_seq, asm=asm)
    assert (r["concurrency"], r["waves"], r["bound"]) == (2, 2, "HBM bandwidth")
    # each of 2 waves x 100 steps reads the weights (2e9 B) and 2 sequences' KV at the mean context 50
    assert r["seconds"] == pytest.approx(2 * 100 * (2e9 + 2 * 32 * 50) / 1e12)
    none = P.rollout_seconds(n_params=1e9, d=TINY, gpu=gpu, tp=1, seqs=4, prompt_tokens=0, prefill_tokens=0,
                             decode_steps=100, final_tokens=100, kv_capacity=kv_seq - 1, asm=asm)
    assert none["concurrency"] == 0 and none["seconds"] == float("inf")


def test_teacher_bytes_are_plan_transfer_bytes_times_tokens(built):
    p = built["presets"]["paper_math"]
    assert p["transfer"]["mode"] == "logprobs" and p["transfer"]["bytes_per_token"] == 256 * (4 + 8)
    assert p["transfer"]["options"] == {"full_logprobs": 151936 * 4, "topk_logprobs": 3072, "hidden": 4096 * 2}
    for row in p["layouts"]:
        ph = row["gpus"]["H200"]["phases"]
        assert ph["teacher_transfer"]["bytes"] == 3072 * 128 * 16384
        assert ph["teacher_transfer"]["seconds"] == pytest.approx(3072 * 128 * 16384 / ASM["object_store_bytes_per_s"],
                                                                  rel=1e-5)
        assert ph["data_path_before"]["seconds"] == pytest.approx(71e-6 * 128 * 16384, rel=1e-5)
        assert ph["weight_sync"]["bytes"] >= 2 * P.params(P.MODELS["Qwen/Qwen3-8B"]) * (1 - 1e-5)


# --------------------------------------------------------------------------------- presets and layouts
def test_every_paper_preset_appears_with_every_phase_on_8_gpus(built):
    assert set(built["presets"]) == {"paper_math", "paper_games", "paper_cross_size", "paper_sysprompt"}
    phases = {n for n, _ in R.PHASES}
    for name, p in built["presets"].items():
        assert len(p["layouts"]) == len(S.LAYOUTS)
        for row in p["layouts"]:
            for gpu in ("H200", "H100"):
                e = row["gpus"][gpu]
                assert e["gpu_count"] == 8 and set(e["phases"]) == phases, (name, row["name"])
                assert e["host"]["driver"] > 0 and e["step_before"]["dominant"] in phases
        assert p["proposed"]["H200"] is not None, name  # some candidate fits each preset on an H200
    games = built["presets"]["paper_games"]["workload"]
    assert games["turns"] == 5 and games["generated"] == 64 * 5 * 1024  # max_turns x max_tokens, from the configs
    assert built["presets"]["paper_cross_size"]["params"]["teacher"] == P.params(P.MODELS["Qwen/Qwen3-8B"])


def test_the_numbers_follow_the_configs():
    base = S.compose("paper_sysprompt", ONE_RANK)
    half = S.compose("paper_sysprompt", [*ONE_RANK, "prompts_per_step=64"])
    w, w2 = S.workload(base), S.workload(half)
    assert w["generated"] == 128 * 1024 and w2["generated"] == 64 * 1024
    plan = S.transfer(base, w)
    dp = S.data_path_figures(256)
    a, b = S.evaluate(base, "H200", ASM, dp, plan), S.evaluate(half, "H200", ASM, dp, S.transfer(half, w2))
    assert b["phases"]["learner"]["flops_per_rank"] == pytest.approx(a["phases"]["learner"]["flops_per_rank"] / 2)


def test_a_layout_that_does_not_fit_is_reported_as_not_fitting():
    # paper_math on one learner rank with ZeRO-0: 16 bytes per parameter of an 8B model, plus activations
    cfg = S.compose("paper_math", [*ONE_RANK, "learner.zero_stage=0"])
    w = S.workload(cfg)
    e = S.evaluate(cfg, "H200", ASM, S.data_path_figures(256), S.transfer(cfg, w))
    learner = e["gpus"]["learner rank"]
    assert learner["parts"]["weights"] + learner["parts"]["gradients"] + learner["parts"]["optimizer"] == \
        pytest.approx(16 * P.params(P.MODELS["Qwen/Qwen3-8B"]))
    assert not learner["fits"] and not e["fits"] and e["gpus"]["teacher"]["fits"]
    # an engine whose memory share cannot hold its weights: no KV cache, no rollout, not fitting
    cfg = S.compose("paper_math", [*ONE_RANK, "rollout.gpu_memory_utilization=0.1"])
    e = S.evaluate(cfg, "H100", ASM, S.data_path_figures(256), S.transfer(cfg, w))
    assert not e["kv_cache"]["holds_max_model_len"] and not e["gpus"]["engine"]["fits"] and not e["fits"]
    assert e["phases"]["rollout"]["seconds"] is None
    assert "does not fit" in R._largest(e)


def test_no_fitting_layout_is_proposed_and_said(monkeypatch):
    only = [("one rank, ZeRO-0", [*ONE_RANK, "learner.zero_stage=0"])]
    p = json.loads(json.dumps(S.rounded(S.model_preset("paper_math", ASM, layouts=only))))
    assert p["proposed"] == {"H200": None, "H100": None}
    md = "\n".join(R.preset_markdown("paper_math", p))
    assert "**does not fit**" in md and "No candidate layout fits on the H200." in md


def test_the_data_path_after_is_read_when_measured(tmp_path, monkeypatch):
    assert S.data_path_figures(256, tmp_path / "absent.json")["after_us_per_token"] is None
    (tmp_path / "data_path.json").write_text(json.dumps({"summary": {"k256_after_conversion_us_per_token": 5.0,
                                                                     "k256_before_conversion_us_per_token": 80.0, "k256_after_us_per_token": 999.0}}))
    monkeypatch.setattr(S, "RESULTS", tmp_path)
    dp = S.data_path_figures(256)
    assert (dp["after_us_per_token"], dp["before_us_per_token"]) == (5.0, 80.0)
    p = json.loads(json.dumps(S.rounded(S.model_preset("paper_sysprompt", ASM, layouts=S.LAYOUTS[3:4]))))
    e = p["layouts"][0]["gpus"]["H200"]
    assert e["phases"]["data_path_after"]["seconds"] == pytest.approx(5e-6 * 128 * 1024, rel=1e-5)
    assert e["step_after"]["sequential"] < e["step_before"]["sequential"]
    assert "pending" not in "\n".join(R.preset_markdown("paper_sysprompt", p))


def test_the_region_renders_every_preset_and_assumption(built):
    md = R.scaling_model(built)
    for name in built["presets"]:
        assert f"### {name}" in md
    for name in P.ASSUMPTIONS:
        assert f"`{name}`" in md
    assert "pending measurement" in md or "data_path.json" in json.dumps(built["presets"]["paper_math"]["data_path"])


def test_the_committed_json_is_what_the_configs_compute_now(built):
    committed = json.loads(S.OUT.read_text())
    assert committed == built, "run `python -m benchmarks.scaling_model` and `python -m benchmarks.render_docs`"
