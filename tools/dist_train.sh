#!/usr/bin/env bash
# Copyright (c) mmbackbones contributors. Licensed under the Apache License, Version 2.0.
#
# Distributed training with torchrun: one process per GPU, or per CPU worker without CUDA (then
# tools/train.py switches to the gloo backend). torchrun is started as
# "$PYTHON -m torch.distributed.run", the module behind the torchrun command, so the interpreter
# of your environment is used.
#
#   tools/dist_train.sh CONFIG NPROC [train.py arguments...]
#
# Environment overrides (multi-node: run once per node with the same MASTER_ADDR/PORT):
#   NNODES=1  NODE_RANK=0  MASTER_ADDR=127.0.0.1  PORT=29500  PYTHON=python
set -euo pipefail

usage() { echo "usage: $0 CONFIG NPROC [train.py arguments...]" >&2; exit 2; }
[ "$#" -ge 2 ] || usage
CONFIG=$1
NPROC=$2
shift 2
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
    "$TOOLS/train.py" "$CONFIG" --launcher pytorch "$@"
