# Sourced by the scripts: create .venv on first use and install the project into it.
# The versions installed are those the test suite last passed with: launch/constraints.txt, a
# pip constraints file (every package, exact versions), refreshed on purpose by
# launch/refresh_constraints.sh, never by a new release on PyPI. setup.cfg keeps the ranges that
# library users install with; torch/torchvision are pinned there (2.14.1 / 0.29.1) and pip takes
# them from its cache or the local wheel store where one is configured.
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "creating .venv and installing symclr_ft (first run only; torch is large)" >&2
  "$PYTHON" -m venv .venv
fi
if ! .venv/bin/python -c "import symclr_ft, pytest, hypothesis" 2>/dev/null \
   || [ setup.cfg -nt .venv/.installed ] || [ launch/constraints.txt -nt .venv/.installed ]; then
  # pip's log goes to a file; shown only when the install fails
  if ! { .venv/bin/python -m pip install -q --upgrade pip \
         && .venv/bin/python -m pip install -q -c launch/constraints.txt -e '.[test]'; } \
       > .venv/install.log 2>&1; then
    tail -n 40 .venv/install.log >&2
    echo "error: installing symclr_ft into .venv failed (full log: .venv/install.log)" >&2
    exit 1
  fi
  touch .venv/.installed
fi
source .venv/bin/activate
export WANDB_MODE=${WANDB_MODE:-offline} WANDB_SILENT=true
