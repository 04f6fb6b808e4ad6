#!/usr/bin/env bash
# Runs ON the GPU machine (see scripts/gpu_prepare.sh): the GPU tests, then the bench on CUDA.
# Budget: about 8 minutes. Everything it measures goes to $OUT (bench.md, bench.json, logs).
set -uo pipefail
export PYTHONUNBUFFERED=1 RTVISION_SHARED_DATA="$PWD/.gpu/data" RTVISION_CACHE="$PWD/.gpu/cache"
OUT=${OUT:-/tmp/gpu-out}; mkdir -p "$OUT"
python3 -m pip install --quiet --no-deps .gpu/wheels/*.whl 2>&1 | tail -2
export PYTHONPATH="$PWD"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__, torch.cuda.get_device_name())" | tee -a "$OUT/gpu.txt"
timeout 180 python3 -m pytest -q -m gpu -p no:cacheprovider tests/ 2>&1 | tee "$OUT/gpu_tests.log" | tail -15
# Face detection alone at 1080p: facenet-pytorch batched vs FastMTCNN (full res, every frame).
timeout 300 python3 -m rtvision bench --source .gpu/data/faces_1080p.mp4 --device cuda --frames 210 --warmup 10 \
    --naive-frames 60 --no-startup --classifier resnet50 --eval-images .gpu/data/imagenet-sample --variants faces-full-facenet,faces-full,faces-fast,default,no-overlap,face-inline \
    --live --no-progress --out "$OUT/bench.json" --md "$OUT/bench.md" 2>&1 | tee "$OUT/bench.log" | tail -60
