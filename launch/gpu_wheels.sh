#!/usr/bin/env bash
# Download, on a machine WITH network access, the wheels that launch/gpu_check.sh installs on a GPU
# machine that has torch and transformers but no package registry (the lent H200 image: Python 3.12,
# x86-64). They land in .whl/ (git-ignored), which travels with the working tree; gpu_check.sh
# installs them with `pip install --no-index --no-deps --target /tmp/site .whl/*.whl`.
#
#   bash launch/gpu_wheels.sh          # fills .whl/ and prints the total size (must stay well under 64 MiB)
#
# What is carried, and why:
#   deepspeed (the version installed here), hydra-core, omegaconf, antlr4-python3-runtime: opcd's own
#   dependencies that image lacks; hjson, pydantic, pydantic-core, annotated-types, typing-inspection:
#   deepspeed's requirements that image lacks; typing-extensions: pydantic needs a recent one (that
#   image has some version of it). Everything else the carried wheels require (torch, numpy, packaging,
#   psutil, py-cpuinfo, tqdm, einops, msgpack, ninja, PyYAML) is in that image: the check at the end
#   reads every wheel's Requires-Dist and fails if a requirement is neither carried nor listed there.
# deepspeed and antlr4-python3-runtime are published as source only: those two are built here into
# pure-Python (py3-none-any) wheels; every other wheel is downloaded for CPython 3.12 on manylinux.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
[[ -x "$PY" ]] || PY=python3
DEST="$ROOT/.whl"
PYVER="${GPU_PYTHON_VERSION:-3.12}"

# name==version of what is installed here, so the GPU machine runs what CI tests (pure-Python pins).
pin() { "$PY" -c "import importlib.metadata as m, sys; print(sys.argv[1] + '==' + m.version(sys.argv[1]))" "$1"; }
DS_PIN="$(pin deepspeed)"
BINARY=("$(pin hydra-core)" "$(pin omegaconf)" "$(pin hjson)" "$(pin pydantic)" "$(pin pydantic-core)"
        "$(pin annotated-types)" "$(pin typing-inspection)" "$(pin typing-extensions)")
SOURCE_ONLY=("$DS_PIN" "$(pin antlr4-python3-runtime)")
# Requirements the image already satisfies (KINDS.md's package list for nvidia-h200), normalised names.
IMAGE_HAS="torch numpy packaging psutil py-cpuinfo tqdm einops msgpack ninja pyyaml typing-extensions"

# pip, quiet; drops its notes about local index folders missing on some machines.
pip_q() { "$PY" -m pip "$@" -q --disable-pip-version-check 2> >(grep -v "it is neither a file nor a directory" >&2); }
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
# The device README's download command: CPython 3.12 wheels for the manylinux platforms that image accepts.
pip_q download --no-deps --only-binary=:all: --python-version "$PYVER" \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
  -d "$TMP" "${BINARY[@]}"
# Source-only projects: build them here (pip reuses its wheel cache); they must come out pure Python.
pip_q wheel --no-deps -w "$TMP" "${SOURCE_ONLY[@]}"
for w in "$TMP"/*.whl; do
  case "$(basename "$w")" in
    deepspeed-*|antlr4_python3_runtime-*|antlr4-python3-runtime-*)
      [[ "$w" == *-py3-none-any.whl || "$w" == *-py2.py3-none-any.whl ]] \
        || { echo "gpu_wheels: $(basename "$w") is not pure Python: it would not install on the GPU machine" >&2; exit 1; } ;;
  esac
done

# One version of each project in .whl/ (two stop the whole install): replace what an earlier run left.
mkdir -p "$DEST"
project() { basename "$1" | cut -d- -f1 | tr 'A-Z-.' 'a-z__'; }
for w in "$TMP"/*.whl; do
  p="$(project "$w")"
  for old in "$DEST"/*.whl; do
    [[ -e "$old" && "$(project "$old")" == "$p" ]] && rm -f "$old"
  done
  mv "$w" "$DEST/"
done

# Every non-extra requirement of a carried wheel must be carried too or be in the image.
"$PY" - "$DEST" "$IMAGE_HAS" "$PYVER" <<'PY'
import re, sys, zipfile
from pathlib import Path

from packaging.requirements import Requirement

dest, image, pyver = Path(sys.argv[1]), set(sys.argv[2].split()), sys.argv[3]
norm = lambda s: re.sub(r"[-_.]+", "-", s).lower()
# The GPU machine's marker environment: requirements for other Pythons or platforms do not apply there.
env = {"python_version": pyver, "python_full_version": pyver + ".0", "sys_platform": "linux", "os_name": "posix",
       "platform_system": "Linux", "platform_machine": "x86_64", "implementation_name": "cpython",
       "platform_python_implementation": "CPython", "extra": ""}
carried = {norm(w.name.split("-")[0]) for w in dest.glob("*.whl")}
missing = []
for w in sorted(dest.glob("*.whl")):
    with zipfile.ZipFile(w) as z:
        meta = z.read(next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))).decode()
    for line in meta.splitlines():
        if line.startswith("Requires-Dist:"):
            req = Requirement(line.split(":", 1)[1].strip())
            if req.marker is not None and not req.marker.evaluate(env):
                continue  # an extra, or another Python / platform
            if norm(req.name) not in carried and norm(req.name) not in image:
                missing.append(f"{w.name} needs {req}")
if missing:
    sys.exit("gpu_wheels: neither carried nor in the GPU image:\n  " + "\n  ".join(missing))
PY

ls -1 "$DEST"
TOTAL=$(du -cb "$DEST"/*.whl | tail -1 | cut -f1)
echo "gpu_wheels: $(ls "$DEST"/*.whl | wc -l) wheels in .whl/, $(( TOTAL / 1024 )) KiB in total ($(( TOTAL * 100 / (64 * 1024 * 1024) ))% of the 64 MiB that travels)"
(( TOTAL < 32 * 1024 * 1024 )) || { echo "gpu_wheels: over 32 MiB: leave room for the working tree" >&2; exit 1; }
