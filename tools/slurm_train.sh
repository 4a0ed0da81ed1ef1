#!/usr/bin/env bash
# Copyright (c) mmbackbones contributors. Licensed under the Apache License, Version 2.0.
#
# Training on a Slurm cluster: srun starts one task per GPU and MMEngine reads the Slurm
# environment (--launcher slurm). Needs CUDA; on CPU-only nodes run torchrun inside srun instead.
#
#   tools/slurm_train.sh PARTITION JOB_NAME CONFIG WORK_DIR [train.py arguments...]
#
# Environment overrides: GPUS=8 (total tasks)  GPUS_PER_NODE=8  CPUS_PER_TASK=5  SRUN_ARGS=""
#                        PYTHON=python
set -euo pipefail

usage() { echo "usage: $0 PARTITION JOB_NAME CONFIG WORK_DIR [train.py arguments...]" >&2; exit 2; }
[ "$#" -ge 4 ] || usage
PARTITION=$1
JOB_NAME=$2
CONFIG=$3
WORK_DIR=$4
shift 4

GPUS=${GPUS:-8}
GPUS_PER_NODE=${GPUS_PER_NODE:-$(( GPUS < 8 ? GPUS : 8 ))}
CPUS_PER_TASK=${CPUS_PER_TASK:-5}
SRUN_ARGS=${SRUN_ARGS:-""}
PYTHON=${PYTHON:-python}
TOOLS="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

# SRUN_ARGS is deliberately unquoted: it holds several srun options.
# shellcheck disable=SC2086
PYTHONPATH="$TOOLS/..${PYTHONPATH:+:$PYTHONPATH}" \
srun -p "$PARTITION" \
    --job-name="$JOB_NAME" \
    --gres=gpu:"$GPUS_PER_NODE" \
    --ntasks="$GPUS" \
    --ntasks-per-node="$GPUS_PER_NODE" \
    --cpus-per-task="$CPUS_PER_TASK" \
    --kill-on-bad-exit=1 \
    $SRUN_ARGS \
    "$PYTHON" -u "$TOOLS/train.py" "$CONFIG" --work-dir="$WORK_DIR" --launcher=slurm "$@"
