"""Patient tasks on a Dask cluster (``distributed``), behind the same ``concurrent.futures`` interface as the pool.

The batch driver submits its tasks to an :class:`~concurrent.futures.Executor` and waits on the futures; here
that executor is distributed's ``ClientExecutor`` (whose futures are plain ``concurrent.futures`` futures), so
the driver's wait loop is the same for both. The run process stays the only DuckDB writer: tasks return tables,
they never open the warehouse.

At the start of every batch the cluster is checked, so a misconfigured deployment fails the run at once, with
a message naming the worker, instead of failing patients one by one:

- every worker runs the same radiomics_assets (version and source hash) and the same PyRadiomics, SimpleITK and
  numpy as this process (else stored features would depend on which worker computed them);
- every worker sees the data root at the same path (the client writes a marker file, each worker reads it).

The driver keeps no more tasks in flight than the cluster has worker threads (:meth:`DaskExecutor.in_flight_limit`):
the scheduler blames every task assigned to a worker that dies, so a task queued behind one that crashes its
worker would otherwise be failed with it.

Workers are prepared by a :class:`PrepareWorkerPlugin` (pinned thread pools, PyRadiomics speed-ups), also
applied to workers that join or restart later. A worker that dies mid-task has its tasks re-run elsewhere by
the scheduler; a task that kills ``distributed.scheduler.allowed-failures`` + 1 workers fails alone with
``KilledWorker``, which the driver records as that patient's error.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import math
import time
import uuid
from concurrent.futures import Executor, Future
from pathlib import Path

from distributed import Client, WorkerPlugin

from radiomics_assets.batch.workers import prepare_worker

PLUGIN_NAME = "radiomics_assets-prepare-worker"
VERSIONED_DISTRIBUTIONS = ("radiomics_assets", "pyradiomics-bhklab", "simpleitk", "numpy")


class DaskClusterError(RuntimeError):
    """The Dask cluster cannot run this batch (unreachable, no workers, other code, data root not visible)."""


class PrepareWorkerPlugin(WorkerPlugin):
    """Runs on every worker (also ones that join or restart later): pinned threads, PyRadiomics prepared.

    Workers are meant to run one thread each (``dask worker --nthreads 1``, one worker process per core), so
    SimpleITK and BLAS are pinned to one thread: more would oversubscribe the cores the other workers use.
    """

    def __init__(self, threads: int = 1):
        self.threads = threads

    def setup(self, worker) -> None:
        prepare_worker(self.threads)


def local_cluster_commands(dask: Path, port: int, workers: int, log_dir: Path) -> dict[str, list[str]]:
    """The commands of a scheduler and ``workers`` one-thread workers on 127.0.0.1 (tests and the benchmark start
    them as processes, as an operator would on machines: one thread per worker, see docs/tutorials/cluster.md)."""
    address = f"tcp://127.0.0.1:{port}"
    commands = {"scheduler": [str(dask), "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"]}
    for i in range(1, workers + 1):
        commands[f"w{i}"] = [
            *(str(dask), "worker", address, "--name", f"w{i}", "--nthreads", "1", "--no-dashboard"),
            *("--host", "127.0.0.1", "--local-directory", str(log_dir / f"w{i}")),
        ]
    return commands


def software_versions() -> dict[str, str]:
    """Versions of the packages a feature value depends on, plus a hash of radiomics_assets' own sources (an
    editable install keeps its version number while its code changes)."""
    versions = {name: importlib.metadata.version(name) for name in VERSIONED_DISTRIBUTIONS}
    package = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(path.relative_to(package).as_posix().encode() + b"\0" + path.read_bytes())
    versions["radiomics_assets sources"] = digest.hexdigest()[:12]
    return versions


def read_marker(path: str) -> str:
    """Runs on a worker: the marker file's text, or why it cannot be read."""
    try:
        return Path(path).read_text()
    except OSError as error:
        return f"cannot read it: {type(error).__name__}: {error.strerror or error}"


def _worker_names(client: Client) -> dict[str, str]:
    workers = client.scheduler_info(n_workers=-1)["workers"]
    return {address: f"{info.get('name', address)} ({address})" for address, info in workers.items()}


def check_worker_versions(client: Client, expected: dict[str, str] | None = None) -> None:
    """Every worker runs the ``expected`` software (default: this process's); else DaskClusterError naming the
    worker and both versions."""
    expected = software_versions() if expected is None else expected
    names = _worker_names(client)
    found = client.run(software_versions, on_error="return")
    problems = []
    for address, versions in sorted(found.items()):
        if isinstance(versions, BaseException):
            problems.append(f"worker {names.get(address, address)}: radiomics_assets not importable ({versions!r})")
            continue
        for name, version in expected.items():
            if versions.get(name) != version:
                problems.append(
                    f"worker {names.get(address, address)} has {name} {versions.get(name)}, this run {version}"
                )
    if problems:
        raise DaskClusterError(
            "Dask workers run other software than this run: " + "; ".join(problems) + ". Install the same "
            "radiomics_assets (and its pinned dependencies) on every worker and restart them."
        )


def check_data_root_visible(client: Client, data_dir: Path) -> None:
    """Every worker reads a marker file written here into the data root; else DaskClusterError naming the
    workers that cannot see it (tasks read the inbox and write volumes and masks under the data root)."""
    token = uuid.uuid4().hex
    marker = Path(data_dir) / f".dask-visibility-{token}"
    marker.write_text(token)
    try:
        seen = client.run(read_marker, str(marker), on_error="return")
    finally:
        marker.unlink(missing_ok=True)
    names = _worker_names(client)
    blind = [f"{names.get(address, address)}: {text}" for address, text in sorted(seen.items()) if text != token]
    if blind:
        raise DaskClusterError(
            f"the data root {data_dir} is not visible to Dask worker(s) {'; '.join(blind)}. Mount the shared data "
            f"root at the same path on every worker (RADIOMICS_DATA_DIR)."
        )


class DaskExecutor(Executor):
    """A batch's tasks on the cluster at ``scheduler`` (``tcp://host:8786``), checked and prepared first."""

    def __init__(self, scheduler: str, *, data_dir: Path, timeout_s: float = 30):
        try:
            self.client = Client(scheduler, timeout=timeout_s, set_as_default=False)
        except OSError as error:
            raise DaskClusterError(
                f"cannot reach the Dask scheduler at {scheduler} ({error}): start it (`dask scheduler`) or unset "
                "RADIOMICS_DASK_SCHEDULER / the dask_scheduler setting to use the local pool"
            ) from None
        try:
            try:
                self.client.wait_for_workers(1, timeout=timeout_s)
            except TimeoutError:
                raise DaskClusterError(
                    f"the Dask scheduler at {scheduler} has no worker after {timeout_s:.0f} s"
                ) from None
            check_worker_versions(self.client)
            check_data_root_visible(self.client, data_dir)
            self.client.register_plugin(PrepareWorkerPlugin(), name=PLUGIN_NAME)
        except BaseException:
            self.client.close()
            raise
        # pure=False: two tasks with equal arguments are two tasks (a re-run must not reuse a cached result).
        self._executor = self.client.get_executor(pure=False)
        self.scheduler, self.timeout_s = scheduler, timeout_s
        self._threads, self._threads_checked, self._no_workers_since = 0, -math.inf, None

    def in_flight_limit(self) -> int:
        """The cluster's worker threads now (asked at most once a second): the driver keeps no more tasks in
        flight, so a worker holds only the task it runs and a worker's death implicates that task alone.
        DaskClusterError when no worker has been left for ``timeout_s``."""
        now = time.monotonic()
        if now - self._threads_checked >= 1.0:
            self._threads, self._threads_checked = sum(self.client.nthreads().values()), now
            if self._threads:
                self._no_workers_since = None
            elif self._no_workers_since is None:
                self._no_workers_since = now
            elif now - self._no_workers_since > self.timeout_s:
                raise DaskClusterError(f"no Dask worker left at {self.scheduler} for {self.timeout_s:.0f} s")
        return self._threads

    def submit(self, fn, /, *args, **kwargs) -> Future:
        return self._executor.submit(fn, *args, **kwargs)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        try:
            self._executor.shutdown(wait=wait and not cancel_futures)
        finally:
            self.client.close()
