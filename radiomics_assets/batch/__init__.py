"""Batch: the patient-level steps for many patients at once (``driver``) on a pool of workers (``workers``)."""

from radiomics_assets.batch.driver import STAGES, PatientOutcome, PatientSettings, run_patients
from radiomics_assets.batch.workers import (
    WORKERS_ENV,
    resolve_workers,
    start_workers_early,
    worker_pool,
    workers_from_env,
)

__all__ = [
    "STAGES",
    "WORKERS_ENV",
    "PatientOutcome",
    "PatientSettings",
    "resolve_workers",
    "run_patients",
    "start_workers_early",
    "worker_pool",
    "workers_from_env",
]
