"""Operating the pipeline: the run-failure sensor's log line for a real failed run, and the shipped instance
settings and definitions (pools, owners, sensors and schedule running by default)."""

import json
import shlex
import sys
from pathlib import Path

import dagster as dg
import yaml

from radiomics_assets import definitions, failure_log
from radiomics_assets.definitions import defs
from radiomics_assets.defs.partitions import patients
from radiomics_assets.defs.resources import DUCKDB_WRITES, RadiomicsConfig
from radiomics_assets.defs.sensors import run_failure_log
from radiomics_assets.synth import SynthConfig, write_cohort

INSTANCE_YAML = Path(definitions.__file__).with_name("dagster_instance.yaml")


def _failed_ingest_run(data_root: Path, instance: dg.DagsterInstance):
    """A real partition run that fails in `studies`: one CT slice of the patient is cut to 200 bytes.
    The code location reads the data root from RADIOMICS_DATA_DIR (set by the caller)."""
    write_cohort(SynthConfig(n_patients=1, seed=5, rows=32, columns=32, slices=8), data_root)
    broken = sorted((data_root / "inbox" / "SYN-0001" / "CT").glob("*.dcm"))[3]
    broken.write_bytes(broken.read_bytes()[:200])
    instance.add_dynamic_partitions(patients.name, ["SYN-0001"])
    job = defs.resolve_job_def("ingest_patient")
    result = job.execute_in_process(partition_key="SYN-0001", instance=instance, raise_on_error=False)
    assert not result.success
    return result, broken


def test_failure_sensor_logs_a_json_line_and_runs_the_notify_command(tmp_path, monkeypatch):
    data_root = tmp_path / "data"
    monkeypatch.setenv("RADIOMICS_DATA_DIR", str(data_root))
    notified = tmp_path / "notified.jsonl"
    # The notification hook gets the same line on stdin; a local command stands in for mail or a webhook.
    script = f"import sys; open({str(notified)!r}, 'a').write(sys.stdin.read())"
    command = f"{shlex.quote(sys.executable)} -c {shlex.quote(script)}"
    with dg.DagsterInstance.ephemeral() as instance:
        result, broken = _failed_ingest_run(data_root, instance)
        context = dg.build_run_status_sensor_context(
            sensor_name="run_failure_log",
            dagster_instance=instance,
            dagster_run=result.dagster_run,
            dagster_event=result.get_run_failure_event(),
            resources={"radiomics": RadiomicsConfig(data_dir=str(data_root), failure_notify_command=command)},
        ).for_run_failure()
        run_failure_log(context)
        run_failure_log(context)  # a second failure appends, never overwrites

    lines = (data_root / "logs" / "failures.log").read_text().splitlines()
    assert len(lines) == 2
    record = json.loads(lines[0])
    assert record["run_id"] == result.run_id and record["job"] == "ingest_patient"
    failed_steps = [event.step_key for event in result.all_events if event.is_step_failure]
    assert record["partition"] == "SYN-0001" and record["failed_steps"] == failed_steps and failed_steps
    # The domain error (patient, file and problem), not Dagster's wrapper "Error occurred while executing op".
    (error,) = record["errors"]
    assert error.startswith(f"{failed_steps[0]}: ") and "SYN-0001" in error and "studies" in error, error
    assert broken.name in error and "Error occurred while executing" not in error and "dagster." not in error, error
    assert notified.read_text().splitlines() == lines


def test_instance_settings_and_operator_facing_definitions():
    settings = yaml.safe_load(INSTANCE_YAML.read_text())
    assert settings["concurrency"]["runs"]["max_concurrent_runs"] == 2
    assert settings["concurrency"]["pools"] == {"default_limit": 1, "granularity": "op"}
    assert settings["run_monitoring"]["enabled"] is True

    graph = defs.resolve_asset_graph()
    writers = {
        "studies",
        "roi_masks",
        "features",
        "imported_features",
        "labels",
        "feature_matrix",
        "selected_features",
        "predictions",
    }
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        assert node.owners == ["team:radiomics"], key
        pool = defs.resolve_assets_def(key).op.pool
        assert (pool == DUCKDB_WRITES) == (key.to_user_string() in writers), (key, pool)
    assert defs.resolve_sensor_def("run_failure_log").default_status == dg.DefaultSensorStatus.RUNNING
    assert defs.resolve_sensor_def("inbox_sensor").default_status == dg.DefaultSensorStatus.RUNNING
    assert defs.resolve_schedule_def("weekly_retrain").default_status == dg.DefaultScheduleStatus.RUNNING
    check_keys = {check.name for check in graph.get(dg.AssetKey("model")).check_keys}
    assert "primary_metric_not_regressed" in check_keys
    # No first-visit pop-up covering the page, and every sensor, schedule and job says what it does.
    assert settings["nux"] == {"enabled": False}
    for definition in [*defs.sensors, *defs.schedules, *defs.jobs]:
        assert len(definition.description or "") > 40, definition.name


def test_a_fresh_run_leaves_every_patient_asset_fresh_and_failures_observed(tmp_path, monkeypatch):
    """No false "Unsynced" badge: after a run, each patient asset partition is FRESH (a hand-set code version on
    `features` without data versions made every partition STALE, "has a new dependency on roi_masks"); a failed
    patient's assets carry an observation with the problem and the fix (what the UI shows without any log)."""
    from dagster._core.definitions.data_version import StaleStatus
    from dagster._utils.test.data_versions import get_stale_status_resolver

    data_root = tmp_path / "data"
    monkeypatch.setenv("RADIOMICS_DATA_DIR", str(data_root))
    write_cohort(SynthConfig(n_patients=2, seed=5, rows=32, columns=32, slices=8), data_root)
    broken = sorted((data_root / "inbox" / "SYN-0002" / "CT").glob("*.dcm"))[3]
    broken.write_bytes(broken.read_bytes()[:200])
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(patients.name, ["SYN-0001", "SYN-0002"])
        clean = defs.resolve_job_def("ingest_patient").execute_in_process(partition_key="SYN-0001", instance=instance)
        messages = [entry.message for entry in instance.all_logs(clean.run_id)]
        # No "did not yield or return expected outputs" line in a clean run's log (it was on every run).
        assert not [m for m in messages if "did not yield or return expected outputs" in m], messages
        result = defs.resolve_job_def("ingest_patient").execute_in_process(
            instance=instance,
            tags={"dagster/asset_partition_range_start": "SYN-0001", "dagster/asset_partition_range_end": "SYN-0002"},
            raise_on_error=False,
        )
        assert not result.success and result.dagster_run.job_name == "ingest_patient"
        resolver = get_stale_status_resolver(instance, [defs.resolve_assets_def("features")])
        for asset in ("studies", "roi_masks", "features"):
            assert resolver.get_status(dg.AssetKey(asset), "SYN-0001") == StaleStatus.FRESH, asset
        observed = {
            event.asset_observation_data.asset_observation.asset_key.to_user_string(): event
            for event in result.all_events
            if event.event_type == dg.DagsterEventType.ASSET_OBSERVATION
        }
        assert sorted(observed) == ["features", "roi_masks", "studies"]  # every asset SYN-0002 did not reach
        observation = observed["studies"].asset_observation_data.asset_observation
        assert observation.partition == "SYN-0002"
        assert observation.metadata["fix"].value == (
            "copy the file again from its source (it is truncated or corrupt), or remove it from the inbox"
        )
        assert broken.name in observation.metadata["failed"].value and observation.metadata["stage"].value == "studies"
        assert observation.description.startswith(f"failed at studies: {broken.parent}/")
        assert observation.description.endswith("; fix: " + observation.metadata["fix"].value)


def test_the_failure_sensor_skips_runs_the_cli_logged_itself(tmp_path, monkeypatch):
    data_root = tmp_path / "data"
    monkeypatch.setenv("RADIOMICS_DATA_DIR", str(data_root))
    with dg.DagsterInstance.ephemeral() as instance:
        result, _ = _failed_ingest_run(data_root, instance)
        tagged = result.dagster_run.with_tags({**result.dagster_run.tags, failure_log.LOGGED_BY_TAG: "cli"})
        context = dg.build_run_status_sensor_context(
            sensor_name="run_failure_log",
            dagster_instance=instance,
            dagster_run=tagged,
            dagster_event=result.get_run_failure_event(),
            resources={"radiomics": RadiomicsConfig(data_dir=str(data_root))},
        ).for_run_failure()
        run_failure_log(context)
    assert not (data_root / "logs" / "failures.log").exists()


def test_an_instance_file_shipped_before_the_pop_up_was_off_is_updated(tmp_path):
    from radiomics_assets.dagster_home import NUX_OFF, SQLITE_INSTANCE_YAML, prepare_dagster_home

    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text(SQLITE_INSTANCE_YAML.read_text().removesuffix(NUX_OFF))
    assert yaml.safe_load(prepare_dagster_home(home, {}).read_text())["nux"] == {"enabled": False}
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")  # edited by hand: kept
    assert prepare_dagster_home(home, {}).read_text() == "telemetry:\n  enabled: false\n"
