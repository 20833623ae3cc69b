"""Every task has its own config schema (opcd.config.TASK_SCHEMAS), so a field of another task fails at
start-up; the registry (opcd.tasks.TASKS) maps the same names to loaders and refuses a foreign schema."""
import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from opcd import config as C
from opcd.tasks import TASKS, load_task

CONF = Path(__file__).resolve().parents[2] / "conf"
ROOT = CONF.parent
C.register_configs()
TASK_YAMLS = sorted(p.stem for p in (CONF / "task").glob("*.yaml"))
BASE_FIELDS = {"name", "too_long", "seed", "experience_file"}


def _compose(name="train", overrides=()):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(name, overrides=list(overrides))


def test_registry_schemas_and_yamls_name_the_same_tasks():
    assert set(TASKS) == set(C.TASK_SCHEMAS) == set(TASK_YAMLS)
    assert {f.name for f in dataclasses.fields(C.TaskConfig)} == BASE_FIELDS


@pytest.mark.parametrize("name", TASK_YAMLS)
def test_each_task_yaml_composes_on_its_own_schema(name):
    task = _compose(overrides=[f"task={name}"]).task
    schema = C.TASK_SCHEMAS[name]
    assert OmegaConf.get_type(task) is schema and task.name == name
    assert set(task.keys()) == {f.name for f in dataclasses.fields(schema)}  # nothing of the other tasks
    assert BASE_FIELDS <= set(task.keys())


def test_default_toy_task_keeps_its_keys_and_values():
    # checkpoint resume compares the resolved task.* keys: the toy task's keys and values are those it had
    task = OmegaConf.to_container(_compose().task, resolve=True)
    assert task == {"name": "toy_rules", "too_long": "refuse", "seed": 0, "experience_file": None,
                    "distill_rules": ["reverse"], "context_kind": "system", "k_demos": 4, "train_size": 4096,
                    "retain_ratio": 1.0, "eval_n_per_rule": 64}


@pytest.mark.parametrize("task,key", [
    ("sysprompt", "distill_rules"),  # toy world field on the sysprompt task
    ("toy_rules", "train_file"),  # data files belong to jsonl and the table tasks
    ("toy_rules", "distill_prompt"),
    ("jsonl", "train_size"),  # jsonl reads every record
    ("frozenlake", "train_file"),  # games generate their levels
    ("safety", "option_columns"),  # only medical_qa has options
    ("math", "n_shots"),  # few-shot field on math
    ("fewshot", "context_file"),  # few-shot contexts are demonstrations, not a file
])
def test_a_field_of_another_task_fails_at_start_up(task, key):
    with pytest.raises(ConfigCompositionException) as e:
        _compose(overrides=[f"task={task}", f"task.{key}=1"])
    text = f"{e.value} {e.value.__cause__}"
    assert f"Key '{key}' not in '{C.TASK_SCHEMAS[task].__name__}'" in text and f"full_key: task.{key}" in text


def test_cli_refuses_a_foreign_task_field_naming_the_key():
    r = subprocess.run([sys.executable, "-m", "opcd.train", "task=sysprompt", "task.distill_rules=[x]", "--cfg", "job"],
                       capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert r.returncode != 0
    assert "Key 'distill_rules' not in 'SyspromptTaskConfig'" in r.stderr and "full_key: task.distill_rules" in r.stderr


def test_every_experiment_composes_on_its_tasks_schema():
    for path in sorted((CONF / "experiment").glob("*.yaml")):
        cfg = _compose(overrides=[f"experiment={path.stem}"])
        assert OmegaConf.get_type(cfg.task) is C.TASK_SCHEMAS[cfg.task.name], path.name


def test_load_task_refuses_the_schema_of_another_task():
    with pytest.raises(ValueError, match=r"task.name=math needs its own config \(MathTaskConfig\), got ToyRulesTaskConfig"):
        load_task(C.ToyRulesTaskConfig(name="math"))
    task = _compose(overrides=["task=toy_rules", "task.name=jsonl"]).task  # name changed, schema kept
    with pytest.raises(ValueError, match=r"select the task with task=jsonl"):
        load_task(task)
    with pytest.raises(ValueError, match="got TaskConfig"):  # the bare base has no task's fields
        load_task(C.TaskConfig(name="toy_rules"))
    # frozenlake and sokoban share one schema; medical_qa's is not safety's
    with pytest.raises(ValueError, match="needs its own config"):
        load_task(C.MedicalQATaskConfig(name="safety"))


@pytest.mark.parametrize("task,train_size,extra", [
    ("toy_rules", 512, {"retain_ratio": 0.0}),  # conf/experience_task/toy_rules.yaml: the distilled rule only
    ("math", 512, {}),  # conf/experience_task/math.yaml: the first 512 rows
    ("jsonl", None, {}),  # no such file: jsonl as conf/task/jsonl.yaml has it
])
def test_experience_composes_with_the_tasks_it_supports(task, train_size, extra):
    cfg = _compose("experience", [f"task={task}"])
    assert OmegaConf.get_type(cfg.task) is C.TASK_SCHEMAS[task]
    assert cfg.task.get("train_size") == train_size
    for k, v in extra.items():
        assert cfg.task[k] == v
    assert _compose("experience", [f"task={task}", "task.seed=3"]).task.seed == 3
