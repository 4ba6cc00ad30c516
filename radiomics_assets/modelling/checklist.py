"""What a journal reviewer asks of a radiomics report, answered from the warehouse: the cohort flow, the patient
table, the imaging and segmentation summary, the extraction settings in full, the sample size (Riley et al.),
automatic limitation notes, and the CLEAR checklist (Kocak et al. 2023, Insights into Imaging 14:75; 58 items)
as ``reports/checklist.json``.

Every count is read from the DuckDB tables (``series``, ``masks``, ``features``, ``labels``, ``feature_matrix``) or
from what the training step stored (patients left out for a missing outcome or conflicting duplicate labels, the
analysed patients), so the report agrees with the feature store a reviewer can open. No Dagster here: the cohort
asset calls :func:`report_sections` through ``validation_report.build_validation_report``.
"""

from __future__ import annotations

import html
import math
import subprocess
from dataclasses import dataclass, fields
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
from scipy.stats import norm

from radiomics_assets import environment, failure_log
from radiomics_assets.hashing import file_hash
from radiomics_assets.modelling.plots import fmt
from radiomics_assets.paths import DataRoot
from radiomics_assets.warehouse import Warehouse

STATUSES = ("answered", "not_applicable", "for_authors")

SCANNER_COLUMNS = {
    "manufacturer": "manufacturer",
    "manufacturer_model_name": "scanner model",
    "institution_name": "institution",
    "convolution_kernel": "reconstruction kernel",
    "magnetic_field_strength": "field strength (T)",
}
"""``series`` columns of the scanner (issue 27 adds them); read only when the warehouse has them."""


# ---------------------------------------------------------------------------------------------------- tables


def _query(warehouse: Warehouse, sql: str) -> pd.DataFrame:
    """A query that returns an empty frame when its table does not exist (e.g. no masks stage in a table import)."""
    try:
        return warehouse.query(sql)
    except duckdb.CatalogException:
        return pd.DataFrame()


def _columns(warehouse: Warehouse, table: str) -> set[str]:
    found = _query(warehouse, f"SELECT column_name FROM information_schema.columns WHERE table_name = '{table}'")
    return set(found.column_name) if len(found) else set()


def _has_outcome(labels: pd.DataFrame) -> pd.Series:
    has = labels["label"].notna() if "label" in labels else pd.Series(False, index=labels.index)
    if "time" in labels:
        has &= labels["time"].notna()
    return has


def cohort_flow(
    warehouse: Warehouse,
    analysed: list[str],
    excluded_outcomes: list[dict],
    conflicting: list[str],
    failed_stage: dict[str, str] | None = None,
):
    """(stage -> count, exclusions): patients at each stage of the pipeline and every reason one was left out.

    ``analysed``: the patient keys of the outer CV; ``excluded_outcomes``: labels.csv rows without an outcome
    (``study.load_outcomes``); ``conflicting``: patients excluded for conflicting duplicate labels;
    ``failed_stage``: patient -> the step of its latest failure in ``logs/failures.log`` (a labelled patient
    without features is then reported with the step its run failed at, not as merely "no features").
    """
    failed_stage = failed_stage or {}
    series = _query(warehouse, "SELECT DISTINCT patient_id, study_uid FROM series")
    masks = _query(warehouse, "SELECT DISTINCT patient_id FROM masks")
    features = _query(
        warehouse,
        "SELECT DISTINCT patient_id FROM features UNION SELECT DISTINCT patient_id FROM imported_features",
    )
    labels = _query(warehouse, "SELECT * FROM labels")
    matrix = _query(warehouse, "SELECT patient_id FROM feature_matrix")
    imaged = set(series.patient_id) if len(series) else set()
    masked = set(masks.patient_id) if len(masks) else set()
    featured = set(features.patient_id) if len(features) else set()
    in_matrix = set(matrix.patient_id) if len(matrix) else set()
    no_outcome = {e["patient_id"] for e in excluded_outcomes}
    if len(labels):
        with_outcome = labels[_has_outcome(labels)]
        no_outcome |= set(labels.patient_id[~_has_outcome(labels)])
        cohort = with_outcome["cohort"] if "cohort" in with_outcome else pd.Series("train", index=with_outcome.index)
        train = set(with_outcome.patient_id[cohort == "train"])
        test = set(with_outcome.patient_id[cohort == "test"])
        listed = set(labels.patient_id) | no_outcome
    else:
        train, test, listed = set(), set(), no_outcome
    # A study is a (patient, study UID); image files without a study UID (PNG, NIfTI) are one study per patient.
    studies = (
        len(series[["patient_id"]].assign(study=series.study_uid.fillna("")).drop_duplicates()) if len(series) else 0
    )
    flow = {
        "studies_ingested": int(studies),
        "patients_with_images": len(imaged),
        "patients_with_masks": len(masked),
        "patients_with_features": len(featured),
        "patients_in_labels_csv": len(listed),
        "patients_with_outcome": len(train | test),
        "training_cohort_with_outcome": len(train),
        "training_with_features_and_outcome": len(train & in_matrix),
        "analysed": len(analysed),
        "test_cohort_with_outcome": len(test),
        "test_with_features_and_outcome": len(test & in_matrix),
    }
    exclusions = []

    def add(stage: str, keys, reason: str) -> None:
        keys = sorted(map(str, keys))
        if keys:
            exclusions.append({"stage": stage, "n": len(keys), "reason": reason, "patients": keys[:30]})

    if imaged:
        add("patients_with_masks", imaged - masked, "images without a usable mask (no ROI found or matched)")
        add("patients_with_features", masked - featured, "mask but no features (extraction failed or pending)")
    reasons: dict[str, list[str]] = {}
    for entry in excluded_outcomes:
        reasons.setdefault(entry.get("reason", "no outcome"), []).append(entry["patient_id"])
    for reason, keys in reasons.items():
        add("patients_with_outcome", keys, f"in labels.csv, {reason}")
    add("patients_with_outcome", featured - listed, "features but not in labels.csv (scored by the model only)")

    def add_without_features(stage: str, keys: set, who: str) -> None:
        for failed_at in sorted({failed_stage[k] for k in keys if k in failed_stage}):
            failed = {k for k in keys if failed_stage.get(k) == failed_at}
            add(
                stage,
                failed,
                f"{who}, its run failed at the {failed_at} step (problem and fix: `radiomics-assets "
                "status`, logs/failures.log)",
            )
        add(stage, {k for k in keys if k not in failed_stage}, f"{who} but has no features")

    add_without_features("training_with_features_and_outcome", train - in_matrix, "labelled")
    add("analysed", conflicting, "duplicate images or group with conflicting labels")
    add_without_features("test_with_features_and_outcome", test - in_matrix, "test cohort, labelled")
    return flow, exclusions


def patient_table(warehouse: Warehouse, study, task, analysed: list[str]) -> dict:
    """n and covariates by cohort (analysed training patients; test patients with features and an outcome) and by
    outcome class (binary / multiclass), event / censored (survival) or all (continuous)."""
    labels = _query(warehouse, "SELECT * FROM labels")
    matrix = _query(warehouse, "SELECT patient_id FROM feature_matrix")
    if not len(labels):
        return {"groups": [], "covariates": []}
    labels = labels[_has_outcome(labels)].copy()
    labels["cohort"] = labels["cohort"] if "cohort" in labels else "train"
    in_matrix = set(matrix.patient_id) if len(matrix) else set()
    keep = (labels.cohort == "train") & labels.patient_id.isin(analysed)
    keep |= (labels.cohort == "test") & labels.patient_id.isin(in_matrix)
    labels = labels[keep]
    kind = task.kind.value
    if kind == "survival":
        labels["class"] = np.where(labels["event"].astype(float) > 0, "event", "censored")
    elif kind in ("binary", "multiclass") and "label_name" in labels:
        labels["class"] = labels["label_name"].astype(str)
    else:
        labels["class"] = "all"
    numeric = list(study.covariates.numeric)
    categorical = list(study.covariates.categorical)
    rows = []
    for (cohort, klass), part in labels.groupby(["cohort", "class"], sort=True):
        row = {"cohort": cohort, "class": klass, "n": len(part)}
        if kind == "continuous":
            row["outcome"] = _numeric_summary(part["label"])
        if kind == "survival":
            row["follow_up"] = _numeric_summary(part["time"])
        for name in numeric:
            column = f"clinical__{name}"
            row[name] = _numeric_summary(part[column]) if column in part else None
        for name in categorical:
            column = f"clinical__{name}"
            if column in part:
                counts = part[column].fillna("(missing)").astype(str).value_counts().sort_index()
                row[name] = {k: int(v) for k, v in counts.items()}
        rows.append(row)
    return {"groups": rows, "covariates": numeric + categorical}


def _numeric_summary(values: pd.Series) -> dict:
    values = pd.to_numeric(values, errors="coerce")
    present = values.dropna()
    if not len(present):
        return {"n": 0, "missing": int(values.isna().sum())}
    return {
        "mean": float(present.mean()),
        "sd": float(present.std(ddof=1)) if len(present) > 1 else float("nan"),
        "median": float(present.median()),
        "min": float(present.min()),
        "max": float(present.max()),
        "missing": int(values.isna().sum()),
    }


def _range(values: pd.Series) -> dict | None:
    values = pd.to_numeric(values, errors="coerce").dropna()
    if not len(values):
        return None
    return {"min": float(values.min()), "median": float(values.median()), "max": float(values.max())}


def imaging_summary(warehouse: Warehouse, patients: list[str] | None = None) -> dict:
    """Modalities, scanners (when ``series`` has the columns), slice thickness and pixel spacing of the series the
    features came from; the mask source per patient. ``patients`` limits it (default: every patient)."""
    columns = _columns(warehouse, "series")
    if not columns:
        return {"series": 0}
    extra = [c for c in (*SCANNER_COLUMNS, "slice_thickness") if c in columns]
    series = _query(
        warehouse,
        "SELECT s.patient_id, s.series_uid, s.modality, s.spacing_x, s.spacing_y, s.spacing_z"
        + "".join(f", s.{c}" for c in extra)
        + " FROM series s JOIN (SELECT DISTINCT patient_id, series_uid FROM features) f USING (patient_id, series_uid)",
    )
    if patients is not None and len(series):
        series = series[series.patient_id.isin(patients)]
    out: dict = {"series": len(series), "patients": int(series.patient_id.nunique()) if len(series) else 0}
    modalities = {}
    for modality, part in series.groupby("modality", sort=True) if len(series) else []:
        entry = {"series": len(part), "patients": int(part.patient_id.nunique())}
        thickness = part["slice_thickness"] if "slice_thickness" in part else pd.Series(dtype=float)
        if thickness.notna().any():
            entry["slice_thickness_mm"] = _range(thickness)
            entry["slice_thickness_source"] = "SliceThickness header"
        else:
            entry["slice_thickness_mm"] = _range(part.spacing_z)
            entry["slice_thickness_source"] = "slice spacing of the volume"
        entry["pixel_spacing_mm"] = _range(pd.concat([part.spacing_x, part.spacing_y]))
        for column, label in SCANNER_COLUMNS.items():
            if column in part and part[column].notna().any():
                counts = part[column].dropna().astype(str).str.strip().value_counts().sort_index()
                entry[label] = {k: int(v) for k, v in counts.items()}
                if part[column].isna().any():
                    entry[label]["(not recorded)"] = int(part[column].isna().sum())
        modalities[str(modality)] = entry
    out["modalities"] = modalities
    masks = _query(warehouse, "SELECT patient_id, roi, source_kind FROM masks")
    if patients is not None and len(masks):
        masks = masks[masks.patient_id.isin(patients)]
    if len(masks):
        kinds = masks.source_kind.fillna("unknown").astype(str)
        out["mask_sources"] = {
            kind: {"masks": int((kinds == kind).sum()), "patients": int(masks.patient_id[kinds == kind].nunique())}
            for kind in sorted(set(kinds))
        }
        out["rois"] = sorted(set(masks.roi.astype(str)))
    else:
        out["mask_sources"] = {}
    return out


def extraction_summary(warehouse: Warehouse, root: DataRoot | None = None, patients: list[str] | None = None) -> dict:
    """Parameter files in full with their hashes (matched to ``features.params_hash``), their resampling,
    discretisation, normalisation and filters, PyRadiomics versions and the IBSI statement."""
    features = _query(
        warehouse,
        "SELECT patient_id, modality, params_hash, pyradiomics_version, image_type, feature_class, feature "
        "FROM features",
    )
    if patients is not None and len(features):
        features = features[features.patient_id.isin(patients)]
    out: dict = {"n_feature_rows": len(features)}
    if not len(features):
        imported = _query(warehouse, "SELECT source, file, sha256, n_patients, n_features FROM feature_sources")
        out["imported_tables"] = imported.to_dict(orient="records") if len(imported) else []
        out["parameter_files"] = []
        return out
    out["n_features_per_patient"] = int(features.groupby("patient_id").feature.size().max())
    out["image_types"] = sorted(set(features.image_type.astype(str)))
    out["feature_classes"] = sorted(set(features.feature_class.astype(str)))
    out["pyradiomics_versions"] = sorted(set(features.pyradiomics_version.dropna().astype(str)))
    known = {}
    directory = environment.configured_params_dir()
    if directory.is_dir():
        for path in sorted(directory.rglob("*.yaml")):
            known.setdefault(file_hash(path), path)
    files = []
    for (modality, digest), part in features.groupby(["modality", "params_hash"], sort=True, dropna=False):
        entry = {"modality": str(modality), "params_hash": str(digest), "patients": int(part.patient_id.nunique())}
        path = known.get(str(digest))
        if path is not None:
            text = path.read_text()
            entry |= {"file": str(path), "text": text, **_settings_of(text)}
        else:
            entry["file"] = None
            entry["note"] = (
                f"no parameter file with this hash in {directory} (set RADIOMICS_PARAMS_DIR to the one used)"
            )
        files.append(entry)
    out["parameter_files"] = files
    out["ibsi"] = _ibsi_statement(root)
    return out


def _settings_of(text: str) -> dict:
    import yaml

    try:
        params = yaml.safe_load(text) or {}
    except yaml.YAMLError:
        return {}
    setting = params.get("setting", {}) or {}
    return {
        "resampled_pixel_spacing": setting.get("resampledPixelSpacing"),
        "interpolator": setting.get("interpolator"),
        "bin_width": setting.get("binWidth"),
        "bin_count": setting.get("binCount"),
        "normalize": bool(setting.get("normalize", False)),
        "resegment_range": setting.get("resegmentRange"),
        "filters": sorted((params.get("imageType") or {}).keys()),
    }


def _ibsi_statement(root: DataRoot | None) -> dict:
    statement = {
        "settings": "Fixed bin width on calibrated units (CT HU, PET SUV) and a stated resampling grid and "
        "interpolator follow IBSI recommendations; PyRadiomics deviates from IBSI on known points (docs/ibsi.md, IBSI "
        "conformance).",
    }
    if root is not None and (root.reports / "ibsi_conformance.csv").exists():
        table = pd.read_csv(root.reports / "ibsi_conformance.csv")
        status = next((c for c in ("status", "result", "pass") if c in table), None)
        if status is not None:
            counts = table[status].astype(str).value_counts()
            statement["phantom_result"] = {k: int(v) for k, v in counts.items()}
    else:
        statement["phantom_result"] = "not run here (radiomics-assets ibsi writes reports/ibsi_conformance.csv)"
    return statement


def git_commit(path: Path | None = None) -> str | None:
    """The project's commit (``-dirty`` when the tree has changes), or None outside a git checkout."""
    where = Path(path or Path(__file__).parent)
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=where,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("-dirty" if dirty else "") if commit else None


# ---------------------------------------------------------------------------------------------- sample size

Z = norm.ppf(0.975)


def cox_snell_from_c(c_statistic: float, prevalence: float) -> float:
    """Anticipated Cox-Snell R² of a logistic model with this C-statistic and outcome prevalence (Riley et al. 2022,
    Stat Med 41:1280, the approach of ``pmsampsize`` for a stated C): the linear predictor is normal with equal
    variance in both classes, its mean difference mu = sqrt(2) Phi^-1(C); then the logistic model is exact, and the
    expected log-likelihood ratio per patient gives R²_CS = 1 - exp(-2 LR / n). Computed by quadrature instead of
    pmsampsize's simulation of a million patients, so it is deterministic."""
    c = float(np.clip(c_statistic, 0.5 + 1e-6, 1 - 1e-6))
    mu = math.sqrt(2) * norm.ppf(c)
    x = np.linspace(-12.0, 12.0 + mu, 20001)
    f0, f1 = norm.pdf(x), norm.pdf(x, loc=mu)
    log_odds = np.log(prevalence / (1 - prevalence)) + mu * x - mu**2 / 2
    log_p, log_q = -np.logaddexp(0, -log_odds), -np.logaddexp(0, log_odds)
    expected = prevalence * np.trapezoid(f1 * log_p, x) + (1 - prevalence) * np.trapezoid(f0 * log_q, x)
    null = prevalence * math.log(prevalence) + (1 - prevalence) * math.log(1 - prevalence)
    return float(1 - math.exp(-2 * (expected - null)))


DEFAULT_NAGELKERKE_R2 = 0.15
"""Riley et al. 2020's conservative anticipated Nagelkerke R² for a binary outcome when no earlier model is known."""


def max_cox_snell(prevalence: float) -> float:
    """The largest Cox-Snell R² a binary outcome of this prevalence allows (a perfect model)."""
    p = prevalence
    return 1 - math.exp(2 * (p * math.log(p) + (1 - p) * math.log(1 - p)))


def riley_binary(
    prevalence: float,
    n_parameters: int,
    r2_cox_snell: float,
    shrinkage: float = 0.9,
    optimism: float = 0.05,
    margin: float = 0.05,
) -> dict:
    """Minimum sample size of a binary prediction model (Riley et al. 2020, BMJ 368:m441; ``pmsampsize``):
    (1) expected uniform shrinkage >= ``shrinkage``; (2) optimism in Nagelkerke R² <= ``optimism``; (3) the
    overall risk estimated within ``margin``. Returns each criterion's n and the minimum (the largest)."""
    p, r2 = prevalence, r2_cox_snell
    max_r2 = max_cox_snell(p)
    n1 = n_parameters / ((shrinkage - 1) * math.log(1 - r2 / shrinkage))
    s2 = r2 / (r2 + optimism * max_r2)
    n2 = n_parameters / ((s2 - 1) * math.log(1 - r2 / s2))
    n3 = (Z / margin) ** 2 * p * (1 - p)
    needed = [math.ceil(n1), math.ceil(n2), math.ceil(n3)]
    n = max(needed)
    return {
        "criterion_1_shrinkage": needed[0],
        "criterion_2_optimism": needed[1],
        "criterion_3_intercept": needed[2],
        "shrinkage_criterion_2": s2,
        "max_r2_cox_snell": max_r2,
        "minimum_n": n,
        "minimum_events": n * p,
        "events_per_parameter_needed": n * p / n_parameters,
    }


def sample_size(task, y: np.ndarray, n_parameters: int, c_statistic: float | None) -> dict:
    """Riley et al.'s minimum n (binary) against the cohort's, and events per candidate predictor parameter."""
    y = np.asarray(y)
    kind = task.kind.value
    out: dict = {"n_patients": int(len(y)), "candidate_parameters": int(n_parameters)}
    if kind == "binary":
        events = int(min(np.sum(y == 1), np.sum(y == 0)))
        out["events"] = events
        out["events_per_candidate_parameter"] = events / max(n_parameters, 1)
        prevalence = float(np.mean(y == 1))
        if not 0 < prevalence < 1:
            out["note"] = "no minimum sample size: a single class"
            return out
        # The anticipated R² must come from outside the cohort (it sets the size before the study). Without an earlier
        # model of this outcome, Riley et al. advise a conservative Nagelkerke R² of 0.15; the cohort's own
        # cross-validated C is shown beside it only for reference, since using it would be circular.
        r2 = DEFAULT_NAGELKERKE_R2 * max_cox_snell(prevalence)
        out |= {
            "method": "Riley et al. 2020 (pmsampsize), binary outcome",
            "prevalence": prevalence,
            "anticipated_r2_cox_snell": r2,
            "r2_source": f"Riley et al.'s conservative default without an earlier model: Nagelkerke R² "
            f"{DEFAULT_NAGELKERKE_R2} (Cox-Snell R² = {DEFAULT_NAGELKERKE_R2} x its maximum at this prevalence)",
            **riley_binary(prevalence, max(n_parameters, 1), r2),
        }
        out["adequate"] = out["n_patients"] >= out["minimum_n"]
        if c_statistic is not None and np.isfinite(c_statistic):
            assumed = float(np.clip(c_statistic, 0.55, 0.95))
            r2_at_c = cox_snell_from_c(assumed, prevalence)
            out["at_cohort_c_statistic"] = {
                "c_statistic": assumed,
                "anticipated_r2_cox_snell": r2_at_c,
                "minimum_n": riley_binary(prevalence, max(n_parameters, 1), r2_at_c)["minimum_n"],
                "source": "this procedure's cross-validated AUC, clipped to 0.55-0.95; for reference only, as it "
                "comes from the same cohort",
            }
    elif kind == "survival":
        events = int(task.cohort_summary(y)["n_events"])
        out["events"] = events
        out["events_per_candidate_parameter"] = events / max(n_parameters, 1)
        out["note"] = "Riley's survival criteria need the anticipated R² and follow-up; not computed here"
    else:
        out["note"] = f"Riley's criteria for a {kind} outcome are not computed here"
    return out


def limitations(flow: dict, sample: dict, imaging: dict, groups: dict, cohort: dict, several_timepoints: int) -> list:
    """Automatic limitation notes, each with the number that triggered it."""
    notes = []
    scanners = [
        set(entry.get(label, {})) - {"(not recorded)"}
        for entry in imaging.get("modalities", {}).values()
        for label in ("institution", "manufacturer")
    ]
    if not scanners or all(len(s) <= 1 for s in scanners):
        known = any(scanners)
        notes.append(
            "Single site or scanner: one institution / manufacturer recorded; performance may not transfer to other "
            "sites."
            if known
            else "Site and scanner are not recorded in the series table: whether the cohort spans several sites is "
            "unknown; no leave-site-out or external validation by site."
        )
    n = sample.get("n_patients", 0)
    if "minimum_n" in sample and n < sample["minimum_n"]:
        notes.append(
            f"Small sample: {n} patients against a minimum of {sample['minimum_n']} (Riley et al. for "
            f"{sample['candidate_parameters']} candidate parameters, anticipated Cox-Snell R² "
            f"{fmt(sample['anticipated_r2_cox_snell'])}); "
            "expect overfitting and wide confidence intervals."
        )
    elif n < 100:
        notes.append(f"Small sample: {n} analysed patients; confidence intervals are wide.")
    epp = sample.get("events_per_candidate_parameter")
    if epp is not None and epp < 10:
        notes.append(
            f"{fmt(epp, 2)} events per candidate predictor parameter ({sample['events']} events, "
            f"{sample['candidate_parameters']} candidates): feature selection runs inside the folds, but the "
            "estimates are unstable."
        )
    counts = [v for k, v in cohort.items() if k.startswith("n_") and k != "n_patients" and isinstance(v, int)]
    if len(counts) >= 2 and min(counts) / max(1, sum(counts)) < 0.3:
        notes.append(
            f"Class imbalance: the smaller class is {min(counts)} of {sum(counts)} patients "
            f"({min(counts) / sum(counts):.0%}); class-balanced fitting, AUC and average precision are reported."
        )
    if groups.get("groups"):
        notes.append(
            f"Duplicates: {len(groups['groups'])} group(s) of patients share images or a group id (kept in one fold); "
            f"{len(groups.get('excluded', []))} excluded for conflicting labels."
        )
    if several_timepoints:
        notes.append(
            f"Several timepoints: {several_timepoints} patient(s) have more than one study of a modality; the "
            "study's timepoint rule chose which one entered the matrix."
        )
    if not flow.get("test_with_features_and_outcome"):
        notes.append("No external test cohort: all performance figures are internal (cross-validated).")
    return notes


def several_timepoints(warehouse: Warehouse) -> int:
    series = _query(warehouse, "SELECT patient_id, modality, study_uid FROM series")
    if not len(series):
        return 0
    studies = series.dropna(subset=["study_uid"]).groupby(["patient_id", "modality"]).study_uid.nunique()
    return int(studies[studies > 1].index.get_level_values(0).nunique())


@dataclass(frozen=True)
class ReviewerSections:
    """The reviewer's items of the validation report (issue 26), each a top-level key of ``metrics.json``."""

    cohort_flow: dict
    cohort_exclusions: list[dict]
    patient_table: dict
    imaging: dict
    extraction: dict
    reproducibility: dict
    sample_size: dict
    limitations: list[str]

    def as_json(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def report_sections(
    root: DataRoot, stored, saved, task, *, primary: dict, n_features_available: int, groups: dict, cohort: dict
) -> ReviewerSections:
    """The ``metrics.json`` keys ``cohort_flow``, ``cohort_exclusions``, ``patient_table``, ``imaging``,
    ``extraction``, ``reproducibility``, ``sample_size``, ``limitations``; ``primary`` is the report's
    ``primary_metric``, ``groups`` its ``groups`` and ``cohort`` its ``cohort``."""
    warehouse = Warehouse(root.warehouse)
    cv, settings = stored.cv, stored.settings
    analysed = list(cv.patient_ids)
    excluded = list(getattr(stored, "excluded_outcomes", []))
    # The latest logged failure per patient (later lines overwrite earlier ones).
    failed_stage = {f.patient: f.stage for f in failure_log.patient_failures(root.path / "logs" / "failures.log")}
    flow, exclusions = cohort_flow(warehouse, analysed, excluded, list(stored.groups.excluded), failed_stage)
    imaging = imaging_summary(warehouse, None)
    c_statistic = primary.get("value") if task.kind.value == "binary" else None
    sample = sample_size(task, cv.y, n_features_available, c_statistic)
    from radiomics_assets import __version__ as package_version

    return ReviewerSections(
        cohort_flow=flow,
        cohort_exclusions=exclusions,
        patient_table=patient_table(warehouse, stored.study, task, analysed),
        imaging=imaging,
        extraction=extraction_summary(warehouse, root),
        reproducibility={
            "radiomics_assets_version": package_version,
            "git_commit": git_commit(),
            "model_id": saved.model_id,
            "trained_at": saved.trained_at,
            "seed": settings.seed,
            "seeds": "every random step (outer and inner splits, model fits, permutations, bootstraps) derives from "
            f"settings.seed = {settings.seed}; the outer splits also from the outcomes (validation.split_seed)",
            "settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(settings).items()},
        },
        sample_size=sample,
        limitations=limitations(flow, sample, imaging, groups, cohort, several_timepoints(warehouse)),
    )


# ------------------------------------------------------------------------------------------------ checklist

CLEAR_ITEMS = (
    "Relevant title, specifying the radiomic methodology",
    "Structured summary with relevant information",
    "Relevant keywords for radiomics",
    "Scientific or clinical background",
    "Rationale for using a radiomic approach",
    "Study objective(s)",
    "Adherence to guidelines or checklists (e.g., CLEAR checklist)",
    "Ethical details (e.g., approval, consent, data protection)",
    "Sample size calculation",
    "Study nature (e.g., retrospective, prospective)",
    "Eligibility criteria",
    "Flowchart for technical pipeline",
    "Data source (e.g., private, public)",
    "Data overlap",
    "Data split methodology",
    "Imaging protocol (i.e., image acquisition and processing)",
    "Definition of non-radiomic predictor variables",
    "Definition of the reference standard (i.e., outcome variable)",
    "Segmentation strategy",
    "Details of operators performing segmentation",
    "Image pre-processing details",
    "Resampling method and its parameters",
    "Discretization method and its parameters",
    "Image types (e.g., original, filtered, transformed)",
    "Feature extraction method",
    "Feature classes",
    "Number of features",
    "Default configuration statement for remaining parameters",
    "Handling of missing data",
    "Details of class imbalance",
    "Details of segmentation reliability analysis",
    "Feature scaling details (e.g., normalization, standardization)",
    "Dimension reduction details",
    "Algorithm details",
    "Training and tuning details",
    "Handling of confounders",
    "Model selection strategy",
    "Testing technique (e.g., internal, external)",
    "Performance metrics and rationale for choosing",
    "Uncertainty evaluation and measures (e.g., confidence intervals)",
    "Statistical performance comparison (e.g., DeLong's test)",
    "Comparison with non-radiomic and combined methods",
    "Interpretability and explainability methods",
    "Baseline demographic and clinical characteristics",
    "Flowchart for eligibility criteria",
    "Feature statistics (e.g., reproducibility, feature selection)",
    "Model performance evaluation",
    "Comparison with non-radiomic and combined approaches",
    "Overview of important findings",
    "Previous works with differences from the current study",
    "Practical implications",
    "Strengths and limitations (e.g., bias and generalizability issues)",
    "Sharing images along with segmentation data",
    "Sharing radiomic feature data",
    "Sharing pre-processing scripts or settings",
    "Sharing source code for modeling",
    "Sharing final model files",
    "Sharing a ready-to-use system",
)
"""The 58 CLEAR items (Kocak et al. 2023) in order: id = position + 1."""

FOR_AUTHORS = {
    1: "Title of the manuscript.",
    2: "Abstract of the manuscript (the report's Summary gives its numbers).",
    3: "Keywords of the manuscript.",
    4: "Clinical background: not known to the pipeline.",
    5: "Why radiomics for this question: not known to the pipeline.",
    6: "Study objective: state it (the pipeline knows only the outcome, see item 18).",
    7: "State adherence to CLEAR (this file is the completed checklist).",
    8: "Ethics approval, consent and data protection: not known to the pipeline.",
    10: "Retrospective or prospective: not known to the pipeline.",
    20: "Who drew the masks (number, experience, blinding to the outcome): not known to the pipeline.",
    49: "Discussion: overview of findings.",
    50: "Discussion: previous work.",
    51: "Discussion: practical implications.",
    53: "Whether images and masks are shared (the pipeline keeps them under volumes/ and masks/).",
    58: "A ready-to-use system: the project's `radiomics-assets predict` scores new patients with the saved model; "
    "whether it is offered to others is for the authors.",
}


def clear_checklist(m: dict) -> dict:
    """``reports/checklist.json``: every CLEAR item answered from ``m`` (the report's ``metrics.json``) where the
    pipeline knows the answer, else ``for_authors`` (or ``not_applicable``) with what the authors must add."""
    answers = _answers(m)
    items = []
    for number, title in enumerate(CLEAR_ITEMS, start=1):
        if number in answers:
            status, where, answer = answers[number]
        else:
            status, where, answer = "for_authors", "manuscript", FOR_AUTHORS.get(number, "Not known to the pipeline.")
        items.append({"id": number, "item": title, "status": status, "where": where, "answer": answer})
    return {
        "standard": "CLEAR",
        "reference": "Kocak B et al. CheckList for EvaluAtion of Radiomics research (CLEAR). Insights Imaging "
        "2023;14:75",
        "items": items,
    }


def _answers(m: dict) -> dict[int, tuple[str, str, str]]:
    flow, sample = m.get("cohort_flow", {}), m.get("sample_size", {})
    imaging, extraction = m.get("imaging", {}), m.get("extraction", {})
    primary = m.get("primary_metric", {})
    study = m.get("study", {})
    covariates = study.get("covariates", {})
    names = covariates.get("numeric", []) + covariates.get("categorical", [])
    files = extraction.get("parameter_files", [])
    settings = m.get("reproducibility", {}).get("settings", {})
    candidates = list(m.get("model_comparison", {}))
    a: dict[int, tuple[str, str, str]] = {}
    if "minimum_n" in sample:
        a[9] = (
            "answered",
            "report.html#sample-size",
            f"Riley et al. (pmsampsize): minimum n {sample['minimum_n']} (criteria "
            f"{sample['criterion_1_shrinkage']} / {sample['criterion_2_optimism']} / "
            f"{sample['criterion_3_intercept']}) for {sample['candidate_parameters']} candidate parameters, "
            f"prevalence {fmt(sample['prevalence'])}, anticipated Cox-Snell R² "
            f"{fmt(sample['anticipated_r2_cox_snell'])} ({sample['r2_source']}){_at_cohort_c(sample)}; analysed "
            f"{sample['n_patients']}; "
            f"{fmt(sample['events_per_candidate_parameter'], 2)} events per candidate parameter.",
        )
    elif sample:
        a[9] = ("answered", "report.html#sample-size", f"{sample.get('note', '')}; n = {sample.get('n_patients')}.")
    stages = "; ".join(f"{k.replace('_', ' ')}: {v}" for k, v in flow.items())
    reasons = "; ".join(f"{e['n']} {e['reason']}" for e in m.get("cohort_exclusions", []))
    a[11] = (
        "answered",
        "report.html#cohort-flow",
        "Included: patients with a segmented lesion, extracted features and an outcome in labels.csv "
        f"(training cohort: cohort=train). Exclusions: {reasons or 'none'}.",
    )
    a[12] = (
        "answered",
        "docs/reference/architecture.md and report.html#extraction",
        "inbox -> series (DICOM, NIfTI/NRRD or PNG ingest) -> masks -> features (PyRadiomics) -> DuckDB feature "
        "store -> "
        "feature_matrix -> nested cross-validated model -> report.",
    )
    a[13] = ("for_authors", "manuscript", "Private or public data source: not known to the pipeline.")
    a[14] = (
        "answered",
        "report.html#groups",
        f"Patients sharing an image (content or perceptual hash) or a group id are kept in one fold; "
        f"{len(m.get('groups', {}).get('groups', []))} such group(s). Test cohort patients are never in training.",
    )
    a[15] = ("answered", "report.html#summary", m.get("cv_scheme", ""))
    modal = "; ".join(
        f"{name}: {e['series']} series of {e['patients']} patients, slice thickness "
        f"{_range_text(e.get('slice_thickness_mm'))} mm, pixel spacing {_range_text(e.get('pixel_spacing_mm'))} mm"
        + "".join(
            f", {label} {', '.join(f'{k} ({v})' for k, v in e[label].items())}"
            for label in SCANNER_COLUMNS.values()
            if label in e
        )
        for name, e in imaging.get("modalities", {}).items()
    )
    a[16] = (
        ("answered", "report.html#imaging", modal + ". Acquisition protocol details beyond the headers: authors.")
        if modal
        else ("for_authors", "manuscript", "Features were imported as a table: imaging protocol not known.")
    )
    a[17] = (
        ("answered", "report.html#patients", f"Covariates from study.yaml: {', '.join(names)}.")
        if names
        else ("not_applicable", "study.yaml", "No non-radiomic predictors (no covariates in study.yaml).")
    )
    a[18] = (
        "answered",
        "report.html#summary",
        f"Outcome from labels.csv: {outcome_text(m.get('task', 'binary'), study.get('outcome', {}))}; how it was "
        "established is for the authors.",
    )
    sources = ", ".join(f"{k}: {v['patients']} patients" for k, v in imaging.get("mask_sources", {}).items())
    a[19] = (
        ("answered", "report.html#imaging", f"Mask source per patient: {sources}; ROIs {imaging.get('rois', [])}.")
        if sources
        else ("for_authors", "manuscript", "No masks table (features imported): segmentation not known.")
    )
    parsed = [f for f in files if f.get("file")]
    if files and not parsed:
        hashes = ", ".join(f"{f['modality']} {f['params_hash']}" for f in files)
        for number in (21, 22, 23):
            a[number] = (
                "for_authors",
                "report.html#extraction",
                f"No parameter file with the features' hash ({hashes}) in the parameters folder: state the settings "
                "used (or point RADIOMICS_PARAMS_DIR at them and rerun the report).",
            )
    if parsed:
        a[21] = (
            "answered",
            "report.html#extraction",
            "; ".join(
                f"{f['modality']}: normalisation {'on' if f.get('normalize') else 'off'}, resegmentation "
                f"{f.get('resegment_range') or 'none'}"
                for f in parsed
            )
            or "parameter files not found by hash",
        )
        a[22] = (
            "answered",
            "report.html#extraction",
            "; ".join(f"{f['modality']}: {resampling_text(f)}" for f in parsed),
        )
        a[23] = (
            "answered",
            "report.html#extraction",
            "; ".join(
                f"{f['modality']}: "
                + (f"fixed bin width {f['bin_width']}" if f.get("bin_width") else f"bin count {f.get('bin_count')}")
                for f in parsed
            ),
        )
    if files:
        a[24] = ("answered", "report.html#extraction", f"Image types: {extraction.get('image_types', [])}.")
        a[25] = (
            "answered",
            "report.html#extraction",
            f"PyRadiomics {', '.join(extraction.get('pyradiomics_versions', []))}; unless "
            "RADIOMICS_STOCK_PYRADIOMICS=1 was set, its texture matrices and other hot spots are the project's "
            "value-identical replacements (compiled kernels, features equal to stock PyRadiomics to 1e-9 relative; "
            "the diagnostic diagnostics_Versions_radiomics_assets_speedups of each extraction records which); IBSI: "
            f"{extraction.get('ibsi', {}).get('phantom_result')}.",
        )
        a[26] = ("answered", "report.html#extraction", f"Feature classes: {extraction.get('feature_classes', [])}.")
        a[28] = (
            "answered",
            "report.html#extraction",
            "Every PyRadiomics setting not in the parameter files (shown in full with their hashes) is its default."
            + (
                " Before extraction the pipeline converts PNG images to grey (true colour fails unless "
                "RADIOMICS_COLOUR_IMAGES=luminance), binarises PNG masks at half their maximum and merges a lesion's "
                "mask files; PNG images carry no physical spacing, so their shape features are in pixels, not mm."
                if "US" in imaging.get("modalities", {})
                else ""
            ),
        )
    else:
        for number in (21, 22, 23, 24, 25, 26, 28):
            a[number] = ("for_authors", "manuscript", "Features imported as a table: extraction settings not known.")
    a[27] = (
        "answered",
        "report.html#summary",
        predictors_text(
            m.get("n_features_available", 0),
            m.get("n_features_used", m.get("n_features_selected", 0)),
            m.get("n_features_selected", 0),
        )
        + ".",
    )
    missing = m.get("missing_data", {})
    a[29] = ("answered", "report.html#missing", missing.get("policy", "median imputation inside the folds"))
    cohort = m.get("cohort", {})
    a[30] = (
        "answered",
        "report.html#patients",
        f"Class counts {_class_counts(cohort)}; class-balanced model fitting, stratified folds.",
    )
    threshold = m.get("robustness_icc_threshold", 0.0)
    a[31] = (
        ("answered", "report.html#robustness", f"ICC(1,1) over perturbed masks; filter ICC >= {threshold}.")
        if m.get("feature_robustness") is not None
        else (
            "answered",
            "report.html#robustness",
            "Not performed: no feature robustness analysis was run (asset feature_robustness off, setting "
            "robustness_perturbations = 0); all features were used regardless of their robustness.",
        )
    )
    a[32] = (
        "answered",
        "report.html#summary",
        "Z-score standardisation fitted on the training folds" if settings.get("standardise", True) else "No scaling",
    )
    a[33] = (
        "answered",
        "report.html#features",
        f"Selection {m.get('selection_method')} inside every training fold"
        + (
            " (the consensus: its random forest member on every feature, its linear member on the features its filter "
            "chose)"
            if m.get("n_features_used", 0) > m.get("n_features_selected", 0)
            else ""
        )
        + "; how often each feature was chosen across the outer folds is in the features table.",
    )
    a[34] = (
        "answered",
        "report.html#summary",
        f"Final model {m.get('model')}{MODEL_DESCRIPTIONS.get(str(m.get('model')), '')}, parameters of the final fit "
        f"{m.get('best_params')}.",
    )
    a[35] = ("answered", "report.html#summary", m.get("cv_scheme", ""))
    a[36] = (
        ("answered", "report.html#patients", f"Clinical covariates {', '.join(names)} in the model.")
        if names
        else ("for_authors", "manuscript", "No confounders modelled (no covariates or batch in study.yaml).")
    )
    a[37] = (
        "answered",
        "report.html#candidates",
        (
            f"Inner CV chooses among candidates {', '.join(candidates)} in every outer training set; chosen per outer "
            f"fold: {m.get('chosen_per_outer_fold')}."
            if len(candidates) > 1
            else f"One candidate ({', '.join(candidates) or m.get('model')}): no choice among models; the same "
            "procedure is refitted in every outer training set."
        ),
    )
    a[38] = (
        "answered",
        "report.html#external",
        "Internal: nested cross-validation"
        + (f"; external: {m['external'].get('n_patients')} held-out test patients" if m.get("external") else ""),
    )
    a[39] = ("answered", "report.html#performance", f"Primary metric {primary.get('name')} (discrimination).")
    a[40] = (
        "answered",
        "report.html#summary",
        f"{primary.get('name')} {fmt(primary.get('value'))} (95 % CI {fmt(primary.get('ci_low'))} to "
        f"{fmt(primary.get('ci_high'))}), bootstrap of patients.",
    )
    permutation = m.get("permutation", {})
    a[41] = (
        "answered",
        "report.html#permutation",
        f"Permutation test ({permutation.get('n_permutations')} permutations), p = "
        f"{fmt(permutation.get('p_value'))}"
        + ("; candidates compared by paired bootstrap." if len(candidates) > 1 else "."),
    )
    comparison = m.get("comparison")
    if comparison:
        gain = comparison["gain"]
        text = (
            f"Gain of clinical + radiomics over clinical {fmt(gain['value'])} ({fmt(gain['ci_low'])} to "
            f"{fmt(gain['ci_high'])})."
        )
        a[42] = ("answered", "report.html#summary", text)
        a[48] = ("answered", "report.html#summary", text)
    else:
        a[42] = ("not_applicable", "study.yaml", "No clinical covariates: no non-radiomic model to compare with.")
        a[48] = a[42]
    a[43] = (
        "answered",
        "report.html#features",
        "Selected features with selection scores and stability across folds.",
    )
    a[44] = ("answered", "report.html#patients", "Patient table by cohort and outcome class with the covariates.")
    a[45] = ("answered", "report.html#cohort-flow", stages)
    a[46] = ("answered", "report.html#features", "Selection frequency per feature; robustness ICC when run.")
    a[47] = ("answered", "report.html#performance", a[40][2])
    a[52] = ("answered", "report.html#limitations", " ".join(m.get("limitations", [])) or "none detected")
    a[54] = ("answered", "radiomics.duckdb", "Features in the DuckDB feature store (table features).")
    a[55] = ("answered", "report.html#extraction", "Parameter files in full with their hashes.")
    a[56] = ("answered", "report.html#reproducibility", _repro_text(m.get("reproducibility", {})))
    a[57] = ("answered", "models/model.pkl", f"Model id {m.get('model_id')} with models/model_card.json.")
    return a


def _repro_text(r: dict) -> str:
    return (
        f"radiomics_assets {r.get('radiomics_assets_version')}, commit {r.get('git_commit') or 'unknown'}; seed "
        f"{r.get('seed')}."
    )


def _range_text(r: dict | None) -> str:
    if not r:
        return "n/a"
    return f"{fmt(r['median'])} (range {fmt(r['min'])}-{fmt(r['max'])})"


MODEL_DESCRIPTIONS = {
    "consensus": " (equal-weight vote of an L2 logistic regression, C = 1, class-balanced, on the 32 best features "
    "of the selection filter, and a 300-tree class-balanced random forest on every feature; see "
    "docs/design/default-model.md)",
}
"""What a model family is, for a reader who does not know the project's names (checklist item 34)."""


def outcome_text(kind: str, outcome: dict) -> str:
    """The study's outcome as a reader says it (``kind``: the task; ``outcome``: ``metrics.json`` ``study.outcome``):
    the report's summary and checklist item 18."""
    if kind == "survival":
        what = f"time to event (column {outcome.get('time')!r}, event {outcome.get('event')!r}"
        return what + (f", in {outcome.get('unit')})" if outcome.get("unit") else ")")
    what = f"{kind} outcome (column {outcome.get('column')!r}"
    return what + (
        f", positive class {outcome.get('positive')!r})" if kind == "binary" and outcome.get("positive") else ")"
    )


def resampling_text(parameters: dict) -> str:
    """Resampling of one parameter file (``extraction.parameter_files`` entry) as a reader says it: item 22 and the
    report's extraction section."""
    spacing = parameters.get("resampled_pixel_spacing")
    if spacing:
        return f"resampled to {spacing} mm with {parameters.get('interpolator')}"
    text = "no resampling (features on the image's own grid"
    if parameters.get("modality") == "US":
        text += "; PNG images carry no physical spacing, so their lengths and areas are in pixels"
    return text + ")"


def predictors_text(available: int, used: int, selected: int) -> str:
    """How many predictors the final model had and reads, and how many its selection chose: the report's summary
    and checklist item 27. The consensus reads every predictor (its forest) while its linear member reads only
    those its filter chose; saying only one number would overstate or understate what the model uses."""
    if used > selected:
        return (
            f"{available} candidate predictors; the final model reads {used} (its random forest member every one) "
            f"and its linear member the {selected} its filter chose inside the fit"
        )
    return f"{available} candidate predictors, {used} used by the final model"


def _class_counts(cohort: dict) -> str:
    return ", ".join(f"{k.replace('n_', '')} {v}" for k, v in cohort.items() if k != "n_patients") or "n/a"


# ------------------------------------------------------------------------------------------------------ html


def _table(header: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def cohort_html(m: dict) -> str:
    flow = m.get("cohort_flow")
    if not flow:
        return ""
    labels = {
        "studies_ingested": (
            "studies ingested from the inbox (distinct patient and study UID in table series; an image file without a "
            "study UID is one study)"
        ),
        "patients_with_images": "patients with images (series)",
        "patients_with_masks": "patients with a mask (masks)",
        "patients_with_features": "patients with features (features, imported_features)",
        "patients_in_labels_csv": "patients in labels.csv",
        "patients_with_outcome": "patients with an outcome",
        "training_cohort_with_outcome": "training cohort with an outcome",
        "training_with_features_and_outcome": "training cohort with features and an outcome",
        "analysed": "<b>analysed</b> (outer cross-validation)",
        "test_cohort_with_outcome": "held-out test cohort with an outcome",
        "test_with_features_and_outcome": "test cohort with features and an outcome (external validation)",
    }
    rows = [[labels.get(k, html.escape(k)), v] for k, v in flow.items()]
    text = _table(["stage", "patients (studies)"], rows)
    exclusions = m.get("cohort_exclusions", [])
    if exclusions:
        text += "<p>Left out, with the reason:</p>" + _table(
            ["before stage", "patients", "reason", "patient keys (first 30)"],
            [
                [html.escape(e["stage"]), e["n"], html.escape(e["reason"]), html.escape(", ".join(e["patients"]))]
                for e in exclusions
            ],
        )
    table = m.get("patient_table", {})
    groups = table.get("groups", [])
    if groups:
        columns = ["outcome", "follow_up", *table.get("covariates", [])]
        shown = [c for c in columns if any(c in g for g in groups)]
        text += "<p>Patients by cohort and outcome class (numeric: mean (SD), median [range]):</p>" + _table(
            ["cohort", "class", "n", *shown],
            [
                [html.escape(g["cohort"]), html.escape(str(g["class"])), g["n"]] + [_cell(g.get(c)) for c in shown]
                for g in groups
            ],
        )
    return f'<h2 id="cohort-flow">Cohort flow and patients</h2><span id="patients"></span>{text}'


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, dict) and "mean" in value:
        missing = f"; {value['missing']} missing" if value.get("missing") else ""
        return (
            f"{fmt(value['mean'])} ({fmt(value['sd'])}), {fmt(value['median'])} [{fmt(value['min'])}-"
            f"{fmt(value['max'])}]{missing}"
        )
    if isinstance(value, dict):
        return html.escape(", ".join(f"{k} {v}" for k, v in value.items()))
    return html.escape(str(value))


def imaging_html(m: dict) -> str:
    imaging = m.get("imaging")
    if not imaging:
        return ""
    modalities = imaging.get("modalities", {})
    if not modalities:
        text = "<p>No image series in the warehouse (features imported as a table).</p>"
    else:
        labels = list(SCANNER_COLUMNS.values())
        shown = [label for label in labels if any(label in e for e in modalities.values())]
        text = _table(
            ["modality", "series", "patients", "slice thickness mm: median (range)", "pixel spacing mm", *shown],
            [
                [
                    html.escape(name),
                    e["series"],
                    e["patients"],
                    f"{_range_text(e.get('slice_thickness_mm'))} ({html.escape(e.get('slice_thickness_source', ''))})",
                    _range_text(e.get("pixel_spacing_mm")),
                ]
                + [_cell(e.get(label)) for label in shown]
                for name, e in modalities.items()
            ],
        )
        if not shown:
            text += "<p>Manufacturer, scanner model and kernel are not recorded in this warehouse's series table.</p>"
    sources = imaging.get("mask_sources", {})
    if sources:
        text += (
            "<p>Mask source (ROIs "
            + html.escape(", ".join(imaging.get("rois", [])))
            + "):</p>"
            + _table(
                ["source", "masks", "patients"],
                [[html.escape(k), v["masks"], v["patients"]] for k, v in sources.items()],
            )
        )
    return f'<h2 id="imaging">Imaging and segmentation</h2>{text}'


def extraction_html(m: dict) -> str:
    extraction = m.get("extraction", {})
    reproducibility = m.get("reproducibility", {})
    parts = []
    files = extraction.get("parameter_files", [])
    if files:
        parts.append(
            f"<p>{extraction.get('n_features_per_patient')} features per patient; image types "
            f"{html.escape(', '.join(extraction.get('image_types', [])))}; classes "
            f"{html.escape(', '.join(extraction.get('feature_classes', [])))}; PyRadiomics "
            f"{html.escape(', '.join(extraction.get('pyradiomics_versions', [])) or 'n/a')}.</p>"
        )
        for f in files:
            head = (
                f"<p><b>{html.escape(f['modality'])}</b>, parameter hash <code>{html.escape(f['params_hash'])}</code>"
                f" ({f['patients']} patients)"
            )
            if f.get("file"):
                parts.append(
                    head + f": <code>{html.escape(f['file'])}</code>; {html.escape(resampling_text(f))}, "
                    f"bin width {html.escape(str(f.get('bin_width')))}, "
                    f"bin count {html.escape(str(f.get('bin_count')))}"
                    f", normalisation {'on' if f.get('normalize') else 'off'}, filters "
                    f"{html.escape(', '.join(f.get('filters', [])))}.</p><pre>{html.escape(f['text'])}</pre>"
                )
            else:
                parts.append(head + f": {html.escape(f.get('note', ''))}.</p>")
        ibsi = extraction.get("ibsi", {})
        parts.append(
            f"<p>IBSI: {html.escape(ibsi.get('settings', ''))} Phantom conformance of this version: "
            f"{html.escape(str(ibsi.get('phantom_result')))}.</p>"
        )
    elif extraction.get("imported_tables") is not None:
        parts.append(
            "<p>Features imported from a table: "
            + html.escape("; ".join(f"{t['source']} (sha256 {t['sha256']})" for t in extraction["imported_tables"]))
            + ". Extraction settings are those of the table's authors.</p>"
        )
    if reproducibility:
        parts.append(
            "<h3>Reproducibility</h3><p>"
            + html.escape(_repro_text(reproducibility))
            + f" Model id <code>{html.escape(str(reproducibility.get('model_id')))}</code>, trained "
            f"{html.escape(str(reproducibility.get('trained_at')))}. {html.escape(reproducibility.get('seeds', ''))}."
            f"</p><p>Settings: <code>{html.escape(str(reproducibility.get('settings')))}</code></p>"
        )
    return '<h2 id="extraction">Extraction, reproducibly</h2><span id="reproducibility"></span>' + "".join(parts)


def _at_cohort_c(sample: dict) -> str:
    at_c = sample.get("at_cohort_c_statistic")
    if not at_c:
        return ""
    return f"; at the cohort's own C of {fmt(at_c['c_statistic'])} it would be {at_c['minimum_n']} ({at_c['source']})"


def sample_size_html(m: dict) -> str:
    sample = m.get("sample_size")
    if not sample:
        return ""
    if "minimum_n" in sample:
        verdict = "meets" if sample["adequate"] else "<b>falls short of</b>"
        text = (
            f"<p>Minimum sample size (Riley et al. 2020, the <code>pmsampsize</code> method) for "
            f"{sample['candidate_parameters']} candidate predictor parameters, outcome prevalence "
            f"{fmt(sample['prevalence'])} and an anticipated Cox-Snell R² of "
            f"{fmt(sample['anticipated_r2_cox_snell'])} ({html.escape(sample['r2_source'])}): "
            f"<b>{sample['minimum_n']}</b> patients "
            f"({fmt(sample['minimum_events'], 1)} events); criterion 1 (shrinkage &ge; 0.9) "
            f"{sample['criterion_1_shrinkage']}, criterion 2 (optimism in R² &le; 0.05) "
            f"{sample['criterion_2_optimism']}, criterion 3 (overall risk within 0.05) "
            f"{sample['criterion_3_intercept']}{html.escape(_at_cohort_c(sample), quote=False)}. The analysed "
            f"cohort of {sample['n_patients']} {verdict} it. "
            f"Events per candidate parameter: {fmt(sample['events_per_candidate_parameter'], 2)}.</p>"
        )
    else:
        epp = sample.get("events_per_candidate_parameter")
        text = f"<p>{html.escape(sample.get('note', ''))}; n = {sample['n_patients']}" + (
            f", events per candidate parameter {fmt(epp, 2)}.</p>" if epp is not None else ".</p>"
        )
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in m.get("limitations", []))
    return (
        f'<h2 id="sample-size">Sample size</h2>{text}<h2 id="limitations">Limitations (automatic)</h2>'
        f"<ul>{notes or '<li>none detected</li>'}</ul>"
    )


def checklist_html(checklist: dict) -> str:
    items = checklist.get("items", [])
    counts = {s: sum(i["status"] == s for i in items) for s in STATUSES}
    rows = [
        [
            i["id"],
            html.escape(i["item"]),
            html.escape(i["status"].replace("_", " ")),
            html.escape(i["where"]),
            html.escape(i["answer"]),
        ]
        for i in items
    ]
    return (
        f'<h2 id="checklist">CLEAR checklist</h2><p>{len(items)} items (also <code>reports/checklist.json</code>): '
        f"{counts['answered']} answered from the pipeline, {counts['not_applicable']} not applicable, "
        f"{counts['for_authors']} for the authors (what the pipeline cannot know).</p>"
        + _table(["#", "item", "status", "where", "answer"], rows)
    )
