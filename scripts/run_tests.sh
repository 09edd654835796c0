#!/usr/bin/env bash
# The test command of the README: sets up .venv if needed, then runs the whole suite
# (extra arguments go to pytest, e.g. -m "not e2e" to skip the end-to-end runs).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup_venv.sh" --vllm  # the vLLM rollout tests need its CPU build
cd "$ROOT"
exec "$ROOT/.venv/bin/python" -m pytest -ra "$@"
