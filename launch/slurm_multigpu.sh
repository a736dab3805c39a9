#!/usr/bin/env bash
#SBATCH --job-name=ddpm_jax
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=8
#SBATCH --gpus-per-task=1
#SBATCH --cpus-per-task=8
#SBATCH --time=24:00:00
#SBATCH --output=%x-%j.out
# Multi-node GPU training under SLURM, one process per GPU (as the #SBATCH lines above ask:
# 8 tasks per node, one GPU each). For one process per node that drives all its GPUs, use
# --ntasks-per-node=1 --gpus-per-node=8 instead. Under srun, JAX reads SLURM's environment
# (the task count, this task's rank, the first node as coordinator), so --distributed needs
# nothing more; elsewhere set JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID.
#
#   sbatch launch/slurm_multigpu.sh configs/cifar10_ddpm.py /shared/runs/cifar10 [--config.field=value ...]
#
# The workdir must be on a filesystem every node sees (NFS, Lustre, or gs:// with gcsfs);
# training.batch_size is global and must divide over all GPUs of all nodes.
set -euo pipefail
CONFIG=${1:?usage: sbatch launch/slurm_multigpu.sh CONFIG WORKDIR [--config.field=value ...]}
WORKDIR=${2:?usage: sbatch launch/slurm_multigpu.sh CONFIG WORKDIR [--config.field=value ...]}
shift 2
srun --kill-on-bad-exit=1 python -m ddpm_jax.main --config="$CONFIG" --workdir="$WORKDIR" --distributed "$@"
