#!/usr/bin/env bash
# Benchmark of the sharded scorer (issue 21, acceptance 4) on planted token batches at the real token shape
# (16³ grid, 70 % void, D = 384, 3 layers), CoDeGraph, measured with /usr/bin/time -v (wall seconds, CPU
# seconds = user + system, peak resident memory):
#
#   full: the single process (`score --tokens`) and every step of every block of `mri-ad shard` in K blocks
#         one after the other; prints each step's figures, the largest peak of any step, and the total CPU
#         time of all steps against the single process's (the overhead ratio; both in this run).
#   jobs: only the `distances` step of the first JOBS jobs (a batch too large for this machine's time and
#         disk); prints each job's figures and extrapolates the whole run's distance time from the job's
#         seconds per tile (every tile is one pair of blocks, all of the same size up to ±1 case).
#
# Token files: min(N, DISTINCT) distinct planted cases (default 150) are written once under
# bench-out/shard-tokens-D; a batch of N cases links case i to distinct case i mod DISTINCT (the kernel's
# work does not depend on the values; the files are read and hashed like distinct ones).
# Usage: scripts/bench/bench_shard.sh N K [full|jobs] [JOBS] [DISTINCT]
set -euo pipefail
cd "$(dirname "$0")/../.."
n=${1:?N}
k=${2:?K}
mode=${3:-full}
jobs=${4:-1}
distinct=${5:-150}
py=$(scripts/setup/python.sh | tail -n 1)
cargo build --release --locked -q >&2
bin=$PWD/target/release/mri-ad
pool=bench-out/shard-tokens-$distinct
if [ ! -f "$pool/truth.json" ]; then
  echo "writing $distinct planted token files to $pool" >&2
  "$py" scripts/fixtures/make_tokens.py --out "$pool" --kind planted --n "$distinct" --grid 16 16 16 \
    --void-frac 0.7 --dim 384 --layers 3 --seed 21 >/dev/null
fi
mapfile -t files < <(ls "$pool" | grep '\.tokens\.npz$' | sort)
data=bench-out/shard-$n
rm -rf "$data"
mkdir -p "$data/tokens"
for ((i = 0; i < n; i++)); do
  ln -s "$(realpath "$pool/${files[i % distinct]}")" "$data/tokens/$(printf 'case%05d' "$i").tokens.npz"
done

measure() { # measure LABEL CMD... : prints "LABEL wall_s cpu_s peak_mib" (CMD gets --quiet, and --no-progress but plan and join)
  local label=$1; shift
  local log quiet=(--quiet)
  case $label in plan | join) ;; *) quiet+=(--no-progress) ;; esac
  log=$(mktemp)
  /usr/bin/time -v "$@" "${quiet[@]}" 2>"$log" >/dev/null || { cat "$log" >&2; exit 1; }
  local wall cpu peak
  wall=$(grep 'Elapsed (wall clock)' "$log" | awk '{print $NF}' | awk -F: '{ if (NF == 3) print $1*3600 + $2*60 + $3; else print $1*60 + $2 }')
  cpu=$(awk -F': ' '/User time|System time/ {s += $2} END {printf "%.1f", s}' "$log")
  peak=$(grep 'Maximum resident set size' "$log" | awk '{printf "%.0f", $NF / 1024}')
  rm -f "$log"
  printf '%-28s %9.1f %9.1f %9d\n' "$label" "$wall" "$cpu" "$peak"
}

work=$data/work
echo "N = $n, K = $k, mode $mode ($(nproc) cores; $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs))"
printf '%-28s %9s %9s %9s\n' step wall_s cpu_s peak_mib
measure plan "$bin" shard plan --tokens "$data/tokens" --work "$work" --blocks "$k"
steps=$(mktemp)
if [ "$mode" = jobs ]; then
  for ((b = 1; b <= jobs; b++)); do
    measure "distances $b/$k" "$bin" shard distances --work "$work" --block "$b/$k" | tee -a "$steps"
    wall=$(tail -n 1 "$steps" | awk '{print $(NF-2)}')
    "$py" - "$work/distances/job$b.json" "$k" "$wall" <<'PY'
import json, sys
record, k, wall = json.load(open(sys.argv[1])), int(sys.argv[2]), float(sys.argv[3])
tiles = record["details"]["tiles"]
# a diagonal tile holds half the case pairs of an off-diagonal one
units = sum(0.5 if i == j else 1.0 for i, j in tiles)
total = k * k / 2
print(f"  {len(tiles)} tiles ({units:g} off-diagonal tiles' worth), {wall / units:.1f} s per off-diagonal tile; "
      f"the whole run's distances: {total:g} tiles' worth = {total * wall / units / 3600:.2f} h of this machine, "
      f"{total * wall / units / 3600 / k:.2f} h per job with the K = {k} jobs in parallel")
PY
  done
  rm -f "$steps"
  exit 0
fi
single=$data/single
rm -rf "$single"
measure "single process" "$bin" score --tokens "$data/tokens" --out "$single" --no-plots | tee "$data/single.txt"
for ((b = 1; b <= k; b++)); do measure "distances $b/$k" "$bin" shard distances --work "$work" --block "$b/$k"; done | tee -a "$steps"
for ((b = 1; b <= k; b++)); do measure "links $b/$k" "$bin" shard links --work "$work" --block "$b/$k"; done | tee -a "$steps"
measure "graph" "$bin" shard graph --work "$work" | tee -a "$steps"
rounds=$("$py" -c "import json; print(len(json.load(open('$work/graph/graph.json'))['details']['outliers']))")
for ((t = 1; t <= rounds; t++)); do
  for ((b = 1; b <= k; b++)); do measure "ratios $b/$k round $t" "$bin" shard ratios --work "$work" --block "$b/$k" --round "$t"; done
done | tee -a "$steps"
for ((b = 1; b <= k; b++)); do measure "finish $b/$k" "$bin" shard finish --work "$work" --block "$b/$k"; done | tee -a "$steps"
rm -rf "$data/joined"
measure "join" "$bin" shard join --work "$work" --out "$data/joined" --no-plots | tee -a "$steps"
for f in scores.csv graph.json; do cmp "$single/$f" "$data/joined/$f"; done
diff -r "$single/token_scores" "$data/joined/token_scores" >/dev/null
single_cpu=$(awk '{print $(NF-1)}' "$data/single.txt")
awk -v s="$single_cpu" '{cpu += $(NF-1); if ($NF > peak) peak = $NF} END {
  printf "blocks: total CPU %.1f s against the single process %.1f s: ratio %.3f; largest step peak %d MiB\n", cpu, s, cpu / s, peak }' "$steps"
echo "the joined run folder equals the single process's (scores.csv, graph.json, token_scores/)"
rm -f "$steps"
