"""One run per output folder, and a new run never mixes with (or deletes) an old one.

**The lock.** A run holds ``<output_dir>/.opcd.lock`` (JSON: pid, host, start time, and the boot id and
kernel start time of the process, which tell a live holder from a dead one whose pid was reused). A
second run in the same folder is refused at once, naming the holder. A lock left by a run that was
killed (its process is gone, on this host) is taken over with one line. Taking or checking the lock
happens under ``flock`` on the folder itself, so two runs starting together cannot both win.

**The fresh-run rule** (:func:`start_action`, pure). A folder "holds a run" when it has checkpoints or
logs (``checkpoints/``, ``metrics.jsonl``, ``prompts.jsonl``). Starting a new run there (``resume=none``)
is refused unless ``overwrite=true``, which moves the old run to ``previous-<time>/`` inside the
folder: nothing is ever deleted. ``resume=auto`` continues the run when it has a checkpoint; when it
has logs but no checkpoint yet (killed before its first one), those logs are moved aside the same way
and the run starts at step 0, so the new logs do not mix with the old.
"""
from __future__ import annotations

import fcntl
import json
import os
import secrets
import shutil
import socket
import time
from contextlib import contextmanager
from pathlib import Path

LOCK = ".opcd.lock"
RUN_LOGS = ("metrics.jsonl", "prompts.jsonl")
PREVIOUS = "previous-"
KEEP_IN_PLACE = (LOCK, ".hydra")  # this run's lock, and Hydra's record of this run's config (already rewritten)


class RunDirError(ValueError):
    """The output folder cannot be used as asked; the message is one line with the way out."""


# ----------------------------------------------------------------------------------------- the lock
def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _proc_start(pid: int) -> str | None:
    """Kernel start time (clock ticks since boot) of ``pid``, or None where /proc cannot tell."""
    stat = _read(Path(f"/proc/{pid}/stat"))
    return stat.rsplit(")", 1)[1].split()[19] if stat else None  # field 22; fields after ")" start at 3


def _boot_id() -> str | None:
    return _read(Path("/proc/sys/kernel/random/boot_id"))


def holder_alive(holder: dict) -> bool:
    """Whether the process described by a lock (on this host) still runs: same boot, pid present, and
    (where /proc tells) the same process start time, so a reused pid does not count as the holder."""
    if holder.get("boot_id") and _boot_id() and holder["boot_id"] != _boot_id():
        return False  # the machine rebooted since
    pid = int(holder["pid"])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    started = _proc_start(pid)
    return not (holder.get("proc_start") and started and started != holder["proc_start"])


@contextmanager
def _folder_guard(folder: Path):
    """Exclusive flock on the folder for the check-and-write of the lock (a no-op where unsupported)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:
            pass  # e.g. a file system without flock: the check-and-write is then merely very quick
        yield
    finally:
        os.close(fd)  # releases the flock


class RunLock:
    """The lock a run holds on its output folder; :meth:`release` removes it if it is still ours."""

    def __init__(self, path: Path, info: dict):
        self.path, self.info = path, info

    def release(self) -> None:
        try:
            if json.loads(self.path.read_text()).get("token") == self.info["token"]:
                self.path.unlink()
        except (OSError, ValueError):
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()


def acquire(output_dir, report=None) -> RunLock:
    """Lock ``output_dir`` for this process; RunDirError (one line naming the holder) when another
    live run holds it. A lock of a dead process on this host is taken over (reported in one line)."""
    report = report or (lambda line: print(line, flush=True))
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / LOCK
    pid = os.getpid()
    me = {"pid": pid, "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
          "boot_id": _boot_id(), "proc_start": _proc_start(pid), "token": secrets.token_hex(8)}
    with _folder_guard(out):
        text = _read(path)
        if text is not None:
            try:
                holder = json.loads(text)
                who = f"pid {holder['pid']} on {holder['host']}, started {holder['started']}"
            except (ValueError, KeyError, TypeError):
                holder, who = None, None
            if holder is None:
                report(f"[opcd] taking over the unreadable lock file {path}")
            elif holder["host"] != me["host"]:
                raise RunDirError(f"{out} is locked by another opcd run ({who}); stop that run or use another "
                                  f"folder (hydra.run.dir=<new folder>); if it is gone, delete {path}")
            elif holder_alive(holder):
                raise RunDirError(f"{out} is in use by another opcd run ({who}); wait for it to end, stop it "
                                  f"(kill {holder['pid']}), or use another folder (hydra.run.dir=<new folder>)")
            else:
                report(f"[opcd] taking over the lock of {out}: its holder ({who}) is no longer running")
        tmp = out / f"{LOCK}.{pid}.tmp"
        tmp.write_text(json.dumps(me))
        tmp.replace(path)  # atomic: a reader sees the old lock or the new one, never half of one
    return RunLock(path, me)


# ---------------------------------------------------------------------------------- fresh-run rule
def run_contents(output_dir) -> list[str]:
    """What in ``output_dir`` belongs to an earlier run: its checkpoints and logs (empty: nothing)."""
    out = Path(output_dir)
    found = []
    ckpts = out / "checkpoints"
    if ckpts.is_dir() and any(ckpts.iterdir()):
        steps = sorted((p.name for p in ckpts.iterdir() if p.name.startswith("step_")),
                       key=lambda n: (len(n), n))
        found.append("checkpoints/" + (f" ({', '.join(steps)})" if steps else ""))
    found += [name for name in RUN_LOGS if (out / name).exists()]
    return found


def has_checkpoint(output_dir) -> bool:
    from opcd.checkpoint import complete_checkpoints

    return bool(complete_checkpoints(output_dir))


def start_action(contents: list[str], has_ckpt: bool, resume: str, resume_here: bool, overwrite: bool,
                 where: str) -> tuple[str, str]:
    """What to do before a run starts in folder ``where``: ``("start", "")``, ``("move_aside", why)`` or
    ``("refuse", one-line message)``.

    ``contents``: :func:`run_contents`; ``has_ckpt``: a complete checkpoint exists there; ``resume``: the
    resume setting; ``resume_here``: ``resume`` names a checkpoint in this folder's ``checkpoints/``.
    """
    resume = resume or "none"
    if overwrite and resume == "auto":
        return "refuse", "overwrite=true starts a new run and cannot be combined with resume=auto; drop one of them"
    if overwrite and resume_here:
        return "refuse", f"overwrite=true would move resume={resume} aside with the old run; drop overwrite=true"
    if not contents or resume_here or (resume == "auto" and has_ckpt):
        return "start", ""
    aside = f"the old run is moved to {where}/{PREVIOUS}<time>/, nothing is deleted"
    if overwrite:
        return "move_aside", "overwrite=true"
    if resume == "auto":  # logs of a run killed before its first checkpoint: nothing to resume from
        return "move_aside", "resume=auto: no checkpoint to resume from yet"
    if resume == "none":
        return "refuse", (f"{where} already holds a run ({'; '.join(contents)}); to continue it pass resume=auto; "
                          f"to start a new run use another folder (hydra.run.dir=<new folder>) or overwrite=true ({aside})")
    return "refuse", (f"{where} already holds another run ({'; '.join(contents)}); resuming {resume} here would mix "
                      f"the two: use another folder (hydra.run.dir=<new folder>) or overwrite=true ({aside})")


def move_aside(output_dir) -> Path:
    """Move every earlier-run entry of ``output_dir`` into a new ``previous-<time>/`` sub-folder.

    Kept in place: this run's lock, ``.hydra/`` (Hydra already rewrote it for this run) and earlier
    ``previous-*`` folders. A ``*.log`` file is copied, then emptied: Hydra's logger of this run keeps
    appending to it.
    """
    out = Path(output_dir)
    stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
    dest, n = out / f"{PREVIOUS}{stamp}", 1
    while dest.exists():
        n += 1
        dest = out / f"{PREVIOUS}{stamp}-{n}"
    dest.mkdir()
    for entry in sorted(out.iterdir()):
        if entry == dest or entry.name in KEEP_IN_PLACE or entry.name.startswith((PREVIOUS, LOCK)):
            continue
        if entry.is_file() and entry.suffix == ".log":
            shutil.copy2(entry, dest / entry.name)
            with open(entry, "r+") as f:
                f.truncate(0)
        else:
            entry.rename(dest / entry.name)
    return dest


def _inside(path: str, folder: Path) -> bool:
    try:
        Path(path).resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False


def prepare(output_dir, resume: str, overwrite: bool, report=None) -> None:
    """Apply :func:`start_action` to ``output_dir`` (call it while holding the lock)."""
    report = report or (lambda line: print(line, flush=True))
    out = Path(output_dir)
    resume = str(resume or "none")
    here = resume not in ("none", "auto") and _inside(resume, out / "checkpoints")
    action, why = start_action(run_contents(out), has_checkpoint(out), resume, here, bool(overwrite), str(out))
    if action == "refuse":
        raise RunDirError(why)
    if action == "move_aside":
        contents = "; ".join(run_contents(out))
        dest = move_aside(out)
        report(f"[opcd] {why}: moved the earlier run ({contents}) to {dest}; starting a new run at step 0")
