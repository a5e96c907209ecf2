#!/usr/bin/env bash
# The project's test command: sets up the Python reference environment, then runs every Rust test
# (unit, integration, and the parity checks against the independent numpy/leidenalg implementations).
set -euo pipefail
cd "$(dirname "$0")/.."
MRI_AD_PYTHON=$(scripts/setup/python.sh | tail -n 1)
export MRI_AD_PYTHON
cargo test --release --locked "$@"
