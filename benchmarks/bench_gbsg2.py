"""Survival metrics checked on a public data set: GBSG2 (German Breast Cancer Study Group 2, 686 patients, 299
events; bundled with scikit-survival, nothing is downloaded), imported as the project's own feature table.

    .venv/bin/python benchmarks/bench_gbsg2.py [--permutations 9] [--repeats 2]

The eight GBSG2 variables (hormonal therapy, age, menopausal status, tumour size, grade, positive nodes,
progesterone and oestrogen receptors; categorical ones one-hot encoded) are written as a feature table,
``radiomics-assets import-features`` imports it, ``labels.csv`` + ``study.yaml`` give a survival outcome (days,
horizons 1, 3 and 5 years), and the pipeline's default survival procedure runs (model, then report). On the same
outer splits a plain Cox proportional-hazards model (scikit-survival ``CoxPHSurvivalAnalysis``, all eight variables,
no selection, no tuning) is fitted per fold: its fold-mean Harrell's c-index is the reference.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.impute import SimpleImputer
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sksurv.datasets import load_gbsg2
from sksurv.linear_model import CoxPHSurvivalAnalysis
from sksurv.metrics import concordance_index_censored

from radiomics_assets import modelling
from radiomics_assets.ingest.feature_tables import import_feature_table
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


def gbsg2_tables() -> tuple[pd.DataFrame, pd.DataFrame]:
    X, y = load_gbsg2()
    features = pd.get_dummies(X, drop_first=True, dtype=float)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--permutations", type=int, default=9)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = DataRoot(Path(tmp))
        table, labels = gbsg2_tables()
        csv = root.path / "gbsg2.csv"
        table.to_csv(csv, index=False)
        labels.to_csv(root.labels_csv, index=False)
        (root.path / "study.yaml").write_text(STUDY)
        imported = import_feature_table(root, csv)
        print(f"imported {imported.source}: {imported.n_patients} patients x {imported.n_features} features")
        warehouse = Warehouse(root.warehouse)
        study = modelling.load_study(root)
        modelling.store_labels(warehouse, modelling.load_outcomes(root, study).table)
        modelling.build_feature_matrix(warehouse)
        settings = modelling.ModellingSettings(repeats=args.repeats, permutations=args.permutations, n_jobs=args.jobs)
        started = time.perf_counter()
        _, card = modelling.train_model(root, settings, study)
        seconds = time.perf_counter() - started
        metrics = modelling.build_validation_report(root).as_json()
        task = modelling.task_for(study)
        data = modelling.cohort_data(warehouse, study, task)
        _, splits = outer_splits(data.y, np.asarray(data.X.index), settings, task)
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
        print(pd.DataFrame(rows, columns=["what", "value"]).to_markdown(index=False))
        print(json.dumps({"time_dependent_auc": metrics.get("time_dependent_auc")}, default=str))


if __name__ == "__main__":
    main()
