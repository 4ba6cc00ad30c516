"""The cohort assets in a real Dagster run over a small multi-modality warehouse (real DuckDB, no PyRadiomics).

The warehouse holds CT and PET features per patient with a planted signal, a training and an external test
cohort, unlabelled patients, a patient without PET, an MR block only three patients have, and a labelled
patient without any features; every one of them must be accounted for in tables, metadata and report.
"""

import json
import re

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from radiomics_assets.defs.cohort_assets import COHORT_ASSETS
from radiomics_assets.defs.resources import RadiomicsConfig
from radiomics_assets.warehouse import Warehouse

N_FEATURES = 12
SIGNAL = {"CT": "f00", "PT": "f03"}  # shifted by 1.5 SD in positive patients
TRAIN = [f"TRN-{i:03d}" for i in range(1, 31)]
TEST = [f"TST-{i:03d}" for i in range(1, 11)]
UNLABELLED = [f"NEW-{i:03d}" for i in range(1, 6)]
EMPTY_LABEL = "NEW-006"  # in labels.csv with an empty label: unlabelled, so it gets a prediction
NO_PET = {"TRN-007", "NEW-005"}
WITH_MR = {"TRN-001", "TRN-002", "TRN-003"}  # 3 of 46 patients: below the coverage rule, excluded
NO_FEATURES = "GONE-001"  # labelled, but nothing was extracted


def _features(key: str, label: int, rng: np.random.Generator) -> pd.DataFrame:
    rows = []
    for modality in ("CT", "PT", "MR"):
        if (modality == "PT" and key in NO_PET) or (modality == "MR" and key not in WITH_MR):
            continue
        for j in range(N_FEATURES):
            name = f"f{j:02d}"
            value = rng.standard_normal() + (1.5 * label if SIGNAL.get(modality) == name else 0.0)
            rows.append(
                {
                    "patient_id": key,
                    "series_uid": f"{key}-{modality}",
                    "modality": modality,
                    "roi": "GTV",
                    "image_type": "original",
                    "feature_class": "firstorder",
                    "feature": name,
                    "value": value,
                }
            )
    return pd.DataFrame(rows)


def write_cohort_warehouse(tmp_path):
    """Features straight into the warehouse plus ``labels.csv`` (what the patient assets would have left)."""
    rng = np.random.default_rng(4)
    labels = {k: i % 2 for i, k in enumerate(TRAIN)} | {k: i % 2 for i, k in enumerate(TEST)}
    # Unlabelled patients get label-0-like features: the test only checks who is scored, not the scores.
    rows = pd.concat([_features(key, labels.get(key, 0), rng) for key in TRAIN + TEST + UNLABELLED + [EMPTY_LABEL]])
    with Warehouse(tmp_path / "radiomics.duckdb").connect() as con:  # one write instead of one per patient
        con.register("incoming", rows)
        con.execute("INSERT INTO features BY NAME SELECT * FROM incoming")
    csv = ["patient_id,label,cohort"]
    csv += [f"{k},{'yes' if v else 'no'},train" for k, v in labels.items() if k in TRAIN]
    csv += [f"{k},{'yes' if v else 'no'},test" for k, v in labels.items() if k in TEST]
    csv += [f"{NO_FEATURES},yes,train", f"{EMPTY_LABEL},,train"]
    (tmp_path / "labels.csv").write_text("\n".join(csv) + "\n")
    return tmp_path


@pytest.fixture
def warehouse_root(tmp_path):
    return write_cohort_warehouse(tmp_path)


def test_cohort_assets_in_a_dagster_run(warehouse_root):
    config = RadiomicsConfig(
        data_dir=str(warehouse_root),
        candidate_models=["logreg", "svm"],
        cv_folds=3,
        cv_repeats=2,
        cv_inner_folds=2,
        permutations=3,
        modelling_jobs=1,
    )
    with dg.instance_for_test() as instance:
        result = dg.materialize(COHORT_ASSETS, instance=instance, resources={"radiomics": config})
    assert result.success
    meta = {
        a: result.asset_materializations_for_node(a)[0].metadata
        for a in ("feature_matrix", "model", "selected_features", "predictions", "validation_report")
    }
    warehouse = Warehouse(warehouse_root / "radiomics.duckdb")

    # Predictions: exactly the patients with features and no label (none of the train or test patients).
    predicted = warehouse.query("SELECT * FROM predictions ORDER BY patient_id")
    assert list(predicted.patient_id) == sorted(UNLABELLED + [EMPTY_LABEL])
    assert predicted.probability.between(0, 1).all() and meta["predictions"]["patients"].value == 6

    # Multi-modality matrix: CT and PET columns, MR excluded for everyone; the patient without PET is kept.
    matrix = warehouse.query("SELECT * FROM feature_matrix").set_index("patient_id")
    assert {c.split("__")[0] for c in matrix.columns if c != "label"} == {"CT", "PT"}
    assert "TRN-007" in matrix.index and matrix.loc["TRN-007"].filter(like="PT__").isna().all()
    assert matrix.loc["TRN-007"].filter(like="CT__").notna().all()
    gaps = warehouse.query("SELECT * FROM missing_blocks")
    pet_gaps = gaps[gaps.block == "PT__GTV"]
    assert set(pet_gaps.patient_id) == NO_PET and pet_gaps.handling.str.startswith("imputed").all()
    mr_gaps = gaps[gaps.block == "MR__GTV"]
    assert len(mr_gaps) == 46 - 3 and mr_gaps.handling.str.startswith("block excluded").all()
    assert list(gaps[gaps.block == "(no features)"].patient_id) == [NO_FEATURES]
    assert meta["feature_matrix"]["patients_missing_a_block"].value == 46 - 3 + 1  # MR gaps cover both NO_PET
    assert "TRN-007" in meta["feature_matrix"]["missing_blocks"].value

    # Model card: training cohort only (the test patients and the patient without features are not in it).
    card = json.loads((warehouse_root / "models" / "model_card.json").read_text())
    assert card["training_cohort"] == {"n_patients": 30, "n_positive": 15, "n_negative": 15}
    assert set(card["candidates"]) == {"logreg", "svm"} and card["threshold"] == 0.5 and card["standardise"]

    # metrics.json: the keys the design names, and the external cohort reported separately.
    metrics = json.loads((warehouse_root / "reports" / "metrics.json").read_text())
    assert {
        "auc",
        "auc_ci_low",
        "auc_ci_high",
        "accuracy",
        "precision",
        "recall",
        "f1",
        "n_patients",
        "n_features_selected",
        "cv_scheme",
    } <= set(metrics)
    assert metrics["n_patients"] == 30 and (metrics["n_positive"], metrics["n_negative"]) == (15, 15)
    assert "3-fold x 2" in metrics["cv_scheme"] and set(metrics["model_comparison"]) == {"logreg", "svm"}
    external = metrics["external"]
    assert external["n_patients"] == 10 and external["n_positive"] == 5
    assert external["auc_ci_low"] <= external["auc"] <= external["auc_ci_high"]
    # Two planted 1.5-SD features: well above chance, internally and on the held-out patients.
    assert metrics["auc"] > 0.75 and external["auc"] > 0.75, (metrics["auc"], external["auc"])
    chosen = {r["feature"] for r in metrics["selected_features"]}
    assert chosen & {"CT__GTV__original__firstorder__f00", "PT__GTV__original__firstorder__f03"}
    assert all(0 < r["selection_frequency"] <= 1 for r in metrics["selected_features"])

    # Selected features table agrees with the report's list.
    table = warehouse.query("SELECT feature, selection_frequency FROM selected_features WHERE selected")
    assert set(table.feature) == chosen

    # report.html: self-contained, every plot for both cohorts, and the reviewer's facts.
    page = (warehouse_root / "reports" / "report.html").read_text()
    assert not re.search(r"(?:src|href)\s*=\s*[\"'](?!data:)", page, re.I)
    assert "<script" not in page and "<link" not in page and "url(" not in page
    for plot in ("ROC curve", "precision-recall curve", "calibration curve", "confusion matrix"):
        assert page.count(f'alt="{plot} (') == 2, plot
    assert page.count('src="data:image/png;base64,') == 10  # + decision curve and permutation null
    assert "Permutation p-value" in page and "Calibration slope" in page and "Duplicate images" in page
    assert 0 < metrics["permutation_p_value"] <= 1 and metrics["groups"]["groups"] == []
    assert {"calibration_slope", "calibration_intercept", "decision_curve"} <= set(metrics)
    assert "held-out test cohort" in page and "probability is &ge; 0.5" in page
    assert "30 patients (15 positive, 15 negative)" in page and "3-fold x 2" in page
    assert "TRN-007" in page and "MR__GTV" in page and NO_FEATURES in page
    assert "CT__GTV__original__firstorder__f00" in page or "PT__GTV__original__firstorder__f03" in page

    # UI metadata: headline numbers and the ROC plot.
    report_meta = meta["validation_report"]
    assert report_meta["auc"].value == round(metrics["auc"], 3)  # rounded to what the cohort can tell apart
    assert report_meta["external_auc"].value == round(external["auc"], 3)
    assert report_meta["roc"].value.startswith("![ROC](data:image/png;base64,")
    assert report_meta["n_negative"].value == 15 and report_meta["threshold"].value == 0.5
    assert report_meta["permutation_p_value"].value == pytest.approx(metrics["permutation_p_value"])
