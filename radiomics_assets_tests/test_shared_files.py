"""Real data from ../shared/data: BUSI ultrasound PNGs to 2D features; IBSI CT phantom RTSTRUCT to reference mask."""

import dagster as dg
import duckdb
import numpy as np
import pytest
import SimpleITK as sitk

from radiomics_assets.cli import step_failure_messages
from radiomics_assets.definitions import defs
from radiomics_assets.defs.partitions import patients
from radiomics_assets.paths import patient_key
from radiomics_assets_tests.conftest import SHARED_DATA

BUSI = SHARED_DATA / "busi_sample"
PHANTOM = SHARED_DATA / "ibsi_phantom" / "ct_phantom"
DOPPLER = patient_key("malignant (196)")


def _link_busi(inbox):
    """Link (never copy) every benign and malignant image with its masks; returns the expected partition keys."""
    names = []
    for folder in ("benign", "malignant"):
        (inbox / folder).mkdir(parents=True)
        for path in sorted((BUSI / folder).glob("*.png")):
            (inbox / folder / path.name).symlink_to(path)
            if "_mask" not in path.name:
                names.append(patient_key(path.stem))
    return names


@pytest.mark.skipif(not BUSI.exists(), reason="../shared/data is not present")
def test_busi_sample_gives_2d_features_per_lesion_image(tmp_path, monkeypatch):
    monkeypatch.setenv("RADIOMICS_DATA_DIR", str(tmp_path))
    keys = _link_busi(tmp_path / "inbox")
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(patients.name, keys)
        job = defs.resolve_job_def("ingest_patient")
        for key in keys:
            result = job.execute_in_process(partition_key=key, instance=instance, raise_on_error=False)
            if key == DOPPLER:  # the one colour (Doppler) image of the sample is refused by default, named
                assert not result.success
                (message,) = step_failure_messages(result)
                assert "malignant (196).png: colour image (1.0% of pixels have channels more than 16" in message
                continue
            assert result.success, (key, step_failure_messages(result))
    with duckdb.connect(str(tmp_path / "radiomics.duckdb"), read_only=True) as con:
        rows = con.execute(
            "SELECT patient_id, modality, count(*) FILTER (feature_class = 'shape2D') AS shape2d, "
            "count(*) FILTER (feature_class = 'shape') AS shape3d, count(*) AS n FROM features GROUP BY ALL"
        ).df()
    assert sorted(rows.patient_id) == sorted(set(keys) - {DOPPLER})
    assert set(rows.modality) == {"US"}
    assert (rows.shape2d > 0).all() and (rows.shape3d == 0).all() and (rows.n > 50).all()


@pytest.mark.skipif(not PHANTOM.exists(), reason="../shared/data is not present")
def test_ibsi_ct_phantom_rtstruct_mask_equals_reference_nifti(tmp_path, monkeypatch):
    monkeypatch.setenv("RADIOMICS_DATA_DIR", str(tmp_path))
    (tmp_path / "inbox").mkdir()
    (tmp_path / "inbox" / "phantom").symlink_to(PHANTOM / "dicom", target_is_directory=True)
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(patients.name, ["1"])
        result = defs.resolve_job_def("ingest_patient").execute_in_process(
            partition_key="1",
            instance=instance,
            raise_on_error=False,
            asset_selection=[dg.AssetKey("studies"), dg.AssetKey("roi_masks")],
        )
        assert result.success, step_failure_messages(result)
    with duckdb.connect(str(tmp_path / "radiomics.duckdb"), read_only=True) as con:
        (mask_path,) = con.execute("SELECT mask_path FROM masks").fetchone()
    ours = sitk.ReadImage(mask_path)
    reference = sitk.ReadImage(str(PHANTOM / "nifti" / "mask" / "mask.nii.gz"))
    assert ours.GetSize() == reference.GetSize()
    assert np.allclose(ours.GetOrigin(), reference.GetOrigin(), atol=1e-3)
    a, b = sitk.GetArrayFromImage(ours) > 0, sitk.GetArrayFromImage(reference) > 0
    assert b.sum() > 100
    assert np.array_equal(a, b), f"{int((a != b).sum())} voxels differ of {int(b.sum())} reference voxels"
