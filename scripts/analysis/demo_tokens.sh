#!/usr/bin/env bash
# A 30-second demo of the batch scorer alone: sets up what it needs (Python environment for the synthetic data and the checks, a release
# build), writes a synthetic cohort of token files with a recurring anomaly planted in 15% of the cases,
# scores it with CoDeGraph and with plain MuSc, and prints what CoDeGraph found against the truth.
# Output: demo/run-codegraph/ and demo/run-musc/ (scores.csv, token_scores/, graph.json, summary.json).
set -euo pipefail
cd "$(dirname "$0")/../.."
py=$(scripts/setup/python.sh | tail -n 1)
cargo build --release --locked
bin=target/release/mri-ad
mkdir -p demo
if [ ! -f demo/tokens/truth.json ]; then
  "$py" scripts/fixtures/make_tokens.py --out demo/tokens --kind planted --n 40 --grid 8 8 8 --void-frac 0.4 \
    --dim 128 --layers 3 --seed 11
fi
"$bin" score --tokens demo/tokens --out demo/run-codegraph --force
"$bin" score --tokens demo/tokens --out demo/run-musc --method musc --force
"$py" scripts/oracles/ref_planted.py --tokens demo/tokens --codegraph demo/run-codegraph --musc demo/run-musc
cat <<MSG

Open demo/run-codegraph/scores.csv (one row per case: max token score, community), graph.json (the
case graph, its communities and the outlier community CoDeGraph removed from the reference set, with the
excluded token indices per case) and summary.json (effective settings, timings, kernel GFLOP/s).
MSG
