#!/usr/bin/env bash
# The project's test command: sets up the Python reference environment, then runs every Rust test
# (unit, integration, the parity checks against the independent numpy/leidenalg implementations, and the
# headless-Chromium check of the run page, for which it installs Debian's chromium when it can, and the
# Snakemake workflow, for which it sets up .venv-workflow).
set -euo pipefail
cd "$(dirname "$0")/.."
MRI_AD_PYTHON=$(scripts/setup/python.sh | tail -n 1)
MRI_AD_CHROMIUM=$(scripts/setup/chromium.sh | tail -n 1)
MRI_AD_SNAKEMAKE=$(scripts/setup/workflow.sh | tail -n 1)
export MRI_AD_PYTHON MRI_AD_CHROMIUM MRI_AD_SNAKEMAKE
cargo test --release --locked "$@"
