#!/usr/bin/env bash
# Benchmark of the stages of `mri-ad score` around the backbone, on the demo cohort (30 volumes) at SIZE³
# (default 112, so that inference does not dominate on a small machine):
#   1. a cold run (tokens computed, --threads 0): the tokens stage's wall time against the sum of the
#      backbone's own time per case (sidecars' stats.seconds). The difference is what hashing the inputs,
#      writing the token files and the part of loading that does not overlap inference add (volumes are
#      loaded on a second thread during the previous case's inference). On a CPU the loader shares the cores
#      with ONNX Runtime, so part of its cost shows up inside the backbone's time instead;
#   2. the same run resumed (tokens reused) with --threads 1, then with --threads 0: the crop box, Nyúl and
#      maps stages per worker count and their speed-up (same outputs, the test suite checks that). With
#      --threads 1 one volume is worked on at a time and its resampling still uses every core, as before
#      these stages were parallel.
# Prints figures only; writes bench-out/pipeline-SIZE. Usage: scripts/bench/bench_pipeline.sh [SIZE]
set -euo pipefail
cd "$(dirname "$0")/../.."
size=${1:-112}
py=$(scripts/setup/python.sh | tail -n 1)
"$py" scripts/setup/build_default_model.py >&2
cargo build --release --locked >&2
ort=$("$py" scripts/setup/ort_lib.py)
if [ ! -f demo/cohort/truth.json ]; then
  "$py" scripts/data/make_demo_cohort.py --out demo/cohort >&2
fi
out=bench-out/pipeline-$size
rm -rf "$out"
run() {
  local name=$1; shift
  target/release/mri-ad score --healthy demo/cohort/healthy --query demo/cohort/query \
    --labels demo/cohort/labels --out "$out" --size "$size" --ort-lib "$ort" --no-plots --no-progress --quiet "$@"
  cp "$out/summary.json" "$out/summary-$name.json"
}
run cold --threads 0
run resumed-1 --threads 1
run resumed-all --threads 0
"$py" - "$out" "$(nproc)" <<'PY'
import glob, json, sys
out, cores = sys.argv[1], sys.argv[2]
def stages(f):
    s = json.load(open(f))
    return {t["stage"]: t["seconds"] for t in s["timings"]}, s["total_seconds"]
cold, total = stages(f"{out}/summary-cold.json")
infer = sum(json.load(open(p))["stats"]["seconds"] for p in glob.glob(f"{out}/tokens/*.tokens.json"))
n = len(glob.glob(f"{out}/tokens/*.tokens.json"))
print(f"machine: {cores} cores; {n} volumes")
print(f"cold run: tokens stage {cold['tokens']:.1f} s; backbone time summed over the cases {infer:.1f} s; "
      f"ratio {cold['tokens'] / infer:.3f}; whole run {total:.1f} s")
one, t1 = stages(f"{out}/summary-resumed-1.json")
many, t0 = stages(f"{out}/summary-resumed-all.json")
print(f"{'stage':<22}{'--threads 1':>14}{'--threads 0':>14}{'speed-up':>10}")
for st in ["crop box", "nyul landmarks", "maps and evaluation"]:
    print(f"{st:<22}{one[st]:>12.2f} s{many[st]:>12.2f} s{one[st] / many[st]:>9.2f}x")
print(f"{'whole resumed run':<22}{t1:>12.2f} s{t0:>12.2f} s{t1 / t0:>9.2f}x")
PY
