#!/usr/bin/env bash
# Creates .venv at the repository root with the pinned packages of scripts/setup/requirements.txt (idempotent:
# reinstalls only when the requirements change). Prints the interpreter path on its last line.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
venv="$root/.venv"
req="$root/scripts/setup/requirements.txt"
stamp="$venv/.requirements.sha256"
want=$(sha256sum "$req" | cut -d' ' -f1)
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setting up the Python environment in $venv (reference checks, model scripts, demo data)" >&2
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install -q --upgrade pip >&2
  "$venv/bin/python" -m pip install -q -r "$req" >&2
  echo "$want" > "$stamp"
fi
echo "$venv/bin/python"
