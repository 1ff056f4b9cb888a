#!/usr/bin/env bash
# The test suite, from a fresh clone: creates .venv (Python 3.11), installs the project with its
# test extras, runs pytest. Extra arguments go to pytest (e.g. bash tests/run.sh -k sampler).
set -euo pipefail
cd "$(dirname "$0")/.."
source launch/env.sh
python -m pytest "$@"
