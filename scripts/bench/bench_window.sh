#!/usr/bin/env bash
# Benchmark of the window search (issue 20, acceptance 4's times): `mri-ad score --tokens DIR` with the
# exact search and with --search window --radius R for R = 1, 2, 3, in turn (exact, R1, R2, R3, exact, ...)
# RUNS times, so that a drift of the machine's speed touches every setting alike. Prints, per setting, the
# median of the scoring stage and of its distance kernel (summary.json timings), the token pairs compared
# per view, the kernel's speed in multiply-adds per second, and the ratios to the exact search.
# Usage: scripts/bench/bench_window.sh [TOKEN_DIR] [RUNS] [METHOD]
#   TOKEN_DIR defaults to demo/codegraph/tokens (the demo's 224³ tokens, after scripts/demo.sh).
set -euo pipefail
cd "$(dirname "$0")/../.."
tokens=${1:-demo/codegraph/tokens}
runs=${2:-3}
method=${3:-codegraph}
[ -d "$tokens" ] || { echo "bench_window: $tokens is not a folder of token files (run scripts/demo.sh first)" >&2; exit 2; }
cargo build --release --locked >&2
out=bench-out/window
rm -rf "$out"
mkdir -p "$out"
for i in $(seq 1 "$runs"); do
  for setting in exact r1 r2 r3; do
    extra=()
    [ "$setting" = exact ] || extra=(--search window --radius "${setting#r}")
    target/release/mri-ad score --tokens "$tokens" --out "$out/$setting-$i" --method "$method" --no-plots \
      --quiet --no-progress "${extra[@]}"
  done
done
python3 - "$out" "$runs" "$method" "$tokens" <<'EOF'
import json, os, statistics, sys
out, runs, method, tokens = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
SCORING = ("distances", "msm", "graph", "similarity")
rows = {}
for setting in ["exact", "r1", "r2", "r3"]:
    scoring, kernel = [], []
    for i in range(1, runs + 1):
        s = json.load(open(os.path.join(out, f"{setting}-{i}", "summary.json")))
        scoring.append(sum(t["seconds"] for t in s["timings"] if t["stage"].startswith(SCORING)))
        kernel.append(s["scoring"]["distance_kernel"]["seconds"])
        pairs = s["scoring"]["distance_kernel"]["token_pairs_compared"]
    rows[setting] = (statistics.median(scoring), statistics.median(kernel), pairs, s["views"], s["dim"])
print(f"window benchmark: {tokens}, method {method}, median of {runs} runs per setting")
print(f"{'search':8} {'scoring s':>10} {'kernel s':>9} {'pairs/view':>12} {'GMAC/s':>7} {'x scoring':>10} {'x kernel':>9}")
ref = rows["exact"]
for setting, (sc, ke, pairs, views, dim) in rows.items():
    print(f"{setting:8} {sc:10.2f} {ke:9.2f} {pairs / views:12.3e} {pairs * dim / ke / 1e9:7.1f} "
          f"{ref[0] / sc:10.1f} {ref[1] / ke:9.1f}")
EOF
