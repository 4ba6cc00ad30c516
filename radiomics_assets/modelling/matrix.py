"""The patients x features matrix with the outcome and the covariates: what the modelling procedure reads.

``labels.csv`` is read under the study (``study.py``) into table ``labels``; extracted features (table
``features``) and imported feature tables (``imported_features``) become one wide matrix (table
``feature_matrix``); :func:`cohort_data` joins it with the typed outcome and the coded covariates for one cohort.
Also here: the missing-block summary (which patients lack a block of features, and how they are imputed), each
patient's batch (scanner or site, ``batch:`` of the study) as a design column, the labels.csv groups, and the
shortcuts to the training, external-test and unlabelled sets.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb
import numpy as np
import pandas as pd

from radiomics_assets.modelling.study import CLINICAL_PREFIX, Study, load_outcomes, load_study
from radiomics_assets.paths import DataRoot
from radiomics_assets.warehouse import Warehouse, write_derived_table


def wide_matrix(features_long: pd.DataFrame) -> pd.DataFrame:
    """Patients x features; columns ``<modality>__<roi>__<image_type>__<class>__<feature>``."""
    if features_long.empty:
        return pd.DataFrame()
    column = (
        features_long.modality
        + "__"
        + features_long.roi
        + "__"
        + features_long.image_type
        + "__"
        + features_long.feature_class
        + "__"
        + features_long.feature
    )
    return (
        features_long.assign(column=column)
        .pivot_table(index="patient_id", columns="column", values="value", aggfunc="first")
        .sort_index(axis=0)
        .sort_index(axis=1)
    )


def load_labels(
    root: DataRoot, label_column: str = "label", group_column: str = "group", study: Study | None = None
) -> pd.DataFrame:
    """``labels.csv`` under ``study`` (default: ``study.yaml`` of ``root``, else a two-class ``label_column``) ->
    one row per patient: patient_id, cohort, group, the typed outcome (``label``, ``label_name``; survival
    ``time``, ``event``; NaN where missing) and the covariates (``clinical__<name>``)."""
    study = study or load_study(root, label_column)
    return load_outcomes(root, study, group_column).table


def store_labels(warehouse: Warehouse, table: pd.DataFrame) -> None:
    write_derived_table(warehouse, "labels", table)


MIN_BLOCK_COVERAGE = 0.5
"""A (modality, ROI) block that fewer than this share of patients have is left out of the matrix for everyone;
a block most patients have is kept, and a patient without it gets the training-fold median (in the Pipeline)."""


IMPUTED = "imputed: median of the training patients (inside each CV fold and the final fit)"


NO_FEATURES = "(no features)"


def _blocks(features_long: pd.DataFrame) -> pd.DataFrame:
    """Patients x ``<modality>__<roi>`` blocks: True where the patient has features of that block."""
    block = features_long.modality + "__" + features_long.roi
    return pd.crosstab(features_long.patient_id, block) > 0


def build_feature_matrix(warehouse: Warehouse, timepoint: str | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Wide patients x features joined with labels (``label`` is NaN for unlabelled patients), and its gaps.

    A patient missing a whole modality or ROI is never dropped silently: each gap is a row of table
    ``missing_blocks`` (patient_id, block, handling) saying whether it is imputed or the block is excluded
    (see ``MIN_BLOCK_COVERAGE``); labelled patients without any features are listed there too.
    A patient with several studies of a modality and ROI contributes the one(s) the study's ``timepoint`` says
    (default: ``timepoint`` of ``study.yaml`` beside the warehouse; see ``timepoints``); table ``timepoints``.
    """
    from radiomics_assets.modelling.timepoints import feature_rows_at_timepoint

    # Baseline and follow-up studies: the study's ``timepoint`` rule picks which fill the matrix (issue 24).
    timepoint = timepoint or load_study(DataRoot(warehouse.path.parent)).timepoint
    features_long = feature_rows_at_timepoint(warehouse, timepoint)
    wide = wide_matrix(features_long)
    labels = warehouse.query("SELECT patient_id, label FROM labels").set_index("patient_id")
    gaps = []
    if len(features_long):
        present = _blocks(features_long)
        for block in present.columns:
            have = int(present[block].sum())
            if have < MIN_BLOCK_COVERAGE * len(present):
                handling = (
                    f"block excluded for every patient: only {have} of {len(present)} patients have it "
                    f"(< {MIN_BLOCK_COVERAGE:.0%})"
                )
                wide = wide.drop(columns=[c for c in wide.columns if c.startswith(block + "__")])
            else:
                handling = IMPUTED
            gaps += [
                {"patient_id": key, "block": block, "handling": handling} for key in present.index[~present[block]]
            ]
    gaps += [
        {"patient_id": key, "block": NO_FEATURES, "handling": "excluded: labelled but has no features"}
        for key in sorted(set(labels.index) - set(wide.index))
    ]
    matrix = wide.join(labels, how="left")
    matrix.index.name = "patient_id"
    write_derived_table(warehouse, "feature_matrix", matrix.reset_index())
    gaps_table = pd.DataFrame(gaps, columns=["patient_id", "block", "handling"]).astype(str)
    write_derived_table(warehouse, "missing_blocks", gaps_table)
    return matrix, gaps_table


def missing_data_summary(warehouse: Warehouse, max_listed: int = 30) -> dict:
    """Per (block, handling): how many patients and which (patient keys, at most ``max_listed``)."""
    try:
        gaps = warehouse.query("SELECT * FROM missing_blocks ORDER BY block, patient_id")
    except duckdb.CatalogException:  # feature matrix written without gap tracking (older warehouses)
        gaps = pd.DataFrame(columns=["patient_id", "block", "handling"])
    groups = [
        {
            "block": block,
            "handling": handling,
            "n_patients": len(rows),
            "patients": list(rows.patient_id[:max_listed]) + (["..."] if len(rows) > max_listed else []),
        }
        for (block, handling), rows in gaps.groupby(["block", "handling"], sort=True)
    ]
    policy = (
        f"a patient without a modality/ROI block gets the training-fold median of its features; a block "
        f"fewer than {MIN_BLOCK_COVERAGE:.0%} of patients have is excluded for every patient"
    )
    return {"policy": policy, "gaps": groups}


def all_feature_rows(warehouse: Warehouse) -> pd.DataFrame:
    """Extracted features (table ``features``) and imported feature tables (``imported_features``) in one long
    layout: imported columns become blocks ``TABLE__<source>`` like a modality and ROI of their own."""
    from radiomics_assets.ingest.feature_tables import imported_feature_rows

    columns = ["patient_id", "modality", "roi", "image_type", "feature_class", "feature", "value"]
    extracted = warehouse.query(f"SELECT {', '.join(columns)} FROM features")
    imported = imported_feature_rows(warehouse)
    if imported.empty:
        return extracted
    if extracted.empty:
        return imported[columns]
    return pd.concat([extracted, imported[columns]], ignore_index=True)


@dataclass(frozen=True)
class CohortData:
    """One cohort's design matrix and outcome, aligned by patient."""

    X: pd.DataFrame
    """Radiomics feature columns, then ``clinical__<name>`` covariates (categorical ones as integer codes)."""
    y: np.ndarray
    """The task's outcome (``tasks.Task.target``)."""
    outcomes: pd.DataFrame
    """The rows of table ``labels`` of these patients (same order)."""


def clinical_codes(labels: pd.DataFrame, study: Study) -> dict[str, list[str]]:
    """Category -> code (its position) of every categorical covariate, from every patient of ``labels.csv``
    (a fixed coding, not learned from outcomes; one-hot encoding happens inside the folds)."""
    codes = {}
    for name in study.covariates.categorical:
        column = labels.get(CLINICAL_PREFIX + name)
        codes[name] = sorted({str(v) for v in column.dropna()}) if column is not None else []
    return codes


def clinical_design(outcomes: pd.DataFrame, study: Study, codes: dict[str, list[str]]) -> pd.DataFrame:
    """The covariate columns as floats: numeric as they are, categorical as codes (unknown or missing: NaN)."""
    design = pd.DataFrame(index=outcomes.index)
    for name in study.covariates.numeric:
        design[CLINICAL_PREFIX + name] = pd.to_numeric(outcomes.get(CLINICAL_PREFIX + name), errors="coerce")
    for name in study.covariates.categorical:
        lookup = {category: float(i) for i, category in enumerate(codes.get(name, []))}
        values = outcomes.get(CLINICAL_PREFIX + name)
        design[CLINICAL_PREFIX + name] = [lookup.get(str(v), np.nan) if pd.notna(v) else np.nan for v in values]
    return design.astype(float)


def cohort_data(warehouse: Warehouse, study: Study, task, cohort: str = "train") -> CohortData:
    """Patients of ``cohort`` (train or test) that have features and an outcome: X (features + covariates), y.

    ``task`` (``tasks.Task``) turns the outcome rows into ``y``."""
    matrix = warehouse.query("SELECT * FROM feature_matrix").set_index("patient_id")
    labels = warehouse.query("SELECT * FROM labels").set_index("patient_id")
    split = labels["cohort"] if "cohort" in labels else pd.Series("train", index=labels.index)
    has_outcome = labels["label"].notna()
    if study.task.value == "survival" and "time" in labels:
        has_outcome &= labels["time"].notna()
    wanted = labels.index[has_outcome & (split == cohort)]
    keys = [k for k in matrix.index if k in set(wanted)]
    features = matrix.loc[keys].drop(columns=[c for c in ("label",) if c in matrix])
    outcomes = labels.loc[keys]
    X = features
    if study.has_covariates:
        X = features.join(clinical_design(outcomes, study, clinical_codes(labels, study)))
    if study.batch.configured:
        X = X.join(batch_design(warehouse, study, list(X.index)))
    return CohortData(X=X, y=task.target(outcomes), outcomes=outcomes)


def patient_batches(warehouse: Warehouse, study: Study) -> pd.Series:
    """patient_id -> batch name of every labelled patient: the ``batch.column`` of labels.csv, or the DICOM header
    values ``batch.from_dicom`` names, of the patient's series (``series`` table; SliceThickness rounded to whole
    mm). A patient whose series differ (e.g. CT and MR on two scanners) gets their values joined with " + ": a
    batch of its own kind rather than one picked at random. No value: ``unknown``."""
    labels = warehouse.query("SELECT * FROM labels").set_index("patient_id")
    if study.batch.column is not None:
        if "batch" not in labels:
            raise ValueError(
                f"{study.source}: key 'batch.column' is set but table labels has no batch: materialise labels again"
            )
        return labels["batch"].fillna("unknown").astype(str)
    from radiomics_assets.ingest.dicom_headers import SCANNER_TAGS

    columns = [SCANNER_TAGS[tag] for tag in study.batch.from_dicom]
    try:
        series = warehouse.query(f"SELECT patient_id, {', '.join(columns)} FROM series")
    except duckdb.Error as error:
        raise ValueError(
            f"{study.source}: key 'batch.from_dicom' needs series columns {columns} in {warehouse.path} ({error})"
        ) from None
    if "slice_thickness" in series:
        series["slice_thickness"] = series.slice_thickness.round()
    text = series[columns].astype(object).where(series[columns].notna(), "?").astype(str)
    series["batch"] = text.agg(" | ".join, axis=1)
    batches = series.groupby("patient_id").batch.agg(lambda v: " + ".join(sorted(set(v))))
    return batches.reindex(labels.index).fillna("unknown")


def batch_design(warehouse: Warehouse, study: Study, patient_ids: list[str]) -> pd.DataFrame:
    """The ``batch__<harmonise>`` column of the design matrix: batch codes numbered over every labelled patient
    (train and test alike, so a code means the same site in both); see ``harmonise``."""
    from radiomics_assets.modelling.harmonise import batch_column_name

    batches = patient_batches(warehouse, study)
    codes = {name: float(i) for i, name in enumerate(sorted(batches.unique()))}
    column = batch_column_name(study.harmonise.value)
    return pd.DataFrame({column: batches.reindex(patient_ids).map(codes).fillna(-1.0)}, index=patient_ids)


def training_set(warehouse: Warehouse, study: Study | None = None) -> tuple[pd.DataFrame, np.ndarray]:
    """Patients of the training cohort (``cohort=train``, or every patient without the column) with features and
    an outcome: (X, y)."""
    data = cohort_data(warehouse, study or Study(), _task(study), "train")
    return data.X, data.y


def external_test_set(warehouse: Warehouse, study: Study | None = None) -> tuple[pd.DataFrame, np.ndarray]:
    """Patients of the held-out test cohort (``cohort=test``) with an outcome: never used for choice or fitting."""
    data = cohort_data(warehouse, study or Study(), _task(study), "test")
    return data.X, data.y


def _task(study: Study | None):
    from radiomics_assets.modelling.tasks import task_for

    return task_for(study)


def label_groups(warehouse: Warehouse) -> pd.Series:
    """patient_id -> the ``group`` of labels.csv ('' when none; older warehouses have no column)."""
    labels = warehouse.query("SELECT * FROM labels").set_index("patient_id")
    return labels["group"].fillna("").astype(str) if "group" in labels else pd.Series("", index=labels.index)


def unlabelled_set(warehouse: Warehouse, study: Study | None = None) -> pd.DataFrame:
    """Patients with features but no outcome (scored by ``predictions``), with their covariates when the study has
    them (from labels.csv rows whose outcome is empty; absent covariates are imputed by the Pipeline)."""
    matrix = warehouse.query("SELECT * FROM feature_matrix").set_index("patient_id")
    features = matrix[matrix.label.isna()].drop(columns="label")
    if study is not None and study.batch.configured:  # unseen or unknown batches are left uncorrected (harmonise)
        features = features.join(batch_design(warehouse, study, list(features.index)))
    if study is None or not study.has_covariates:
        return features
    labels = warehouse.query("SELECT * FROM labels").set_index("patient_id")
    outcomes = labels.reindex(features.index)
    return features.join(clinical_design(outcomes, study, clinical_codes(labels, study)))
