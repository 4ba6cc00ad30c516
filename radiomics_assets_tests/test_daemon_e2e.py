"""End to end with the real Dagster daemon: `dagster dev` serves the code location, the sensor sees a new study.

Slow (about 1-3 minutes): it starts `dagster dev` (webserver, daemon, code server) on a free localhost port with
a temporary data root and DAGSTER_HOME, and talks to it only through the webserver's GraphQL API (stdlib HTTP).
"""

import time
from pathlib import Path

import duckdb
import pytest

from radiomics_assets.dagster_dev import REPOSITORY, DagsterDev, DagsterDevError, running_dagster_dev
from radiomics_assets.synth import SynthConfig, write_cohort

PATIENTS = ("SYN-0001", "SYN-0002")
RUN_TIMEOUT_S = 240

REPOSITORY_QUERY = """
query Repository($sel: RepositorySelector!) {
  repositoryOrError(repositorySelector: $sel) {
    __typename
    ... on PythonError { message }
    ... on Repository {
      assetNodes {
        assetKey { path }
        partitionDefinition { name type }
        partitionKeys
        assetChecksOrError { __typename ... on AssetChecks { checks { name } } }
      }
      sensors { name sensorState { status } }
      schedules { name scheduleState { status } }
    }
  }
}
"""

RUNS_QUERY = """
query PatientRuns($filter: RunsFilter) {
  runsOrError(filter: $filter) {
    __typename
    ... on PythonError { message }
    ... on Runs {
      results {
        runId
        status
        eventConnection(limit: 1000) {
          events {
            __typename
            ... on ExecutionStepFailureEvent { stepKey message error { message } }
            ... on RunFailureEvent { message }
          }
        }
      }
    }
  }
}
"""


def _repository(dev: DagsterDev) -> dict:
    repo = dev.gql(REPOSITORY_QUERY, {"sel": REPOSITORY})["repositoryOrError"]
    assert repo["__typename"] == "Repository", f"repository not loaded: {repo}\n{dev.log_tail()}"
    return repo


@pytest.fixture
def dagster_dev(tmp_path):
    """`dagster dev` with the shipped instance settings (dagster_instance.yaml: run queue, pools, monitoring)."""
    try:
        # Settle time 0: the sensor still waits for two ticks with the same files, but not 30 s more.
        with running_dagster_dev(
            tmp_path / "data",
            tmp_path / "dagster_home",
            tmp_path / "dagster_dev.log",
            env={"RADIOMICS_INBOX_SETTLE_SECONDS": "0"},
        ) as dev:
            yield dev
    except DagsterDevError as error:
        pytest.fail(str(error))


def _ingest_runs(dev: DagsterDev) -> list[dict]:
    runs_filter = {"pipelineName": "ingest_patient"}
    runs = dev.gql(RUNS_QUERY, {"filter": runs_filter})["runsOrError"]
    assert runs["__typename"] == "Runs", runs
    return runs["results"]


def _failure_messages(run: dict) -> list[str]:
    messages = []
    for event in run["eventConnection"]["events"]:
        if event["__typename"] in ("ExecutionStepFailureEvent", "RunFailureEvent"):
            error = (event.get("error") or {}).get("message", "")
            messages.append(f"{event.get('stepKey') or 'run'}: {event['message']} {error}".strip())
    return messages


def _feature_rows(data_root: Path, patient: str) -> int:
    deadline = time.monotonic() + 30
    while True:  # the run worker may still hold DuckDB's write lock for a moment after SUCCESS
        try:
            with duckdb.connect(str(data_root / "radiomics.duckdb"), read_only=True) as con:
                return con.execute("SELECT count(*) FROM features WHERE patient_id = ?", [patient]).fetchone()[0]
        except duckdb.IOException:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


def test_daemon_sensor_ingests_a_new_study_end_to_end(dagster_dev):
    """With the real `dagster dev` daemon: the UI lists the code location, and two studies dropped in the inbox
    together are registered by `inbox_sensor` as `patients` partitions and ingested by ONE successful run (a
    partition range) into DuckDB."""
    dev = dagster_dev
    repo = _repository(dev)

    nodes = {"/".join(node["assetKey"]["path"]): node for node in repo["assetNodes"]}
    expected = {
        "studies",
        "roi_masks",
        "features",
        "labels",
        "feature_matrix",
        "selected_features",
        "model",
        "validation_report",
    }
    assert expected <= set(nodes), f"missing assets: {sorted(expected - set(nodes))}"
    checks = nodes["features"]["assetChecksOrError"]
    assert checks["__typename"] == "AssetChecks", checks
    assert {c["name"] for c in checks["checks"]} >= {
        "all_values_finite",
        "feature_count_matches_parameter_set",
        "roi_large_enough",
    }
    for key in ("studies", "roi_masks", "features"):
        assert nodes[key]["partitionDefinition"] == {"name": "patients", "type": "DYNAMIC"}, nodes[key]
    sensors = {s["name"]: s["sensorState"]["status"] for s in repo["sensors"]}
    schedules = {s["name"]: s["scheduleState"]["status"] for s in repo["schedules"]}
    assert sensors.get("inbox_sensor") == "RUNNING", sensors
    assert sensors.get("run_failure_log") == "RUNNING", sensors
    model_checks = nodes["model"]["assetChecksOrError"]
    assert "primary_metric_not_regressed" in {c["name"] for c in model_checks.get("checks", [])}, model_checks
    assert schedules.get("weekly_retrain") == "RUNNING", schedules

    write_cohort(SynthConfig(n_patients=2, seed=3, rows=64, columns=64, slices=20), dev.data_root)
    assert all((dev.data_root / "inbox" / patient).is_dir() for patient in PATIENTS)

    deadline = time.monotonic() + RUN_TIMEOUT_S
    partition_seen, run = False, None
    while time.monotonic() < deadline:
        if dev.process.poll() is not None:
            pytest.fail(f"dagster dev exited with {dev.process.returncode}\n{dev.log_tail()}")
        if not partition_seen:
            studies = next(n for n in _repository(dev)["assetNodes"] if n["assetKey"]["path"] == ["studies"])
            partition_seen = set(PATIENTS) <= set(studies["partitionKeys"])
        runs = _ingest_runs(dev) if partition_seen else []
        run = runs[0] if runs else None
        if run and run["status"] in ("FAILURE", "CANCELED"):
            pytest.fail(
                f"run {run['runId']} for {PATIENTS} ended {run['status']}: {_failure_messages(run)}\n"
                f"--- dagster dev log (tail) ---\n{dev.log_tail()}"
            )
        if run and run["status"] == "SUCCESS":
            break
        time.sleep(2)
    else:
        pytest.fail(
            f"after {RUN_TIMEOUT_S} s: partitions {PATIENTS} registered={partition_seen}, "
            f"run={run and (run['runId'], run['status'])}\n--- dagster dev log (tail) ---\n{dev.log_tail()}"
        )
    assert len(runs) == 1, f"expected one ingest run for {PATIENTS}, got {[(r['runId'], r['status']) for r in runs]}"

    for patient in PATIENTS:
        assert _feature_rows(dev.data_root, patient) >= 100
