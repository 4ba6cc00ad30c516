"""Batch: the patient-level steps for many patients at once (``driver``) on a pool of workers or a Dask cluster
(``executors`` picks ``workers``, the local pool, or ``dask_cluster``).

The names below are loaded on first use, so that ``radiomics-assets run`` can import ``batch.workers`` and start the
workers' fork server before it pays for the driver's imports (pydicom, SimpleITK, PyRadiomics: about 1.4 s).
"""

from radiomics_assets.lazy_names import lazy_names

_EXPORTS = {
    "STAGES": "driver",
    "PatientOutcome": "driver",
    "PatientSettings": "driver",
    "run_patients": "driver",
    "DASK_SCHEDULER_ENV": "workers",
    "WORKERS_ENV": "workers",
    "resolve_dask_scheduler": "workers",
    "resolve_workers": "workers",
    "start_workers_early": "workers",
    "worker_pool": "workers",
    "workers_from_env": "workers",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_names(__name__, _EXPORTS)
