"""The executor of the batch driver's tasks: a Dask cluster if one is configured, else a local pool (process count,
fork server, pinned thread pools), or in-process for one."""

from __future__ import annotations

import math
import multiprocessing
import os
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from multiprocessing import forkserver

from radiomics_assets import environment


def pin_threads(threads: int) -> None:
    """Pin SimpleITK's and BLAS's thread pools: N workers x all cores each would oversubscribe the machine."""
    import SimpleITK as sitk
    from threadpoolctl import threadpool_limits

    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)
    threadpool_limits(threads)


def prepare_worker(threads: int) -> None:
    """Initialiser of every worker process: pinned thread pools and PyRadiomics ready (quiet log, speed-ups)."""
    from radiomics_assets.features.extraction import prepare_pyradiomics

    pin_threads(threads)
    prepare_pyradiomics()


class InProcessExecutor(Executor):
    """Runs each task when submitted: for one worker a pool would only add start-up time."""

    def submit(self, fn, /, *args, **kwargs) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # noqa: BLE001 - delivered through the future like a pool would
            future.set_exception(exc)
        return future


WORKERS_ENV = environment.WORKERS.name


def workers_from_env() -> int:
    """``$RADIOMICS_WORKERS``; 0 (one worker per usable core) when unset."""
    return int(environment.read(environment.WORKERS))


def resolve_workers(requested: int = 0) -> int:
    """The one place a worker count is decided: ``requested`` if set, else ``$RADIOMICS_WORKERS``, else one per
    usable core."""
    return requested or workers_from_env() or default_workers()


def default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _forkserver() -> multiprocessing.context.BaseContext:
    # forkserver: workers start from a clean, single-threaded server (fork from a threaded Dagster run
    # process can deadlock); the preload imports SimpleITK and PyRadiomics and loads the compiled kernels once
    # for all workers (worker_preload.py).
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["radiomics_assets.batch.worker_preload"])
    return context


def start_workers_early() -> None:
    """Start the workers' fork server now, so that its imports (about 1 s of SimpleITK and PyRadiomics)
    run on another core while the caller does other start-up work, instead of when the first batch starts."""
    if resolve_workers() > 1:
        _forkserver()
        forkserver.ensure_running()


def worker_pool() -> Executor:
    """A pool of the configured number of processes with pinned thread pools; in-process for one."""
    return local_pool(resolve_workers())


DASK_SCHEDULER_ENV = environment.DASK_SCHEDULER.name


def resolve_dask_scheduler(requested: str = "") -> str:
    """The one place the executor kind is decided: the Dask scheduler address ``requested`` if set, else
    ``$RADIOMICS_DASK_SCHEDULER`` (``tcp://host:8786``); "" means the local pool."""
    return requested or environment.read(environment.DASK_SCHEDULER)


def in_flight_limit(pool: Executor) -> float:
    """How many tasks ``pool`` should hold at once: its free workers for a Dask cluster (see
    ``DaskExecutor.in_flight_limit``), unlimited for the local pool (it queues them itself)."""
    limit = getattr(pool, "in_flight_limit", None)
    return limit() if limit is not None else math.inf


def local_pool(workers: int) -> Executor:
    """``workers`` local processes with pinned thread pools (in-process for one)."""
    if workers <= 1:
        return InProcessExecutor()
    threads = max(1, default_workers() // workers)
    return ProcessPoolExecutor(workers, mp_context=_forkserver(), initializer=prepare_worker, initargs=(threads,))
