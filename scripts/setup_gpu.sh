#!/usr/bin/env bash
# Installs the GPU stack (Linux x86_64, CUDA 13 driver, Python 3.11 or 3.12) into a virtual environment:
#   1. torch 2.11.0 / torchvision 0.26.0 / torchaudio 2.11.0 (PyPI's default Linux build, CUDA 13.0)
#   2. flash-attn 2.8.3, compiled against that torch (pip --no-build-isolation; needs nvcc 13.x),
#      or a prebuilt wheel you name, or nothing (--no-flash-attn: then train with ATTN_IMPL=sdpa)
#   3. requirements.txt (verl 0.9.1 with vLLM 0.24.0, transformers 5.9.0, ...), then this package (editable)
#
#   bash scripts/setup_gpu.sh [--venv DIR | --no-venv] [--python PY] [--no-flash-attn | --flash-attn-wheel URL|FILE]
#
# --venv DIR (default .venv-gpu; .venv is the CPU stack's), --no-venv installs into PY's environment
# (default python3, e.g. an activated conda env). The flash-attn build honours MAX_JOBS (parallel
# compile jobs; flash-attn picks one per ~9 GB of free RAM otherwise), NVCC_THREADS and
# FLASH_ATTN_CUDA_ARCHS (default "80;90;100;120"; "90" for H100/H200 compiles a quarter of the kernels).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
FLASH_ATTN_VERSION=2.8.3   # what verl 0.9.1's fsdp extra pins (requirements-flash-attn.txt)
TORCH_PINS=(torch==2.11.0 torchvision==0.26.0 torchaudio==2.11.0)

usage() { sed -n '2,13p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }
die() { echo "setup_gpu: $*" >&2; exit 2; }

VENV="$ROOT/.venv-gpu"
PY="${PYTHON:-python3}"
FLASH=build
WHEEL=""
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --venv) [ $# -ge 2 ] || die "--venv needs a directory"; VENV="$2"; shift 2 ;;
    --no-venv) VENV=""; shift ;;
    --python) [ $# -ge 2 ] || die "--python needs an interpreter"; PY="$2"; shift 2 ;;
    --no-flash-attn) FLASH=skip; shift ;;
    --flash-attn-wheel) [ $# -ge 2 ] || die "--flash-attn-wheel needs a URL or file"; FLASH=wheel; WHEEL="$2"; shift 2 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
done
if [ "$FLASH" = wheel ]; then
  case "$(basename "$WHEEL")" in
    flash_attn-${FLASH_ATTN_VERSION}[+-]*.whl) ;;
    *) die "--flash-attn-wheel $WHEEL is not a flash_attn-${FLASH_ATTN_VERSION} wheel (verl 0.9.1 pins ${FLASH_ATTN_VERSION})" ;;
  esac
fi

command -v "$PY" >/dev/null 2>&1 || die "no Python interpreter '$PY' (set --python)"
pyver="$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
case "$pyver" in
  3.11|3.12) ;;
  *) die "Python $pyver: the GPU stack (vLLM 0.24.0, flash-attn builds) is set up for 3.11 or 3.12; pass --python python3.12" ;;
esac
[ "$(uname -s)-$(uname -m)" = "Linux-x86_64" ] || die "the GPU stack is pinned for Linux x86_64, this is $(uname -s)-$(uname -m)"

if [ -n "$VENV" ]; then
  [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
  PY="$VENV/bin/python"
fi
PIP=("$PY" -m pip install --disable-pip-version-check)
step() { echo "[setup_gpu] $*" >&2; }

step "1/4 torch (${TORCH_PINS[*]}) and build tools"
"${PIP[@]}" --upgrade pip
"${PIP[@]}" "${TORCH_PINS[@]}"
"${PIP[@]}" setuptools wheel packaging psutil ninja einops
torch_cuda="$("$PY" -c 'import torch; print(torch.version.cuda or "")')"
[ -n "$torch_cuda" ] || die "the installed torch has no CUDA build (torch.version.cuda is empty); a CPU index in pip's configuration?"
step "torch $("$PY" -c 'import torch; print(torch.__version__)') built with CUDA $torch_cuda"

case "$FLASH" in
  build)
    nvcc="${CUDA_HOME:+$CUDA_HOME/bin/nvcc}"
    [ -n "$nvcc" ] && [ -x "$nvcc" ] || nvcc="$(command -v nvcc || true)"
    [ -n "$nvcc" ] || die "building flash-attn needs the CUDA ${torch_cuda%%.*} toolkit's nvcc (set CUDA_HOME or PATH); or --no-flash-attn, or --flash-attn-wheel URL"
    nvcc_ver="$("$nvcc" --version | sed -n 's/.*release \([0-9][0-9.]*\).*/\1/p')"
    [ "${nvcc_ver%%.*}" = "${torch_cuda%%.*}" ] || die "nvcc $nvcc is CUDA $nvcc_ver, torch is built with CUDA $torch_cuda: the major versions must match (set CUDA_HOME)"
    export CUDA_HOME="$(cd "$(dirname "$nvcc")/.." && pwd)"  # the toolkit of the nvcc just checked
    command -v "${CXX:-c++}" >/dev/null 2>&1 || die "building flash-attn needs a C++ compiler (apt install g++)"
    "$PY" -c 'import os, sys, sysconfig; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
      || die "building flash-attn needs Python's headers (apt install python${pyver}-dev)"
    step "2/4 flash-attn $FLASH_ATTN_VERSION: compiling against torch with nvcc $nvcc_ver (MAX_JOBS=${MAX_JOBS:-auto}, archs ${FLASH_ATTN_CUDA_ARCHS:-80;90;100;120}); tens of minutes to hours"
    # FORCE_BUILD: its setup.py would otherwise try to download a wheel named for CUDA 12 (it maps every
    # CUDA >= 12 to cu12), which does not match a CUDA 13 torch.
    start=$(date +%s)
    FLASH_ATTENTION_FORCE_BUILD=TRUE "${PIP[@]}" --no-build-isolation --no-deps "flash-attn==$FLASH_ATTN_VERSION"
    step "flash-attn built in $(( ($(date +%s) - start) / 60 )) min"
    ;;
  wheel)
    step "2/4 flash-attn from $WHEEL"
    "${PIP[@]}" --no-deps "$WHEEL"
    ;;
  skip)
    step "2/4 flash-attn skipped: run the recipes with ATTN_IMPL=sdpa"
    ;;
esac

step "3/4 requirements.txt"
"${PIP[@]}" -r "$ROOT/requirements.txt"
step "4/4 this package (editable)"
"${PIP[@]}" --no-deps -e "$ROOT"

"$PY" - "$FLASH" "$FLASH_ATTN_VERSION" "${TORCH_PINS[0]#torch==}" <<'EOF'
import importlib.util, sys
import torch
flash, fa_version, torch_version = sys.argv[1:]
if torch.__version__.split("+")[0] != torch_version:
    sys.exit(f"setup_gpu: torch {torch.__version__} was installed over {torch_version}")
if flash != "skip":
    import flash_attn  # an ABI mismatch with torch shows here as an undefined symbol
    if flash_attn.__version__ != fa_version:
        sys.exit(f"setup_gpu: flash-attn {flash_attn.__version__} installed, verl pins {fa_version}")
import verl  # noqa: F401  (loads this package through verl's plugin entry point)
from verl.trainer.ppo.core_algos import get_adv_estimator_fn
get_adv_estimator_fn("rlsd")
import vllm  # noqa: F401
gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
fa = "not installed (ATTN_IMPL=sdpa)" if importlib.util.find_spec("flash_attn") is None else "flash-attn " + fa_version
print(f"[setup_gpu] ok: torch {torch.__version__} (CUDA {torch.version.cuda}), vllm {vllm.__version__}, {fa}, {gpus} GPU(s) visible")
EOF
if [ -n "$VENV" ]; then echo "[setup_gpu] activate with: source $VENV/bin/activate" >&2; fi
