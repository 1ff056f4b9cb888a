#!/usr/bin/env bash
# Refresh launch/constraints.txt on purpose: install the project's ranges (setup.cfg) into a new
# virtual environment with the newest releases, run the whole test suite there, and only if it
# passes write the versions it ran with. Commit the new file with the suite's result.
#   bash launch/refresh_constraints.sh
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"${PYTHON:-python3}" -m venv "$tmp/venv"
"$tmp/venv/bin/python" -m pip install -q --upgrade pip
"$tmp/venv/bin/python" -m pip install -q -e '.[test]'
WANDB_MODE=offline WANDB_SILENT=true "$tmp/venv/bin/python" -m pytest -q
{
  echo "# Exact versions the test suite passed with (launch/refresh_constraints.sh, $(date -u +%F))."
  echo "# launch/env.sh installs with these; setup.cfg holds the ranges for library users."
  "$tmp/venv/bin/python" -m pip freeze --exclude-editable | grep -v '^symclr' | sort -f
} > launch/constraints.txt.new
mv launch/constraints.txt.new launch/constraints.txt
echo "wrote launch/constraints.txt"
