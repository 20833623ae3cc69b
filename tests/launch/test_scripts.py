"""The launch scripts' --dry-run plans: exact commands, arguments passed through, device choice.

Fast: nothing but bash runs. Each script runs from a copy of launch/ in a repository without a
.venv, with fake `ray`, `srun`, `ssh`, `python` and `nvidia-smi` first on PATH; the fakes record any
call, so a dry run that ran something would show up. The planned opcd.train arguments are also
composed with Hydra against conf/, so a placement key the schema lacks fails here.
"""
import importlib.util
import os
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LAUNCH = ROOT / "launch"
SCRIPTS = ["common.sh", "local.sh", "ray_cluster.sh", "slurm.sbatch", "quickstart.sh", "setup.sh", "test.sh",
           "benchmarks.sh"]
FAKES = ["ray", "srun", "ssh", "python", "sbatch", "scontrol"]
# Variables of the calling shell that would change the plans.
SCRUB = ("SLURM_", "RAY_", "OPCD_", "HOSTS", "CUDA_VISIBLE_DEVICES")


@dataclass
class Sandbox:
    repo: Path  # holds launch/ (a copy), no .venv
    bin: Path  # fake tools, first on PATH
    calls: Path  # one line per fake-tool call
    home: Path  # HOME of the scripts (no ~/.ray/auth_token unless a test writes one)

    def gpus(self, n: int) -> None:
        """Make the fake nvidia-smi list n GPUs (0: fail like a machine without a driver)."""
        body = "".join(f'echo "GPU {i}: NVIDIA H100 80GB HBM3 (UUID: GPU-{i})"\n' for i in range(n))
        _write_tool(self.bin / "nvidia-smi", body + ("exit 0\n" if n else "exit 9\n"))

    def run(self, script: str, *args: str, env: dict | None = None, check: bool = True,
            repo: Path | None = None) -> subprocess.CompletedProcess:
        e = {k: v for k, v in os.environ.items() if not k.startswith(SCRUB)}
        e["PATH"] = f"{self.bin}:{e.get('PATH', '/usr/bin:/bin')}"
        e["HOME"] = str(self.home)
        e.update(env or {})
        r = subprocess.run(["bash", str((repo or self.repo) / "launch" / script), *args], env=e,
                           capture_output=True, text=True, timeout=60)
        if check:
            assert r.returncode == 0, r.stdout + r.stderr
        return r


def _write_tool(path: Path, body: str) -> None:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)


@pytest.fixture
def sb(tmp_path) -> Sandbox:
    repo = tmp_path / "repo"
    shutil.copytree(LAUNCH, repo / "launch")
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    calls = tmp_path / "calls.log"
    for tool in FAKES:
        _write_tool(bin_ / tool, f'echo "{tool} $*" >> {calls}\n')
    # No scontrol by default: slurm.sbatch must then expand the node list itself.
    (bin_ / "scontrol").unlink()
    (tmp_path / "home").mkdir()
    box = Sandbox(repo, bin_, calls, tmp_path / "home")
    box.gpus(0)
    return box


def commands(out: str) -> list[list[str]]:
    """The printed plan as argument lists (comment lines dropped, a trailing `&` dropped)."""
    return [shlex.split(line.removesuffix(" &")) for line in out.splitlines() if line and not line.startswith("#")]


def trainer(out: str) -> list[str]:
    """The one planned `... -m opcd.train ...` command; its arguments after `opcd.train`."""
    found = [c for c in commands(out) if "opcd.train" in c]
    assert len(found) == 1, out
    cmd = found[0]
    i = cmd.index("opcd.train")
    assert cmd[i - 1] == "-m" and cmd[i - 2].endswith(("python", "python3")), cmd
    return cmd[i + 1:]


def assert_ran_nothing(sb: Sandbox, out: str) -> None:
    assert not sb.calls.exists(), sb.calls.read_text()
    assert sorted(p.name for p in sb.repo.iterdir()) == ["launch"], "a dry run wrote into the repository"
    subprocess.run(["bash", "-n"], input=out, text=True, check=True)  # the plan is itself a script


def compose(overrides: list[str]):
    """Compose conf/train.yaml with the planned overrides (flags dropped), as opcd.train would."""
    from hydra import compose as hydra_compose, initialize_config_dir

    from opcd import config as C

    C.register_configs()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return hydra_compose("train", overrides=[o for o in overrides if not o.startswith("-")],
                             return_hydra_config=any(o.startswith("hydra.") for o in overrides))


# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", SCRIPTS)
def test_bash_syntax(name):
    r = subprocess.run(["bash", "-n", str(LAUNCH / name)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_new_scripts_are_strict():
    for name in ["common.sh", "local.sh", "ray_cluster.sh", "slurm.sbatch"]:
        text = (LAUNCH / name).read_text()
        assert text.startswith("#"), name
        if name != "common.sh":  # sourced: the caller sets the options
            assert "set -euo pipefail" in text, name


def test_benchmarks_script_runs_the_five_performance_benchmarks_that_exist():
    import re

    text = (LAUNCH / "benchmarks.sh").read_text()
    assert "set -euo pipefail" in text and "launch/setup.sh" in text  # stops at the first failure; sets up first
    names = re.search(r"for bench in ([\w ]+); do", text).group(1).split()
    assert names == ["bench_teacher", "bench_rollout", "bench_loss", "bench_sync", "bench_vs_trl_toy"]
    assert all((ROOT / "benchmarks" / f"{n}.py").is_file() for n in names)


# --- local.sh ----------------------------------------------------------------------------------
def test_local_without_gpu_uses_cpu_and_passes_args_through(sb):
    args = ["steps=3", "task.distill_rules=[sort,upper]", "logger.name=it's mine", "+x=1 2"]
    r = sb.run("local.sh", "--dry-run", *args)
    argv = trainer(r.stdout)
    assert argv[:2] == ["rollout=cpu", "learner=cpu"]
    assert argv[2:] == args  # unchanged, in order, after the chosen ones
    assert not any("num_gpus" in a for a in argv)
    assert commands(r.stdout)[0] == ["cd", str(sb.repo)]
    assert trainer(r.stdout) and commands(r.stdout)[-1][0] == "python3"  # no .venv in the sandbox
    assert_ran_nothing(sb, r.stdout)


def test_local_without_nvidia_smi_at_all(sb):
    (sb.bin / "nvidia-smi").unlink()
    if shutil.which("nvidia-smi", path=os.environ.get("PATH")):
        pytest.skip("this machine has a real nvidia-smi")
    assert trainer(sb.run("local.sh", "--dry-run").stdout)[:2] == ["rollout=cpu", "learner=cpu"]


def test_local_uses_the_project_venv():
    if not (ROOT / ".venv/bin/python").exists():
        pytest.skip("no .venv in this checkout")
    r = subprocess.run(["bash", str(LAUNCH / "local.sh"), "--dry-run"], capture_output=True, text=True,
                       env={**os.environ, "OPCD_NUM_GPUS": "0"}, check=True)
    assert commands(r.stdout)[-1][:3] == [str(ROOT / ".venv/bin/python"), "-m", "opcd.train"]


@pytest.mark.parametrize("n,expected", [
    (1, ["rollout.num_workers=1", "rollout.num_gpus=0.4", "rollout.gpu_memory_utilization=0.3",
         "teacher.num_gpus=0.3", "learner.num_gpus=0.3"]),
    (2, ["rollout.num_workers=1", "teacher.num_gpus=0.5", "learner.num_gpus=0.5"]),
    (4, ["rollout.num_workers=2", "teacher.num_gpus=1", "learner.num_gpus=1"]),
    (8, ["rollout.num_workers=6", "teacher.num_gpus=1", "learner.num_gpus=1"]),
])
def test_local_with_gpus_uses_cuda_and_a_placement_that_fits(sb, n, expected):
    sb.gpus(n)
    r = sb.run("local.sh", "--dry-run", "steps=5")
    argv = trainer(r.stdout)
    assert argv == ["rollout=cuda", "learner=cuda", *expected, "steps=5"]
    assert f"# {n} GPU(s) found" in r.stdout
    cfg = compose(argv)
    # Ray must be able to place every actor: the GPU requests fit in n GPUs.
    want = (cfg.rollout.num_workers * cfg.rollout.num_gpus * cfg.rollout.tensor_parallel_size
            + cfg.teacher.num_gpus + cfg.learner.num_ranks * cfg.learner.num_gpus)
    assert want <= n + 1e-9 and cfg.rollout.engine == "vllm_cuda" and cfg.learner.backend == "nccl"
    assert_ran_nothing(sb, r.stdout)


def test_local_gpu_count_follows_cuda_visible_devices_and_opcd_num_gpus(sb):
    sb.gpus(8)
    assert "rollout.num_workers=1" in trainer(sb.run("local.sh", "--dry-run", env={"CUDA_VISIBLE_DEVICES": "3"}).stdout)
    assert trainer(sb.run("local.sh", "--dry-run", env={"CUDA_VISIBLE_DEVICES": ""}).stdout)[0] == "rollout=cpu"
    assert trainer(sb.run("local.sh", "--dry-run", env={"OPCD_NUM_GPUS": "0"}).stdout)[0] == "rollout=cpu"


def test_local_user_overrides_win(sb):
    sb.gpus(4)
    argv = trainer(sb.run("local.sh", "--dry-run", "rollout=cpu", "rollout.num_workers=3", "learner.num_ranks=2",
                          "rollout.tensor_parallel_size=1").stdout)
    assert "rollout=cuda" not in argv and argv.count("rollout=cpu") == 1
    assert [a for a in argv if a.startswith("rollout.num_workers=")] == ["rollout.num_workers=3"]


def test_local_tensor_parallel_and_ranks_shrink_the_engine_count(sb):
    sb.gpus(8)
    argv = trainer(sb.run("local.sh", "--dry-run", "rollout.tensor_parallel_size=2", "learner.num_ranks=3").stdout)
    assert "rollout.num_workers=2" in argv  # (8 - 1 teacher - 3 ranks) // 2
    sb.gpus(3)
    r = sb.run("local.sh", "--dry-run", "learner.num_ranks=2", "rollout.tensor_parallel_size=2", check=False)
    assert r.returncode != 0 and "set rollout.num_workers" in r.stderr


def test_local_hydra_flags_go_before_overrides(sb):
    # Hydra's argparse rejects overrides after a flag: `train a=1 -m b=2` fails.
    argv = trainer(sb.run("local.sh", "algo.lr=1e-6,5e-6", "-m", "--cfg", "job", "--dry-run", "steps=2").stdout)
    assert argv == ["-m", "--cfg", "job", "rollout=cpu", "learner=cpu", "algo.lr=1e-6,5e-6", "steps=2"]


# --- ray_cluster.sh ----------------------------------------------------------------------------
def test_ray_cluster_starts_a_head_and_submits(sb):
    r = sb.run("ray_cluster.sh", "--dry-run", "steps=3", "algo=opcd_nca", env={"RAY_HEAD_IP": "10.0.0.1"})
    cmds = commands(r.stdout)
    assert ["ray", "start", "--head", "--node-ip-address=10.0.0.1", "--port=6379"] in cmds
    assert "# join each worker machine with:" in r.stdout and "ray start --address=10.0.0.1:6379" in r.stdout
    assert ["export", "RAY_ADDRESS=10.0.0.1:6379"] in cmds
    submit = next(c for c in cmds if c[:3] == ["ray", "job", "submit"])
    assert submit[3:8] == ["--working-dir", ".", "--", "python", "-m"]
    argv = trainer(r.stdout)
    assert argv[0] == "ray_address=auto" and argv[-2:] == ["steps=3", "algo=opcd_nca"]
    assert "rollout=cuda" in argv and "learner=cuda" in argv
    # Outputs go to the repository, not into the job's temporary copy of it.
    assert f"hydra.run.dir={sb.repo}/outputs/${{experiment}}/${{now:%Y-%m-%d_%H-%M-%S}}" in argv
    assert not any("ray_wait" in " ".join(c) for c in cmds)  # nobody to wait for
    assert cmds.index(["cd", str(sb.repo)]) < cmds.index(submit)
    assert_ran_nothing(sb, r.stdout)
    cfg = compose(argv)
    assert cfg.ray_address == "auto" and cfg.hydra.run.dir.startswith(str(sb.repo / "outputs" / "toy_opcd"))


def test_ray_cluster_starts_workers_over_ssh_and_waits(sb):
    env = {"RAY_HEAD_IP": "10.0.0.1", "HOSTS": "gpu2,gpu3", "OPCD_NUM_GPUS": "16", "RAY_PORT": "7000"}
    r = sb.run("ray_cluster.sh", "--dry-run", "-m", "algo.lr=1e-6,5e-6", env=env)
    cmds = commands(r.stdout)
    ssh = [c for c in cmds if c[0] == "ssh"]
    assert [c[-2] for c in ssh] == ["gpu2", "gpu3"]
    assert all(c[-1] == f"cd {sb.repo} && ray start --address=10.0.0.1:7000" for c in ssh)
    wait = next(c for c in cmds if "launch/ray_wait.py" in c)
    assert wait[wait.index("--nodes") + 1] == "3" and wait[wait.index("--gpus") + 1] == "16"
    argv = trainer(r.stdout)
    assert argv[0] == "-m" and argv[1] == "ray_address=auto" and argv[-1] == "algo.lr=1e-6,5e-6"
    assert "rollout.num_workers=14" in argv and any(a.startswith(f"hydra.sweep.dir={sb.repo}/multirun/") for a in argv)
    assert cmds.index(ssh[-1]) < cmds.index(wait) < cmds.index(next(c for c in cmds if "opcd.train" in c))
    assert_ran_nothing(sb, r.stdout)


def test_ray_cluster_and_slurm_turn_on_token_auth_when_a_token_exists(sb):
    # Ray enables token auth on a head started where ~/.ray/auth_token exists; clients given an
    # explicit address (workers, `ray job submit`, ray_wait.py) must then set RAY_AUTH_MODE=token.
    env = {"RAY_HEAD_IP": "10.0.0.1", "HOSTS": "gpu2"}
    assert "RAY_AUTH_MODE" not in sb.run("ray_cluster.sh", "--dry-run", env=env).stdout
    (sb.home / ".ray").mkdir()
    (sb.home / ".ray" / "auth_token").write_text("")
    cmds = commands(sb.run("ray_cluster.sh", "--dry-run", env=env).stdout)
    auth = cmds.index(["export", "RAY_AUTH_MODE=token"])
    assert auth < next(i for i, c in enumerate(cmds) if c[:2] == ["ray", "start"])
    assert "export RAY_AUTH_MODE=token && ray start --address=10.0.0.1:6379" in next(c for c in cmds if c[0] == "ssh")[-1]
    assert ["export", "RAY_AUTH_MODE=token"] in commands(sb.run("slurm.sbatch", "--dry-run").stdout)
    # An explicit choice is kept.
    assert "RAY_AUTH_MODE" not in sb.run("ray_cluster.sh", "--dry-run", env={**env, "RAY_AUTH_MODE": "disabled"}).stdout


def test_ray_cluster_attaches_when_ray_address_is_set(sb):
    r = sb.run("ray_cluster.sh", "--dry-run", "hydra.run.dir=/data/run1",
               env={"RAY_ADDRESS": "10.0.0.5:6379", "OPCD_DEVICE": "cpu"})
    assert "ray start" not in r.stdout and "ssh" not in r.stdout
    argv = trainer(r.stdout)
    assert argv == ["ray_address=auto", "rollout=cpu", "learner=cpu", "hydra.run.dir=/data/run1"]
    assert_ran_nothing(sb, r.stdout)


# --- slurm.sbatch ------------------------------------------------------------------------------
def test_slurm_header():
    text = (LAUNCH / "slurm.sbatch").read_text()
    header = [line for line in text.splitlines() if line.startswith("#SBATCH")]
    for opt in ["--nodes=", "--gpus-per-node=", "--ntasks-per-node=1", "--cpus-per-task=", "--time="]:
        assert any(line.startswith(f"#SBATCH {opt}") for line in header), opt
    # sbatch stops at the first command: every #SBATCH line must come before `set -euo pipefail`.
    lines = text.splitlines()
    last_sbatch = max(i for i, line in enumerate(lines) if line.startswith("#SBATCH"))
    assert all(not line.strip() or line.startswith("#") for line in lines[:last_sbatch])


def test_slurm_brings_up_ray_then_trains_on_the_head(sb):
    env = {"SLURM_JOB_NODELIST": "node[01-03]", "SLURM_GPUS_PER_NODE": "h100:4", "SLURM_CPUS_PER_TASK": "16"}
    r = sb.run("slurm.sbatch", "--dry-run", "steps=7", "model=toy", env=env)
    cmds = commands(r.stdout)
    srun = [c for c in cmds if c[0] == "srun"]
    assert srun[0] == ["srun", "--nodes=1", "--ntasks=1", "-w", "node01", "hostname", "--ip-address"]
    assert srun[1] == ["srun", "--nodes=1", "--ntasks=1", "-w", "node01", "ray", "start", "--head",
                       "--node-ip-address=node01", "--port=6379", "--num-gpus=4", "--num-cpus=16", "--block"]
    for node, c in zip(["node02", "node03"], srun[2:]):
        assert c == ["srun", "--nodes=1", "--ntasks=1", "-w", node, "ray", "start", "--address=node01:6379",
                     "--num-gpus=4", "--num-cpus=16", "--block"]
    assert "--block &" in r.stdout  # the Ray node processes run in the background
    waits = [c for c in cmds if "launch/ray_wait.py" in c]
    assert waits[-1][waits[-1].index("--nodes") + 1] == "3" and waits[-1][waits[-1].index("--gpus") + 1] == "12"
    argv = trainer(r.stdout)
    assert argv[0] == "ray_address=node01:6379" and argv[-2:] == ["steps=7", "model=toy"]
    assert argv[1:3] == ["rollout=cuda", "learner=cuda"] and "rollout.num_workers=10" in argv
    assert cmds.index(waits[-1]) < cmds.index(next(c for c in cmds if "opcd.train" in c))
    assert_ran_nothing(sb, r.stdout)
    assert compose(argv).ray_address == "node01:6379"


def test_slurm_dry_run_outside_slurm_defaults_and_head_ip(sb):
    r = sb.run("slurm.sbatch", "--dry-run", env={"RAY_HEAD_IP": "10.1.1.1"})
    assert "SLURM_JOB_NODELIST=node[01-02] assumed" in r.stdout
    assert "hostname --ip-address" not in r.stdout  # RAY_HEAD_IP given: no lookup
    assert trainer(r.stdout)[0] == "ray_address=10.1.1.1:6379"
    assert "--num-gpus=8" in r.stdout  # from the #SBATCH header
    assert_ran_nothing(sb, r.stdout)


def test_slurm_uses_scontrol_when_present(sb):
    _write_tool(sb.bin / "scontrol", 'printf "alpha\\nbeta\\n"\n')  # `scontrol show hostnames` is a lookup
    r = sb.run("slurm.sbatch", "--dry-run", env={"SLURM_JOB_NODELIST": "whatever[1-2]", "OPCD_DEVICE": "cpu"})
    assert "-w alpha ray start --head" in r.stdout and "-w beta ray start --address=alpha:6379" in r.stdout
    assert trainer(r.stdout)[:3] == ["ray_address=alpha:6379", "rollout=cpu", "learner=cpu"]


def test_slurm_refuses_to_run_outside_slurm(sb):
    r = sb.run("slurm.sbatch", "steps=1", check=False)
    assert r.returncode != 0 and "SLURM_JOB_NODELIST" in r.stderr
    assert not sb.calls.exists()


# --- nodelist.py -------------------------------------------------------------------------------
def _nodelist():
    spec = importlib.util.spec_from_file_location("nodelist", LAUNCH / "nodelist.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("nodelist,hosts", [
    ("node01", ["node01"]),
    ("node[01-03]", ["node01", "node02", "node03"]),
    ("node[08-10,15]", ["node08", "node09", "node10", "node15"]),
    ("gpu[1-2],cpu-a7", ["gpu1", "gpu2", "cpu-a7"]),
    ("r[1-2]n[08-09]", ["r1n08", "r1n09", "r2n08", "r2n09"]),
])
def test_nodelist_expansion(nodelist, hosts):
    assert _nodelist().expand(nodelist) == hosts


# --- ray_wait.py -------------------------------------------------------------------------------
def test_ray_wait_probes_the_port_before_ray_init():
    import socket

    spec = importlib.util.spec_from_file_location("ray_wait", LAUNCH / "ray_wait.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen()
        port = srv.getsockname()[1]
        assert mod.port_open(f"127.0.0.1:{port}")
    assert not mod.port_open(f"127.0.0.1:{port}", timeout=1)  # closed again: ray.init would block for minutes
    assert mod.port_open("auto")
