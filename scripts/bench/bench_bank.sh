#!/usr/bin/env bash
# Benchmark of the healthy bank (issue 20, acceptance 2): one new query case against a bank of N planted
# cases (default 100) at the real token shape (16³ grid, 70 % void, D = 384, 3 layers), against the batch
# run of the same N + 1 cases, measured in the same run:
#   1. `mri-ad bank` over the N bank cases (built once; its time is printed, not compared);
#   2. `mri-ad score --bank BANK --tokens QUERY` (the query's pairs only), RUNS times;
#   3. `mri-ad score --tokens ALL` (every pair of the N + 1 cases), once.
# Both scoring commands use the default method (CoDeGraph) and --no-plots, and give the same scores (the test
# suite checks that; this script checks it again on these files). Prints, for each, the whole command's wall
# seconds (/usr/bin/time -v: start-up, reading, scoring, writing) and the scoring stage's (summary.json:
# distances, graph, MSM, similarity scaling), their ratios batch / bank (medians of the bank runs), and each
# command's peak memory (maximum resident set).
# Token files are cached under bench-out/bank-N. Usage: scripts/bench/bench_bank.sh [N] [RUNS] [METHOD]
set -euo pipefail
cd "$(dirname "$0")/../.."
n=${1:-100}
runs=${2:-3}
method=${3:-codegraph}
py=$(scripts/setup/python.sh | tail -n 1)
cargo build --release --locked >&2
bin=target/release/mri-ad
data=bench-out/bank-$n
all=$data/all
if [ ! -f "$all/truth.json" ]; then
  echo "writing the $((n + 1)) token files of the benchmark to $all" >&2
  "$py" scripts/fixtures/make_tokens.py --out "$all" --kind planted --n $((n + 1)) --grid 16 16 16 \
    --void-frac 0.7 --dim 384 --layers 3 --seed 20
fi
# The query: the last case in id order (so the bank's cases keep their order), linked, not copied.
query_case=$(ls "$all" | grep '\.tokens\.npz$' | sort | tail -n 1)
rm -rf "$data/bank-in" "$data/query"
mkdir -p "$data/bank-in" "$data/query"
for f in "$all"/*.tokens.npz; do
  name=$(basename "$f")
  if [ "$name" = "$query_case" ]; then ln -s "$(realpath "$f")" "$data/query/$name"; else ln -s "$(realpath "$f")" "$data/bank-in/$name"; fi
done

measure() { # measure LABEL CMD... : runs CMD under /usr/bin/time -v, prints "LABEL wall_s peak_mib"
  local label=$1; shift
  local log
  log=$(mktemp)
  /usr/bin/time -v "$@" --no-progress --quiet 2>"$log" >/dev/null
  local wall peak
  wall=$(grep 'Elapsed (wall clock)' "$log" | awk '{print $NF}' | awk -F: '{ if (NF == 3) print $1*3600 + $2*60 + $3; else print $1*60 + $2 }')
  peak=$(grep 'Maximum resident set size' "$log" | awk '{printf "%.0f", $NF / 1024}')
  rm -f "$log"
  echo "$label $wall $peak"
}

rm -rf "$data/bank"
read -r _ bank_wall bank_peak < <(measure bank "$bin" bank --tokens "$data/bank-in" --out "$data/bank")
scoring_seconds() { # the scoring stage of a run folder's summary.json
  python3 -c 'import json, sys; s = json.load(open(sys.argv[1])); print(sum(t["seconds"] for t in s["timings"] if t["stage"].startswith(("distances", "graph", "msm", "similarity"))))' "$1/summary.json"
}
bank_times=()
bank_scoring=()
for i in $(seq 1 "$runs"); do
  rm -rf "$data/run-bank"
  read -r _ wall peak < <(measure score-bank "$bin" score --bank "$data/bank" --tokens "$data/query" \
    --out "$data/run-bank" --method "$method" --no-plots)
  bank_times+=("$wall")
  bank_scoring+=("$(scoring_seconds "$data/run-bank")")
  bank_run_peak=$peak
done
rm -rf "$data/run-batch"
read -r _ batch_wall batch_peak < <(measure score-batch "$bin" score --tokens "$all" --out "$data/run-batch" \
  --method "$method" --no-plots)
batch_scoring=$(scoring_seconds "$data/run-batch")
"$py" - "$data" "$n" "$method" "$bank_wall" "$bank_peak" "$batch_wall" "$batch_peak" "$bank_run_peak" \
  "$batch_scoring" "$(IFS=,; echo "${bank_scoring[*]}")" "${bank_times[@]}" <<'EOF'
import json, os, sys
import numpy as np
data, n, method = sys.argv[1], int(sys.argv[2]), sys.argv[3]
bank_wall, bank_peak, batch_wall, batch_peak, run_peak, batch_scoring = map(float, sys.argv[4:10])
scoring = sorted(map(float, sys.argv[10].split(",")))
times = sorted(map(float, sys.argv[11:]))
median = times[len(times) // 2]
scoring_median = scoring[len(scoring) // 2]
same = all(
    np.array_equal(np.load(os.path.join(data, "run-batch/token_scores", f)),
                   np.load(os.path.join(data, "run-bank/token_scores", f)))
    for f in os.listdir(os.path.join(data, "run-batch/token_scores")))
print(f"bank benchmark: {n} bank cases + 1 query, 16^3 grid, 70 % void, D = 384, 3 layers, method {method}")
print(f"  mri-ad bank (once)                 {bank_wall:8.2f} s   peak {bank_peak:6.0f} MiB")
print(f"  score --bank (1 query), median     {median:8.2f} s   peak {run_peak:6.0f} MiB   runs: {', '.join(f'{t:.2f}' for t in times)}")
print(f"  score --tokens ({n + 1} cases, batch)  {batch_wall:8.2f} s   peak {batch_peak:6.0f} MiB")
print(f"  batch / bank, whole command        {batch_wall / median:8.1f} x")
print(f"  scoring stage: bank median {scoring_median:.2f} s, batch {batch_scoring:.2f} s: "
      f"{batch_scoring / scoring_median:.1f} x")
print(f"  token scores identical: {same}")
sys.exit(0 if same else 1)
EOF
