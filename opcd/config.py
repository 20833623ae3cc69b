"""Typed configuration for opcd, registered with Hydra's ConfigStore.

Each dataclass backs one YAML group under ``conf/`` (model, task, algo, rollout, learner, logger;
``experiment`` presets override several groups at once). Because the primary config is built on top
of these schemas, a misspelled key or a wrong type fails at start-up with Hydra's own message.
"""
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf

ASSETS = Path(__file__).resolve().parent / "assets"
# `${opcd_asset:toy-model}` -> absolute path of a shipped asset, whatever the working directory.
if not OmegaConf.has_resolver("opcd_asset"):
    OmegaConf.register_new_resolver("opcd_asset", lambda name: str(ASSETS / name))


@dataclass
class ModelConfig:
    path: str = "${opcd_asset:toy-model}"  # student: HF model directory (or hub id when online)
    teacher_path: Optional[str] = None  # teacher model; null = frozen copy of the initial student
    max_model_len: int = 256  # longest context+prompt+response in tokens, for every engine
    dtype: str = "auto"  # auto | float32 | bfloat16: auto = per phase from the hardware it runs on (opcd/hardware.py)
    hub: bool = False  # path / teacher_path may be a Hugging Face hub id (org/name), downloaded when not a local directory


@dataclass
class TaskConfig:
    """The fields every task has. Each task's own fields are in its subclass below (``TASK_SCHEMAS``), and
    conf/task/<name>.yaml starts from that schema (``<name>_schema``), so a field of another task fails at
    start-up instead of being ignored."""
    name: str = MISSING  # task loader in opcd.tasks.TASKS: toy_rules | jsonl | sysprompt | math | medical_qa | safety | fewshot | frozenlake | sokoban
    too_long: str = "refuse"  # records whose context+prompt exceed max_model_len: refuse | skip
    seed: int = 0  # data generation / shuffling / demonstration sampling seed
    experience_file: Optional[str] = None  # text file (python -m opcd.experience) used as the context of every non-retain record; null = the task's own contexts


@dataclass
class ToyRulesTaskConfig(TaskConfig):
    """task=toy_rules: the synthetic rule world (opcd.tasks.toy_world)."""
    name: str = "toy_rules"  # task loader
    distill_rules: List[str] = field(default_factory=lambda: ["reverse"])  # rules whose context is distilled
    context_kind: str = "system"  # context given to the teacher: system (the rule's description) | demos
    k_demos: int = 4  # demonstrations per context when context_kind=demos
    train_size: int = 4096  # training prompts generated per distilled rule
    retain_ratio: float = 0.0  # retain prompts (other rules, context shown to the student too) per distilled prompt
    eval_n_per_rule: int = 64  # test prompts per rule and context kind in periodic evaluation


@dataclass
class JsonlTaskConfig(TaskConfig):
    """task=jsonl: your own records (prompt, context, answer), one JSON object per line."""
    name: str = "jsonl"  # task loader
    train_file: Optional[str] = None  # path of the training records
    eval_file: Optional[str] = None  # path of the evaluation records (each scored with and without its context)


@dataclass
class SyspromptTaskConfig(TaskConfig):
    """task=sysprompt: system-prompt distillation on a real instruct model (opcd.tasks.sysprompt)."""
    name: str = "sysprompt"  # task loader
    distill_prompt: str = "french"  # system prompt distilled (opcd.tasks.sysprompt.SYSTEM_PROMPTS key)
    other_prompts: List[str] = field(default_factory=lambda: ["spanish", "cat"])  # prompts still given, checked for harm
    train_size: int = 4096  # training prompts (at most 200 exist; 0 = all)
    retain_ratio: float = 0.0  # retain records (another system prompt, shown to the student too) per distilled record
    eval_n_per_rule: int = 64  # held-out prompts per system prompt and condition in periodic evaluation
    eval_set: str = "v1"  # held-out user prompts: v1 (60, the committed benchmarks') | heldout240 (252 in six tagged styles; opcd.tasks.sysprompt_heldout)


@dataclass
class TableTaskConfig(TaskConfig):
    """Rows from local JSONL / Parquet files or a Hugging Face dataset (opcd.tasks.tables); the base of
    math, medical_qa, safety and fewshot."""
    train_file: Optional[str] = None  # local training rows (.jsonl or .parquet); wins over dataset
    eval_file: Optional[str] = None  # local evaluation rows (.jsonl or .parquet); wins over dataset
    dataset: Optional[str] = None  # Hugging Face dataset name (needs network)
    dataset_config: Optional[str] = None  # Hugging Face dataset configuration, e.g. main (openai/gsm8k) or rte (nyu-mll/glue)
    train_split: str = "train"  # Hugging Face split read for the training records
    eval_split: str = "test"  # Hugging Face split read for the evaluation records ("" = no evaluation)
    answer_column: str = ""  # reference answer or label column ("" = the task's default)
    train_size: int = 4096  # training rows used (0 = all)
    eval_n_per_rule: int = 64  # evaluation rows, each scored with and without the context (0 = all)


@dataclass
class MathTaskConfig(TableTaskConfig):
    """task=math: GSM8K / DAPO-Math rows with experience as the context (opcd.tasks.math)."""
    name: str = "math"  # task loader
    question_column: str = ""  # question column ("" = question; a.b reaches nested fields)
    instruction: str = ""  # text appended to every question (e.g. the \boxed{} request)
    context: str = ""  # experience text the teacher sees ("" = none)
    context_file: Optional[str] = None  # text file holding the experience (wins over task.context)


@dataclass
class QATaskConfig(TableTaskConfig):
    """task=safety (and the base of medical_qa): labelled questions with a system prompt as the context
    (opcd.tasks.sysprompt_qa)."""
    question_column: str = ""  # question / message column ("" = the task's default; a.b reaches nested fields)
    context: str = ""  # system prompt ("" = the shipped opcd/tasks/prompts/<task>.txt)
    context_file: Optional[str] = None  # text file holding the system prompt (wins over task.context)


@dataclass
class MedicalQATaskConfig(QATaskConfig):
    """task=medical_qa: multiple-choice questions (MedQA / MedMCQA style)."""
    name: str = "medical_qa"  # task loader
    option_columns: List[str] = field(default_factory=list)  # one column per option, or one list/dict column ([] = options)


@dataclass
class FewshotTaskConfig(TableTaskConfig):
    """task=fewshot: NLI / paraphrase classification with k demonstrations as the context (opcd.tasks.fewshot)."""
    name: str = "fewshot"  # task loader
    template: str = ""  # query text with {column} placeholders ("" = premise/hypothesis default)
    label_words: List[str] = field(default_factory=list)  # words for label 0, 1, ... ([] = entailment, not_entailment)
    n_shots: int = 4  # demonstrations per context, sampled (seeded) from the training rows
    demos_fixed: bool = False  # one demonstration set for every record (true) or a fresh sample per record


@dataclass
class GameTaskConfig(TaskConfig):
    """task=frozenlake | sokoban: multi-turn text games with experience as the context (opcd.tasks.games)."""
    game_size: int = 4  # board side in cells (sokoban counts its wall border)
    max_turns: int = 8  # student moves per episode before it is cut off
    train_size: int = 4096  # training levels (seeded, distinct)
    eval_n_per_rule: int = 64  # test levels (disjoint from training), each played with and without the experience
    context: str = ""  # experience text the teacher sees ("" = the shipped opcd/tasks/prompts/<game>.txt)
    context_file: Optional[str] = None  # text file holding the experience (wins over task.context)


# Task name -> its config schema; registered as task/<name>_schema, the first default of conf/task/<name>.yaml.
TASK_SCHEMAS = {"toy_rules": ToyRulesTaskConfig, "jsonl": JsonlTaskConfig, "sysprompt": SyspromptTaskConfig,
                "math": MathTaskConfig, "medical_qa": MedicalQATaskConfig, "safety": QATaskConfig,
                "fewshot": FewshotTaskConfig, "frozenlake": GameTaskConfig, "sokoban": GameTaskConfig}


@dataclass
class AlgoConfig:
    name: str = "opcd"  # label of the method (opcd | opcd_nca | offpolicy_cd | gkd | sft | icl); its meaning is in the fields below
    sampler: str = "student"  # who answers a step's prompts: student (no context) | teacher (with it) | mix (student with probability gkd_lambda)
    trains: bool = True  # false: the model with its context is only evaluated (icl); steps are ignored
    loss: str = "topk_reverse_kl"  # topk_reverse_kl | full_reverse_kl | sampled_reverse_kl | forward_kl | jsd | nll
    top_k: int = 16  # top-k support of the per-token KL (student top-k for reverse KL, teacher's for forward)
    renormalize_topk: bool = False  # renormalise both distributions over the top-k before the KL
    temperature: float = 1.0  # temperature applied to student and teacher distributions in the loss
    nca_beta: float = 0.0  # weight of the stop-gradient consistency regulariser (0 disables it)
    nca_warmup_steps: int = 0  # steps over which that weight ramps linearly from 0 to nca_beta (0 = full from step 1)
    nca_mode: str = "paper"  # paper: KL(sg[p(.|x)] || p(.|c,x)), gradient to the with-context side | sg_context: KL(sg[p(.|c,x)] || p(.|x)), gradient to the no-context side (opcd.consistency)
    nca_positions: str = "all"  # all: every response position | agree: only where argmax p(.|x) == argmax p(.|c,x)
    nca_support: str = "full"  # full: the whole vocabulary | topk: the no-context student's top_k tokens, both sides renormalised
    nca_after_step: int = 0  # the regulariser is off for optimizer steps <= this; then nca_warmup_steps ramps it in
    jsd_beta: float = 0.5  # GKD generalised-JSD interpolation (0 = forward KL, 1 = reverse KL)
    gkd_lambda: float = 1.0  # GKD on-policy fraction: share of prompts answered by the student
    aggregation: str = "token_mean"  # token_mean | seq_mean loss reduction
    teacher_transfer: str = "auto"  # what the teacher ships for full-vocabulary losses: auto (fewer bytes per token) | logprobs ([B,T,V] float32) | hidden ([B,T,d] hidden states; the learner applies a frozen copy of the teacher's LM head)
    lr: float = 1e-3  # learning rate (constant after warm-up)
    warmup_steps: int = 0  # linear warm-up steps
    weight_decay: float = 0.0  # AdamW weight decay
    grad_clip: float = 1.0  # gradient-norm clipping (0 disables)
    max_nonfinite_steps: int = 3  # stop after this many consecutive NaN/inf losses (each one is skipped)


@dataclass
class RolloutConfig:
    engine: str = "vllm_cpu"  # vllm_cpu | vllm_cuda: which vLLM build/device the engines use
    num_workers: int = 2  # rollout actors, each holding one vLLM engine
    num_cpus: float = 0.5  # Ray CPUs reserved per worker (fractional: phases run one after another)
    num_gpus: float = 0.0  # Ray GPUs per worker (1 on CUDA unless colocated)
    threads: int = 1  # torch/OMP threads per CPU engine
    tensor_parallel_size: int = 1  # vLLM tensor parallelism per engine (CUDA)
    gpu_memory_utilization: float = 0.5  # vLLM GPU memory share per engine (CUDA)
    kv_cache_gb: int = 1  # vLLM CPU KV-cache size in GiB (VLLM_CPU_KVCACHE_SPACE)
    temperature: float = 1.0  # sampling temperature of student rollouts
    top_p: float = 1.0  # nucleus sampling threshold
    overlap: bool = False  # one-step off-policy: sample step t+1 (and score it) while the learner trains on step t
    max_tokens: int = 32  # longest sampled response
    n: int = 1  # samples per prompt
    seed: int = 0  # engine seed (worker i uses seed + i); request order is fixed for reproducibility


@dataclass
class TeacherConfig:
    num_cpus: float = 0.5  # Ray CPUs reserved for the teacher actor
    num_gpus: float = 0.0  # Ray GPUs for the teacher actor
    threads: int = 2  # torch threads of the teacher's forward pass on CPU
    micro_batch_size: int = 64  # sequences per teacher forward pass
    max_transfer_mb: float = 512.0  # refuse at start-up a run whose teacher would ship more [B,T,V] log-probs per step than this (MiB)


@dataclass
class LearnerConfig:
    backend: str = "gloo"  # torch.distributed backend: gloo (CPU) | nccl (CUDA)
    device: str = "cpu"  # cpu | cuda
    num_ranks: int = 1  # data-parallel learner ranks (Ray actors)
    num_cpus: float = 0.5  # Ray CPUs per learner rank
    num_gpus: float = 0.0  # Ray GPUs per learner rank
    threads: int = 2  # torch threads per learner rank on CPU
    zero_stage: int = 0  # DeepSpeed ZeRO stage 0-3
    offload: bool = False  # ZeRO optimizer offload to CPU (stage >= 1)
    precision: str = "auto"  # auto (follows model.dtype: bf16 = autocast on CPU, DeepSpeed bf16 on GPU) | fp32 | bf16
    micro_batch_size: int = 32  # sequences per forward/backward
    optimizer: str = "AdamW"  # DeepSpeed optimizer type (AdamW | Adam | SGD ...); Adam* use torch's implementation
    betas: List[float] = field(default_factory=lambda: [0.9, 0.999])  # Adam betas
    grad_accum_steps: int = 0  # micro-batches per optimizer step; 0 = one step per rollout batch
    gradient_checkpointing: bool = False  # recompute activations in backward (long responses: memory for time)


@dataclass
class PlacementConfig:
    strategy: str = "PACK"  # Ray placement-group strategy for all bundles: PACK | SPREAD | STRICT_PACK | STRICT_SPREAD
    colocate: bool = False  # learner rank i shares engine i's bundle/GPU; engines sleep while it trains (CUDA)
    timeout_s: float = 120.0  # how long to wait for the cluster to hold every bundle before failing


@dataclass
class SyncConfig:
    method: str = "auto"  # auto (broadcast on CUDA, object_store on CPU) | object_store | broadcast
    backend: str = "auto"  # broadcast group backend: auto (nccl on CUDA, gloo on CPU) | nccl | gloo
    bucket_mb: float = 256.0  # broadcast bucket size in MiB (fewer collectives vs. extra memory)
    timeout_s: float = 300.0  # broadcast group timeout (a dead member fails the sync after this)


@dataclass
class LoggerConfig:
    kind: str = "wandb"  # wandb | none
    mode: str = "offline"  # wandb mode: offline | online | disabled
    project: str = "opcd"  # wandb project
    group: Optional[str] = None  # wandb group (sweeps set it)
    name: Optional[str] = None  # wandb run name (default: experiment name + time)


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)  # student / teacher models
    task: TaskConfig = field(default_factory=TaskConfig)  # data and verifier: the task/ option's own schema (TASK_SCHEMAS)
    algo: AlgoConfig = field(default_factory=AlgoConfig)  # method and loss
    rollout: RolloutConfig = field(default_factory=RolloutConfig)  # student sampling engines
    teacher: TeacherConfig = field(default_factory=TeacherConfig)  # teacher actor resources
    learner: LearnerConfig = field(default_factory=LearnerConfig)  # DeepSpeed learner
    placement: PlacementConfig = field(default_factory=PlacementConfig)  # where the actors go (Ray placement group)
    sync: SyncConfig = field(default_factory=SyncConfig)  # how new weights reach the engines
    logger: LoggerConfig = field(default_factory=LoggerConfig)  # wandb / console logging
    experiment: str = "custom"  # preset name, for run names and reports
    steps: int = 60  # optimizer steps (one per rollout batch)
    prompts_per_step: int = 64  # prompts sampled per step (x rollout.n responses)
    eval_every: int = 10  # steps between evaluations (0 = only at start and end)
    save_every: int = 0  # steps between checkpoints (0 = only at the end)
    keep_checkpoints: int = 2  # newest checkpoints kept on disk
    sync_every: int = 1  # optimizer steps between weight pushes to the engines
    seed: int = 0  # global seed (torch, data order)
    output_dir: str = "${hydra:runtime.output_dir}"  # where checkpoints, metrics and eval tables go
    ray_address: Optional[str] = None  # attach to a running Ray cluster; null = start a local one
    resume: str = "none"  # none | auto (newest intact checkpoint in output_dir, if any) | a checkpoint dir
    overwrite: bool = False  # start a new run in an output_dir that holds one: the old run is moved to previous-<time>/ (never deleted)
    actor_timeout_s: float = 600.0  # a remote call slower than this counts as a hung actor (killed, restarted)
    max_actor_failures: int = 3  # rollout/teacher actor faults tolerated per run before stopping with an error


@dataclass
class ExperienceConfig:
    model: ModelConfig = field(default_factory=ModelConfig)  # the model that solves, writes the experience and is validated with it
    rollout: RolloutConfig = field(default_factory=RolloutConfig)  # engine and solving samples (temperature, top_p, max_tokens)
    task: TaskConfig = field(default_factory=TaskConfig)  # training problems, a task/ option: toy_rules (one distilled rule) | jsonl | math (train_file)
    extractor: str = "demos"  # demos: correct traces become "input -> output" lines | llm: the model writes items from the extraction prompt
    use_context: bool = True  # solve problems with their given context (toy world: the rule's system prompt)
    n_problems: int = 16  # training problems solved per candidate (candidates get disjoint subsets)
    candidates: int = 4  # candidate experience texts built, validated and chosen from
    max_experience_tokens: int = 512  # longest experience text, in tokens of the model's tokenizer (0 = no limit)
    truncation: str = "newest"  # whole items kept under the limit: newest (latest traces) | best (correct traces first, then newest)
    extract_prompt_file: Optional[str] = None  # llm extractor template with {problem} {answer} {verdict}; null = opcd/experience/prompts/extract.txt
    extract_max_tokens: int = 64  # llm extractor: greedy tokens per experience item
    n_validation: int = 64  # validation problems scoring each candidate (0 = all of validation_file)
    validation_file: Optional[str] = None  # jsonl/math: validation records (toy world: generated; math: else task.eval_file)
    seed: int = 0  # problem shuffling; candidate i samples with engine seed seed + i
    out: str = "${hydra:runtime.output_dir}/experience.txt"  # where the chosen experience text is written
    report: str = "${hydra:runtime.output_dir}/experience_report.json"  # JSON report: every candidate's validation score


@dataclass
class EvalConfig:
    model: ModelConfig = field(default_factory=ModelConfig)  # model to evaluate (model.path)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)  # engine settings (greedy decoding is forced)
    split: str = "test"  # toy-world split: train | validation | test
    rules: List[str] = field(default_factory=list)  # rules to evaluate; empty = all
    n_per_rule: int = 100  # prompts per rule and context kind
    context_kinds: List[str] = field(default_factory=lambda: ["system", "demos", "none"])  # conditions to evaluate
    paraphrases: str = "train"  # descriptions used as system prompts: train | heldout | all
    k_demos: int = 4  # demonstrations per prompt in the demos condition
    seed: int = 0  # data seed of the evaluation prompts
    out: str = "${hydra:runtime.output_dir}/eval.json"  # where the JSON table is written


def register_configs() -> None:
    """Register the schemas so YAML groups are validated against them."""
    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=TrainConfig)
    cs.store(name="eval_schema", node=EvalConfig)
    cs.store(name="experience_schema", node=ExperienceConfig)
    for group, node in [("model", ModelConfig), ("algo", AlgoConfig),
                        ("rollout", RolloutConfig), ("learner", LearnerConfig), ("logger", LoggerConfig)]:
        cs.store(group=group, name=f"{group}_schema", node=node)
    for name, node in TASK_SCHEMAS.items():  # each conf/task/<name>.yaml extends its own schema
        cs.store(group="task", name=f"{name}_schema", node=node)


__all__ = ["ModelConfig", "TaskConfig", "ToyRulesTaskConfig", "JsonlTaskConfig", "SyspromptTaskConfig", "TableTaskConfig",
           "MathTaskConfig", "QATaskConfig", "MedicalQATaskConfig", "FewshotTaskConfig", "GameTaskConfig", "TASK_SCHEMAS",
           "AlgoConfig", "RolloutConfig", "TeacherConfig", "LearnerConfig",
           "PlacementConfig", "SyncConfig", "LoggerConfig", "TrainConfig", "EvalConfig", "register_configs", "MISSING"]
