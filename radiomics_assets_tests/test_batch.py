"""Many patients in one run, extracted by parallel worker processes; a broken patient fails only itself."""

import dagster as dg
import duckdb
import pandas as pd

from radiomics_assets.batch import run_patients
from radiomics_assets.cli import partition_ranges, step_failure_messages
from radiomics_assets.definitions import defs
from radiomics_assets.defs.partitions import patients
from radiomics_assets.defs.resources import RadiomicsConfig
from radiomics_assets.paths import DataRoot
from radiomics_assets.synth import SynthConfig, write_cohort

COHORT = SynthConfig(n_patients=5, seed=21, rows=48, columns=48, slices=16)
KEYS = [f"SYN-{i:04d}" for i in range(1, 6)]
RANGE_TAGS = {"dagster/asset_partition_range_start": KEYS[0], "dagster/asset_partition_range_end": KEYS[-1]}


def _features(root) -> pd.DataFrame:
    with duckdb.connect(str(root / "radiomics.duckdb"), read_only=True) as con:
        return con.sql("SELECT patient_id, series_uid, roi, feature_class, feature, value FROM features").df()


def test_one_run_for_all_patients_and_only_the_broken_one_fails(tmp_path, monkeypatch):
    monkeypatch.setenv("RADIOMICS_DATA_DIR", str(tmp_path))
    write_cohort(COHORT, tmp_path)
    (tmp_path / "inbox" / "SYN-0003" / "CT" / "CT_0007.dcm").unlink()
    job = defs.resolve_job_def("ingest_patient")
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(patients.name, KEYS)
        result = job.execute_in_process(
            instance=instance,
            tags=RANGE_TAGS,
            raise_on_error=False,
            resources={"radiomics": RadiomicsConfig(data_dir=str(tmp_path), workers=2)},
        )
        assert not result.success
        (message,) = step_failure_messages(result)
        assert message.startswith("SYN-0003 studies: ") and "CT_0008.dcm: slice spacing" in message, message
        good = set(KEYS) - {"SYN-0003"}
        for asset in ("studies", "roi_masks", "features"):
            assert instance.get_materialized_partitions(dg.AssetKey(asset)) == good
        checks = [e for e in result.get_asset_check_evaluations() if e.check_name == "all_values_finite"]
        assert sorted(e.partition for e in checks) == sorted(good) and all(e.passed for e in checks)
        assert len(instance.get_runs()) == 1
    stored = _features(tmp_path)
    assert set(stored.patient_id) == good
    assert stored.groupby("patient_id").size().nunique() == 1  # every patient has the full feature set


def test_parallel_workers_store_the_same_values_as_one_process(tmp_path):
    """Two worker processes and the single-process path give identical rows (order aside)."""
    results = {}
    for workers in (1, 2):
        root = tmp_path / f"w{workers}"
        write_cohort(SynthConfig(n_patients=3, seed=22, rows=48, columns=48, slices=16), root)
        settings = RadiomicsConfig(data_dir=str(root)).patient_settings()
        keys = [f"SYN-{i:04d}" for i in range(1, 4)]
        outcomes = list(run_patients(keys, {"studies", "roi_masks", "features"}, settings, workers=workers))
        assert sorted(o.key for o in outcomes) == keys and not any(o.error for o in outcomes)
        assert all(o.done_stages == ["studies", "roi_masks", "features"] for o in outcomes)
        rows = _features(root).drop(columns="series_uid")
        results[workers] = rows.sort_values(["patient_id", "roi", "feature_class", "feature"]).reset_index(drop=True)
        assert DataRoot(root).warehouse.exists()
    pd.testing.assert_frame_equal(results[1], results[2])
    assert len(results[2]) == 3 * 107


def test_partition_ranges_cover_exactly_the_wanted_keys():
    registered = ["a", "b", "c", "d", "e"]
    assert partition_ranges(registered, ["a", "b", "c", "d", "e"]) == [("a", "e")]
    assert partition_ranges(registered, ["b", "c", "e"]) == [("b", "c"), ("e", "e")]
    assert partition_ranges(registered, []) == []


def test_features_with_studies_but_not_masks_uses_the_stored_masks(tmp_path, monkeypatch):
    """A run of `studies` + `features` (masks not selected) extracts from the masks stored earlier."""
    monkeypatch.setenv("RADIOMICS_DATA_DIR", str(tmp_path))
    write_cohort(SynthConfig(n_patients=1, seed=23, rows=48, columns=48, slices=16), tmp_path)
    job = defs.resolve_job_def("ingest_patient")
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(patients.name, ["SYN-0001"])
        assert job.execute_in_process(partition_key="SYN-0001", instance=instance).success
        before = _features(tmp_path)
        again = job.execute_in_process(
            partition_key="SYN-0001",
            instance=instance,
            raise_on_error=False,
            asset_selection=[dg.AssetKey("studies"), dg.AssetKey("features")],
        )
        assert again.success, step_failure_messages(again)
    pd.testing.assert_frame_equal(_features(tmp_path), before)


def test_interrupted_batch_keeps_the_stages_that_finished(tmp_path):
    """Patients whose extraction had not finished when the batch stopped keep their series and masks rows."""
    from radiomics_assets.batch.driver import STAGES, PatientOutcome, PatientSettings, _Batch
    from radiomics_assets.features import params_by_modality

    settings = PatientSettings(data_dir=tmp_path, params=params_by_modality())
    batch = _Batch(frozenset(STAGES), settings, workers=1, n_patients=2)
    for key in ("P1", "P2"):
        series = pd.DataFrame({"patient_id": [key], "series_uid": [f"{key}.1"], "modality": ["CT"]})
        masks = pd.DataFrame({"patient_id": [key], "series_uid": [f"{key}.1"], "roi": ["GTV"]})
        batch.waiting[key] = PatientOutcome(key, series=series, masks=masks)
    batch.store_unfinished()
    assert not batch.waiting
    with duckdb.connect(str(tmp_path / "radiomics.duckdb"), read_only=True) as con:
        assert con.sql("SELECT patient_id FROM series ORDER BY 1").fetchall() == [("P1",), ("P2",)]
        assert con.sql("SELECT count(*) FROM masks").fetchall() == [(2,)]
        assert con.sql("SELECT count(*) FROM features").fetchall() == [(0,)]
