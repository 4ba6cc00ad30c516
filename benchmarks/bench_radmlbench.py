"""The default binary procedure on published radiomics feature tables (../shared/data/radmlbench), each imported
through the public importer, against two fixed references on the same outer splits.

    .venv/bin/python benchmarks/bench_radmlbench.py [--tables-dir DIR] [--tables Ahn2021 HNSCC ...] [--repeats 1]
        [--permuted] [--variants | --variant NAME ...] [--json docs/results/radmlbench.json]

``--tables-dir`` runs it on any folder of tables in the same format (``<table>.gz``: ``ID``, ``Target``, features),
e.g. tables the procedure was never measured on.

References (issue 31): median impute -> z-score -> ANOVA top-32 -> logistic regression, and a 500-tree random forest
on all features. ``--permuted`` shuffles each table's outcome first: every column should then sit near 0.5.
Prints one row per table, then the means and how often the procedure is within 0.01 of the better reference;
``--json PATH`` also writes them as the result file of the documentation's ``radmlbench`` figure
(then ``benchmarks/render_figures.py`` re-renders the page). ``--variants`` adds columns for alternatives to the
default model measured on the same splits (:func:`variants`; the documentation's "The default model" page lists
what they gave); ``--variant NAME`` (repeatable) runs only those.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from joblib import Parallel, delayed
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.ensemble import BaggingClassifier, ExtraTreesClassifier, RandomForestClassifier, VotingClassifier
from sklearn.feature_selection import SelectKBest, f_classif
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from radiomics_assets import modelling
from radiomics_assets.ingest.feature_tables import outcome_columns, read_feature_table
from radiomics_assets.modelling.selection import Selector
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


class LogOddsVote(ClassifierMixin, BaseEstimator):
    """Binary soft vote on the log-odds scale: the sigmoid of the members' mean logit, each member's probability
    clipped to [0.001, 0.999] (a forest's vote can be 0 or 1). A member that is confident about a patient weighs
    more than one that is not, where the probability vote weighs them alike."""

    def __init__(self, members: list):
        self.members = members

    def fit(self, X, y):
        self.fitted_ = [clone(member).fit(X, y) for member in self.members]
        self.classes_ = np.unique(y)
        return self

    def predict_proba(self, X) -> np.ndarray:
        p = np.column_stack([member.predict_proba(X)[:, 1] for member in self.fitted_]).clip(1e-3, 1 - 1e-3)
        q = 1 / (1 + np.exp(-np.log(p / (1 - p)).mean(axis=1)))
        return np.column_stack([1 - q, q])


def variants() -> dict:
    """Alternatives to the default model (an equal vote of the linear member and a 300-tree balanced forest), each
    after the procedure's median imputation and z-scoring; soft votes are scikit-learn's ``VotingClassifier``."""

    def linear(C: float = 1.0, max_correlation: float = 0.95):
        return Pipeline(
            [
                ("select", Selector("anova", 32, max_correlation)),
                ("model", LogisticRegression(C=C, class_weight="balanced", max_iter=5000)),
            ]
        )

    def forest(balanced: bool = True):
        return RandomForestClassifier(300, class_weight="balanced" if balanced else None, random_state=0, n_jobs=1)

    def vote(*members):
        return VotingClassifier([(f"m{i}", member) for i, member in enumerate(members)], voting="soft")

    alternatives = {
        "linear_member_alone": lambda: linear(),
        "linear_without_redundancy_filter": lambda: linear(max_correlation=1.0),
        "vote_linear_C0.1": lambda: vote(linear(C=0.1), forest()),
        "vote_forest_unweighted": lambda: vote(linear(), forest(balanced=False)),
        "vote_bagged_linear": lambda: vote(BaggingClassifier(linear(), n_estimators=25, random_state=0), forest()),
        "vote_with_extra_trees": lambda: vote(
            linear(), forest(), ExtraTreesClassifier(300, class_weight="balanced", random_state=0, n_jobs=1)
        ),
        "vote_log_odds": lambda: LogOddsVote([linear(), forest()]),
    }
    return {
        name: (lambda make=make: make_pipeline(SimpleImputer(strategy="median"), StandardScaler(), make()))
        for name, make in alternatives.items()
    }


def fold_mean_auc(X: pd.DataFrame, y: np.ndarray, splits: list, make, jobs: int = 1) -> float:
    return float(
        np.mean(Parallel(n_jobs=jobs)(delayed(_fold_auc)(X, y, train, test, make) for *_, train, test in splits))
    )


def _fold_auc(X: pd.DataFrame, y: np.ndarray, train: np.ndarray, test: np.ndarray, make) -> float:
    model = make()
    if "selectkbest" in model.named_steps:
        model.set_params(selectkbest__k=min(32, X.shape[1]))
    model.fit(X.iloc[train], y[train])
    return roc_auc_score(y[test], model.predict_proba(X.iloc[test])[:, 1])


def load(path: Path, permuted: bool) -> tuple[pd.DataFrame, np.ndarray]:
    """A table read as ``import-features TABLE --id-column ID --outcome Target`` reads it: the features (``Target``
    left out) and the 0/1 outcome, both in the file's row order."""
    X = read_feature_table(path, id_column="ID", exclude=["Target"])
    target = outcome_columns(path, id_column="ID", columns=["Target"]).Target.str.lower()
    y = target.map({"0": 0, "1": 1, "false": 0, "true": 1}).to_numpy(dtype=int)  # radMLBench: 0/1 or False/True
    if permuted:
        y = np.random.default_rng(0).permutation(y)
    return X, y


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--tables-dir", type=Path, default=TABLES, help="folder of <table>.gz files (default ../shared/data/radmlbench)"
    )
    parser.add_argument("--tables", nargs="+", help="table names in that folder (default: every <table>.gz)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--permuted", action="store_true")
    parser.add_argument("--variants", action="store_true", help="also run the alternatives of variants()")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME", help="only this alternative")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the rows and means to this file")
    args = parser.parse_args()
    alternatives = variants() if args.variants or args.variant else {}
    if args.variant:
        unknown = set(args.variant) - set(alternatives)
        if unknown:
            parser.error(f"unknown --variant {sorted(unknown)}; one of {sorted(alternatives)}")
        alternatives = {name: alternatives[name] for name in args.variant}
    settings = modelling.ModellingSettings(repeats=args.repeats, permutations=0, n_jobs=args.jobs)
    task = modelling.task_for()
    rows = []
    for name in args.tables or sorted(p.name[: -len(".gz")] for p in args.tables_dir.glob("*.gz")):
        started = time.perf_counter()
        X, y = load(args.tables_dir / f"{name}.gz", args.permuted)
        cv = modelling.cross_validate(X, y, settings, with_candidates=False, task=task)
        _, splits = outer_splits(y, np.asarray(X.index), settings, task)
        row = {"table": name, "patients": len(y), "features": X.shape[1], "procedure": cv.score}
        for ref, make in (references() | alternatives).items():
            row[ref] = fold_mean_auc(X, y, splits, make, args.jobs)
        row["seconds"] = round(time.perf_counter() - started, 1)
        rows.append(row)
        print(pd.DataFrame([row]).round(3).to_string(index=False, header=len(rows) == 1), flush=True)
    table = pd.DataFrame(rows)
    better = table[["logreg_anova32", "random_forest_500"]].max(axis=1)
    print()
    print(table.round(3).to_markdown(index=False))
    print()
    for column in table.columns.drop(["table", "patients", "features", "seconds"]):
        within = int((table[column] >= better - 0.01).sum())
        print(
            f"{column}: mean AUC {table[column].mean():.3f}, within 0.01 of the better reference on {within} of "
            f"{len(table)} tables"
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
