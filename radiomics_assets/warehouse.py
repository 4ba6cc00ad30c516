"""The DuckDB warehouse: the one place that writes tables, so the write path can change without the assets.

DuckDB allows one writer process per file. Every connection here is opened under an exclusive file lock
(``fcntl.flock`` on ``<db>.lock``) and closed at once, so concurrent partition runs wait their turn instead of
failing on DuckDB's own lock. A partition's rows are replaced inside one transaction (delete, then insert by
column name), so a run killed mid-write leaves either the old rows or the new ones, never a mix.
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb
import pandas as pd

SCHEMA = {
    "series": """
        patient_id VARCHAR NOT NULL, study_uid VARCHAR, series_uid VARCHAR NOT NULL, modality VARCHAR,
        frame_of_reference_uid VARCHAR, n_slices INTEGER, size_x INTEGER, size_y INTEGER, size_z INTEGER,
        spacing_x DOUBLE, spacing_y DOUBLE, spacing_z DOUBLE, origin_x DOUBLE, origin_y DOUBLE, origin_z DOUBLE,
        source_path VARCHAR, volume_path VARCHAR, image_hash VARCHAR, ingested_at TIMESTAMP, units VARCHAR,
        suv_factor DOUBLE""",
    "masks": """
        patient_id VARCHAR NOT NULL, series_uid VARCHAR NOT NULL, roi VARCHAR NOT NULL, source_kind VARCHAR,
        source_path VARCHAR, voxel_count BIGINT, volume_ml DOUBLE, mask_path VARCHAR, mask_hash VARCHAR""",
    "features": """
        patient_id VARCHAR NOT NULL, series_uid VARCHAR NOT NULL, modality VARCHAR, roi VARCHAR NOT NULL,
        image_type VARCHAR NOT NULL, feature_class VARCHAR NOT NULL, feature VARCHAR NOT NULL, value DOUBLE,
        params_hash VARCHAR, pyradiomics_version VARCHAR, image_hash VARCHAR, mask_hash VARCHAR,
        extracted_at TIMESTAMP""",
    "diagnostics": """
        patient_id VARCHAR NOT NULL, series_uid VARCHAR NOT NULL, roi VARCHAR NOT NULL, name VARCHAR NOT NULL,
        value VARCHAR""",
    "labels": "patient_id VARCHAR NOT NULL, label INTEGER, label_name VARCHAR",
    "imported_features": """
        patient_id VARCHAR NOT NULL, source VARCHAR NOT NULL, feature VARCHAR NOT NULL, value DOUBLE,
        source_hash VARCHAR, imported_at TIMESTAMP""",
    "feature_sources": """
        source VARCHAR NOT NULL, file VARCHAR, sha256 VARCHAR, id_column VARCHAR, excluded VARCHAR,
        n_patients INTEGER, n_features INTEGER, n_missing_values BIGINT, imported_at TIMESTAMP""",
}

ADDED_COLUMNS = {
    "series": {"units": "VARCHAR", "suv_factor": "DOUBLE"},
}
"""Columns added to a table after its first release: ``CREATE TABLE IF NOT EXISTS`` leaves an older warehouse's
table as it was, so they are added to it (each is also in :data:`SCHEMA`, for new warehouses)."""


class Warehouse:
    def __init__(self, path: Path):
        self.path = Path(path)

    @contextmanager
    def connect(self) -> Iterator[duckdb.DuckDBPyConnection]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(self.path.name + ".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            con = duckdb.connect(str(self.path))
            try:
                for table, columns in SCHEMA.items():
                    con.execute(f"CREATE TABLE IF NOT EXISTS {table} ({columns})")
                for table, added in ADDED_COLUMNS.items():
                    for column, kind in added.items():
                        con.execute(f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {column} {kind}")
                yield con
            finally:
                con.close()

    def replace_patient(self, patient_id: str, frames: dict[str, pd.DataFrame]) -> None:
        """Replace every row of ``patient_id`` in each named table by the given frame, atomically."""
        with self.connect() as con, transaction(con):
            for table, frame in frames.items():
                con.execute(f"DELETE FROM {table} WHERE patient_id = ?", [patient_id])
                insert_frame(con, table, frame)

    def query(self, sql: str, params: list | None = None) -> pd.DataFrame:
        with self.connect() as con:
            return con.execute(sql, params or []).df()


@contextmanager
def transaction(con: duckdb.DuckDBPyConnection) -> Iterator[duckdb.DuckDBPyConnection]:
    """One transaction: committed when the block ends, rolled back (and the error raised) when it fails."""
    con.execute("BEGIN TRANSACTION")
    try:
        yield con
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise


def insert_frame(con: duckdb.DuckDBPyConnection, table: str, frame: pd.DataFrame) -> None:
    """Insert a frame's rows by column name (never by position: another column order would swap values)."""
    if len(frame):
        con.register("incoming", frame)
        con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM incoming")
        con.unregister("incoming")


def write_derived_table(warehouse: Warehouse, table: str, frame: pd.DataFrame) -> None:
    """Create or replace a cohort-level table whose columns follow the data (e.g. the wide feature matrix)."""
    with warehouse.connect() as con:
        con.register("incoming", frame)
        con.execute(f'CREATE OR REPLACE TABLE "{table}" AS SELECT * FROM incoming')
        con.unregister("incoming")
