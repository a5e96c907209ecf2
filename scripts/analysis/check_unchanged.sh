#!/usr/bin/env bash
# Runs two mri-ad binaries on the same three small jobs and compares their run folders output by output
# (scripts/analysis/compare_runs.py): `score` on volumes (the MNI152-derived cohort of make_world_cohort.py, the
# tiny random ViT at 56³), `score --tokens` on planted token files (make_tokens.py), and `score2d` on the
# plain image folder with masks and on the MVTec-like root (two classes) of make_test_images2d.py. For a
# refactor that must not change results.
#
#   scripts/analysis/check_unchanged.sh OLD_BINARY NEW_BINARY [WORK_DIR]
#
# Needs the Python environment (scripts/setup/python.sh) and ONNX Runtime (ORT_DYLIB_PATH, or the
# onnxruntime wheel's library, found by scripts/setup/ort_lib.py). Prints compare_runs.py's lines per job and
# exits 1 if any job differs.
set -euo pipefail
old=$(realpath "$1")
new=$(realpath "$2")
cd "$(dirname "$0")/../.."
work=${3:-$(mktemp -d)}
mkdir -p "$work"
py=$(scripts/setup/python.sh | tail -n 1)
export ORT_DYLIB_PATH=${ORT_DYLIB_PATH:-$("$py" scripts/setup/ort_lib.py)}
model="$work/tiny.onnx"
[ -f "$model" ] || "$py" scripts/fixtures/make_tiny_vit.py --out "$model" --seed 0 > /dev/null
[ -f "$work/cohort/truth.json" ] || "$py" scripts/data/make_world_cohort.py --out "$work/cohort" > /dev/null
[ -d "$work/tokens" ] || "$py" scripts/fixtures/make_tokens.py --out "$work/tokens" --kind planted --n 24 > /dev/null
[ -d "$work/images" ] || "$py" scripts/fixtures/make_test_images2d.py plain "$work/images" > /dev/null
[ -d "$work/mvtec" ] || "$py" scripts/fixtures/make_test_images2d.py mvtec "$work/mvtec" > /dev/null
tiny=(--model "$model" --layers 2,4 --device cpu --no-progress -q)
status=0
for which in old new; do
  bin=${!which}
  rm -rf "$work/$which"
  "$bin" score --healthy "$work/cohort/healthy" --query "$work/cohort/query" --labels "$work/cohort/labels" \
    --out "$work/$which/volumes" --size 56 --proj-dim 16 "${tiny[@]}"
  "$bin" score --tokens "$work/tokens" --out "$work/$which/tokens" --no-progress -q
  images2d=(--size 84 --model "$model" --layers 1,2,3,4 --device cpu --no-progress -q)
  "$bin" score2d --images "$work/images/images" --masks "$work/images/masks" --out "$work/$which/images" \
    "${images2d[@]}"
  "$bin" score2d --images "$work/mvtec" --out "$work/$which/mvtec" --method musc "${images2d[@]}"
done
for job in volumes tokens images mvtec mvtec/bottle mvtec/tile; do
  echo "== $job"
  "$py" scripts/analysis/compare_runs.py "$work/old/$job" "$work/new/$job" || status=1
done
exit $status
