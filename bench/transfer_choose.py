"""The pre-registered choice between transfer levers, on valid numbers only.

    python bench/transfer_choose.py CANDIDATES.json [INCUMBENTS.json ...]

A row qualifies when its firefighting valid 1-shot is within 1 point of the row named
``main`` (the current recipe, in any of the files); among the qualifying rows the one with the
highest music valid 1-shot (then macro) wins. Prints the winner's ``--model new=...`` argument
for bench/transfer.py when it is a row of CANDIDATES.json, and nothing when an incumbent (a
row of the other files) wins; the winner's name goes to stderr.
"""

import json
import sys


def rows_of(path):
    return json.load(open(path))["rows"]


def model_argument(row) -> str:
    opts = "" if row.get("wise", 1.0) >= 1.0 else f",wise={row['wise']:g}"
    opts += f",layers={'+'.join(row['layers'])}" if row.get("layers") else ""
    return f"--model new={row['path']}{opts}"


def choose(candidates, incumbents):
    everything = candidates + incumbents
    one = lambda r, col: r[col]["one_shot"]["micro_mean"]  # noqa: E731
    keep = one(next(r for r in everything if r["model"] == "main"), "firefighting") - 1.0
    ok = [r for r in everything if "music" in r and one(r, "firefighting") >= keep]
    return max(ok, key=lambda r: (one(r, "music"), r["music"]["one_shot"]["macro_mean"]))


if __name__ == "__main__":
    candidates = rows_of(sys.argv[1])
    incumbents = [r for path in sys.argv[2:] for r in rows_of(path)]
    best = choose(candidates, incumbents)
    print(f"chosen: {best['model']}", file=sys.stderr)
    print(model_argument(best) if any(best is r for r in candidates) else "")
