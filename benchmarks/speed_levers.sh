#!/usr/bin/env bash
# The speed issue's levers, each measured alone against the same baseline, as JSON lines
# (benchmarks/throughput.py adds "set" and "xla_flags" to every line). For one GPU:
#
#   bash benchmarks/speed_levers.sh > levers.jsonl
#
# CONFIG and STEPS override the defaults (configs/cifar10_ddpm.py, 50 steps).
set -euo pipefail
cd "$(dirname "$0")/.."
CONFIG=${CONFIG:-configs/cifar10_ddpm.py}
STEPS=${STEPS:-50}

bench() {  # bench [throughput.py options...]; a lever that fails prints a line saying so
  python benchmarks/throughput.py --config "$CONFIG" --steps "$STEPS" "$@" ||
    printf '{"failed": "%s", "xla_flags": "%s"}\n' "$*" "${XLA_FLAGS:-}"
}

# Batch size and compute dtype (the baseline of every lever below: batch 512, bf16).
for batch in 128 256 512 1024; do
  bench --batch "$batch" --dtype bfloat16 --forward_batch 1024
done
bench --batch 512 --dtype float32 --forward_batch 1024
# Fused attention for the 16×16 self-attention (jax.nn.dot_product_attention).
for attention in xla cudnn; do
  bench --batch 512 --dtype bfloat16 --forward_batch 1024 --set model.attention="$attention"
done
# Several steps per dispatch (lax.scan over k batches).
for k in 2 4; do
  bench --batch 512 --dtype bfloat16 --set training.steps_per_dispatch="$k"
done
# Memory levers at the same global batch: k micro-batches accumulated per step, and each
# residual block recomputed in the backward pass (what each costs in img/s).
for k in 2 4; do
  bench --batch 512 --dtype bfloat16 --set training.grad_accum_steps="$k"
done
bench --batch 512 --dtype bfloat16 --set model.remat=True
# XLA GPU flags for convolutions and fusion, one at a time.
for flag in --xla_gpu_enable_triton_gemm=false \
            --xla_gpu_autotune_level=4 \
            --xla_gpu_enable_latency_hiding_scheduler=true \
            --xla_gpu_enable_cudnn_layer_norm=true; do
  XLA_FLAGS="$flag" bench --batch 512 --dtype bfloat16 --forward_batch 1024
done
# Sampling: DDIM-50 end to end at batch 1024.
bench --batch 1024 --dtype bfloat16 --sample_steps 50
