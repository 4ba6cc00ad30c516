"""End to end with the real Dagster daemon: `dagster dev` serves the code location, the sensor sees a new study.

Slow (about 1-3 minutes): it starts `dagster dev` (webserver, daemon, code server) on a free localhost port with
a temporary data root and DAGSTER_HOME, and talks to it only through the webserver's GraphQL API (stdlib HTTP).
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pytest

from radiomics_assets.synth import SynthConfig, write_cohort

PROJECT_ROOT = Path(__file__).resolve().parents[1]
REPOSITORY = {"repositoryName": "__repository__", "repositoryLocationName": "radiomics_assets"}
PATIENT = "SYN-0001"
STARTUP_TIMEOUT_S = 120
RUN_TIMEOUT_S = 240
DAGSTER_YAML = "telemetry:\n  enabled: false\nsensors:\n  use_threads: true\n  num_workers: 2\n"

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


@dataclass
class DagsterDev:
    url: str
    data_root: Path
    log_path: Path
    process: subprocess.Popen

    def gql(self, query: str, variables: dict | None = None, timeout: float = 30) -> dict:
        body = json.dumps({"query": query, "variables": variables or {}}).encode()
        request = urllib.request.Request(self.url, data=body, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=timeout) as response:
            payload = json.load(response)
        assert not payload.get("errors"), f"GraphQL errors: {payload['errors']}"
        return payload["data"]

    def log_tail(self, lines: int = 60) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def repository(self) -> dict:
        repo = self.gql(REPOSITORY_QUERY, {"sel": REPOSITORY})["repositoryOrError"]
        assert repo["__typename"] == "Repository", f"repository not loaded: {repo}\n{self.log_tail()}"
        return repo


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _restore_default_signals() -> None:
    # A shell's background job inherits SIGINT ignored; `dagster dev` maps SIGTERM onto the SIGINT handler,
    # so without this it would ignore our SIGTERM.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _stop(process: subprocess.Popen, grace_s: float = 45) -> None:
    """SIGTERM to the whole process group, wait, then SIGKILL whatever is left of the group."""
    pgid = process.pid  # start_new_session=True: the process leads its own group
    if _group_alive(pgid):
        try:
            os.killpg(pgid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        pass
    deadline = time.monotonic() + 10
    while _group_alive(pgid) and time.monotonic() < deadline:  # code server and run workers exit after dev
        time.sleep(0.5)
    if _group_alive(pgid):
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    process.wait(timeout=10)


def _wait_for_server(dev: DagsterDev) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    last_error: object = None
    while time.monotonic() < deadline:
        if dev.process.poll() is not None:
            pytest.fail(f"dagster dev exited with {dev.process.returncode}\n{dev.log_tail()}")
        try:
            repo = dev.gql(REPOSITORY_QUERY, {"sel": REPOSITORY}, timeout=5)["repositoryOrError"]
            if repo["__typename"] == "Repository":
                return
            last_error = repo
        except (urllib.error.URLError, ConnectionError, TimeoutError, AssertionError) as error:
            last_error = error
        time.sleep(1)
    pytest.fail(f"GraphQL at {dev.url} not ready after {STARTUP_TIMEOUT_S} s: {last_error}\n{dev.log_tail()}")


@pytest.fixture
def dagster_dev(tmp_path):
    data_root = tmp_path / "data"
    dagster_home = tmp_path / "dagster_home"
    data_root.mkdir()
    dagster_home.mkdir()
    (dagster_home / "dagster.yaml").write_text(DAGSTER_YAML)
    port = _free_port()
    env = {**os.environ, "RADIOMICS_DATA_DIR": str(data_root), "DAGSTER_HOME": str(dagster_home)}
    log_path = tmp_path / "dagster_dev.log"
    dagster = Path(sys.executable).parent / "dagster"
    command = [str(dagster), "dev", "-w", str(PROJECT_ROOT / "workspace.yaml"), "-h", "127.0.0.1", "-p", str(port)]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            command, cwd=PROJECT_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, preexec_fn=_restore_default_signals,
        )  # fmt: skip
    dev = DagsterDev(f"http://127.0.0.1:{port}/graphql", data_root, log_path, process)
    try:
        _wait_for_server(dev)
        yield dev
    finally:
        _stop(process)


def _patient_runs(dev: DagsterDev) -> list[dict]:
    runs_filter = {"pipelineName": "ingest_patient", "tags": [{"key": "dagster/partition", "value": PATIENT}]}
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
    """With the real `dagster dev` daemon: the UI lists the code location, and a study dropped in the inbox
    is registered by `inbox_sensor` as a `patients` partition and ingested by a successful run into DuckDB."""
    dev = dagster_dev
    repo = dev.repository()

    nodes = {"/".join(node["assetKey"]["path"]): node for node in repo["assetNodes"]}
    expected = {"studies", "roi_masks", "features", "labels", "feature_matrix", "selected_features", "model",
                "validation_report"}  # fmt: skip
    assert expected <= set(nodes), f"missing assets: {sorted(expected - set(nodes))}"
    checks = nodes["features"]["assetChecksOrError"]
    assert checks["__typename"] == "AssetChecks", checks
    assert {c["name"] for c in checks["checks"]} >= {
        "all_values_finite", "feature_count_matches_parameter_set", "roi_large_enough"}  # fmt: skip
    for key in ("studies", "roi_masks", "features"):
        assert nodes[key]["partitionDefinition"] == {"name": "patients", "type": "DYNAMIC"}, nodes[key]
    sensors = {s["name"]: s["sensorState"]["status"] for s in repo["sensors"]}
    schedules = {s["name"]: s["scheduleState"]["status"] for s in repo["schedules"]}
    assert sensors.get("inbox_sensor") == "RUNNING", sensors
    assert schedules.get("weekly_retrain") == "RUNNING", schedules

    write_cohort(SynthConfig(n_patients=1, seed=3, rows=64, columns=64, slices=20), dev.data_root)
    assert (dev.data_root / "inbox" / PATIENT).is_dir()

    deadline = time.monotonic() + RUN_TIMEOUT_S
    partition_seen, run = False, None
    while time.monotonic() < deadline:
        if dev.process.poll() is not None:
            pytest.fail(f"dagster dev exited with {dev.process.returncode}\n{dev.log_tail()}")
        if not partition_seen:
            studies = next(n for n in dev.repository()["assetNodes"] if n["assetKey"]["path"] == ["studies"])
            partition_seen = PATIENT in studies["partitionKeys"]
        runs = _patient_runs(dev) if partition_seen else []
        run = runs[0] if runs else None
        if run and run["status"] in ("FAILURE", "CANCELED"):
            pytest.fail(
                f"run {run['runId']} for {PATIENT} ended {run['status']}: {_failure_messages(run)}\n"
                f"--- dagster dev log (tail) ---\n{dev.log_tail()}"
            )
        if run and run["status"] == "SUCCESS":
            break
        time.sleep(2)
    else:
        pytest.fail(
            f"after {RUN_TIMEOUT_S} s: partition {PATIENT} registered={partition_seen}, "
            f"run={run and (run['runId'], run['status'])}\n--- dagster dev log (tail) ---\n{dev.log_tail()}"
        )
    assert len(runs) == 1, f"expected one ingest run for {PATIENT}, got {[(r['runId'], r['status']) for r in runs]}"

    assert _feature_rows(dev.data_root, PATIENT) >= 100
