"""Several scanners / sites (issue 27): study.yaml keys, ComBat inside the folds, batch-effect diagnostics,
leave-one-site-out validation, and the permutation null with harmonisation on."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from radiomics_assets.modelling.estimators import ColumnRoles, make_pipeline
from radiomics_assets.modelling.harmonise import (
    Harmoniser,
    batch_column_name,
    benjamini_hochberg,
    combat_apply,
    combat_fit,
    diagnostics,
)
from radiomics_assets.modelling.settings import ModellingSettings
from radiomics_assets.modelling.study import Batch, Harmonise, StudyError, Validation, parse_study
from radiomics_assets.modelling.tasks import task_for
from radiomics_assets.modelling.validation import cross_validate, site_splits
from radiomics_assets.synth_tables import SyntheticStudy, make_study

PATH = Path("/data/study.yaml")
FAST = ModellingSettings(models=("logreg",), folds=3, repeats=1, permutations=0, inner_folds=2)


def _cohort(n=180, sites=3, shift=1.0, effect=1.5, seed=0, method="combat"):
    spec = SyntheticStudy(
        outcome="binary",
        n_patients=n,
        n_features=20,
        n_informative=3,
        effect=effect,
        covariates=False,
        sites=sites,
        site_shift=shift,
        seed=seed,
    )
    features, labels, document = make_study(spec)
    X = features.set_index("patient_id")
    codes = pd.factorize(labels.site, sort=True)[0].astype(float)
    X[batch_column_name(method)] = codes
    y = (labels.label == "malignant").astype(int).to_numpy()
    return X, y, codes, document


# --- study.yaml ---------------------------------------------------------------------------------------------


def test_study_batch_keys_parse_as_written():
    study = parse_study(
        {
            "outcome": {"type": "binary", "positive": "malignant"},
            "batch": {"from_dicom": ["Manufacturer", "MagneticFieldStrength"]},
            "harmonise": "combat",
            "validation": "leave_site_out",
        },
        PATH,
    )
    assert study.batch == Batch(from_dicom=("Manufacturer", "MagneticFieldStrength"))
    assert study.harmonise == Harmonise.combat and study.validation == Validation.leave_site_out
    by_column = parse_study({"outcome": {"type": "binary"}, "batch": {"column": "hospital"}}, PATH)
    assert by_column.batch.column == "hospital" and by_column.harmonise == Harmonise.none
    assert by_column.validation == Validation.cv
    plain = parse_study({"outcome": {"type": "binary"}}, PATH)
    assert not plain.batch.configured and plain.harmonise == Harmonise.none


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"batch": {"from_dicom": ["Vendor"]}}, "'batch.from_dicom' must list some of"),
        ({"batch": {"from_dicom": ["Manufacturer"], "column": "site"}}, "exactly one of"),
        ({"batch": {"site": "x"}}, "unknown key(s) ['batch.site']"),
        ({"batch": ["Manufacturer"]}, "key 'batch' must be a mapping"),
        ({"harmonise": "combat"}, "key 'harmonise' needs a batch"),
        ({"validation": "leave_site_out"}, "key 'validation' needs a batch"),
        ({"batch": {"column": "site"}, "harmonise": "neurocombat"}, "key 'harmonise' must be one of"),
        ({"batch": {"column": "site"}, "validation": "loso"}, "key 'validation' must be one of"),
        ({"batch": {"column": "label"}}, "'batch.column' is the outcome column"),
    ],
)
def test_study_batch_errors_name_the_key_and_the_file(document, message):
    with pytest.raises(StudyError) as error:
        parse_study({"outcome": {"type": "binary", "column": "label"}, **document}, PATH)
    assert str(PATH) in str(error.value) and message in str(error.value)


# --- ComBat -------------------------------------------------------------------------------------------------


def test_combat_removes_a_known_additive_and_multiplicative_shift():
    rng = np.random.default_rng(0)
    batch = np.repeat([0.0, 1.0, 2.0], 200)
    base = rng.normal(size=(600, 8))
    shift = np.array([0.0, 3.0, -2.0])[batch.astype(int), None]
    scale = np.array([1.0, 2.5, 0.5])[batch.astype(int), None]
    X = 10 + 4 * (base * scale + shift)
    raw_means = np.array([X[batch == b].mean(axis=0) for b in (0, 1, 2)])
    assert np.ptp(raw_means, axis=0).min() > 15  # the shift is there before
    # Without the empirical-Bayes shrinkage, location/scale is matched exactly on the fitted rows.
    exact = combat_apply(combat_fit(X, batch, empirical_bayes=False), X, batch)
    means = np.array([exact[batch == b].mean(axis=0) for b in (0, 1, 2)])
    sds = np.array([exact[batch == b].std(axis=0, ddof=1) for b in (0, 1, 2)])
    assert np.ptp(means, axis=0).max() < 1e-8 and np.ptp(sds, axis=0).max() < 1e-8
    # With it, each feature's shift is pulled towards the mean shift of all features: what is left is within
    # the sampling error of a batch mean (SD 4 * 2.5 / sqrt(200) = 0.7 for batch 1), against 20 before.
    corrected = combat_apply(combat_fit(X, batch), X, batch)
    means = np.array([corrected[batch == b].mean(axis=0) for b in (0, 1, 2)])
    sds = np.array([corrected[batch == b].std(axis=0) for b in (0, 1, 2)])
    assert np.ptp(means, axis=0).max() < 1.5
    assert (sds.max(axis=0) / sds.min(axis=0)).max() < 1.25  # variances equalised (raw ratio 5)
    # Within-batch order is kept: ComBat is affine per batch and feature.
    assert np.corrcoef(corrected[batch == 1, 0], X[batch == 1, 0])[0, 1] > 0.999


def test_batch_unseen_in_training_is_left_uncorrected():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(90, 5))
    batch = np.repeat([0.0, 1.0, 2.0], 30)
    X[batch == 1] += 2
    full = np.column_stack([X, batch])
    step = Harmoniser(batch=5, features=tuple(range(5))).fit(full[batch != 2])
    out = step.transform(full)
    np.testing.assert_allclose(out[batch == 2], full[batch == 2])  # batch 2 was never seen: unchanged
    np.testing.assert_array_equal(out[:, 5], batch)  # the batch column passes through
    assert abs(out[batch == 1, 0].mean() - out[batch == 0, 0].mean()) < 0.2
    assert step.fitted_batches_ == [0.0, 1.0]


def test_benjamini_hochberg_matches_the_definition():
    p = np.array([0.01, 0.04, 0.03, 0.2])
    # sorted 0.01, 0.03, 0.04, 0.2 -> p * 4 / rank = 0.04, 0.06, 0.0533, 0.2 -> running minimum from the top
    np.testing.assert_allclose(benjamini_hochberg(p), [0.04, 0.16 / 3, 0.16 / 3, 0.2])


# --- the batch effect, before and inside the folds --------------------------------------------------------


def test_batch_auc_high_before_and_near_chance_after_combat_in_folds():
    X, _, codes, _ = _cohort(n=300)
    values = X.drop(columns=batch_column_name("combat")).to_numpy()
    before = diagnostics(values, codes, "none", folds=3)
    after = diagnostics(values, codes, "combat", folds=3)
    assert before["batch_auc_logreg"] > 0.95 and before["batch_auc_random_forest"] > 0.95
    assert before["share_features_differing_all_patients"] > 0.8
    assert abs(after["batch_auc_logreg"] - 0.5) < 0.1
    assert after["batch_auc_random_forest"] < 0.7
    assert after["share_features_differing"] < 0.1


def test_no_batch_effect_reads_as_chance_before():
    X, _, codes, _ = _cohort(n=300, shift=0.0)
    before = diagnostics(X.iloc[:, :-1].to_numpy(), codes, "none", folds=3)
    assert abs(before["batch_auc_logreg"] - 0.5) < 0.1 and before["share_features_differing_all_patients"] < 0.1


# --- the Pipeline step ------------------------------------------------------------------------------------


def test_roles_keep_the_batch_column_out_of_the_features():
    X, y, _, _ = _cohort(n=60)
    roles = ColumnRoles.of(X.columns)
    assert roles.batch == X.shape[1] - 1 and roles.batch not in roles.radiomics and roles.harmonise == "combat"
    pipeline = make_pipeline(0, "logreg", roles=roles, task=task_for())
    assert list(pipeline.named_steps)[0] == "harmonise"
    pipeline.fit(X.to_numpy(), y)
    # The model sees the radiomics columns only (the batch column is dropped by the ColumnTransformer).
    assert pipeline.named_steps["prepare"].transform(X.to_numpy()).shape[1] <= len(roles.radiomics)
    plain = ColumnRoles.of([c for c in X.columns if not c.startswith("batch__")])
    assert plain.batch is None and "harmonise" not in make_pipeline(0, "logreg", roles=plain).named_steps


def test_outcome_metric_with_and_without_combat_in_the_folds():
    X, y, _, _ = _cohort(n=180, shift=1.5)
    with_combat = cross_validate(X, y, FAST, roles=ColumnRoles.of(X.columns), task=task_for())
    X_none = X.rename(columns={batch_column_name("combat"): batch_column_name("none")})
    without = cross_validate(X_none, y, FAST, roles=ColumnRoles.of(X_none.columns), task=task_for())
    # The signal survives ComBat (the batch is independent of the outcome), and the scanner noise it removes
    # costs the uncorrected model (measured: 0.81 with, 0.59 without).
    assert with_combat.score > 0.7
    assert with_combat.score > without.score + 0.1
    assert "batch__combat" not in with_combat.selection_frequency


def test_permuted_labels_with_harmonisation_sit_at_chance():
    X, y, _, _ = _cohort(n=120, shift=1.5)
    roles = ColumnRoles.of(X.columns)
    rng = np.random.default_rng(7)
    scores = [cross_validate(X, rng.permutation(y), FAST, roles=roles, task=task_for()).score for _ in range(8)]
    assert abs(np.mean(scores) - 0.5) < 0.07, scores


# --- leave-one-site-out ----------------------------------------------------------------------------------


def test_leave_site_out_holds_one_site_out_per_fold():
    sites = np.array([0.0, 1.0, 2.0, 0.0, 1.0, 2.0, 2.0])
    names, splits = site_splits(sites)
    assert names == ["0", "1", "2"]
    for (_, fold, train, test), level in zip(splits, (0.0, 1.0, 2.0), strict=True):
        assert fold == int(level) and set(sites[test]) == {level} and level not in set(sites[train])
        assert sorted([*train, *test]) == list(range(7))
    with pytest.raises(ValueError, match="at least 2 batches"):
        site_splits(np.zeros(5))


def test_leave_site_out_reports_the_metric_per_held_out_site():
    X, y, _, _ = _cohort(n=150, shift=1.0)
    cv = cross_validate(X, y, FAST, roles=ColumnRoles.of(X.columns), task=task_for(), validation="leave_site_out")
    assert cv.validation == "leave_site_out" and cv.scheme.startswith("leave-one-site-out: 3 outer folds")
    assert set(cv.site_scores) == {"0", "1", "2"} and all(0.5 < v <= 1 for v in cv.site_scores.values())
    codes = X[batch_column_name("combat")].to_numpy()
    for fold, site in enumerate((0.0, 1.0, 2.0)):
        assert set(codes[cv.fold_of[0] == fold]) == {site}
    with pytest.raises(ValueError, match="needs a batch column"):
        cross_validate(X.iloc[:, :-1], y, FAST, task=task_for(), validation="leave_site_out")


def test_synthetic_sites_shift_features_but_not_the_truth():
    from radiomics_assets.synth_tables import true_risk

    plain = SyntheticStudy(outcome="binary", n_patients=60, n_features=10, covariates=False)
    shifted = SyntheticStudy(outcome="binary", n_patients=60, n_features=10, covariates=False, sites=3, site_shift=1)
    features, labels, document = make_study(shifted)
    assert document["batch"] == {"column": "site"} and sorted(labels.site.unique()) == ["S1", "S2", "S3"]
    pd.testing.assert_series_equal(true_risk(plain), true_risk(shifted))
    assert not np.allclose(make_study(plain)[0].feat_005, features.feat_005)
    one_site = make_study(SyntheticStudy(outcome="binary", n_patients=60, n_features=10, covariates=False))
    pd.testing.assert_frame_equal(one_site[0], make_study(plain)[0])
    assert "site" not in one_site[1]


# --- end to end: study.yaml with batch, harmonise and leave_site_out, in a real Dagster run ---------------


def test_end_to_end_batch_from_labels_column_with_combat_and_leave_site_out(tmp_path):
    import json

    import dagster as dg
    import yaml

    from radiomics_assets.defs.cohort_assets import COHORT_ASSETS
    from radiomics_assets.defs.resources import RadiomicsConfig
    from radiomics_assets.ingest.feature_tables import import_feature_table
    from radiomics_assets.paths import DataRoot
    from radiomics_assets.synth_tables import write_study

    spec = SyntheticStudy(
        outcome="binary", n_patients=90, n_features=12, covariates=False, effect=2.0, sites=3, site_shift=1.0, seed=2
    )
    write_study(spec, tmp_path)
    document = yaml.safe_load((tmp_path / "study.yaml").read_text())
    assert document["batch"] == {"column": "site"}
    document.update(harmonise="combat", validation="leave_site_out")
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(document))
    root = DataRoot(tmp_path)
    import_feature_table(root, tmp_path / "feature_tables" / "synthetic.csv")
    fast = {"cv_folds": 3, "cv_repeats": 1, "cv_inner_folds": 2, "permutations": 2, "modelling_jobs": 1}
    with dg.instance_for_test() as instance:
        config = RadiomicsConfig(data_dir=str(tmp_path), candidate_models=["logreg"], **fast)
        result = dg.materialize(COHORT_ASSETS, instance=instance, resources={"radiomics": config})
    assert result.success
    labels_meta = result.asset_materializations_for_node("labels")[0].metadata
    assert labels_meta["batch"].value == "labels.csv column 'site'" and labels_meta["harmonise"].value == "combat"
    assert labels_meta["patients_per_batch"].value == "S1: 30, S2: 30, S3: 30"
    metrics = json.loads((root.reports / "metrics.json").read_text())
    effect = metrics["batch_effect"]
    assert effect["batch"] == ["S1", "S2", "S3"] and effect["n_batches"] == 3
    assert effect["before"]["batch_auc"] > 0.9 and effect["after"]["batch_auc_logreg"] < 0.7
    assert set(effect["per_site"]) == {"S1", "S2", "S3"}
    outcome = effect["outcome"]
    assert outcome["metric"] == "auc" and outcome["with_harmonisation"] == pytest.approx(
        metrics["primary_metric"]["value"]
    )
    assert 0 <= outcome["without"] <= 1 and outcome["without"] != outcome["with_harmonisation"]
    page = (root.reports / "report.html").read_text()
    assert "Batch effect (scanner / site)" in page and "held-out site" in page and "without.</p>" in page
    card = json.loads((root.models / "model_card.json").read_text())
    assert not any(f.startswith("batch__") for f in card["features_used"])


# --- the scanner from DICOM headers ----------------------------------------------------------------------


def test_scanner_headers_are_read_and_batch_from_dicom_joins_them(tmp_path):
    from radiomics_assets.ingest.dicom_headers import read_header, scanner_identity
    from radiomics_assets.modelling.matrix import patient_batches
    from radiomics_assets.synth import SynthConfig, make_patient, write_ct_series
    from radiomics_assets.warehouse import Warehouse, write_derived_table

    patient = make_patient(SynthConfig(n_patients=1, seed=3, rows=16, columns=16, slices=4), 0, 1)
    written = write_ct_series(patient, tmp_path / "ct", seed=3)
    path = sorted((tmp_path / "ct").glob("CT_*.dcm"))[0]
    header = read_header(path)
    assert header.manufacturer == "radiomics_assets synthetic"
    row = scanner_identity(header)
    assert row["slice_thickness"] == pytest.approx(float(written[0].SliceThickness))
    assert row["institution_name"] is None and row["magnetic_field_strength"] is None

    warehouse = Warehouse(tmp_path / "warehouse.duckdb")
    write_derived_table(warehouse, "labels", pd.DataFrame({"patient_id": ["a", "b", "c", "d"], "label": [0, 1, 0, 1]}))
    series = pd.DataFrame(
        {
            "patient_id": ["a", "b", "c", "c"],
            "manufacturer": ["GE", "Siemens", "GE", "Philips"],
            "slice_thickness": [2.9, 5.2, 3.1, 3.0],
        }
    )
    write_derived_table(warehouse, "series", series)
    study = parse_study(
        {"outcome": {"type": "binary"}, "batch": {"from_dicom": ["Manufacturer", "SliceThickness"]}}, PATH
    )
    batches = patient_batches(warehouse, study)
    # Thickness rounded to whole mm; a patient with two scanners gets both; no series: unknown.
    assert batches.to_dict() == {"a": "GE | 3.0", "b": "Siemens | 5.0", "c": "GE | 3.0 + Philips | 3.0", "d": "unknown"}


SARCOMA = Path("/work/shared/data/sarcoma/dicom")


@pytest.mark.skipif(not SARCOMA.is_dir(), reason="the shared sarcoma DICOM sample is not on this machine")
def test_real_sarcoma_mr_comes_from_several_manufacturers():
    from radiomics_assets.ingest.dicom_headers import read_header, scanner_identity

    makers = {}
    for patient in sorted(SARCOMA.glob("STS_*")):
        first = sorted((patient / "MR_T1" / "image").glob("*.dcm"))[0]
        makers[patient.name] = scanner_identity(read_header(first))["manufacturer"].split(" ")[0]
    # The IBSI sample's T1 MR: 3 GE, 2 Philips, 1 Siemens (too few patients to measure a batch effect).
    assert sorted(makers.values()) == ["GE", "GE", "GE", "Philips", "Philips", "SIEMENS"]
