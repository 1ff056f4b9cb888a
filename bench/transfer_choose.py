"""bench/transfer_levers.sh: the pre-registered choice of the final recipe from lever2 (valid numbers only): the highest
music valid 1-shot among candidates whose firefighting valid 1-shot stays within 1 point of
the current recipe's; prints the --model and --folds arguments of the final test run."""
import json, sys
rows = {r["model"]: r for path in [sys.argv[1], *sys.argv[5:]] for r in json.load(open(path))["rows"]}
T, M, N = sys.argv[2], sys.argv[3], sys.argv[4]
one = lambda r, col: r[col]["one_shot"]["micro_mean"]
keep = one(rows["main"], "firefighting") - 1.0
ok = [n for n in ("t1", "t1_w07", "t1_w05", "main_w05", "main_w03") if n in rows and one(rows[n], "firefighting") >= keep]
best = max(ok, key=lambda n: (one(rows[n], "music"), rows[n]["music"]["one_shot"]["macro_mean"])) if ok else "main"
wise = {"t1_w07": ",wise=0.7", "t1_w05": ",wise=0.5", "main_w05": ",wise=0.5", "main_w03": ",wise=0.3"}.get(best, "")
path = T if best.startswith("t1") else M
folds = f" --folds new={N}" if best.startswith("main") and N else ""
print(f"--model new={path}{wise}{folds}" if best != "main" else "")
print(f"chosen: {best}", file=sys.stderr)
# usage: python bench/transfer_choose.py LEVERS.json T1_MODEL MAIN_MODEL FOLDS_DIR [MORE_LEVERS.json ...]
# (the row named main, the current recipe, may come from any of the JSON files)
