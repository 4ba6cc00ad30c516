"""The continuous default measured on a public data set: scikit-learn's diabetes table (442 patients, 10 baseline
variables, disease progression after one year; bundled with scikit-learn, nothing is downloaded), imported as the
project's own feature table.

    .venv/bin/python benchmarks/bench_regression.py [--noise 100] [--permutations 0] [--repeats 2]

The table is written as a feature table, ``radiomics-assets import-features`` imports it, ``labels.csv`` +
``study.yaml`` give a continuous outcome, and the pipeline's default continuous procedure runs (model, then
report). On the same outer splits, fixed alternatives are fitted per fold, each learned on the training fold only
(median imputation and z-scoring first): ridge regression on every column; ridge on the 32 columns with the largest
F statistic of a linear fit (the binary consensus' linear member); a 300-tree random forest on every column (its
forest member); and their consensus (the mean of the two predictions). Each is scored as the pipeline is: the
out-of-fold R² of each repeat, averaged over the repeats.

``--noise N`` appends N standard-normal columns (seeded) to the ten variables: a radiomics-like table where most
columns carry nothing, to see which procedure the filter starves or the noise drowns (issue 31, item 4: do the
binary default's lessons carry over to a continuous outcome?).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from bench_gbsg2 import train_default
from joblib import Parallel, delayed
from sklearn.datasets import load_diabetes
from sklearn.ensemble import RandomForestRegressor
from sklearn.feature_selection import f_regression
from sklearn.impute import SimpleImputer
from sklearn.linear_model import Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from radiomics_assets import modelling
from radiomics_assets.modelling.tasks.continuous import repeat_r2
from radiomics_assets.paths import DataRoot

STUDY = """outcome:
  type: continuous
  column: progression
"""


def diabetes_tables(noise_columns: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    data = load_diabetes(scaled=False)
    features = pd.DataFrame(data.data, columns=data.feature_names)
    noise = np.random.default_rng(0).standard_normal((len(features), noise_columns))
    features = features.assign(**{f"noise_{i:03d}": noise[:, i] for i in range(noise_columns)})
    keys = [f"DIAB-{i:04d}" for i in range(len(features))]
    table = features.assign(patient_id=keys)[["patient_id", *features.columns]]
    labels = pd.DataFrame({"patient_id": keys, "progression": data.target})
    return table, labels


def _variants_of_fold(X: np.ndarray, y: np.ndarray, train: np.ndarray, test: np.ndarray) -> dict[str, np.ndarray]:
    scale = make_pipeline(SimpleImputer(strategy="median"), StandardScaler()).fit(X[train])
    X_train, X_test = scale.transform(X[train]), scale.transform(X[test])
    ranked = np.argsort(-np.nan_to_num(f_regression(X_train, y[train])[0]), kind="stable")
    top32, top10, top20 = ranked[:32], ranked[:10], ranked[:20]

    def ridge(columns: np.ndarray) -> np.ndarray:
        return Ridge(alpha=10.0).fit(X_train[:, columns], y[train]).predict(X_test[:, columns])

    def forest(columns: np.ndarray) -> np.ndarray:
        model = RandomForestRegressor(n_estimators=300, min_samples_leaf=2, max_features="sqrt", random_state=0)
        return model.fit(X_train[:, columns], y[train]).predict(X_test[:, columns])

    every = np.arange(X.shape[1])
    ridge_top32, forest_all, ridge_top10, forest_top20 = ridge(top32), forest(every), ridge(top10), forest(top20)
    return {
        "ridge (alpha 10), every column": ridge(every),
        "ridge (alpha 10), F-statistic top 32": ridge_top32,
        "random forest, 300 trees, every column": forest_all,
        "consensus of the last two (mean prediction)": (ridge_top32 + forest_all) / 2,
        "ridge, top 10": ridge_top10,
        "random forest, top 20": forest_top20,
        "consensus of ridge top 10 and forest top 20": (ridge_top10 + forest_top20) / 2,
    }


def variants(X: pd.DataFrame, y: np.ndarray, splits: list, jobs: int) -> dict[str, float]:
    """Out-of-fold R² per repeat, averaged over the repeats, of each fixed alternative on ``splits``."""
    X = np.asarray(X, dtype=float)
    per_fold = Parallel(n_jobs=jobs)(delayed(_variants_of_fold)(X, y, train, test) for _, _, train, test in splits)
    repeats = 1 + max(repeat for repeat, _, _, _ in splits)
    scores = {}
    for name in per_fold[0]:
        predictions = np.full((repeats, len(y)), np.nan)
        for (repeat, _, _, test), fold in zip(splits, per_fold, strict=True):
            predictions[repeat, test] = fold[name]
        scores[name] = float(np.mean(repeat_r2(y, predictions)))
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--permutations", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--noise", type=int, default=0, help="standard-normal columns appended to the table")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        settings = modelling.ModellingSettings(repeats=args.repeats, permutations=args.permutations, n_jobs=args.jobs)
        card, metrics, data, splits, seconds = train_default(
            DataRoot(Path(tmp)), "diabetes", *diabetes_tables(args.noise), STUDY, settings
        )
        primary = metrics["primary_metric"]
        rows = [
            (
                "pipeline (default continuous procedure), R²",
                f"{primary['value']:.3f} (95% CI {primary['ci_low']:.3f} to {primary['ci_high']:.3f})",
            ),
            ("pipeline, chosen per outer fold", ", ".join(card.cv_estimate["chosen_per_outer_fold"])),
            ("cohort job seconds (model)", f"{seconds:.0f}"),
        ]
        rows += [(f"{name}, R²", f"{r2:.3f}") for name, r2 in variants(data.X, data.y, splits, args.jobs).items()]
        print(pd.DataFrame(rows, columns=["what", "value"]).to_markdown(index=False))


if __name__ == "__main__":
    main()
