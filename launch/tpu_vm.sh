#!/usr/bin/env bash
# Train on a Cloud TPU VM, single- or multi-host. Run this same script on every worker, e.g.
#   gcloud compute tpus tpu-vm ssh NAME --zone ZONE --worker=all \
#       --command "bash ddpm_jax/launch/tpu_vm.sh configs/cifar10_ddpm.py /mnt/runs/cifar10"
# Every host reads its own slice of each global batch. WORKDIR must be a path every host sees
# (NFS or a gcsfuse-mounted bucket); only the first host writes logs and sample grids.
set -euo pipefail
CONFIG=${1:?usage: tpu_vm.sh CONFIG WORKDIR [--config.field=value ...]}
WORKDIR=${2:?usage: tpu_vm.sh CONFIG WORKDIR [--config.field=value ...]}
shift 2
cd "$(dirname "$0")/.."
python3 -m venv .venv
. .venv/bin/activate
pip install -q 'jax[tpu]' .
# On Cloud TPU, jax.distributed.initialize() finds the other hosts (and works on one host).
exec python -m ddpm_jax.main --config "$CONFIG" --workdir "$WORKDIR" --distributed "$@"
