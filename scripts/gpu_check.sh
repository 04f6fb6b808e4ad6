#!/usr/bin/env bash
# Runs ON the GPU machine (prepare here first with scripts/gpu_prepare.sh):
#   run(command="bash scripts/gpu_check.sh", carry=[".gpu"], timeout_s=460)
# The CUDA tests, one plain CLI run, the bench on CUDA (trained MobileNetV2: its top-1/top-5 in
# fp16 on 167 labelled photos; faces against the every-frame full-resolution reference; live
# mode), and 4 streams in one process against 4 processes. About 5 minutes; each step has its own
# time limit, so that one failure leaves the others' results. At most 8 files come back from the
# device: log.txt (every step's output), run_summary.json, bench.{md,json,log}, streams.{md,json,log}.
# DEVICE=cpu FRAMES=24 STREAM_FRAMES=30 PY=.venv/bin/python bash scripts/gpu_check.sh: a dry run here.
set -uo pipefail
export PYTHONUNBUFFERED=1 RTVISION_SHARED_DATA="$PWD/.gpu/data" RTVISION_CACHE="${RTVISION_CACHE_DIR:-/tmp/rtvision-gpu-cache}"
OUT=${OUT:-/tmp/gpu-out}; mkdir -p "$OUT"
DEVICE=${DEVICE:-cuda} FRAMES=${FRAMES:-150} STREAM_FRAMES=${STREAM_FRAMES:-300}
PY=${PY:-python3}
LOG="$OUT/log.txt"
t0=$SECONDS
step() { echo "== $1 (t=$((SECONDS - t0)) s)" | tee -a "$LOG"; }
if [ "$DEVICE" = cuda ]; then
    step install
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/wheels/*.whl 2>&1 | tail -3
    export PYTHONPATH="$PWD:/tmp/site"
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee -a "$LOG"
    nproc | sed 's/^/cpu cores: /' | tee -a "$LOG"
fi
$PY -c "import torch, torchvision, cv2; print('python', __import__('sys').version.split()[0], 'torch', torch.__version__, 'torchvision', torchvision.__version__, 'opencv', cv2.__version__, 'cuda', torch.cuda.is_available() and torch.cuda.get_device_name())" | tee -a "$LOG"

step "CUDA tests"
timeout 60 $PY -m pytest -q -m gpu -p no:cacheprovider -o addopts= tests/test_compress.py tests/test_faces_detector.py 2>&1 | tail -8 | tee -a "$LOG"

step "plain run"
timeout 60 $PY -m rtvision --source .gpu/data/faces_1080p.mp4 --device "$DEVICE" --classifier mobilenet_v2 --headless \
    --no-progress --summary-json "$OUT/run_summary.json" 2>&1 | tail -12 | tee -a "$LOG"

step bench
timeout 160 $PY -m rtvision bench --source .gpu/data/faces_1080p.mp4 --device "$DEVICE" --frames "$FRAMES" --warmup 10 \
    --naive-frames 60 --no-startup --classifier mobilenet_v2 --eval-images .gpu/data/imagenet-sample \
    --variants ${VARIANTS:-default,faces-full-no-overlap,faces-stride2,faces-full-facenet,face-inline} --live --no-progress \
    --out "$OUT/bench.json" --md "$OUT/bench.md" > "$OUT/bench.log" 2>&1
echo "bench rc=$?" | tee -a "$LOG"

step "streams bench"
timeout 140 $PY -m rtvision bench --source .gpu/data/faces_1080p.mp4 --device "$DEVICE" --streams 4 --frames "$STREAM_FRAMES" \
    --classifier mobilenet_v2 --no-progress --out "$OUT/streams.json" --md "$OUT/streams.md" > "$OUT/streams.log" 2>&1
echo "streams rc=$?" | tee -a "$LOG"
step done
