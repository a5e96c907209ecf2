#!/usr/bin/env bash
# Benchmark of the batch scorer: N cases (default 40) on a 16³ grid with 70% void tokens, D = 384, L = 2,
# a recurring anomaly planted in 15% of the cases. Prints per-stage times, the kernel's GFLOP/s beside plain
# faer GEMMs and numpy in the same run, and peak memory. Token files are cached in bench-out/.
set -euo pipefail
cd "$(dirname "$0")/../.."
n=${1:-40}
MRI_AD_PYTHON=$(scripts/setup/python.sh | tail -n 1)
export MRI_AD_PYTHON
data="bench-out/brain-$n"
if [ ! -f "$data/truth.json" ]; then
  echo "writing the token files of the benchmark to $data" >&2
  "$MRI_AD_PYTHON" scripts/fixtures/make_tokens.py --out "$data" --kind planted --n "$n" --grid 16 16 16 \
    --void-frac 0.7 --dim 384 --layers 2 --seed 40
fi
cargo bench --locked --bench knn -- "$data"
