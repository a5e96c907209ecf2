#!/usr/bin/env bash
# Creates .venv-workflow at the repository root with Snakemake and its SLURM executor plugin pinned in
# workflow/requirements.txt (idempotent: reinstalls only when the requirements change). Prints the snakemake
# path on its last line.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
venv="$root/.venv-workflow"
req="$root/workflow/requirements.txt"
stamp="$venv/.requirements.sha256"
want=$(sha256sum "$req" | cut -d' ' -f1)
if [ ! -x "$venv/bin/snakemake" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setting up the workflow environment in $venv (Snakemake, the SLURM executor plugin)" >&2
  python3 -m venv --clear "$venv"
  "$venv/bin/python" -m pip install -q --upgrade pip >&2
  "$venv/bin/python" -m pip install -q -r "$req" >&2
  echo "$want" > "$stamp"
fi
echo "$venv/bin/snakemake"
