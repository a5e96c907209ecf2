#!/usr/bin/env bash
# The SLURM check of workflow/Snakefile: starts a single-node SLURM cluster on this machine (Debian's
# slurm-wlm and munge: munged, slurmctld and slurmd on this host, installed when missing), runs the workflow
# through the SLURM executor plugin with the repository's profile (workflow/profiles/slurm) on a small NIfTI
# cohort (the demo cohort's generator, the tiny random model), and checks that the run folder holds the
# files of one `mri-ad score` (scores.csv, graph.json, nyul.json, token_scores/, maps/, masks/), bit for
# bit. Prints the workflow's wall time. Stops the daemons on exit.
#
# Needs root (apt and the daemons) and about 3 minutes on 2 cores. Not part of scripts/test.sh: CI runs in
# a container without daemons; run it by hand: sudo scripts/workflow/slurm_check.sh [--keep DIR]
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
keep=""
if [ "${1:-}" = "--keep" ]; then keep=${2:?--keep needs a folder}; fi
if [ "$(id -u)" != 0 ]; then
  echo "slurm_check.sh: needs root (it installs slurm-wlm and munge and starts their daemons)" >&2
  exit 2
fi
if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
  echo "installing slurm-wlm and munge (Debian)" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurm-wlm munge >&2
fi
cd "$root"
cargo build --release --locked -q
py=$(scripts/setup/python.sh | tail -n 1)
snakemake=$(scripts/setup/workflow.sh | tail -n 1)
ORT_DYLIB_PATH=$("$py" scripts/setup/ort_lib.py)
export ORT_DYLIB_PATH
mri_ad="$root/target/release/mri-ad"

work=${keep:-$(mktemp -d /tmp/mri-ad-slurm.XXXXXX)}
mkdir -p "$work"/{state,spool}
pids=()
cleanup() {
  if [ -n "${SLURM_CONF:-}" ]; then scancel --user=root >/dev/null 2>&1 || true; fi
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  if [ -n "${conf:-}" ] && grep -qF "${marker:-none}" "$conf" 2>/dev/null; then rm -f "$conf"; fi
  [ -n "$keep" ] || rm -rf "$work"
}
trap cleanup EXIT

# munge: a key, then the daemon (as the munge user the package creates)
mkdir -p /etc/munge /run/munge /var/lib/munge /var/log/munge
if [ ! -s /etc/munge/munge.key ]; then
  dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
fi
chown -R munge:munge /etc/munge /run/munge /var/lib/munge /var/log/munge
chmod 400 /etc/munge/munge.key
if ! munge -n >/dev/null 2>&1; then
  runuser -u munge -- /usr/sbin/munged
  sleep 1
  pids+=("$(cat /run/munge/munged.pid)")
fi
munge -n | unmunge >/dev/null

# slurm: one node (this host) and one partition, no accounting database (job states from squeue)
host=$(hostname -s)
cpus=$(nproc)
mem=$(free -m | awk '/^Mem:/ {print int($2 * 0.8)}')
# The job steps (srun inside each job) read the default location, so the file goes there; an existing
# configuration of another cluster is never replaced.
conf=/etc/slurm/slurm.conf
marker="# written by mri-ad scripts/workflow/slurm_check.sh"
if [ -e "$conf" ] && ! grep -qF "$marker" "$conf"; then
  echo "$conf exists and is not this script's: this machine has a SLURM configuration; not replaced" >&2
  exit 2
fi
mkdir -p /etc/slurm
cat > "$conf" <<CONF
$marker
ClusterName=mriad
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$work/state
SlurmdSpoolDir=$work/spool
SlurmctldPidFile=$work/slurmctld.pid
SlurmdPidFile=$work/slurmd.pid
SlurmctldLogFile=$work/slurmctld.log
SlurmdLogFile=$work/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
ReturnToService=2
MinJobAge=3600
NodeName=$host CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
export SLURM_CONF="$conf"
slurmctld
slurmd
for _ in $(seq 1 60); do
  [ -f "$work/slurmctld.pid" ] && [ -f "$work/slurmd.pid" ] && break
  sleep 1
done
pids+=("$(cat "$work/slurmd.pid")" "$(cat "$work/slurmctld.pid")")
for _ in $(seq 1 60); do
  state=$(sinfo -h -N -o %T 2>/dev/null | head -n 1)
  [ "$state" = idle ] && break
  sleep 1
done
[ "$state" = idle ] || { echo "the node did not come up (state: ${state:-none}); see $work/slurmd.log" >&2; exit 1; }
echo "SLURM up: node $host, $cpus CPUs, $mem MB ($(sinfo --version))" >&2

# the data: a small NIfTI cohort and the tiny model; the reference is one `mri-ad score`
"$py" scripts/data/make_demo_cohort.py --out "$work/cohort" --healthy 6 --lesion 5 --recurring 3 --seed 2 >/dev/null
"$py" scripts/fixtures/make_tiny_vit.py --out "$work/tiny.onnx" --seed 1 >/dev/null
backbone="--model $work/tiny.onnx --size 84 --layers 2,4 --proj-dim 16 --device cpu"
scoring="--outlier-rule top-densest --top-densest 2 --min-communities 1"
c="$work/cohort"
# shellcheck disable=SC2086
"$mri_ad" score --healthy "$c/healthy" --query "$c/query" --labels "$c/labels" --out "$work/single" $backbone $scoring -q

cd "$work"
start=$(date +%s)
"$snakemake" -s "$root/workflow/Snakefile" --workflow-profile "$root/workflow/profiles/slurm" \
  --slurm-status-command squeue --slurm-no-account --slurm-init-seconds-before-status-checks 2 \
  --set-threads extract=1 distances=2 links=1 graph=1 ratios=1 finish=1 run=2 \
  --config healthy="$c/healthy" query="$c/query" labels="$c/labels" out=wf blocks=3 extract_shards=2 \
  mri_ad="$mri_ad" extract_args="$backbone" score_args="$scoring" >"$work/snakemake.log" 2>&1 \
  || { tail -n 40 "$work/snakemake.log" >&2; echo "the workflow failed; log: $work/snakemake.log" >&2; exit 1; }
seconds=$(( $(date +%s) - start ))
rounds=$(ls -d "$work"/wf.work/shard/rounds/*/ 2>/dev/null | wc -l)
submitted=$(grep -c "Job .* has been submitted with SLURM jobid" "$work/snakemake.log" || true)
for f in scores.csv graph.json nyul.json; do
  cmp "$work/single/$f" "$work/wf/$f"
done
for d in token_scores maps masks; do
  diff -r "$work/single/$d" "$work/wf/$d" >/dev/null || { echo "$d differs" >&2; exit 1; }
done
echo "SLURM workflow: $submitted jobs submitted through the executor plugin ($rounds rounds of Algorithm 2), ${seconds} s; the run folder equals one mri-ad score (scores.csv, graph.json, nyul.json, token_scores/, maps/, masks/)"
