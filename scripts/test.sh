#!/usr/bin/env bash
# Install what is missing, then run the whole test suite (CPU only, a few minutes on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec ${PYTHON:-python3} -m pytest -q -p no:cacheprovider tests "$@"
