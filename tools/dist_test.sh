#!/usr/bin/env bash
# Copyright (c) mmbackbones contributors. Licensed under the Apache License, Version 2.0.
#
# Distributed testing with torchrun.
#
#   tools/dist_test.sh CONFIG CHECKPOINT NPROC [test.py arguments...]
#
# Environment overrides (see tools/torchrun.sh): NNODES NODE_RANK MASTER_ADDR PORT PYTHON
set -euo pipefail

[ "$#" -ge 3 ] || { echo "usage: $0 CONFIG CHECKPOINT NPROC [test.py arguments...]" >&2; exit 2; }
CONFIG=$1
CHECKPOINT=$2
NPROC=$3
shift 3
TOOLS="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
exec bash "$TOOLS/torchrun.sh" "$NPROC" "$TOOLS/test.py" "$CONFIG" "$CHECKPOINT" --launcher pytorch "$@"
