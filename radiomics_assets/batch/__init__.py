"""Batch: the patient-level steps for many patients at once (``driver``) on a pool of workers or a Dask cluster
(``executors`` picks ``workers``, the local pool, or ``dask_cluster``)."""

from radiomics_assets.batch.driver import STAGES, PatientOutcome, PatientSettings, run_patients
from radiomics_assets.batch.workers import (
    DASK_SCHEDULER_ENV,
    WORKERS_ENV,
    resolve_dask_scheduler,
    resolve_workers,
    start_workers_early,
    worker_pool,
    workers_from_env,
)

__all__ = [
    "DASK_SCHEDULER_ENV",
    "STAGES",
    "WORKERS_ENV",
    "PatientOutcome",
    "PatientSettings",
    "resolve_dask_scheduler",
    "resolve_workers",
    "run_patients",
    "start_workers_early",
    "worker_pool",
    "workers_from_env",
]
