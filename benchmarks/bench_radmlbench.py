"""The default binary procedure on published radiomics feature tables (../shared/data/radmlbench), each imported
through the public importer, against two fixed references on the same outer splits.

    .venv/bin/python benchmarks/bench_radmlbench.py [--tables Ahn2021 HNSCC ...] [--repeats 1] [--permuted]
        [--json docs/results/radmlbench.json]

References (issue 31): median impute -> z-score -> ANOVA top-32 -> logistic regression, and a 500-tree random forest
on all features. ``--permuted`` shuffles each table's outcome first: every column should then sit near 0.5.
Prints one row per table, then the means and how often the procedure is within 0.01 of the better reference;
``--json PATH`` also writes them as the result file of the documentation's ``radmlbench`` figure
(then ``benchmarks/render_figures.py`` re-renders the page).
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.ensemble import RandomForestClassifier
from sklearn.feature_selection import SelectKBest, f_classif
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from radiomics_assets import modelling
from radiomics_assets.ingest.feature_tables import read_feature_table
from radiomics_assets.modelling.validation import outer_splits

TABLES = Path(__file__).resolve().parents[2] / "shared" / "data" / "radmlbench"


def references() -> dict:
    return {
        "logreg_anova32": lambda: make_pipeline(
            SimpleImputer(strategy="median"),
            StandardScaler(),
            SelectKBest(f_classif, k=32),
            LogisticRegression(max_iter=5000),
        ),
        "random_forest_500": lambda: make_pipeline(
            SimpleImputer(strategy="median"), RandomForestClassifier(n_estimators=500, random_state=0, n_jobs=2)
        ),
    }


def fold_mean_auc(X: pd.DataFrame, y: np.ndarray, splits: list, make) -> float:
    aucs = []
    for _, _, train, test in splits:
        model = make()
        if "selectkbest" in model.named_steps:
            model.set_params(selectkbest__k=min(32, X.shape[1]))
        model.fit(X.iloc[train], y[train])
        aucs.append(roc_auc_score(y[test], model.predict_proba(X.iloc[test])[:, 1]))
    return float(np.mean(aucs))


def load(name: str, permuted: bool) -> tuple[pd.DataFrame, np.ndarray]:
    """A table imported by the project's reader (ID column, Target excluded), and its 0/1 outcome."""
    path = TABLES / f"{name}.gz"
    with tempfile.TemporaryDirectory() as tmp:
        csv = Path(tmp) / f"{name}.csv"
        csv.write_bytes(gzip.decompress(path.read_bytes()))
        X = read_feature_table(csv, id_column="ID", exclude=["Target"])
        target = pd.read_csv(csv, usecols=["ID", "Target"]).set_index("ID").Target
    y = target.to_numpy(dtype=int)
    if permuted:
        y = np.random.default_rng(0).permutation(y)
    return X, y


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tables", nargs="+", default=sorted(p.name[:-3] for p in TABLES.glob("*.gz")))
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--permuted", action="store_true")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the rows and means to this file")
    args = parser.parse_args()
    settings = modelling.ModellingSettings(repeats=args.repeats, permutations=0, n_jobs=args.jobs)
    task = modelling.task_for()
    rows = []
    for name in args.tables:
        started = time.perf_counter()
        X, y = load(name, args.permuted)
        cv = modelling.cross_validate(X, y, settings, with_candidates=False, task=task)
        _, splits = outer_splits(y, np.asarray(X.index), settings, task)
        row = {"table": name, "patients": len(y), "features": X.shape[1], "procedure": cv.score}
        for ref, make in references().items():
            row[ref] = fold_mean_auc(X, y, splits, make)
        row["seconds"] = round(time.perf_counter() - started, 1)
        rows.append(row)
        print(pd.DataFrame([row]).round(3).to_string(index=False, header=len(rows) == 1), flush=True)
    table = pd.DataFrame(rows)
    better = table[["logreg_anova32", "random_forest_500"]].max(axis=1)
    print()
    print(table.round(3).to_markdown(index=False))
    print(
        f"\nmean AUC: procedure {table.procedure.mean():.3f}, logreg_anova32 {table.logreg_anova32.mean():.3f}, "
        f"random_forest_500 {table.random_forest_500.mean():.3f}; procedure within 0.01 of the better reference on "
        f"{int((table.procedure >= better - 0.01).sum())} of {len(table)} tables"
    )
    if args.json:
        write_json(args.json, rows, table, args)


def write_json(path: Path, rows: list[dict], table: pd.DataFrame, args: argparse.Namespace) -> None:
    """The result file of the documentation's figure: unrounded AUCs per table and their means."""
    columns = ["procedure", "logreg_anova32", "random_forest_500"]
    document = {
        "source": "benchmarks/bench_radmlbench.py " + " ".join(sys.argv[1:]),
        "note": f"{args.repeats} repeat(s) of 5 folds, fold-mean AUC"
        + (", outcomes permuted" if args.permuted else ""),
        "rows": [{key: row[key] for key in ["table", "patients", "features", *columns, "seconds"]} for row in rows],
        "mean": {column: float(table[column].mean()) for column in columns},
    }
    path.write_text(json.dumps(document, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
