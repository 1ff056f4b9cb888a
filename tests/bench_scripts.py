"""The scripts of bench/ imported as modules, for the tests that check them."""

import importlib.util
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench"


def bench_script(name: str, module_name: str | None = None):
    """``bench/<name>.py`` as a module, registered in ``sys.modules`` under ``module_name``
    (default: ``name``; dataclasses look their module up there), with bench/ on the path for
    the script's own imports of its neighbours."""
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location(module_name or name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name or name] = module
    spec.loader.exec_module(module)
    return module
