#!/usr/bin/env bash
# Copyright (c) mmbackbones contributors. Licensed under the Apache License, Version 2.0.
#
# The torchrun invocation shared by dist_train.sh and dist_test.sh:
#   tools/torchrun.sh NPROC SCRIPT [script arguments...]
# torchrun is started as "$PYTHON -m torch.distributed.run", the module behind the torchrun
# command, so the interpreter of your environment is used.
# Environment overrides (multi-node: run once per node with the same MASTER_ADDR/PORT):
#   NNODES=1  NODE_RANK=0  MASTER_ADDR=127.0.0.1  PORT=29500  PYTHON=python
set -euo pipefail

NPROC=$1
shift
case "$NPROC" in
  ''|*[!0-9]*|0) echo "$0: NPROC must be a positive integer (processes per node), got '$NPROC'" >&2; exit 2 ;;
esac
TOOLS="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

PYTHONPATH="$TOOLS/..${PYTHONPATH:+:$PYTHONPATH}" \
exec "${PYTHON:-python}" -m torch.distributed.run \
    --nnodes="${NNODES:-1}" \
    --node_rank="${NODE_RANK:-0}" \
    --master_addr="${MASTER_ADDR:-127.0.0.1}" \
    --master_port="${PORT:-29500}" \
    --nproc_per_node="$NPROC" \
    "$@"
