"""The asset graph on a real Dagster instance, a real DuckDB file and real PyRadiomics."""

import json

import dagster as dg
import duckdb
import pytest

from radiomics_assets.cli import step_failure_messages
from radiomics_assets.definitions import defs
from radiomics_assets.defs.partitions import patients
from radiomics_assets.defs.resources import RadiomicsConfig
from radiomics_assets.defs.sensors import inbox_sensor
from radiomics_assets.synth import SynthConfig, write_cohort
from radiomics_assets_tests.conftest import requested_runs

COHORT = SynthConfig(n_patients=10, seed=5, rows=64, columns=64, slices=20)


@pytest.fixture
def cohort_root(tmp_path, monkeypatch):
    monkeypatch.setenv("RADIOMICS_DATA_DIR", str(tmp_path))
    write_cohort(COHORT, tmp_path)
    return tmp_path


def _feature_counts(root):
    with duckdb.connect(str(root / "radiomics.duckdb"), read_only=True) as con:
        return dict(con.sql("SELECT patient_id, count(*) FROM features GROUP BY ALL").fetchall())


def _ingest(instance, key):
    return defs.resolve_job_def("ingest_patient").execute_in_process(
        partition_key=key, instance=instance, raise_on_error=False
    )


def test_sensor_registers_each_new_patient_once(cohort_root):
    resources = {"radiomics": RadiomicsConfig(inbox_settle_seconds=0)}
    cursor = None

    def tick():
        nonlocal cursor
        result = inbox_sensor(dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources))
        cursor = result.cursor
        return result

    with dg.instance_for_test() as instance:
        seen = tick()  # first sight: a study may still be copying, so wait for a tick with the same files
        assert not seen.run_requests and not seen.dynamic_partitions_requests
        first = tick()
        (request,) = first.dynamic_partitions_requests
        assert sorted(request.partition_keys) == [f"SYN-{i:04d}" for i in range(1, 11)]
        # Ten patients arriving together share one run (a range of partitions), not ten runs.
        assert requested_runs(first) == [(key, "ingest-SYN-0001...SYN-0010") for key in sorted(request.partition_keys)]
        instance.add_dynamic_partitions(patients.name, list(request.partition_keys))

        second = tick()
        assert not second.run_requests and not second.dynamic_partitions_requests

        write_cohort(SynthConfig(n_patients=1, seed=9, rows=64, columns=64, slices=20, id_prefix="NEW"), cohort_root)
        assert not tick().run_requests
        third = tick()
        assert [r.partition_key for r in third.run_requests] == ["NEW-0001"]
        assert list(third.dynamic_partitions_requests[0].partition_keys) == ["NEW-0001"]


def test_whole_graph_end_to_end(cohort_root):
    with dg.instance_for_test() as instance:
        keys = [f"SYN-{i:04d}" for i in range(1, 11)]
        instance.add_dynamic_partitions(patients.name, keys)
        for key in keys:
            result = _ingest(instance, key)
            assert result.success
            checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
            assert checks == {
                "all_values_finite": True,
                "feature_count_matches_parameter_set": True,
                "roi_large_enough": True,
            }

        counts = _feature_counts(cohort_root)
        assert set(counts) == set(keys) and min(counts.values()) >= 100

        # Re-running a partition replaces its rows instead of appending.
        assert _ingest(instance, keys[0]).success
        assert _feature_counts(cohort_root) == counts

        with duckdb.connect(str(cohort_root / "radiomics.duckdb"), read_only=True) as con:
            voxels, source = con.execute(
                "SELECT voxel_count, source_kind FROM masks WHERE patient_id = 'SYN-0001'"
            ).fetchone()
            volume = con.execute(
                "SELECT value FROM features WHERE patient_id = 'SYN-0001' AND feature = 'VoxelVolume'"
            ).fetchone()[0]
        assert source == "rtstruct" and voxels > 100
        # PyRadiomics resamples to 1 mm; the voxel volume must stay close to the rasterised mask volume.
        assert volume == pytest.approx(voxels * 0.8 * 0.8 * 2.0, rel=0.15)

        few_permutations = {"resources": {"radiomics": {"config": {"permutations": 3}}}}  # the suite's time
        cohort = defs.resolve_job_def("retrain_cohort").execute_in_process(
            instance=instance, run_config=few_permutations
        )
        assert cohort.success
        metrics = json.loads((cohort_root / "reports" / "metrics.json").read_text())
        assert metrics["n_patients"] == 10 and 0.0 <= metrics["auc"] <= 1.0
        assert metrics["auc_ci_low"] <= metrics["auc"] <= metrics["auc_ci_high"]
        assert "data:image/png;base64," in (cohort_root / "reports" / "report.html").read_text()
        report = cohort.asset_materializations_for_node("validation_report")[0]
        assert report.metadata["auc"].value == pytest.approx(metrics["auc"])


def test_broken_patient_fails_alone_and_keeps_other_rows(cohort_root):
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(patients.name, ["SYN-0001", "SYN-0002"])
        assert _ingest(instance, "SYN-0001").success
        assert _ingest(instance, "SYN-0002").success
        before = _feature_counts(cohort_root)

        (cohort_root / "inbox" / "SYN-0002" / "CT" / "CT_0005.dcm").unlink()
        result = _ingest(instance, "SYN-0002")
        assert not result.success
        (message,) = step_failure_messages(result)
        assert message.startswith("SYN-0002 studies: ")
        assert "CT_0006.dcm" in message and "missing" in message
        # The failed re-run leaves the earlier rows of both patients as they were.
        assert _feature_counts(cohort_root) == before


def test_definitions_list_every_asset_sensor_and_schedule():
    repo = defs.get_repository_def()
    names = {key.to_user_string() for key in repo.asset_graph.get_all_asset_keys()}
    assert names == {
        "studies",
        "roi_masks",
        "features",
        "labels",
        "feature_matrix",
        "selected_features",
        "model",
        "validation_report",
        "predictions",
        "dicom_exports",
        "feature_robustness",
        "imported_features",
    }
    assert repo.get_sensor_def("inbox_sensor") and repo.get_schedule_def("weekly_retrain")
    assert repo.get_sensor_def("feature_tables_sensor") and repo.get_job("import_feature_tables")
