#!/usr/bin/env bash
# Device check of the CUDA path (needs an NVIDIA GPU; not part of the tests). Runs `mri-ad extract` on the volumes
# of INPUT_DIR three ways with the default model: --device cuda twice, then --device cpu, all with the same
# ONNX Runtime library, and compares the token files with scripts/analysis/compare_tokens.py:
#   cuda vs cuda again: must be identical (run-to-run determinism on the GPU);
#   cuda vs cpu: same void flags, max |diff| <= 1e-3 and min cosine >= 0.9999, and the first really ran on CUDA.
# Exit 0 when all hold. It prints each run's throughput (slices/s) as `extract` reports it.
#
# ORT_DYLIB_PATH must name the library of the `onnxruntime-gpu` wheel (onnxruntime/capi/libonnxruntime.so.1.*,
# with libonnxruntime_providers_cuda.so beside it), and the CUDA 13 / cuDNN 9 libraries must be on the loader
# path (e.g. LD_LIBRARY_PATH from the nvidia-* wheels). Environment: MRI_AD (the binary; default
# target/release/mri-ad), PYTHON (with numpy; default python3), MODEL (default onnx/dinov2_vits14.onnx).
#
# Usage: scripts/bench/check_cuda.sh INPUT_DIR [WORK_DIR]   (WORK_DIR, default a new temporary folder, must not exist)
set -uo pipefail
input=${1:?usage: scripts/bench/check_cuda.sh INPUT_DIR [WORK_DIR]}
work=${2:-$(mktemp -d -u "${TMPDIR:-/tmp}/mri-ad-cuda.XXXXXX")}
here=$(cd "$(dirname "$0")" && pwd)
bin=${MRI_AD:-$here/../../target/release/mri-ad}
py=${PYTHON:-python3}
model=${MODEL:-$here/../../onnx/dinov2_vits14.onnx}
: "${ORT_DYLIB_PATH:?set ORT_DYLIB_PATH to the onnxruntime-gpu library}"
if [ ! -x "$bin" ]; then echo "check_cuda: no mri-ad binary at $bin (cargo build --release, or set MRI_AD)" >&2; exit 2; fi
if [ -e "$work" ]; then echo "check_cuda: $work exists; give a new folder" >&2; exit 2; fi
mkdir -p "$work"
echo "check_cuda: work folder $work, ONNX Runtime $ORT_DYLIB_PATH"
run() {
  local name=$1; shift
  echo "== extract $*  -> $work/$name"
  "$bin" extract --input "$input" --out "$work/$name" --model "$model" --no-progress "$@" || {
    echo "check_cuda: extract $* failed" >&2; exit 1; }
}
run cuda --device cuda
run cuda2 --device cuda
run cpu --device cpu
status=0
echo "== cuda vs cuda again (must be identical)"
"$py" "$here/../analysis/compare_tokens.py" "$work/cuda" "$work/cuda2" --max-abs 0 --min-cos 0.999999999 \
  --expect-provider-a CUDAExecutionProvider || status=1
echo "== cuda vs cpu"
"$py" "$here/../analysis/compare_tokens.py" "$work/cuda" "$work/cpu" --expect-provider-a CUDAExecutionProvider \
  --expect-provider-b CPUExecutionProvider || status=1
[ $status = 0 ] && echo "check_cuda: ok" || echo "check_cuda: FAILED" >&2
exit $status
