"""The warehouse write path under concurrency, beside readers, and under a kill in the middle of a write."""

import json
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import textwrap
import time

import dagster as dg
import duckdb
import pandas as pd
import pytest

import radiomics_assets
from radiomics_assets import failure_log
from radiomics_assets.definitions import defs
from radiomics_assets.defs.partitions import patients
from radiomics_assets.errors import WarehouseBusyError
from radiomics_assets.synth import SynthConfig, write_cohort
from radiomics_assets.warehouse import Warehouse

COHORT = SynthConfig(n_patients=6, seed=31, rows=48, columns=48, slices=16)


def _materialise(key: str) -> bool:
    # Each worker is its own process with its own DuckDB connection, as under the multiprocess executor.
    with dg.DagsterInstance.get() as instance:
        result = defs.resolve_job_def("ingest_patient").execute_in_process(
            partition_key=key, instance=instance, raise_on_error=False
        )
    return result.success


def test_concurrent_partitions_lose_and_duplicate_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("RADIOMICS_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    (tmp_path / "dagster_home").mkdir()
    keys = write_cohort(COHORT, tmp_path)
    with dg.DagsterInstance.get() as instance:
        instance.add_dynamic_partitions(patients.name, keys)
    # Every partition twice, four at a time: re-runs of the same partition overlap with first runs.
    # close() + join(), not the context manager's terminate(): terminate() stops the workers with SIGTERM, which they
    # ignore when pytest runs as a background job (SIGINT ignored) after a Dagster run in this process (Dagster
    # maps SIGTERM onto the SIGINT handler), and the pool would wait for them forever.
    pool = mp.get_context("spawn").Pool(4)
    try:
        assert all(pool.map(_materialise, keys + keys))
    finally:
        pool.close()
        pool.join()
    with duckdb.connect(str(tmp_path / "radiomics.duckdb"), read_only=True) as con:
        per_patient = dict(con.execute("SELECT patient_id, count(*) FROM features GROUP BY ALL").fetchall())
        duplicates = con.execute(
            "SELECT count(*) FROM (SELECT patient_id, series_uid, roi, image_type, feature_class, feature "
            "FROM features GROUP BY ALL HAVING count(*) > 1)"
        ).fetchone()[0]
        series = con.execute("SELECT count(*) FROM series").fetchone()[0]
    assert set(per_patient) == set(keys) and set(per_patient.values()) == {107}
    assert duplicates == 0 and series == len(keys)


def test_write_killed_mid_transaction_leaves_previous_rows(tmp_path):
    db = tmp_path / "w.duckdb"
    warehouse = Warehouse(db)
    old = pd.DataFrame({"patient_id": ["P1"] * 3, "label": [0, 1, 0], "label_name": ["a", "b", "a"]})
    warehouse.replace_patient("P1", {"labels": old})
    writer = textwrap.dedent(f"""
        import sys, time, pandas as pd
        from radiomics_assets.warehouse import Warehouse
        with Warehouse({str(db)!r}).connect() as con:
            con.execute("BEGIN TRANSACTION")
            con.execute("DELETE FROM labels WHERE patient_id = 'P1'")
            con.execute("INSERT INTO labels VALUES ('P1', 1, 'new')")
            print("mid-write", flush=True)
            time.sleep(600)
    """)
    proc = subprocess.Popen([sys.executable, "-c", writer], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "mid-write"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    # The lock died with the process; the next writer gets in and sees exactly the committed rows.
    assert warehouse.query("SELECT label, label_name FROM labels ORDER BY label").values.tolist() == [
        [0, "a"],
        [0, "a"],
        [1, "b"],
    ]
    warehouse.replace_patient("P1", {"labels": old.head(1)})
    assert len(warehouse.query("SELECT * FROM labels")) == 1


# --- readers beside the writer: the published snapshot ----------------------------------------------------

READER = textwrap.dedent("""
    import json, os, sys, time, duckdb
    public, stop, mode = sys.argv[1], sys.argv[2], sys.argv[3]

    def look(con):
        # Every patient a reader sees must be complete: its series row and all of its feature rows.
        per_patient = dict(con.execute("SELECT patient_id, count(*) FROM features GROUP BY ALL").fetchall())
        series = {row[0] for row in con.execute("SELECT patient_id FROM series").fetchall()}
        return {"patients": sorted(per_patient), "counts": sorted(set(per_patient.values())), "series": sorted(series)}

    seen, errors, held = [], [], None
    if mode == "hold":  # as a notebook does: one read-only connection for the whole session
        held = duckdb.connect(public, read_only=True)
    print("ready", flush=True)
    while not os.path.exists(stop):
        try:
            if held is not None:
                seen.append(look(held))
            else:  # a reader that opens the store afresh for each query
                with duckdb.connect(public, read_only=True) as con:
                    seen.append(look(con))
        except Exception as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
        time.sleep(0.05)
    if held is not None:
        held.close()
    with duckdb.connect(public, read_only=True) as con:  # reconnecting shows what the run added
        after = look(con)
    print(json.dumps({"seen": seen, "errors": errors, "after": after}), flush=True)
""")


def _reader(public, stop, mode):
    proc = subprocess.Popen(
        [sys.executable, "-c", READER, str(public), str(stop), mode], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "ready"
    return proc


def _run_cli(root, tmp_path):
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path / "dagster_home"), "RADIOMICS_WORKERS": "2"}
    command = [sys.executable, "-m", "radiomics_assets.cli", "--data-dir", str(root), "run", "--no-cohort"]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=600, check=False)


def test_readers_holding_the_store_never_stop_a_run_nor_see_half_a_patient(tmp_path):
    root = tmp_path / "data"
    keys = write_cohort(COHORT, root)
    first, later = keys[:3], keys[3:]
    waiting = tmp_path / "not_yet"
    waiting.mkdir()
    for key in later:
        (root / "inbox" / key).rename(waiting / key)
    done = _run_cli(root, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    public = root / "radiomics.duckdb"
    assert (root / ".radiomics" / "radiomics.duckdb").exists()  # the pipeline's own working store

    # A notebook holds the published store open (and queries it) while a second run adds three patients and
    # re-writes the first three (delete + insert of each patient's rows); another reader reconnects each time.
    for key in later:
        (waiting / key).rename(root / "inbox" / key)
    stop = tmp_path / "stop"
    holder, poller = _reader(public, stop, "hold"), _reader(public, stop, "poll")
    done = _run_cli(root, tmp_path)
    time.sleep(0.5)  # the readers look at the final store a few times
    stop.touch()
    reports = [json.loads(proc.communicate(timeout=60)[0]) for proc in (holder, poller)]

    assert done.returncode == 0, done.stdout + done.stderr
    assert "patient assets: 6 done, 0 failed of 6" in done.stdout
    held, polled = reports
    assert held["errors"] == [] and polled["errors"] == []
    # The held connection keeps the consistent view it opened with, however often the file was replaced.
    assert held["seen"] and all(view == held["seen"][0] for view in held["seen"])
    assert held["seen"][0] == {"patients": first, "counts": [107], "series": first}
    # Fresh connections see patients arrive one complete patient at a time, never fewer than before the run.
    assert len(polled["seen"]) > 5
    for view in polled["seen"]:
        assert set(first) <= set(view["patients"]) and view["counts"] == [107] and view["series"] == view["patients"]
    assert polled["seen"][-1]["patients"] == keys
    assert held["after"] == polled["after"] == {"patients": keys, "counts": [107], "series": keys}


def test_a_held_working_store_fails_the_write_naming_the_holder(tmp_path):
    warehouse = Warehouse(tmp_path / "radiomics.duckdb", lock_timeout_s=1.0)
    rows = pd.DataFrame({"patient_id": ["P1"], "label": [1], "label_name": ["b"]})
    warehouse.replace_patient("P1", {"labels": rows})
    # Someone opens the working store itself (not the published file): DuckDB's own lock, reported with its PID.
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import duckdb,time; c=duckdb.connect({str(warehouse.working)!r}); print(1, flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "1"
        started = time.monotonic()
        with pytest.raises(WarehouseBusyError, match=rf"\(PID {holder.pid}\) holding .*still after 1 s") as raised:
            warehouse.replace_patient("P1", {"labels": rows.assign(label=0)})
        assert 1.0 <= time.monotonic() - started < 5.0
        assert "fix: close or stop the process named" in failure_log.with_fix(str(raised.value))
    finally:
        holder.kill()
        holder.wait()
    # The holder gone, the write goes through and is published.
    warehouse.replace_patient("P1", {"labels": rows.assign(label=0)})
    with duckdb.connect(str(warehouse.path), read_only=True) as con:
        assert con.execute("SELECT label FROM labels").fetchall() == [(0,)]


def test_a_second_pipeline_writer_waits_then_reports_the_lock_holder(tmp_path):
    db = tmp_path / "radiomics.duckdb"
    hold = textwrap.dedent(f"""
        import sys, time
        from radiomics_assets.warehouse import Warehouse
        with Warehouse({str(db)!r}).connect() as con:
            con.execute("INSERT INTO labels VALUES ('P9', 1, 'held')")
            print("holding", flush=True)
            time.sleep(float(sys.argv[1]))
    """)
    # A holder that finishes within the timeout: the second writer retries and gets in (no error).
    holder = subprocess.Popen([sys.executable, "-c", hold, "1.5"], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "holding"
    Warehouse(db, lock_timeout_s=30).replace_patient(
        "P1", {"labels": pd.DataFrame({"patient_id": ["P1"], "label": [0]})}
    )
    holder.wait()
    assert Warehouse(db).query("SELECT patient_id FROM labels ORDER BY 1").patient_id.tolist() == ["P1", "P9"]
    # One that outlasts it: the error names the holding pipeline process.
    holder = subprocess.Popen([sys.executable, "-c", hold, "60"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        with pytest.raises(WarehouseBusyError, match=rf"lock .* is held by PID {holder.pid} \(-c, since "):
            Warehouse(db, lock_timeout_s=0.5).query("SELECT 1")
    finally:
        holder.kill()
        holder.wait()


def test_a_store_written_in_place_by_an_older_release_is_taken_over(tmp_path):
    public = tmp_path / "radiomics.duckdb"
    with duckdb.connect(str(public)) as con:
        con.execute("CREATE TABLE labels (patient_id VARCHAR NOT NULL, label INTEGER, label_name VARCHAR)")
        con.execute("INSERT INTO labels VALUES ('OLD1', 1, 'kept')")
    warehouse = Warehouse(public)
    warehouse.replace_patient("NEW1", {"labels": pd.DataFrame({"patient_id": ["NEW1"], "label": [0]})})
    with radiomics_assets.open_features(tmp_path) as con:
        assert con.execute("SELECT patient_id FROM labels ORDER BY 1").fetchall() == [("NEW1",), ("OLD1",)]
    # Reading alone publishes nothing: the published file stays the same inode.
    inode = public.stat().st_ino
    warehouse.query("SELECT count(*) FROM labels")
    assert public.stat().st_ino == inode
    warehouse.replace_patient("NEW1", {"labels": pd.DataFrame({"patient_id": ["NEW1"], "label": [1]})})
    assert public.stat().st_ino != inode


def test_a_write_that_times_out_fails_only_its_patient_naming_the_holder(tmp_path, monkeypatch):
    from radiomics_assets.batch import run_patients
    from radiomics_assets.defs.resources import RadiomicsConfig

    keys = write_cohort(COHORT, tmp_path)[:2]
    settings = RadiomicsConfig(data_dir=str(tmp_path)).patient_settings()
    (first,) = run_patients(keys[:1], {"studies", "roi_masks", "features"}, settings, workers=1)
    assert first.error is None
    working = Warehouse(tmp_path / "radiomics.duckdb").working
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import duckdb,time; c=duckdb.connect({str(working)!r}); print(1, flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "1"
        monkeypatch.setenv("RADIOMICS_WAREHOUSE_LOCK_TIMEOUT", "1")
        (outcome,) = run_patients(keys[1:], {"studies", "roi_masks", "features"}, settings, workers=1)
    finally:
        holder.kill()
        holder.wait()
    # The run went on (no exception); the patient whose write waited failed with the holder's PID and the fix.
    assert outcome.key == keys[1] and outcome.failed_stage == "studies" and outcome.done_stages == []
    assert f"(PID {holder.pid}) holding {working}, still after 1 s" in outcome.error, outcome.error
    assert "fix: close or stop the process named" in failure_log.with_fix(outcome.error)
    with radiomics_assets.open_features(tmp_path) as con:  # the earlier patient's rows are still published
        assert con.execute("SELECT DISTINCT patient_id FROM series").fetchall() == [(keys[0],)]
