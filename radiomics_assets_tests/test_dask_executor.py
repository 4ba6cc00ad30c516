"""Patient work on a real Dask cluster (a scheduler and two worker processes started by conftest.py)."""

import os
import signal
import threading
import time

import duckdb
import pandas as pd
import pytest

from radiomics_assets.batch import STAGES, run_patients
from radiomics_assets.batch.dask_cluster import (
    DaskClusterError,
    check_data_root_visible,
    check_worker_versions,
    software_versions,
)
from radiomics_assets.defs.resources import RadiomicsConfig
from radiomics_assets.features import FEATURE_COLUMNS
from radiomics_assets.synth import SynthConfig, write_cohort

COHORT = SynthConfig(n_patients=4, seed=31, rows=40, columns=40, slices=12)
KEYS = [f"SYN-{i:04d}" for i in range(1, 5)]
STORED = [c for c in FEATURE_COLUMNS if c not in ("modality", "extracted_at")]  # all but the extraction time


def _features(root) -> pd.DataFrame:
    with duckdb.connect(str(root / "radiomics.duckdb"), read_only=True) as con:
        rows = con.sql(f"SELECT {', '.join(STORED)} FROM features").df()
    return rows.sort_values(STORED[:6]).reset_index(drop=True)


def _settings(root):
    return RadiomicsConfig(data_dir=str(root)).patient_settings()


def _restarted(cluster, before: int) -> None:
    """Until the nanny has restarted the killed worker (the next test wants two workers again)."""
    with cluster.client() as client:
        client.wait_for_workers(before, timeout=120)


def test_cluster_stores_the_same_features_as_the_local_pool(tmp_path, dask_cluster):
    write_cohort(COHORT, tmp_path)
    local = list(run_patients(KEYS, set(STAGES), _settings(tmp_path), workers=1))
    assert not any(o.error for o in local)
    by_pool = _features(tmp_path)
    on_cluster = list(run_patients(KEYS, set(STAGES), _settings(tmp_path), dask_scheduler=dask_cluster.address))
    assert sorted(o.key for o in on_cluster) == KEYS
    assert not any(o.error for o in on_cluster), [o.error for o in on_cluster]
    assert all(o.done_stages == list(STAGES) for o in on_cluster)
    by_cluster = _features(tmp_path)  # the cluster run replaced each patient's rows: none twice
    assert len(by_cluster) == len(KEYS) * 107
    pd.testing.assert_frame_equal(by_cluster, by_pool, check_exact=True)


def test_worker_killed_mid_run_loses_no_patient(tmp_path, dask_cluster):
    write_cohort(COHORT, tmp_path)
    settings = _settings(tmp_path)
    reference = list(run_patients(KEYS[:1], set(STAGES), settings, workers=1))
    assert not reference[0].error
    expected = _features(tmp_path)
    killed = []
    run_over = threading.Event()

    def kill_a_busy_worker(client) -> None:
        # Watches the scheduler (not only when a patient finishes, which under load can fall between tasks) and
        # kills the first worker seen running a task, like a machine that is switched off.
        while not run_over.is_set():
            busy = [address for address, tasks in client.processing().items() if tasks]
            if busy:
                (pid,) = client.run(os.getpid, workers=busy[:1]).values()
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                return
            time.sleep(0.05)

    outcomes = []
    with dask_cluster.client() as client:
        watcher = threading.Thread(target=kill_a_busy_worker, args=(client,), daemon=True)
        watcher.start()
        try:
            for outcome in run_patients(KEYS, set(STAGES), settings, dask_scheduler=dask_cluster.address):
                outcomes.append(outcome)
        finally:
            run_over.set()
            watcher.join(timeout=30)
        assert killed, "no task was seen running during the whole run: nothing was killed mid-task"
        (killed,) = killed
        deadline = time.monotonic() + 120
        while killed in client.run(os.getpid).values() or len(client.scheduler_info()["workers"]) < 2:
            assert time.monotonic() < deadline, dask_cluster.logs()
            time.sleep(0.5)
    assert sorted(o.key for o in outcomes) == KEYS  # each patient exactly once
    assert not any(o.error for o in outcomes), [o.error for o in outcomes]
    stored = _features(tmp_path)
    assert stored.groupby("patient_id").size().to_dict() == dict.fromkeys(KEYS, 107)  # none lost, none twice
    first = stored[stored.patient_id == KEYS[0]].reset_index(drop=True)
    pd.testing.assert_frame_equal(first, expected[expected.patient_id == KEYS[0]].reset_index(drop=True))


def test_task_that_kills_its_worker_fails_alone(tmp_path, dask_cluster):
    """A task that takes its worker down every time fails after allowed-failures + 1 deaths; the batch goes on."""
    from radiomics_assets.batch.driver import _Batch

    write_cohort(SynthConfig(n_patients=2, seed=32, rows=40, columns=40, slices=12), tmp_path)
    keys = ["SYN-0001", "SYN-0002"]
    batch = _Batch(frozenset(STAGES), _settings(tmp_path), 2, 3, dask_scheduler=dask_cluster.address)
    try:
        for key in keys:
            batch.submit_prepare(key)
        # The crash of a native library: the worker process exits without a Python exception.
        batch.pending[batch.pool(3).submit(os._exit, 70)] = ("prepare", "CRASH-0001")
        outcomes = {outcome.key: outcome for outcome in batch.finished()}
    finally:
        batch.close()
    assert sorted(outcomes) == ["CRASH-0001", *keys]
    crash = outcomes["CRASH-0001"]
    assert crash.failed_stage == "studies" and crash.error.startswith("KilledWorker"), crash.error
    for key in keys:
        assert outcomes[key].error is None and outcomes[key].done_stages == list(STAGES)
    assert _features(tmp_path).groupby("patient_id").size().to_dict() == dict.fromkeys(keys, 107)
    _restarted(dask_cluster, 2)


def test_cluster_checks_name_the_worker_and_both_versions(tmp_path, dask_cluster):
    with dask_cluster.client() as client:
        check_worker_versions(client)  # the same install: passes
        check_data_root_visible(client, tmp_path)
        assert not list(tmp_path.iterdir())  # the marker file is removed again
        other = {**software_versions(), "pyradiomics-bhklab": "3.0.0"}
        with pytest.raises(DaskClusterError) as raised:
            check_worker_versions(client, expected=other)
    message = str(raised.value)
    for name in ("w1", "w2"):
        assert f"worker {name} (tcp://127.0.0.1:" in message
    assert "has pyradiomics-bhklab 3.1.4, this run 3.0.0" in message


def test_data_root_a_worker_cannot_see_is_named(tmp_path, dask_cluster):
    """A worker that does not see the data root (here: one in its own mount namespace, where an empty tmpfs
    covers the data root, like a machine without the shared mount) fails the check with its name."""
    import shlex
    import subprocess
    import sys

    from radiomics_assets_tests.conftest import _stop_group

    root, local_dir = tmp_path / "data", tmp_path / "blind-worker"
    root.mkdir()
    local_dir.mkdir()
    if subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode != 0:
        pytest.skip("cannot create a mount namespace here (unshare -m needs CAP_SYS_ADMIN)")
    dask = os.path.join(os.path.dirname(sys.executable), "dask")
    worker_command = [
        dask,
        "worker",
        dask_cluster.address,
        "--name",
        "blind",
        "--nthreads",
        "1",
        "--no-nanny",
        "--no-dashboard",
        "--host",
        "127.0.0.1",
        "--local-directory",
        str(local_dir),
    ]
    script = f"mount -t tmpfs none {shlex.quote(str(root))} && exec {shlex.join(worker_command)}"
    worker = subprocess.Popen(
        ["unshare", "-m", "sh", "-c", script],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        with dask_cluster.client() as client:
            client.wait_for_workers(3, timeout=120)
            client.run(os.getpid)  # returns once every worker, the new one too, has finished its start-up
            with pytest.raises(DaskClusterError) as raised:
                check_data_root_visible(client, root)
        message = str(raised.value)
        assert f"the data root {root} is not visible to Dask worker(s) blind (tcp://127.0.0.1:" in message
        assert "FileNotFoundError" in message and "w1" not in message and "w2" not in message
    finally:
        _stop_group(worker)
