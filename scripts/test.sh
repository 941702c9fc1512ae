#!/usr/bin/env bash
# Run the test suite (creating the environment first if needed). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The report's browser test runs wherever headless Chromium is present, and must then pass (CI and a
# developer's machine alike); elsewhere it is skipped, as this line says.
if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
    export CGAN_REQUIRE_BROWSER="${CGAN_REQUIRE_BROWSER:-1}"
else
    echo "test.sh: no chromium and chromedriver here: the report's browser test will be skipped" \
         "(apt-get install chromium chromium-driver to run it)" >&2
fi
exec .venv/bin/python -m pytest "$@"
