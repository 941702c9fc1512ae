#!/usr/bin/env bash
# Create (or update) the project's virtual environment in .venv with cgan-kit and its test tools.
# torch: the CUDA build where an NVIDIA GPU answers, otherwise the CPU build (a few hundred MB
# instead of several GB). Set TORCH_SPEC (e.g. "torch==2.6.0") or TORCH_INDEX_URL to choose yourself.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
VENV="${VENV:-.venv}"

if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
pip() { "$VENV/bin/python" -m pip --disable-pip-version-check -q "$@"; }

if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
    if [ -n "${TORCH_INDEX_URL:-}" ]; then
        pip install "${TORCH_SPEC:-torch>=2.4}" --index-url "$TORCH_INDEX_URL"
    elif [ -n "${TORCH_SPEC:-}" ]; then
        pip install "$TORCH_SPEC"
    elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
        echo "setup: NVIDIA GPU found: installing the CUDA build of torch" >&2
        pip install "torch>=2.4"
    else
        echo "setup: no GPU: installing the CPU build of torch" >&2
        # A local CPU wheel where the machine provides one, else PyTorch's CPU index. The first try's
        # errors are kept and shown if the second fails too (a full disk fails both, and says so first).
        log="$(mktemp)"
        if ! pip install "torch==2.13.0+cpu" 2>"$log"; then
            if ! pip install "torch>=2.4" --index-url https://download.pytorch.org/whl/cpu; then
                echo "setup: the local CPU wheel failed too:" >&2
                grep -v '^WARNING' "$log" >&2 || true
                echo "setup: could not install torch; set TORCH_SPEC or TORCH_INDEX_URL (see the top of this file)" >&2
                rm -f "$log"
                exit 1
            fi
        fi
        rm -f "$log"
    fi
fi
pip install -e ".[test]"
