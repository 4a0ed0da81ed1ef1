#!/usr/bin/env bash
# Copyright (c) mmbackbones contributors. Licensed under the Apache License, Version 2.0.
#
# Distributed training with torchrun: one process per GPU, or per CPU worker without CUDA (then
# tools/train.py switches to the gloo backend).
#
#   tools/dist_train.sh CONFIG NPROC [train.py arguments...]
#
# Environment overrides (see tools/torchrun.sh): NNODES NODE_RANK MASTER_ADDR PORT PYTHON
set -euo pipefail

[ "$#" -ge 2 ] || { echo "usage: $0 CONFIG NPROC [train.py arguments...]" >&2; exit 2; }
CONFIG=$1
NPROC=$2
shift 2
TOOLS="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
exec bash "$TOOLS/torchrun.sh" "$NPROC" "$TOOLS/train.py" "$CONFIG" --launcher pytorch "$@"
