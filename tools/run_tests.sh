#!/usr/bin/env bash
# Set up (idempotent), lint and run the whole test suite: the README's test command; .ci/run
# calls it.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$REPO/tools/setup.sh"
VENV="${MMB_VENV:-$REPO/.venv}"
cd "$REPO"
# Tests are CPU-only and sized for 2 cores: two pytest-xdist workers of one thread each (most
# tests are small tensors, where two processes beat two threads). --dist loadfile keeps a file's
# tests, and so its module-scoped fixtures (trained detectors, sweeps, the tool servers of
# tests/toolserver.py, parsed configs), in one worker: load / worksteal would split a file and build
# those twice. Files go out in collection order as a worker frees up, so the biggest
# (tests/configs) starts first.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
# torch.compile (inductor) keeps its generated kernels here, so reruns skip the C++ builds.
export TORCHINDUCTOR_CACHE_DIR="${TORCHINDUCTOR_CACHE_DIR:-$HOME/.cache/mmbackbones/torchinductor}"
# Lint first (configuration in pyproject.toml); a finding fails the run before any test runs.
"$VENV/bin/python" -m ruff check "$REPO"
exec "$VENV/bin/python" -m pytest -n "${MMB_TEST_WORKERS:-2}" --dist loadfile "$@"
