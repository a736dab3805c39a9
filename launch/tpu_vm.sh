#!/usr/bin/env bash
# Train on a Cloud TPU VM pod slice: create the slice, copy this checkout (its committed
# state) to every worker, install, then run the same command on all workers with
# --distributed (on Cloud TPU JAX finds the coordinator, the process count and each worker's
# index itself). The workdir and the tfds data_dir live in a GCS bucket that every worker
# reads and writes.
#
#   PROJECT=my-project ZONE=us-central2-b TPU_NAME=ddpm ACCELERATOR=v4-32 \
#   BUCKET=gs://my-bucket bash launch/tpu_vm.sh configs/cifar10_ddpm.py [--config.field=value ...]
#
# Prepare the dataset in the bucket once (tfds needs TensorFlow for that step only):
#   tfds build cifar10 --data_dir="$BUCKET/tensorflow_datasets" --file_format=array_record
# Delete the slice afterwards: gcloud compute tpus tpu-vm delete "$TPU_NAME" --zone="$ZONE"
set -euo pipefail
CONFIG=${1:?usage: launch/tpu_vm.sh CONFIG [--config.field=value ...]}
shift
: "${PROJECT:?set PROJECT}" "${ZONE:?set ZONE}" "${BUCKET:?set BUCKET (gs://...)}"
TPU_NAME=${TPU_NAME:-ddpm-jax}
ACCELERATOR=${ACCELERATOR:-v4-32}
RUNTIME=${RUNTIME:-tpu-ubuntu2204-base}
RUN=${RUN:-$(basename "$CONFIG" .py)}
WORKDIR="$BUCKET/runs/$RUN"
DATA_DIR="$BUCKET/tensorflow_datasets"

tpu() { gcloud compute tpus tpu-vm "$@" --project="$PROJECT" --zone="$ZONE"; }

if ! tpu describe "$TPU_NAME" >/dev/null 2>&1; then
  tpu create "$TPU_NAME" --accelerator-type="$ACCELERATOR" --version="$RUNTIME"
fi
# The committed state of this checkout, unpacked on every worker.
cd "$(dirname "$0")/.."
ARCHIVE=$(mktemp --suffix=.tar.gz)
git archive --format=tar.gz --prefix=ddpm_jax/ HEAD -o "$ARCHIVE"
tpu scp --worker=all "$ARCHIVE" "$TPU_NAME":~/ddpm_jax.tar.gz
tpu ssh "$TPU_NAME" --worker=all --command="rm -rf ~/ddpm_jax && tar xzf ~/ddpm_jax.tar.gz -C ~ && python3 -m pip install -q 'jax[tpu]' gcsfs -e ~/ddpm_jax"
# Every worker runs the same command; only worker 0 writes logs, samples and results.
tpu ssh "$TPU_NAME" --worker=all --command="cd ~/ddpm_jax && python3 -m ddpm_jax.main --config=$CONFIG --workdir=$WORKDIR --config.data.data_dir=$DATA_DIR --distributed $*"
