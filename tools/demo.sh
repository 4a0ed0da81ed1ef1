#!/usr/bin/env bash
# Set up (idempotent) and run the embedded demo: synthetic COCO data, train, evaluate, draw.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$REPO/tools/setup.sh"
VENV="${MMB_VENV:-$REPO/.venv}"
cd "$REPO"
exec "$VENV/bin/python" tools/demo.py "$@"
