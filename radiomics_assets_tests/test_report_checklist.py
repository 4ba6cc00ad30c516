"""The reviewer's report (issue 26) in a real Dagster run of the cohort job over a small real DuckDB warehouse.

The warehouse holds what the patient assets would have left: series (two scanners), masks (two sources), features
with a strongly planted signal, and a labels.csv with covariates, a held-out test cohort, a patient without an
outcome, a labelled patient without features, a patient whose images got no mask and one whose mask got no
features. The cohort flow must equal the DuckDB tables' counts, the checklist must hold the 58 CLEAR items, the
permutation test (199 permutations) must reach p < 0.01, and the sample size must match a hand computation.
"""

import json
import math
import re

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from radiomics_assets.defs.cohort_assets import COHORT_ASSETS
from radiomics_assets.defs.resources import RadiomicsConfig
from radiomics_assets.modelling.checklist import CLEAR_ITEMS, cohort_flow, cox_snell_from_c, riley_binary
from radiomics_assets.modelling.report_pdf import find_browser
from radiomics_assets.modelling.tasks.binary import calibration
from radiomics_assets.warehouse import Warehouse

N_FEATURES = 8
TRAIN = [f"TRN-{i:03d}" for i in range(1, 41)]
TEST = [f"TST-{i:03d}" for i in range(1, 11)]
NO_OUTCOME = "TRN-900"  # features, in labels.csv with an empty label
NO_FEATURES = "TRN-901"  # labelled, images and a mask, nothing extracted
NO_MASK = "RAW-001"  # images only: never segmented
MASK_ONLY = "RAW-002"  # a mask but no features
SEEDED = set(TRAIN[:10])  # masks from a seeded segmentation, the rest hand-drawn


def _write(root):
    rng = np.random.default_rng(7)
    labels = {k: i % 2 for i, k in enumerate(TRAIN)} | {k: i % 2 for i, k in enumerate(TEST)}
    with_features = TRAIN + TEST + [NO_OUTCOME]
    imaged = with_features + [NO_FEATURES, NO_MASK, MASK_ONLY]
    series = pd.DataFrame(
        {
            "patient_id": imaged,
            "study_uid": [f"{k}-ST" for k in imaged],
            "series_uid": [f"{k}-CT" for k in imaged],
            "modality": "CT",
            "spacing_x": [0.7 + 0.01 * (i % 5) for i in range(len(imaged))],
            "spacing_y": [0.7 + 0.01 * (i % 5) for i in range(len(imaged))],
            "spacing_z": [1.0 if i % 3 else 2.5 for i in range(len(imaged))],
            "manufacturer": ["SIEMENS" if i % 2 else "GE MEDICAL SYSTEMS" for i in range(len(imaged))],
            # Paths of files that were never written: the mask gallery skips what it cannot read.
            "source_path": [str(root / "inbox" / k) for k in imaged],
            "volume_path": [str(root / "volumes" / f"{k}.nrrd") for k in imaged],
        }
    )
    masked = [k for k in imaged if k != NO_MASK]
    masks = pd.DataFrame(
        {
            "patient_id": masked,
            "series_uid": [f"{k}-CT" for k in masked],
            "roi": "GTV",
            "source_kind": ["seeded" if k in SEEDED else "rtstruct" for k in masked],
            "mask_path": [str(root / "masks" / f"{k}.nrrd") for k in masked],
        }
    )
    rows = []
    for key in with_features:
        label = labels.get(key, 0)
        for j in range(N_FEATURES):
            # Two features shifted by 3 SD: a signal no permutation matches, so p reaches its floor 1/200.
            rows.append(
                {
                    "patient_id": key,
                    "series_uid": f"{key}-CT",
                    "modality": "CT",
                    "roi": "GTV",
                    "image_type": "original",
                    "feature_class": "firstorder",
                    "feature": f"f{j:02d}",
                    "value": rng.standard_normal() + (3.0 * label if j < 2 else 0.0),
                    "params_hash": "not-a-shipped-file",
                    "pyradiomics_version": "3.1.0",
                }
            )
    with Warehouse(root / "radiomics.duckdb").connect() as con:
        for table, frame in (("series", series), ("masks", masks), ("features", pd.DataFrame(rows))):
            con.register("incoming", frame)
            con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM incoming")
            con.unregister("incoming")
    csv = ["patient_id,label,cohort,age,sex"]
    for i, key in enumerate(TRAIN + TEST):
        cohort = "train" if key in TRAIN else "test"
        csv.append(f"{key},{'yes' if labels[key] else 'no'},{cohort},{50 + i},{'F' if i % 3 else 'M'}")
    csv += [f"{NO_OUTCOME},,train,60,F", f"{NO_FEATURES},yes,train,61,M"]
    (root / "labels.csv").write_text("\n".join(csv) + "\n")
    (root / "study.yaml").write_text(
        "outcome:\n  type: binary\n  column: label\n  positive: 'yes'\n"
        "covariates:\n  numeric: [age]\n  categorical: [sex]\npredictors: both\n"
    )
    return root


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = _write(tmp_path_factory.mktemp("checklist"))
    config = RadiomicsConfig(
        data_dir=str(root),
        candidate_models=["logreg"],
        cv_folds=3,
        cv_repeats=1,
        cv_inner_folds=2,
        permutations=199,
        permutation_seconds=0,  # all 199 whatever the machine's load (the budget has its own test)
        modelling_jobs=2,
    )
    with dg.instance_for_test() as instance:
        result = dg.materialize(COHORT_ASSETS, instance=instance, resources={"radiomics": config})
    assert result.success
    metrics = json.loads((root / "reports" / "metrics.json").read_text())
    checklist = json.loads((root / "reports" / "checklist.json").read_text())
    page = (root / "reports" / "report.html").read_text()
    return root, metrics, checklist, page


def test_cohort_flow_equals_the_duckdb_tables(report):
    root, metrics, _, page = report
    flow = metrics["cohort_flow"]
    with Warehouse(root / "radiomics.duckdb").connect() as con:

        def count(sql):
            return con.execute(sql).fetchone()[0]

        assert (
            flow["studies_ingested"]
            == count("SELECT COUNT(DISTINCT (patient_id, coalesce(study_uid, ''))) FROM series")
            == 54
        )
        assert flow["patients_with_images"] == count("SELECT COUNT(DISTINCT patient_id) FROM series") == 54
        assert flow["patients_with_masks"] == count("SELECT COUNT(DISTINCT patient_id) FROM masks") == 53
        assert flow["patients_with_features"] == count("SELECT COUNT(DISTINCT patient_id) FROM features") == 51
        with_outcome = count("SELECT COUNT(*) FROM labels WHERE label IS NOT NULL")
        assert flow["patients_with_outcome"] == with_outcome == 51  # 40 + 10 + NO_FEATURES
        assert flow["training_cohort_with_outcome"] == 41 and flow["test_cohort_with_outcome"] == 10
        matrix_train = count(
            "SELECT COUNT(*) FROM feature_matrix JOIN labels USING (patient_id) "
            "WHERE labels.label IS NOT NULL AND cohort = 'train'"
        )
        assert flow["training_with_features_and_outcome"] == matrix_train == 40
    assert flow["patients_in_labels_csv"] == 52
    assert flow["analysed"] == metrics["n_patients"] == 40
    assert flow["test_with_features_and_outcome"] == metrics["external"]["n_patients"] == 10
    reasons = {e["reason"]: e["patients"] for e in metrics["cohort_exclusions"]}
    assert reasons["images without a usable mask (no ROI found or matched)"] == [NO_MASK]
    assert reasons["mask but no features (extraction failed or pending)"] == sorted([MASK_ONLY, NO_FEATURES])
    assert reasons["in labels.csv, no outcome (label empty)"] == [NO_OUTCOME]
    assert reasons["labelled but has no features"] == [NO_FEATURES]
    assert 'id="cohort-flow"' in page and "training cohort with features and an outcome" in page

    # Patient table: by cohort and class, with the study's covariates.
    groups = {(g["cohort"], g["class"]): g for g in metrics["patient_table"]["groups"]}
    assert {k: g["n"] for k, g in groups.items()} == {
        ("train", "no"): 20,
        ("train", "yes"): 20,
        ("test", "no"): 5,
        ("test", "yes"): 5,
    }
    train_yes_ages = [50 + i for i, k in enumerate(TRAIN) if i % 2]
    assert groups[("train", "yes")]["age"]["mean"] == pytest.approx(np.mean(train_yes_ages))
    assert groups[("train", "yes")]["age"]["min"] == 51
    sexes = ["F" if i % 3 else "M" for i, _ in enumerate(TRAIN) if i % 2]
    assert groups[("train", "yes")]["sex"] == {"F": sexes.count("F"), "M": sexes.count("M")}


def test_a_patient_whose_run_failed_is_excluded_with_the_failing_step(report):
    root, _, _, _ = report
    warehouse = Warehouse(root / "radiomics.duckdb")
    _, exclusions = cohort_flow(warehouse, [], [], [], {NO_FEATURES: "features", "TRN-001": "studies"})
    reasons = {e["reason"]: e["patients"] for e in exclusions if e["stage"] == "training_with_features_and_outcome"}
    # TRN-001 has features now (a later run succeeded), so its old failure changes nothing.
    assert reasons == {
        "labelled, its run failed at the features step (problem and fix: `radiomics-assets status`, "
        "logs/failures.log)": [NO_FEATURES]
    }


def test_imaging_and_extraction_summary(report):
    _, metrics, _, page = report
    ct = metrics["imaging"]["modalities"]["CT"]
    assert ct["series"] == 51 and ct["patients"] == 51  # the series features came from
    assert ct["slice_thickness_mm"] == {"min": 1.0, "median": 1.0, "max": 2.5}
    assert ct["pixel_spacing_mm"]["min"] == pytest.approx(0.7) and ct["pixel_spacing_mm"]["max"] == pytest.approx(0.74)
    assert sum(ct["manufacturer"].values()) == 51 and set(ct["manufacturer"]) == {"SIEMENS", "GE MEDICAL SYSTEMS"}
    sources = metrics["imaging"]["mask_sources"]
    assert sources["seeded"]["patients"] == 10 and sources["rtstruct"]["patients"] == 53 - 10
    files = metrics["extraction"]["parameter_files"]
    assert [(f["modality"], f["params_hash"], f["patients"]) for f in files] == [("CT", "not-a-shipped-file", 51)]
    assert files[0]["file"] is None and "RADIOMICS_PARAMS_DIR" in files[0]["note"]
    repro = metrics["reproducibility"]
    assert repro["model_id"] == metrics["model_id"] and repro["seed"] == 0
    assert repro["settings"]["permutations"] == 199
    assert 'id="imaging"' in page and "@media print" in page


def test_checklist_has_every_clear_item(report):
    _, metrics, checklist, page = report
    items = checklist["items"]
    assert checklist["standard"] == "CLEAR" and len(CLEAR_ITEMS) == 58
    assert [i["id"] for i in items] == list(range(1, 59))
    assert all(i["status"] in ("answered", "not_applicable", "for_authors") for i in items)
    assert all(i["item"] and i["where"] and i["answer"] for i in items)
    by_id = {i["id"]: i for i in items}
    assert by_id[8]["status"] == "for_authors"  # ethics: the pipeline cannot know
    assert by_id[45]["status"] == "answered" and "analysed: 40" in by_id[45]["answer"]
    assert by_id[9]["status"] == "answered" and str(metrics["sample_size"]["minimum_n"]) in by_id[9]["answer"]
    assert by_id[17]["status"] == "answered" and "age" in by_id[17]["answer"]
    assert 'id="checklist"' in page and "58 items" in page


def test_permutation_p_reaches_below_001(report):
    _, metrics, _, _ = report
    permutation = metrics["permutation"]
    assert permutation["n_permutations"] == 199
    assert permutation["observed_auc"] > max(permutation["null_aucs"])
    assert metrics["permutation_p_value"] == pytest.approx(1 / 200) and metrics["permutation_p_value"] < 0.01


@pytest.mark.skipif(find_browser() is None, reason="no Chromium on PATH (.ci/run installs Debian's chromium)")
def test_the_report_prints_to_an_a4_pdf(report):
    root, _, _, page = report
    pdf = (root / "reports" / "report.pdf").read_bytes()
    assert pdf.startswith(b"%PDF-")
    # The print stylesheet's @page size A4 (210 x 297 mm = 595.3 x 841.9 pt) on every page, and the long report
    # (a dozen sections, plots, the 58-item checklist) over many pages.
    boxes = [tuple(float(v) for v in box.split()) for box in re.findall(rb"/MediaBox\s*\[([^\]]+)\]", pdf)]
    assert boxes and all(abs(w - 595.3) < 1 and abs(h - 841.9) < 1 for _, _, w, h in boxes), boxes
    pages = len(re.findall(rb"/Type\s*/Page(?!s)", pdf))
    assert pages >= 5 and "CLEAR" in page


def test_sample_size_against_hand_computation(report):
    _, metrics, _, page = report
    sample = metrics["sample_size"]
    p, k = 0.5, metrics["n_features_available"]
    assert k == N_FEATURES + 2 and sample["candidate_parameters"] == k  # features + age + sex
    assert sample["events"] == 20 and sample["events_per_candidate_parameter"] == pytest.approx(20 / k)
    # By hand: the three criteria of Riley et al. 2020 at their conservative default, Nagelkerke R² 0.15, i.e.
    # R²_CS = 0.15 x max R²_CS (max R²_CS = 0.75 at prevalence 0.5).
    max_r2 = 1 - (p**p * (1 - p) ** (1 - p)) ** 2
    assert max_r2 == pytest.approx(0.75)
    r2 = sample["anticipated_r2_cox_snell"]
    assert r2 == pytest.approx(0.15 * 0.75)
    n1 = math.ceil(k / ((0.9 - 1) * math.log(1 - r2 / 0.9)))
    s2 = r2 / (r2 + 0.05 * max_r2)
    n2 = math.ceil(k / ((s2 - 1) * math.log(1 - r2 / s2)))
    n3 = math.ceil((1.96 / 0.05) ** 2 * p * (1 - p))
    assert (sample["criterion_1_shrinkage"], sample["criterion_2_optimism"], sample["criterion_3_intercept"]) == (
        n1,
        n2,
        n3,
    )
    assert sample["minimum_n"] == max(n1, n2, n3) and not sample["adequate"]
    # Beside it, for reference only, the minimum at the cohort's own cross-validated C (never the verdict).
    at_c = sample["at_cohort_c_statistic"]
    assert at_c["c_statistic"] == pytest.approx(min(0.95, metrics["primary_metric"]["value"]))
    assert at_c["minimum_n"] == riley_binary(p, k, cox_snell_from_c(at_c["c_statistic"], p))["minimum_n"]
    assert f"at the cohort's own C of {at_c['c_statistic']:.3f} it would be {at_c['minimum_n']}" in page
    assert any("Small sample" in note for note in metrics["limitations"])
    assert 'id="sample-size"' in page


def test_riley_published_example_and_c_to_r2():
    # pmsampsize's documented example: R²_CS 0.288, 24 parameters, prevalence 0.174 -> 623 / 662 / 221, n = 662.
    out = riley_binary(0.174, 24, 0.288)
    assert (out["criterion_1_shrinkage"], out["criterion_2_optimism"], out["criterion_3_intercept"]) == (623, 662, 221)
    assert out["minimum_n"] == 662 and out["max_r2_cox_snell"] == pytest.approx(0.6032, abs=1e-4)
    # The same C -> R² by Monte Carlo of the binormal model the quadrature integrates (logistic fit is exact).
    rng = np.random.default_rng(0)
    n, prevalence, c_stat = 400_000, 0.3, 0.8
    y = rng.random(n) < prevalence
    mu = math.sqrt(2) * 0.8416212335729143  # sqrt(2) * Phi^-1(0.8)
    x = rng.standard_normal(n) + mu * y
    log_odds = math.log(prevalence / (1 - prevalence)) + mu * x - mu**2 / 2
    ll = np.sum(np.where(y, -np.logaddexp(0, -log_odds), -np.logaddexp(0, log_odds)))
    ll0 = n * (prevalence * math.log(prevalence) + (1 - prevalence) * math.log(1 - prevalence))
    assert cox_snell_from_c(c_stat, prevalence) == pytest.approx(1 - math.exp(-2 * (ll - ll0) / n), abs=0.005)
    assert cox_snell_from_c(0.5 + 1e-9, 0.3) == pytest.approx(0.0, abs=1e-4)


def test_calibration_intervals_cover_the_truth():
    rng = np.random.default_rng(1)
    p = rng.uniform(0.05, 0.95, 3000)
    y = (rng.random(3000) < p).astype(int)
    out = calibration(y, p)
    assert out["calibration_slope_ci_low"] < 1 < out["calibration_slope_ci_high"]
    assert out["calibration_intercept_ci_low"] < 0 < out["calibration_intercept_ci_high"]
    assert out["calibration_slope_ci_high"] - out["calibration_slope_ci_low"] < 0.3
    # Too extreme predictions (logit doubled): the slope's interval lies below 1.
    extreme = 1 / (1 + np.exp(-2 * np.log(p / (1 - p))))
    assert calibration(y, extreme)["calibration_slope_ci_high"] < 0.6
