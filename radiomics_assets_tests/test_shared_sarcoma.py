"""Real scanner data from ../shared/data: RTSTRUCT masks through the real assets equal the reference masks."""

import dagster as dg
import duckdb
import numpy as np
import pytest
import SimpleITK as sitk

from radiomics_assets.definitions import defs, patients
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
