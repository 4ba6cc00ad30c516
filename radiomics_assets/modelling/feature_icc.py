"""Features that hold up: the intraclass correlation of each feature over re-extractions under perturbation.

The perturbation table (``feature_perturbations`` in the warehouse, written by the ``feature_robustness`` asset)
holds one row per patient x feature x perturbation: columns ``patient_id, feature, perturbation, value``, with
``feature`` in the feature-matrix column format ``<modality>__<roi>__<image_type>__<class>__<feature>`` and the
unperturbed value under perturbation ``original``.

ICC form: **ICC(1,1)**, one-way random effects, absolute agreement, single measurement (Shrout and Fleiss 1979;
Koo and Li 2016), over patients (subjects) x perturbations (measurements). The perturbations are not a fixed set
of "raters" whose systematic offset we would forgive (that would be ICC(3,1)): a feature that shifts under every
erosion is less reproducible, and the one-way model counts that shift as error. This is the form used for
perturbation robustness by Zwanenburg et al. 2019 (Sci Rep 9:614) and MIRP.

    ICC(1,1) = (MSB - MSW) / (MSB + (k - 1) MSW)

with MSB the between-patient and MSW the within-patient mean square, k perturbations per patient. Only patients
with a value under every perturbation of that feature enter (balanced design). A feature constant over all
patients and perturbations has no ICC (NaN, and a NaN never passes a threshold).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

PERTURBATION_COLUMNS = ("patient_id", "feature", "perturbation", "value")
ORIGINAL = "original"


def _icc_1_1(values: np.ndarray) -> float:
    """ICC(1,1) of an n patients x k perturbations array without gaps; NaN when it is undefined."""
    n, k = values.shape
    if n < 2 or k < 2:
        return float("nan")
    patient_means = values.mean(axis=1)
    grand = values.mean()
    msb = k * ((patient_means - grand) ** 2).sum() / (n - 1)
    msw = ((values - patient_means[:, None]) ** 2).sum() / (n * (k - 1))
    denominator = msb + (k - 1) * msw
    if not np.isfinite(denominator) or denominator <= 0:
        return float("nan")
    return float((msb - msw) / denominator)


def _checked(perturbations: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in PERTURBATION_COLUMNS if c not in perturbations.columns]
    if missing:
        raise ValueError(
            f"feature perturbation table needs columns {list(PERTURBATION_COLUMNS)}, missing {missing} "
            f"(has {list(perturbations.columns)})"
        )
    return perturbations


def icc_by_feature(perturbations: pd.DataFrame, patient_ids: Iterable[str] | None = None) -> pd.Series:
    """ICC(1,1) per feature over patients x perturbations (index: feature column name, value: ICC).

    ``patient_ids``: use only these patients (the training patients of one CV fold, so the filter learns nothing
    from the test fold). Patients lacking a value under any perturbation of a feature are left out of that
    feature's ICC.
    """
    table = _checked(perturbations)
    if patient_ids is not None:
        table = table[table.patient_id.isin(set(patient_ids))]
    table = table.dropna(subset=["value"])
    result: dict[str, float] = {}
    for feature, rows in table.groupby("feature", sort=True):
        wide = rows.pivot_table(index="patient_id", columns="perturbation", values="value", aggfunc="first")
        result[str(feature)] = _icc_1_1(wide.dropna(axis=0, how="any").to_numpy(dtype=float))
    return pd.Series(result, dtype=float, name="icc").rename_axis("feature")


def robustness_table(perturbations: pd.DataFrame, patient_ids: Iterable[str] | None = None) -> pd.DataFrame:
    """Table ``feature_robustness``: feature, icc (ICC(1,1)), n_perturbations (distinct, ``original`` included)."""
    table = _checked(perturbations)
    icc = icc_by_feature(table, patient_ids)
    counts = table.groupby("feature").perturbation.nunique()
    return pd.DataFrame(
        {
            "feature": icc.index.astype(str),
            "icc": icc.to_numpy(dtype=float),
            "n_perturbations": counts.reindex(icc.index).fillna(0).astype(int).to_numpy(),
        }
    )


def robust_features(
    perturbations: pd.DataFrame, columns: Iterable[str], threshold: float, patient_ids: Iterable[str] | None = None
) -> list[str]:
    """Columns whose ICC on ``patient_ids`` is >= ``threshold``; a column without perturbation data is dropped."""
    icc = icc_by_feature(perturbations, patient_ids)
    return [c for c in columns if c in icc.index and icc[c] >= threshold]
