"""Survival metrics checked on a public data set: GBSG2 (German Breast Cancer Study Group 2, 686 patients, 299
events; bundled with scikit-survival, nothing is downloaded), imported as the project's own feature table.

    .venv/bin/python benchmarks/bench_gbsg2.py [--permutations 9] [--repeats 2] [--variants] [--noise 100]

The eight GBSG2 variables (hormonal therapy, age, menopausal status, tumour size, grade, positive nodes,
progesterone and oestrogen receptors; categorical ones one-hot encoded) are written as a feature table,
``radiomics-assets import-features`` imports it, ``labels.csv`` + ``study.yaml`` give a survival outcome (days,
horizons 1, 3 and 5 years), and the pipeline's default survival procedure runs (model, then report). On the same
outer splits a plain Cox proportional-hazards model (scikit-survival ``CoxPHSurvivalAnalysis``, all eight variables,
no selection, no tuning) is fitted per fold: its fold-mean Harrell's c-index is the reference.

``--variants`` (issue 31, item 4: do the binary default's lessons carry over to survival?) adds fixed alternatives
on the same outer splits, each learned on the training fold only: an elastic-net Cox model on the 32 columns with the
largest Cox score statistic (the binary consensus' linear member), a 300-tree random survival forest on every column
(its forest member), the default grid's 100-tree forest on the 10 best columns, and their consensus (the mean of
each member's risk as a percentile of its own training risks: the members' risks are on different scales).
``--noise N`` appends N standard-normal columns (seeded) to the eight variables: a radiomics-like table where most
columns carry nothing, to see which procedure the filter starves or the noise drowns.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
from joblib import Parallel, delayed
from sklearn.impute import SimpleImputer
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sksurv.datasets import load_gbsg2
from sksurv.ensemble import RandomSurvivalForest
from sksurv.linear_model import CoxPHSurvivalAnalysis
from sksurv.metrics import concordance_index_censored

from radiomics_assets import modelling
from radiomics_assets.ingest.feature_tables import import_feature_table
from radiomics_assets.modelling.tasks.survival import Coxnet, cox_score_statistics, harrell_c
from radiomics_assets.modelling.validation import outer_splits
from radiomics_assets.paths import DataRoot
from radiomics_assets.warehouse import Warehouse

STUDY = """outcome:
  type: survival
  time: time_to_event
  event: event
  unit: days
  horizons: [365, 1095, 1825]
"""


def gbsg2_tables(noise_columns: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    X, y = load_gbsg2()
    features = pd.get_dummies(X, drop_first=True, dtype=float)
    noise = np.random.default_rng(0).standard_normal((len(features), noise_columns))
    features = features.assign(**{f"noise_{i:03d}": noise[:, i] for i in range(noise_columns)})
    keys = [f"GBSG2-{i:04d}" for i in range(len(features))]
    table = features.assign(patient_id=keys)[["patient_id", *features.columns]]
    labels = pd.DataFrame({"patient_id": keys, "time_to_event": y["time"], "event": y["cens"].astype(int)})
    return table, labels


def plain_cox(X: pd.DataFrame, y: np.ndarray, splits: list) -> tuple[float, list[float]]:
    """Fold-mean Harrell's c-index of an unpenalised Cox model (median-imputed, standardised) on ``splits``."""
    event, time_ = y[y.dtype.names[0]], y[y.dtype.names[1]]
    per_fold = []
    for _, _, train, test in splits:
        model = make_pipeline(SimpleImputer(strategy="median"), StandardScaler(), CoxPHSurvivalAnalysis())
        model.fit(X.iloc[train], y[train])
        risk = model.predict(X.iloc[test])
        per_fold.append(concordance_index_censored(event[test], time_[test], risk)[0])
    return float(np.mean(per_fold)), per_fold


def _training_percentile(training_risk: np.ndarray, risk: np.ndarray) -> np.ndarray:
    return np.searchsorted(np.sort(training_risk), risk, side="right") / len(training_risk)


def _variants_of_fold(X: np.ndarray, y: np.ndarray, train: np.ndarray, test: np.ndarray) -> dict[str, float]:
    scale = make_pipeline(SimpleImputer(strategy="median"), StandardScaler()).fit(X[train])
    X_train, X_test = scale.transform(X[train]), scale.transform(X[test])
    ranked = np.argsort(-cox_score_statistics(X_train, y[train]), kind="stable")
    top32, top10 = ranked[:32], ranked[:10]
    coxnet = Coxnet(l1_ratio=0.5, alphas=[0.05], fit_baseline_model=True, max_iter=100000)
    coxnet.fit(X_train[:, top32], y[train])
    forest = RandomSurvivalForest(n_estimators=300, min_samples_leaf=0.05, max_features="sqrt", random_state=0)
    forest.fit(X_train, y[train])
    small_forest = RandomSurvivalForest(n_estimators=100, min_samples_leaf=0.05, max_features="sqrt", random_state=0)
    small_forest.fit(X_train[:, top10], y[train])
    linear_risk, forest_risk = coxnet.predict(X_test[:, top32]), forest.predict(X_test)
    consensus = _training_percentile(coxnet.predict(X_train[:, top32]), linear_risk) + _training_percentile(
        forest.predict(X_train), forest_risk
    )
    return {
        "elastic-net Cox, Cox-score top 32": harrell_c(y[test], linear_risk),
        "random survival forest, 300 trees, every column": harrell_c(y[test], forest_risk),
        "random survival forest, 100 trees, Cox-score top 10 (the default grid's)": harrell_c(
            y[test], small_forest.predict(X_test[:, top10])
        ),
        "consensus of the first two (mean training percentile)": harrell_c(y[test], consensus),
    }


def variants(X: pd.DataFrame, y: np.ndarray, splits: list, jobs: int) -> dict[str, float]:
    """Fold-mean Harrell's c-index of each fixed alternative on ``splits`` (see the module docstring)."""
    X = np.asarray(X, dtype=float)
    per_fold = Parallel(n_jobs=jobs)(delayed(_variants_of_fold)(X, y, train, test) for _, _, train, test in splits)
    return {name: float(np.mean([fold[name] for fold in per_fold])) for name in per_fold[0]}


class TrainedDefault(NamedTuple):
    card: object
    metrics: dict
    data: object
    """The cohort as the modelling reads it (``X``, ``y``)."""
    splits: list
    """The pipeline's own outer splits: (repeat, fold, train, test)."""
    seconds: float
    """Of the model step."""


def train_default(
    root: DataRoot, name: str, table: pd.DataFrame, labels: pd.DataFrame, study_yaml: str, settings
) -> TrainedDefault:
    """``table`` imported as the feature table ``name`` with ``labels`` and ``study_yaml`` in ``root``, the
    pipeline's default procedure trained and reported: its card, report figures, cohort and outer splits."""
    csv = root.path / f"{name}.csv"
    table.to_csv(csv, index=False)
    labels.to_csv(root.labels_csv, index=False)
    (root.path / "study.yaml").write_text(study_yaml)
    imported = import_feature_table(root, csv)
    print(f"imported {imported.source}: {imported.n_patients} patients x {imported.n_features} features")
    warehouse = Warehouse(root.warehouse)
    study = modelling.load_study(root)
    modelling.store_labels(warehouse, modelling.load_outcomes(root, study).table)
    modelling.build_feature_matrix(warehouse)
    started = time.perf_counter()
    _, card = modelling.train_model(root, settings, study)
    seconds = time.perf_counter() - started
    metrics = modelling.build_validation_report(root).as_json()
    task = modelling.task_for(study)
    data = modelling.cohort_data(warehouse, study, task)
    _, splits = outer_splits(data.y, np.asarray(data.X.index), settings, task)
    return TrainedDefault(card, metrics, data, splits, seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--permutations", type=int, default=9)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--variants", action="store_true", help="fixed alternatives on the same outer splits")
    parser.add_argument("--noise", type=int, default=0, help="standard-normal columns appended to the table")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        settings = modelling.ModellingSettings(repeats=args.repeats, permutations=args.permutations, n_jobs=args.jobs)
        card, metrics, data, splits, seconds = train_default(
            DataRoot(Path(tmp)), "gbsg2", *gbsg2_tables(args.noise), STUDY, settings
        )
        reference, per_fold = plain_cox(data.X, data.y, splits)
        primary = metrics["primary_metric"]
        rows = [
            ("patients / events", f"{metrics['n_patients']} / {metrics['n_events']}"),
            (
                "pipeline (default survival procedure), Harrell's C",
                f"{primary['value']:.3f} (95% CI {primary['ci_low']:.3f} to {primary['ci_high']:.3f})",
            ),
            ("pipeline, Uno's C", f"{metrics.get('uno_c', float('nan')):.3f}"),
            ("pipeline, integrated Brier score", f"{metrics.get('integrated_brier_score', float('nan')):.3f}"),
            ("pipeline, chosen per outer fold", ", ".join(card.cv_estimate["chosen_per_outer_fold"])),
            ("pipeline, permutation p", str(metrics["permutation_p_value"])),
            ("plain Cox PH on the same outer splits, Harrell's C", f"{reference:.3f} (fold SD {np.std(per_fold):.3f})"),
            ("cohort job seconds (model)", f"{seconds:.0f}"),
        ]
        if args.variants:
            rows += [
                (f"{name}, Harrell's C", f"{c:.3f}") for name, c in variants(data.X, data.y, splits, args.jobs).items()
            ]
        print(pd.DataFrame(rows, columns=["what", "value"]).to_markdown(index=False))
        print(json.dumps({"time_dependent_auc": metrics.get("time_dependent_auc")}, default=str))


if __name__ == "__main__":
    main()
