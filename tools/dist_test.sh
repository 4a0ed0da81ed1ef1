#!/usr/bin/env bash
# Copyright (c) mmbackbones contributors. Licensed under the Apache License, Version 2.0.
#
# Distributed testing with torchrun ("$PYTHON -m torch.distributed.run").
#
#   tools/dist_test.sh CONFIG CHECKPOINT NPROC [test.py arguments...]
#
# Environment overrides: NNODES=1  NODE_RANK=0  MASTER_ADDR=127.0.0.1  PORT=29500  PYTHON=python
set -euo pipefail

usage() { echo "usage: $0 CONFIG CHECKPOINT NPROC [test.py arguments...]" >&2; exit 2; }
[ "$#" -ge 3 ] || usage
CONFIG=$1
CHECKPOINT=$2
NPROC=$3
shift 3
case "$NPROC" in
  ''|*[!0-9]*|0) echo "$0: NPROC must be a positive integer (processes per node), got '$NPROC'" >&2; exit 2 ;;
esac

NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
PORT=${PORT:-29500}
PYTHON=${PYTHON:-python}
TOOLS="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

PYTHONPATH="$TOOLS/..${PYTHONPATH:+:$PYTHONPATH}" \
exec "$PYTHON" -m torch.distributed.run \
    --nnodes="$NNODES" \
    --node_rank="$NODE_RANK" \
    --master_addr="$MASTER_ADDR" \
    --master_port="$PORT" \
    --nproc_per_node="$NPROC" \
    "$TOOLS/test.py" "$CONFIG" "$CHECKPOINT" --launcher pytorch "$@"
