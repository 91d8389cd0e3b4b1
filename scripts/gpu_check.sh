#!/usr/bin/env bash
# One prepared CUDA check for a lent GPU machine (run it in one call, record the JSON in the
# README): bf16 DDP training steps under torchrun with NCCL, decoding on CUDA, throughput vs CPU.
#   bash scripts/gpu_check.sh            # on the GPU machine
#   bash scripts/gpu_check.sh cpu        # dry run of the same path on the CPU (gloo)
set -euo pipefail
cd "$(dirname "$0")/.."
DEVICE=${1:-cuda}
python3 -c 'import torch, torchaudio, soundfile, yaml' 2>/dev/null || bash scripts/setup.sh
OMP_NUM_THREADS=2 python3 -m torch.distributed.run --standalone --nproc_per_node 1 \
  scripts/gpu_check.py --device "$DEVICE" --steps "${STEPS:-10}"
