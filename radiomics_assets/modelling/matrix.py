"""XX"""

from __future__ import annotations

import duckdb
import pandas as pd

from radiomics_assets.paths import DataRoot, patient_key
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


def load_labels(root: DataRoot, label_column: str = "label", group_column: str = "group") -> pd.DataFrame:
    """``labels.csv`` -> (patient_id, label 0/1, label_name, cohort, group). Two class names map to 0/1 in sorted
    order. ``group`` is the optional ``group_column`` (patients sharing it stay in one CV fold), empty if absent."""
    if not root.labels_csv.exists():
        raise FileNotFoundError(f"{root.labels_csv}: labels file not found")
    raw = pd.read_csv(root.labels_csv, dtype=str)
    if "patient_id" not in raw or label_column not in raw:
        raise ValueError(f"{root.labels_csv}: needs columns 'patient_id' and {label_column!r}, has {list(raw)}")
    raw = raw.dropna(subset=[label_column])
    names = sorted(raw[label_column].str.strip().unique())
    if len(names) != 2:
        raise ValueError(f"{root.labels_csv}: column {label_column!r} must hold two classes, found {names}")
    split = raw["cohort"].fillna("train").str.strip().str.lower() if "cohort" in raw else "train"
    table = pd.DataFrame(
        {
            "patient_id": raw.patient_id.map(patient_key),
            "label": raw[label_column].str.strip().map({names[0]: 0, names[1]: 1}).astype(int),
            "label_name": raw[label_column].str.strip(),
            "cohort": split,
            "group": raw[group_column].fillna("").str.strip() if group_column in raw else "",
        }
    )
    bad = sorted(set(table.cohort) - {"train", "test"})
    if bad:
        raise ValueError(f"{root.labels_csv}: column 'cohort' must hold train or test, found {bad}")
    return table


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


def build_feature_matrix(warehouse: Warehouse) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Wide patients x features joined with labels (``label`` is NaN for unlabelled patients), and its gaps.

    A patient missing a whole modality or ROI is never dropped silently: each gap is a row of table
    ``missing_blocks`` (patient_id, block, handling) saying whether it is imputed or the block is excluded
    (see ``MIN_BLOCK_COVERAGE``); labelled patients without any features are listed there too.
    """
    features_long = warehouse.query("SELECT * FROM features")
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


def _labelled(warehouse: Warehouse, cohort: str) -> tuple[pd.DataFrame, pd.Series]:
    matrix = warehouse.query("SELECT * FROM feature_matrix").set_index("patient_id")
    labels = warehouse.query("SELECT * FROM labels").set_index("patient_id")
    split = labels["cohort"] if "cohort" in labels else pd.Series("train", index=labels.index)
    in_cohort = matrix.index.isin(split[split == cohort].index)
    labelled = matrix[matrix.label.notna() & in_cohort]
    return labelled.drop(columns="label"), labelled.label.astype(int)


def training_set(warehouse: Warehouse) -> tuple[pd.DataFrame, pd.Series]:
    """Labelled patients of the training cohort (``cohort=train``, or every labelled patient without the column)."""
    return _labelled(warehouse, "train")


def external_test_set(warehouse: Warehouse) -> tuple[pd.DataFrame, pd.Series]:
    """Labelled patients of the held-out test cohort (``cohort=test``): never used for choice or fitting."""
    return _labelled(warehouse, "test")


def label_groups(warehouse: Warehouse) -> pd.Series:
    """patient_id -> the ``group`` of labels.csv ('' when none; older warehouses have no column)."""
    labels = warehouse.query("SELECT * FROM labels").set_index("patient_id")
    return labels["group"].fillna("").astype(str) if "group" in labels else pd.Series("", index=labels.index)


def unlabelled_set(warehouse: Warehouse) -> pd.DataFrame:
    matrix = warehouse.query("SELECT * FROM feature_matrix").set_index("patient_id")
    return matrix[matrix.label.isna()].drop(columns="label")
