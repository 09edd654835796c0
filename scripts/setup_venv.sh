#!/usr/bin/env bash
# Creates (or reuses) .venv at the repository root with the CPU stack and this package installed
# editable. Idempotent: a stamp records the hash of the install inputs; an unchanged stamp means
# nothing to do.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PY="${PYTHON:-python3}"
STAMP="$VENV/.rlsd-verl-installed"
want="$(cat "$ROOT/requirements-cpu.txt" "$ROOT/constraints-cpu.txt" "$ROOT/pyproject.toml" | sha256sum | cut -d' ' -f1)"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && [ -x "$VENV/bin/python" ]; then
  exit 0
fi
echo "[setup] installing the CPU stack into $VENV (first run: about 2-3 minutes)" >&2
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install --quiet --disable-pip-version-check)
# torch first and alone, so the resolver never swaps in another build for a later package.
"${PIP[@]}" -c "$ROOT/constraints-cpu.txt" torch torchvision
"${PIP[@]}" -c "$ROOT/constraints-cpu.txt" -r "$ROOT/requirements-cpu.txt"
"${PIP[@]}" --no-deps -e "$ROOT"
"$VENV/bin/python" -c "import verl; from verl.trainer.ppo.core_algos import get_adv_estimator_fn as g; g('rlsd')"
echo "$want" > "$STAMP"
