"""Data-quality checks on a patient's feature rows and masks (used by the features asset's checks)."""

from __future__ import annotations

import numpy as np
import pandas as pd


def non_finite_features(rows: pd.DataFrame) -> list[str]:
    """``<modality>/<roi>/<image_type>_<class>_<feature>`` for every NaN or infinite value."""
    bad = rows[~np.isfinite(rows.value.to_numpy(dtype=float))]
    return [f"{r.modality}/{r.roi}/{r.image_type}_{r.feature_class}_{r.feature}" for r in bad.itertuples()]


def feature_count_mismatches(rows: pd.DataFrame, usual_counts: dict[str, int]) -> list[str]:
    """(series, ROI) pairs whose feature count differs from the usual count for the same parameter set.

    ``usual_counts`` maps parameter-set hash to the most common count per (series, ROI) in the warehouse;
    a parameter set seen for the first time sets the norm.
    """
    counts = rows.groupby(["series_uid", "roi", "params_hash"]).size()
    return [
        f"{series_uid}/{roi}: {n} features, {usual_counts[params]} usual for parameter set {params}"
        for (series_uid, roi, params), n in counts.items()
        if params in usual_counts and n != usual_counts[params]
    ]


def small_rois(masks: pd.DataFrame, min_voxels: int) -> list[str]:
    small = masks[masks.voxel_count < min_voxels]
    return [f"{r.series_uid}/{r.roi}: {r.voxel_count} voxels" for r in small.itertuples()]
