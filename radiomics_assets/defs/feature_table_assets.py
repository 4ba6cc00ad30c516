"""Feature tables made elsewhere: the ``imported_features`` asset, its job, and the sensor on ``feature_tables/``.

The asset is in group ``modelling``, so ``retrain_cohort`` imports the folder before the feature matrix; the
sensor runs the job ``import_feature_tables`` (this asset alone) as soon as a table or its sidecar changes.
"""

import json
import time
from pathlib import Path

import dagster as dg

from radiomics_assets.defs.resources import DUCKDB_WRITES, RadiomicsConfig
from radiomics_assets.ingest.feature_tables import (
    ImportResult,
    feature_table_files,
    folder_fingerprint,
    import_folder,
    imported_sources,
    newest_change,
)

IMPORT_FEATURE_TABLES_JOB = "import_feature_tables"


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _sources_markdown(results: list[ImportResult]) -> str:
    rows = ["| source | patients | features | sha256 | imported_at |", "|---|---|---|---|---|"]
    rows += [
        f"| {r.source} | {r.n_patients} | {r.n_features} | {r.sha256[:12]} | {r.imported_at:%Y-%m-%d %H:%M:%S} |"
        for r in results
    ]
    return "\n".join(rows)


def _failures_markdown(failures: list[tuple[Path, str]]) -> str:
    rows = ["| file | problem |", "|---|---|"]
    rows += [f"| {_cell(path.name)} | {_cell(message)} |" for path, message in failures]
    return "\n".join(rows)


@dg.asset(group_name="modelling", kinds={"csv", "duckdb"}, pool=DUCKDB_WRITES)
def imported_features(context: dg.AssetExecutionContext, radiomics: RadiomicsConfig) -> dg.MaterializeResult:
    """Feature tables made elsewhere (``feature_tables/*.csv``, ``*.csv.gz``, ``*.gz``, ``*.parquet``) as feature
    sources: tables ``imported_features`` and ``feature_sources``. Every good table lands even when another fails (the
    step then fails, naming the file and the fix); sources whose file left the folder are removed."""
    root = radiomics.data_root()
    warehouse = radiomics.warehouse()
    before = set(imported_sources(warehouse).source)
    results, failures = import_folder(root)
    removed = sorted(before - set(imported_sources(warehouse).source))
    for result in results:
        for note in result.notes:
            context.log.info(f"{result.source}: {note}")
    metadata = {
        "n_sources": len(results),
        "n_patients": int(warehouse.query("SELECT count(DISTINCT patient_id) AS n FROM imported_features").n.iloc[0]),
        "removed_sources": ", ".join(removed) or "none",
        "folder": dg.MetadataValue.path(str(root.feature_tables)),
    }
    if not feature_table_files(root):
        return dg.MaterializeResult(metadata={"status": "no feature tables", **metadata})
    metadata["sources"] = dg.MetadataValue.md(_sources_markdown(results))
    metadata["notes"] = dg.MetadataValue.md(
        "\n".join(f"- {_cell(r.source)}: {_cell(note)}" for r in results for note in r.notes) or "none"
    )
    if failures:
        metadata["failed_files"] = dg.MetadataValue.md(_failures_markdown(failures))
        raise dg.Failure(
            description="\n".join(message for _, message in failures),
            metadata={**metadata, "n_failed": len(failures)},
        )
    metadata["failed_files"] = dg.MetadataValue.md("none")
    return dg.MaterializeResult(metadata=metadata)


import_feature_tables_job = dg.define_asset_job(
    IMPORT_FEATURE_TABLES_JOB,
    selection=dg.AssetSelection.assets(imported_features),
    description="Import the feature tables of feature_tables/ (CSV, Parquet) as feature sources",
)


def _cursor(text: str | None) -> dict:
    try:
        cursor = json.loads(text) if text else {}
        return cursor if isinstance(cursor, dict) else {}
    except ValueError:
        return {}


@dg.sensor(
    job_name=IMPORT_FEATURE_TABLES_JOB,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Watches feature_tables/: an `import_feature_tables` run once its tables changed and then stayed "
    "unchanged for inbox_settle_seconds.",
)
def feature_tables_sensor(context: dg.SensorEvaluationContext, radiomics: RadiomicsConfig) -> dg.SensorResult:
    """Requests an import run when the files of ``feature_tables/`` (tables and sidecars: names, sizes, times)
    changed since the last request and none changed for ``inbox_settle_seconds`` (a table being copied is not read
    half-written). The run key counts the requests, so a folder returning to an earlier state runs again."""
    root = radiomics.data_root()
    fingerprint = folder_fingerprint(root)
    cursor = _cursor(context.cursor)
    n_tables = len(feature_table_files(root))
    if fingerprint == cursor.get("fingerprint"):
        return dg.SensorResult(skip_reason=f"{root.feature_tables}: unchanged ({n_tables} tables)")
    if not cursor and not n_tables:  # first tick, nothing to import: no empty run
        first = {"fingerprint": fingerprint, "requests": 0}
        return dg.SensorResult(skip_reason=f"{root.feature_tables}: no feature tables", cursor=json.dumps(first))
    changed = newest_change(root)
    quiet_for = time.time() - changed if changed is not None else float("inf")
    if quiet_for < radiomics.inbox_settle_seconds:
        return dg.SensorResult(
            skip_reason=f"{root.feature_tables}: changed {quiet_for:.0f} s ago; importing once unchanged for "
            f"{radiomics.inbox_settle_seconds} s (inbox_settle_seconds)"
        )
    requests = int(cursor.get("requests", 0)) + 1
    request = dg.RunRequest(
        run_key=f"feature-tables-{requests}-{fingerprint}", tags={"radiomics/feature_tables_fingerprint": fingerprint}
    )
    context.log.info(f"{root.feature_tables} changed ({n_tables} tables): import run {requests}")
    return dg.SensorResult(
        run_requests=[request], cursor=json.dumps({"fingerprint": fingerprint, "requests": requests})
    )
