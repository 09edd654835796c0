#!/usr/bin/env bash
# The README's main-job command: sets up .venv if needed, then runs the embedded CPU default.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup_venv.sh"
cd "$ROOT"
exec "$ROOT/.venv/bin/python" examples/estimator_demo.py "$@"
