"""Every outcome type end to end from labels.csv + study.yaml + an imported feature table, in a real Dagster run:
the honest estimate with its CI above chance on a planted signal, near chance on a permuted outcome, and the same
contract (metrics.json, card, predictions, registry gate, UI metadata) for each."""

import json

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from radiomics_assets import modelling
from radiomics_assets.defs.cohort_assets import COHORT_ASSETS
from radiomics_assets.defs.resources import RadiomicsConfig
from radiomics_assets.ingest.feature_tables import import_feature_table
from radiomics_assets.modelling.study import parse_study
from radiomics_assets.paths import DataRoot
from radiomics_assets.synth_tables import SyntheticStudy, make_study, write_study
from radiomics_assets.warehouse import Warehouse

FAST = {"cv_folds": 3, "cv_repeats": 1, "cv_inner_folds": 2, "permutations": 2, "modelling_jobs": 1}
PRIMARY = {"survival": "harrell_c", "multiclass": "macro_auc", "continuous": "r2", "binary": "auc"}


def _study_root(tmp_path, outcome: str, covariates: bool, unlabelled: int = 3) -> DataRoot:
    spec = SyntheticStudy(outcome=outcome, n_patients=120, n_features=25, covariates=covariates, effect=2.0, seed=1)
    write_study(spec, tmp_path)
    labels = pd.read_csv(tmp_path / "labels.csv", dtype=str)
    columns = ["time_to_event", "event"] if outcome == "survival" else ["label"]
    labels.loc[labels.index[-unlabelled:], columns] = ""  # no outcome: excluded from training, then predicted
    labels.to_csv(tmp_path / "labels.csv", index=False)
    result = import_feature_table(DataRoot(tmp_path), tmp_path / "feature_tables" / "synthetic.csv")
    assert result.n_patients == 120 and result.n_features == 25
    return DataRoot(tmp_path)


def _materialise(root: DataRoot) -> dg.ExecuteInProcessResult:
    with dg.instance_for_test() as instance:
        config = RadiomicsConfig(data_dir=str(root.path), **FAST)
        result = dg.materialize(COHORT_ASSETS, instance=instance, resources={"radiomics": config})
        assert result.success
        return result


@pytest.mark.parametrize(("outcome", "covariates"), [("survival", True), ("multiclass", False), ("continuous", False)])
def test_outcome_type_end_to_end(tmp_path, outcome, covariates):
    root = _study_root(tmp_path, outcome, covariates)
    result = _materialise(root)
    metrics = json.loads((root.reports / "metrics.json").read_text())
    primary = metrics["primary_metric"]
    assert metrics["task"] == outcome and primary["name"] == PRIMARY[outcome]
    assert primary["ci_low"] <= primary["value"] <= primary["ci_high"]
    assert primary["value"] > primary["chance"] + 0.1, primary  # the planted signal is found, honestly
    assert metrics["n_patients"] == 117 and metrics["excluded_no_outcome"] == 3
    card = json.loads((root.models / "model_card.json").read_text())
    assert card["task"] == outcome and card["primary_metric"]["value"] == pytest.approx(primary["value"])
    assert card["features_used"] and all(
        f.startswith("TABLE__synthetic__") for f in card["features_used"] if "clin" not in f
    )
    predictions = Warehouse(root.warehouse).query("SELECT * FROM predictions ORDER BY patient_id")
    assert len(predictions) == 3 and (predictions.task == outcome).all()
    report = result.asset_materializations_for_node("validation_report")[0].metadata
    assert report["task"].value == outcome and report["primary_metric"].value == PRIMARY[outcome]
    assert report[PRIMARY[outcome]].value == round(primary["value"], 3) and "plot" in report
    model_meta = result.asset_materializations_for_node("model")[0].metadata
    assert model_meta[f"cv_{PRIMARY[outcome]}"].value == round(primary["value"], 3)
    [check] = result.get_asset_check_evaluations()
    assert check.passed and check.metadata["metric"].value == PRIMARY[outcome]
    page = (root.reports / "report.html").read_text()
    if outcome == "survival":
        assert metrics["n_events"] == card["training_cohort"]["n_events"] > 10
        assert {"uno_c", "integrated_brier_score", "time_dependent_auc", "risk_groups"} <= set(metrics)
        assert 0 <= metrics["risk_groups"]["logrank_p"] <= 1
        horizons = [c for c in predictions.columns if c.startswith("survival_at_")]
        assert len(horizons) == 3 and predictions[horizons].stack().between(0, 1).all()
        assert (predictions[horizons].diff(axis=1).iloc[:, 1:] <= 1e-12).all().all()  # survival falls with time
        assert "Kaplan" in page and "Does radiomics add to the clinical model?" in page
        comparison = metrics["comparison"]
        assert comparison["gain"]["ci_low"] <= comparison["gain"]["value"] <= comparison["gain"]["ci_high"]
        assert "radiomics_gain_over_clinical" in report
    if outcome == "multiclass":
        assert set(metrics["auc_per_class"]) == {"G1", "G2", "G3"}
        probabilities = predictions[[f"probability_{c}" for c in ("G1", "G2", "G3")]]
        np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-9)
        assert sum(map(sum, metrics["confusion_matrix"]["matrix"])) == 117
    if outcome == "continuous":
        assert {"mae", "rmse"} <= set(metrics) and predictions.predicted_value.notna().all()


@pytest.mark.parametrize("outcome", ["survival", "multiclass", "continuous"])
def test_permuted_outcome_sits_at_chance(tmp_path, outcome):
    """Cheap version of benchmarks/bench_outcome_null.py: the whole procedure (two families, choice inside)."""
    spec = SyntheticStudy(outcome=outcome, n_patients=60, n_features=20, covariates=False, effect=1.5, seed=2)
    features, labels, document = make_study(spec)
    labels.to_csv(tmp_path / "labels.csv", index=False)
    study = parse_study(document, tmp_path / "study.yaml")
    table = modelling.load_outcomes(DataRoot(tmp_path), study).table
    task = modelling.task_for(study)
    X, y = features.set_index("patient_id").loc[table.patient_id], task.target(table)
    settings = modelling.ModellingSettings(seed=0, models=task.model_families[:2], folds=3, repeats=1, inner_folds=2)
    rng = np.random.default_rng(0)
    null = []
    for _ in range(6):
        shuffled = task.permute(np.asarray(y), np.arange(len(y)), rng)
        null.append(modelling.cross_validate(X, shuffled, settings, with_candidates=False, task=task).score)
    observed = modelling.cross_validate(X, y, settings, with_candidates=False, task=task).score
    if outcome == "continuous":
        # Out of sample, R² of a model fitted to noise sits below 0 (the training mean alone costs ~2/n_train;
        # every fitted coefficient a little more), never above it.
        assert -0.25 < np.mean(null) < 0.02, null
    else:
        assert abs(np.mean(null) - task.chance_level) < 0.1, null
    assert observed > max(null), (observed, null)
