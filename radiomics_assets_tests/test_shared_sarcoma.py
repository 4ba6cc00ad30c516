"""Real scanner data from ../shared/data: RTSTRUCT masks through the real assets equal the reference masks, and
the stored features equal PyRadiomics run directly on the stored volume and mask."""

import dagster as dg
import duckdb
import numpy as np
import pytest
import SimpleITK as sitk
from radiomics import featureextractor

from radiomics_assets.definitions import defs
from radiomics_assets.defs.partitions import patients
from radiomics_assets.features import PARAMS_DIR, PARAMS_DIR_ENV, params_by_modality
from radiomics_assets.features.extraction import foreground_normalised
from radiomics_assets.features.speedups import stock_pyradiomics
from radiomics_assets.hashing import file_hash
from radiomics_assets_tests.conftest import SHARED_DATA

SARCOMA = SHARED_DATA / "sarcoma"
pytestmark = pytest.mark.skipif(not SARCOMA.exists(), reason="../shared/data is not present")


@pytest.fixture
def sarcoma_inbox(tmp_path, monkeypatch):
    """An inbox that links (never copies) two sarcoma patients' DICOM folders."""
    monkeypatch.setenv("RADIOMICS_DATA_DIR", str(tmp_path))
    (tmp_path / "inbox").mkdir()
    for patient in ("STS_002", "STS_008"):
        (tmp_path / "inbox" / patient).symlink_to(SARCOMA / "dicom" / patient, target_is_directory=True)
    return tmp_path


def test_sarcoma_masks_equal_reference_voxel_masks(sarcoma_inbox):
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(patients.name, ["STS_002", "STS_008"])
        job = defs.resolve_job_def("ingest_patient")
        for key in ("STS_002", "STS_008"):
            result = job.execute_in_process(
                partition_key=key, instance=instance, asset_selection=[dg.AssetKey("studies"), dg.AssetKey("roi_masks")]
            )
            assert result.success
    with duckdb.connect(str(sarcoma_inbox / "radiomics.duckdb"), read_only=True) as con:
        masks = con.execute(
            "SELECT m.patient_id, s.modality, m.roi, m.mask_path "
            "FROM masks m JOIN series s USING (patient_id, series_uid)"
        ).df()
    assert len(masks) == 6  # CT, MR and PET for each of the two patients
    for row in masks.itertuples():
        folder = {"CT": "CT", "MR": "MR_T1", "PT": "PET"}[row.modality]
        assert row.roi == f"GTV_Mass_{folder}"
        reference = sitk.ReadImage(str(SARCOMA / "reference_masks" / row.patient_id / f"{folder}_mask.nii.gz"))
        ours = sitk.ReadImage(row.mask_path)
        assert ours.GetSize() == reference.GetSize()
        assert np.allclose(ours.GetOrigin(), reference.GetOrigin(), atol=1e-3)
        a, b = sitk.GetArrayFromImage(ours) > 0, sitk.GetArrayFromImage(reference) > 0
        assert b.sum() > 100 and np.array_equal(a, b), f"{row.patient_id} {folder}: Dice < 1"


@pytest.fixture
def one_sarcoma_patient(tmp_path, monkeypatch):
    """An inbox linking one sarcoma patient (CT, T1 MR and PET with their RTSTRUCTs); shipped parameter files."""
    monkeypatch.setenv("RADIOMICS_DATA_DIR", str(tmp_path))
    monkeypatch.delenv(PARAMS_DIR_ENV, raising=False)
    (tmp_path / "inbox").mkdir()
    (tmp_path / "inbox" / "STS_002").symlink_to(SARCOMA / "dicom" / "STS_002", target_is_directory=True)
    return tmp_path


def test_sarcoma_features_equal_pyradiomics_run_directly(one_sarcoma_patient):
    """Every stored feature equals PyRadiomics' own extractor on the stored volume and mask with the same params
    (MR's ``normalize`` done over the foreground, ``extraction.foreground_normalised``, as the pipeline does)."""
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(patients.name, ["STS_002"])
        result = defs.resolve_job_def("ingest_patient").execute_in_process(partition_key="STS_002", instance=instance)
        assert result.success
    with duckdb.connect(str(one_sarcoma_patient / "radiomics.duckdb"), read_only=True) as con:
        targets = con.execute(
            "SELECT m.series_uid, m.roi, s.modality, s.volume_path, m.mask_path, m.volume_ml "
            "FROM masks m JOIN series s USING (patient_id, series_uid) ORDER BY s.modality"
        ).df()
        stored = con.execute("SELECT * FROM features WHERE patient_id = 'STS_002'").df()
    assert sorted(targets.modality) == ["CT", "MR", "PT"]
    params = params_by_modality(PARAMS_DIR)
    for target in targets.itertuples():
        rows = stored[(stored.series_uid == target.series_uid) & (stored.roi == target.roi)]
        ours = {f"{r.image_type}_{r.feature_class}_{r.feature}": r.value for r in rows.itertuples()}
        with stock_pyradiomics():  # the reference is PyRadiomics as installed, without our speed-ups
            extractor = featureextractor.RadiomicsFeatureExtractor(str(params[target.modality]))
            image = sitk.ReadImage(target.volume_path)
            if extractor.settings.get("normalize"):  # MR: z-scored over the foreground first (issue 24), not by it
                image = foreground_normalised(image, extractor.settings)
                extractor.settings["normalize"] = False
            direct = extractor.execute(image, sitk.ReadImage(target.mask_path))
        expected = {k: float(np.asarray(v)) for k, v in direct.items() if not k.startswith("diagnostics_")}
        assert len(expected) > 100
        assert set(ours) == set(expected), f"{target.modality}: feature names differ"
        mismatched = [k for k in expected if not np.isclose(ours[k], expected[k], rtol=1e-9, atol=0)]
        assert not mismatched, f"{target.modality}: {mismatched[:5]}"
        assert set(rows.params_hash) == {file_hash(params[target.modality])}
        # The features describe this mask: PyRadiomics' mesh volume (mm3, after 1 mm/3 mm resampling) is
        # within 10% of the stored mask volume (ml).
        assert ours["original_shape_MeshVolume"] / 1000 == pytest.approx(target.volume_ml, rel=0.1)
