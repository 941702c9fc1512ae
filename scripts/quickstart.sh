#!/usr/bin/env bash
# The main job on the embedded default: train the quickstart recipe on built-in synthetic data.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/cgan run recipes/quickstart.toml "$@"
