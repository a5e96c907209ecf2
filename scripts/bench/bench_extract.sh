#!/usr/bin/env bash
# Acceptance 3 of issue 4: throughput of `mri-ad extract` on one 224³ volume with the default model on the CPU,
# against plain ONNX Runtime inference of the same batches in the same process (benches/extract.rs).
# Sets up .venv, builds onnx/dinov2_vits14.onnx if needed, points ORT_DYLIB_PATH at the wheel's library.
# Extra arguments go to the benchmark (e.g. --size 112 --threads 2 --batch 14).
set -euo pipefail
cd "$(dirname "$0")/../.."
py=$(scripts/setup/python.sh | tail -n 1)
"$py" scripts/setup/build_default_model.py >/dev/null
if [ -z "${ORT_DYLIB_PATH:-}" ]; then
  ORT_DYLIB_PATH=$("$py" scripts/setup/ort_lib.py)
  export ORT_DYLIB_PATH
fi
cargo bench --locked --bench extract -- "$@"
