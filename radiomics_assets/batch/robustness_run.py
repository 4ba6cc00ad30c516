"""The feature robustness stage over the cohort (the ``feature_robustness`` asset's work, without Dagster).

Every stored (series, ROI) is perturbed and re-extracted on the worker pool (``features.perturbations``), the
ICC(1,1) of every feature is computed over all patients (``modelling.feature_icc``), and both tables are written
to the warehouse: ``feature_perturbations`` (the long rows) and ``feature_robustness`` (feature, icc,
n_perturbations). The returned :class:`RobustnessRun` holds the figures the asset reports.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from radiomics_assets.warehouse import Warehouse

ICC_LEVELS = (0.75, 0.9)
"""Reported: how many features reach each ICC (Koo & Li: good, excellent)."""
LEAST_ROBUST_LISTED = 10


@dataclass(frozen=True)
class RobustnessRun:
    """What one robustness run did: counts, the ICC distribution, its cost, the least robust features, failures."""

    patients: int
    failed_patients: int
    features: int
    features_without_icc: int
    perturbations_per_roi: int
    features_icc_at_least: dict[float, int]
    """ICC level (``ICC_LEVELS``) -> how many features reach it."""
    icc_quartiles: tuple[float, float, float]
    seconds_per_patient: float
    least_robust: pd.DataFrame
    """The ``LEAST_ROBUST_LISTED`` features with the lowest ICC (feature, icc, n_perturbations)."""
    failures: pd.DataFrame
    """One row per (series, ROI) that could not be perturbed: patient_id, series_uid, roi, error."""


def run_feature_robustness(
    warehouse: Warehouse, params: dict[str, Path], *, repetitions: int, seed: int, workers: int = 0
) -> RobustnessRun:
    """Perturb and re-extract every stored (series, ROI), write ``feature_perturbations`` and
    ``feature_robustness``, and summarise. Raises :class:`InputError` when no patient could be perturbed."""
    from radiomics_assets.batch.executors import executor
    from radiomics_assets.batch.workers import resolve_workers
    from radiomics_assets.errors import InputError
    from radiomics_assets.features import perturbations
    from radiomics_assets.modelling.feature_icc import robustness_table
    from radiomics_assets.warehouse import write_derived_table

    settings = perturbations.PerturbationSettings(repetitions=repetitions, seed=seed)
    series, masks = warehouse.query("SELECT * FROM series"), warehouse.query("SELECT * FROM masks")
    tasks = perturbations.cohort_tasks(series, masks, params)
    started = time.perf_counter()
    with executor(min(resolve_workers(workers), max(len(tasks), 1))) as pool:
        rows, failures = perturbations.perturb_cohort(tasks, settings, pool)
    seconds = time.perf_counter() - started
    if rows.empty:
        first = failures.error.iloc[0] if len(failures) else "no stored ROI masks"
        raise InputError(f"feature_robustness: no patient could be perturbed; {first}")
    table = robustness_table(rows)
    write_derived_table(warehouse, "feature_perturbations", rows)
    write_derived_table(warehouse, "feature_robustness", table)
    patients = rows.patient_id.nunique()
    q1, median, q3 = table.icc.quantile([0.25, 0.5, 0.75])
    return RobustnessRun(
        patients=patients,
        failed_patients=failures.patient_id.nunique(),
        features=len(table),
        features_without_icc=int(table.icc.isna().sum()),
        perturbations_per_roi=len(settings.names()) - 1,
        features_icc_at_least={level: int((table.icc >= level).sum()) for level in ICC_LEVELS},
        icc_quartiles=(q1, median, q3),
        seconds_per_patient=round(seconds / (patients + failures.patient_id.nunique()), 2),
        least_robust=table.sort_values("icc").head(LEAST_ROBUST_LISTED),
        failures=failures,
    )
