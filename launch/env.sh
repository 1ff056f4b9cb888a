# Sourced by the scripts: create .venv on first use and install the project into it.
# torch/torchvision are pinned in setup.cfg (2.14.1 / 0.29.1); pip takes them from its cache or
# the local wheel store where one is configured.
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "creating .venv and installing symclr_ft (first run only; torch is large)" >&2
  "$PYTHON" -m venv .venv
fi
if ! .venv/bin/python -c "import symclr_ft, pytest, hypothesis" 2>/dev/null \
   || [ setup.cfg -nt .venv/.installed ]; then
  # pip's log goes to a file; shown only when the install fails
  if ! { .venv/bin/python -m pip install -q --upgrade pip && .venv/bin/python -m pip install -q -e '.[test]'; } \
       > .venv/install.log 2>&1; then
    tail -n 40 .venv/install.log >&2
    echo "error: installing symclr_ft into .venv failed (full log: .venv/install.log)" >&2
    exit 1
  fi
  touch .venv/.installed
fi
source .venv/bin/activate
export WANDB_MODE=${WANDB_MODE:-offline} WANDB_SILENT=true
