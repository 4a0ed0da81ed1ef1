#!/usr/bin/env bash
# Set up (idempotent) and run the whole test suite: the README's test command; .ci/run calls it.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$REPO/tools/setup.sh"
VENV="${MMB_VENV:-$REPO/.venv}"
cd "$REPO"
# Tests are CPU-only and sized for 2 cores; pin the thread count so timings stay comparable.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
exec "$VENV/bin/python" -m pytest "$@"
