"""The warehouse write path under concurrency and under a kill in the middle of a write."""

import multiprocessing as mp
import os
import signal
import subprocess
import sys
import textwrap

import dagster as dg
import duckdb
import pandas as pd

from radiomics_assets.definitions import defs
from radiomics_assets.defs.partitions import patients
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
    with mp.get_context("spawn").Pool(4) as pool:
        assert all(pool.map(_materialise, keys + keys))
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
