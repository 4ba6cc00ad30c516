"""The Dagster instance on a real PostgreSQL server (started by conftest.py): jobs, the inbox sensor, the pool."""

import json
import os

import dagster as dg
import pytest

from radiomics_assets.dagster_home import (
    POSTGRES_INSTANCE_YAML,
    SQLITE_INSTANCE_YAML,
    postgres_url,
    prepare_dagster_home,
)
from radiomics_assets.definitions import defs
from radiomics_assets.defs.partitions import PARTITION_RANGE_END, PARTITION_RANGE_START, patients
from radiomics_assets.defs.resources import DUCKDB_WRITES, RadiomicsConfig
from radiomics_assets.defs.sensors import inbox_sensor
from radiomics_assets.synth import SynthConfig, write_cohort
from radiomics_assets_tests.conftest import requested_runs

COHORT = SynthConfig(n_patients=8, seed=41, rows=40, columns=40, slices=12)
KEYS = [f"SYN-{i:04d}" for i in range(1, 9)]


def test_the_environment_chooses_the_instance_file(tmp_path):
    home = tmp_path / "home"
    assert prepare_dagster_home(home, {}).read_text() == SQLITE_INSTANCE_YAML.read_text()
    environ = {"DAGSTER_PG_URL": "postgresql://u:p@db:5432/dagster"}
    # A shipped SQLite file is replaced once PostgreSQL is configured (never silently stays on SQLite) ...
    assert prepare_dagster_home(home, environ).read_text() == POSTGRES_INSTANCE_YAML.read_text()
    # ... but an instance file edited by hand is the operator's and is kept.
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    assert prepare_dagster_home(home, {}).read_text() == "telemetry:\n  enabled: false\n"
    parts = {"DAGSTER_PG_HOST": "db.lan", "DAGSTER_PG_USER": "dag ster", "DAGSTER_PG_PASSWORD": "p@ss/word"}
    with pytest.raises(ValueError, match="DAGSTER_PG_DB"):
        postgres_url(parts)
    parts["DAGSTER_PG_DB"] = "dagster"
    assert postgres_url(parts) == "postgresql+psycopg2://dag%20ster:p%40ss%2Fword@db.lan:5432/dagster"
    environ = dict(parts)
    prepare_dagster_home(tmp_path / "other", environ)
    assert environ["DAGSTER_PG_URL"] == postgres_url(parts)  # the instance file reads DAGSTER_PG_URL


@pytest.fixture
def postgres_instance(postgres_server, tmp_path, monkeypatch):
    """The shipped PostgreSQL instance file in a fresh DAGSTER_HOME, on a fresh database."""
    monkeypatch.setenv("DAGSTER_PG_URL", postgres_server())  # postgresql://: the helper adds the driver
    monkeypatch.setenv("RADIOMICS_DATA_DIR", str(tmp_path / "data"))
    home = tmp_path / "home"
    prepare_dagster_home(home)
    assert os.environ["DAGSTER_PG_URL"].startswith("postgresql+psycopg2://radiomics@127.0.0.1:")
    with dg.DagsterInstance.from_config(str(home)) as instance:
        yield instance


def test_jobs_and_the_inbox_sensor_on_postgres(postgres_instance, tmp_path):
    from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage

    instance, root = postgres_instance, tmp_path / "data"
    assert isinstance(instance.run_storage, PostgresRunStorage)
    assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
    write_cohort(COHORT, root)
    resources = {"radiomics": RadiomicsConfig(inbox_settle_seconds=0)}
    first = inbox_sensor(dg.build_sensor_context(instance=instance, resources=resources))
    tick = inbox_sensor(dg.build_sensor_context(instance=instance, cursor=first.cursor, resources=resources))
    (request,) = tick.dynamic_partitions_requests
    assert sorted(request.partition_keys) == KEYS
    assert requested_runs(tick) == [(key, f"ingest-{KEYS[0]}...{KEYS[-1]}") for key in KEYS]
    instance.add_dynamic_partitions(patients.name, list(request.partition_keys))
    assert sorted(instance.get_dynamic_partitions(patients.name)) == KEYS  # stored in PostgreSQL

    ingest = defs.resolve_job_def("ingest_patient").execute_in_process(
        instance=instance, tags={PARTITION_RANGE_START: KEYS[0], PARTITION_RANGE_END: KEYS[-1]}
    )
    assert ingest.success
    for asset in ("studies", "roi_masks", "features"):
        assert instance.get_materialized_partitions(dg.AssetKey(asset)) == set(KEYS)
    # The step claimed a slot of the DuckDB writers' pool, whose limit came from the instance file.
    assert instance.event_log_storage.get_concurrency_info(DUCKDB_WRITES).slot_count == 1

    modelling = RadiomicsConfig(candidate_models=["logreg"], cv_folds=2, cv_repeats=1, permutations=2)
    cohort = defs.resolve_job_def("retrain_cohort").execute_in_process(
        instance=instance, resources={"radiomics": modelling}
    )
    assert cohort.success
    metrics = json.loads((root / "reports" / "metrics.json").read_text())
    assert metrics["n_patients"] == len(KEYS) and 0.0 <= metrics["auc"] <= 1.0
    runs = instance.get_runs()
    assert len(runs) == 2 and all(run.status == dg.DagsterRunStatus.SUCCESS for run in runs)


def test_pool_limit_and_run_queue_hold_on_postgres(postgres_instance):
    """One DuckDB writer step at a time across every process on the instance; at most two runs at a time."""
    instance = postgres_instance
    assert instance.run_coordinator.__class__.__name__ == "QueuedRunCoordinator"
    assert instance.get_concurrency_config().run_queue_config.max_concurrent_runs == 2
    storage = instance.event_log_storage
    storage.initialize_concurrency_limit_to_default(DUCKDB_WRITES)
    first = storage.claim_concurrency_slot(DUCKDB_WRITES, "run-a", "patient_batch")
    second = storage.claim_concurrency_slot(DUCKDB_WRITES, "run-b", "patient_batch")
    assert first.is_claimed and not second.is_claimed
    storage.free_concurrency_slot_for_step("run-a", "patient_batch")
    assert storage.claim_concurrency_slot(DUCKDB_WRITES, "run-b", "patient_batch").is_claimed


def test_deploy_compose_file_wires_the_services_together():
    """No Docker engine here: the compose file is checked as YAML for what the deployment relies on."""
    import yaml

    from radiomics_assets.paths import PROJECT_ROOT

    deploy = PROJECT_ROOT / "deploy"
    compose = yaml.safe_load((deploy / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"postgres", "code", "webserver", "daemon", "dask-scheduler", "dask-worker"}
    for name in ("code", "webserver", "daemon"):
        env = services[name]["environment"]
        assert env["DAGSTER_PG_URL"].startswith("postgresql+psycopg2://") and "@postgres:5432/" in env["DAGSTER_PG_URL"]
        assert env["RADIOMICS_DASK_SCHEDULER"] == "tcp://dask-scheduler:8786"
    worker = services["dask-worker"]
    assert worker["command"][:3] == ["dask", "worker", "tcp://dask-scheduler:8786"]
    assert worker["command"][worker["command"].index("--nthreads") + 1] == "1"
    for name in ("code", "daemon", "dask-worker"):  # one shared data root at the same path
        assert "data:/data" in services[name]["volumes"]
    assert {"data", "pgdata"} <= set(compose["volumes"])
    workspace = yaml.safe_load((deploy / "workspace.yaml").read_text())
    assert workspace["load_from"][0]["grpc_server"] == {
        "host": "code",
        "port": 4000,
        "location_name": "radiomics_assets",
    }
    assert "dagster_instance_postgres.yaml /opt/dagster/home/dagster.yaml" in (deploy / "Dockerfile").read_text()
