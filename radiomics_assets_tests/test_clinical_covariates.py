"""Clinical covariates: encoded inside the folds, compared with radiomics on the same splits, the gain with its CI."""

import json

import numpy as np
import pandas as pd
import pytest

from radiomics_assets import modelling
from radiomics_assets.modelling.estimators import ColumnRoles, _grid
from radiomics_assets.modelling.study import CLINICAL_PREFIX, Covariates, Outcome, Predictors, Study
from radiomics_assets.modelling.tasks import task_for
from radiomics_assets.paths import DataRoot
from radiomics_assets.warehouse import Warehouse, write_derived_table

STUDY = Study(
    outcome=Outcome(column="label", positive="malignant"),
    covariates=Covariates(numeric=("age",), categorical=("stage",)),
    predictors=Predictors.compare,
)


def _cohort(n: int, seed: int = 0, radiomics_effect: float = 0.0, unlabelled: int = 0):
    """Outcome driven by age and stage (strongly) and by one radiomics feature (``radiomics_effect``)."""
    rng = np.random.default_rng(seed)
    total = n + unlabelled
    keys = [f"P{i:03d}" for i in range(total)]
    features = pd.DataFrame(rng.standard_normal((total, 20)), index=keys, columns=[f"f{j:02d}" for j in range(20)])
    age = rng.normal(60, 10, total)
    stage = rng.choice(["I", "II", "III"], total)
    eta = 1.5 * (age - 60) / 10 + np.select([stage == "III", stage == "II"], [1.5, 0.5], -1.0)
    eta += radiomics_effect * features.f03.to_numpy()
    label = (eta + rng.logistic(size=total) > 0).astype(int)
    labels = pd.DataFrame(
        {
            "patient_id": keys,
            "label": label.astype(float),
            "label_name": np.where(label == 1, "malignant", "benign"),
            "cohort": "train",
            "group": "",
            CLINICAL_PREFIX + "age": np.where(rng.random(total) < 0.05, np.nan, age),
            CLINICAL_PREFIX + "stage": stage,
        }
    )
    labels.loc[n:, ["label", "label_name"]] = np.nan
    return features, labels


def _warehouse(tmp_path, features, labels) -> DataRoot:
    root = DataRoot(tmp_path)
    warehouse = Warehouse(root.warehouse)
    matrix = features.assign(label=labels.set_index("patient_id").label)
    write_derived_table(warehouse, "feature_matrix", matrix.rename_axis("patient_id").reset_index())
    modelling.store_labels(warehouse, labels)
    return root


FAST = modelling.ModellingSettings(seed=0, models=("logreg",), folds=3, repeats=1, inner_folds=2, permutations=2)


def test_covariates_are_imputed_and_encoded_inside_the_pipeline(tmp_path):
    features, labels = _cohort(60)
    root = _warehouse(tmp_path, features, labels)
    data = modelling.cohort_data(Warehouse(root.warehouse), STUDY, task_for(STUDY))
    assert list(data.X.columns[-2:]) == [CLINICAL_PREFIX + "age", CLINICAL_PREFIX + "stage"]
    assert set(data.X[CLINICAL_PREFIX + "stage"].dropna()) == {0.0, 1.0, 2.0}  # codes, one-hot inside the folds
    roles = ColumnRoles.of(data.X.columns, STUDY.covariates.categorical)
    assert roles.numeric == (20,) and roles.categorical == (21,) and roles.radiomics == tuple(range(20))
    search = modelling.CandidateSearch(FAST, task=task_for(STUDY), roles=roles).fit(data.X, data.y)
    prepare = search.best_estimator_.named_steps["prepare"]
    encoder = prepare.named_transformers_["clinical_categorical"].named_steps["encode"]
    assert [list(c) for c in encoder.categories_] == [[0.0, 1.0, 2.0]]
    # Clinical columns are never selected away; the inner CV may keep no radiomics feature at all (k = 0).
    grid = _grid(task_for(STUDY), "logreg", 40, roles)
    assert grid["prepare__radiomics__select__k"][0] == 0
    used = modelling.selected_columns(search.best_estimator_, list(data.X.columns))
    assert used[-2:] == [CLINICAL_PREFIX + "age", CLINICAL_PREFIX + "stage"]


def test_compare_reports_clinical_radiomics_and_both_on_the_same_folds(tmp_path):
    features, labels = _cohort(120, radiomics_effect=0.0, unlabelled=4)
    root = _warehouse(tmp_path, features, labels)
    _, card = modelling.train_model(root, FAST, STUDY)
    comparison = card.comparison.as_dict()
    assert card.predictors == "both" and card.task == "binary"
    # The outcome is clinical: clinical-only is good, radiomics-only near chance, combined close to clinical.
    assert comparison["clinical"]["value"] > 0.75, comparison
    assert abs(comparison["radiomics"]["value"] - 0.5) < 0.15, comparison
    gain = comparison["gain"]
    assert gain["value"] == pytest.approx(comparison["both"]["value"] - comparison["clinical"]["value"])
    assert gain["ci_low"] <= gain["value"] <= gain["ci_high"] and gain["value"] > -0.05
    assert card.primary_metric.value == pytest.approx(comparison["both"]["value"])
    report = modelling.build_validation_report(root, seed=0)
    metrics = json.loads((root.reports / "metrics.json").read_text())
    assert metrics["task"] == "binary" and metrics["primary_metric"]["name"] == "auc"
    assert set(metrics["comparison"]) == {"metric", "clinical", "radiomics", "both", "gain"}
    page = report.files.report_path.read_text()
    assert "Does radiomics add to the clinical model?" in page and "clinical covariates only" in page
    # Unlabelled patients are scored with their covariates from labels.csv.
    table = modelling.predict_unlabelled(root)
    assert len(table) == 4 and table.probability.between(0, 1).all()


def test_radiomics_signal_shows_as_a_positive_gain(tmp_path):
    features, labels = _cohort(160, seed=1, radiomics_effect=2.5)
    root = _warehouse(tmp_path, features, labels)
    _, card = modelling.train_model(root, FAST, STUDY)
    gain = card.comparison.gain
    assert gain["value"] > 0.03 and gain["ci_high"] > 0, card.comparison
