"""Which executor runs the patients: a Dask cluster when a scheduler is configured, else the local pool.

Its own module so that ``workers`` (the local pool, and what every worker runs at start) and ``dask_cluster`` (which
starts Dask workers the same way) each import only downwards: ``executors`` -> ``dask_cluster`` -> ``workers``.
"""

from __future__ import annotations

from concurrent.futures import Executor
from pathlib import Path

from radiomics_assets.batch.workers import local_pool


def executor(workers: int, *, dask_scheduler: str = "", data_dir: Path | None = None) -> Executor:
    """The Dask cluster at ``dask_scheduler`` (checked: same software, ``data_dir`` visible) when one is given;
    else ``workers`` local processes with pinned thread pools (in-process for one)."""
    if dask_scheduler:
        from radiomics_assets.batch.dask_cluster import DaskExecutor  # distributed is imported only when used

        if data_dir is None:
            raise ValueError("a Dask executor needs the data root, to check that every worker sees it")
        return DaskExecutor(dask_scheduler, data_dir=data_dir)
    return local_pool(workers)
