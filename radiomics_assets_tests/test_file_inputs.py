"""NIfTI/NRRD and PNG image/mask pairs through the real assets (synthetic files written with SimpleITK)."""

import json

import dagster as dg
import duckdb
import numpy as np
import pytest
import SimpleITK as sitk

from radiomics_assets.cli import main as cli_main
from radiomics_assets.cli import step_failure_messages
from radiomics_assets.definitions import defs
from radiomics_assets.defs.partitions import patients
from radiomics_assets.defs.resources import RadiomicsConfig
from radiomics_assets.defs.sensors import inbox_sensor
from radiomics_assets.ingest import labels_from_folders, scan_file_pairs
from radiomics_assets.paths import patient_key
from radiomics_assets_tests.conftest import requested_runs


def _volume(seed=0, size=(40, 40, 20), spacing=(0.8, 0.8, 2.0), origin=(0.0, 0.0, 0.0)):
    rng = np.random.default_rng(seed)
    array = rng.normal(40, 15, size[::-1]).astype(np.float32)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    return image


def _labels(image, values=(1,)):
    z, y, x = sitk.GetArrayViewFromImage(image).shape
    array = np.zeros((z, y, x), np.uint8)
    for i, value in enumerate(values):
        array[5:15, 8 + 14 * i : 20 + 14 * i, 10:30] = value
    mask = sitk.GetImageFromArray(array)
    mask.CopyInformation(image)
    return mask


@pytest.fixture
def root(tmp_path, monkeypatch):
    monkeypatch.setenv("RADIOMICS_DATA_DIR", str(tmp_path))
    (tmp_path / "inbox").mkdir()
    return tmp_path


def _run(instance, key, **radiomics_config):
    instance.add_dynamic_partitions(patients.name, [key])
    run_config = {"resources": {"radiomics": {"config": radiomics_config}}} if radiomics_config else None
    return defs.resolve_job_def("ingest_patient").execute_in_process(
        partition_key=key, instance=instance, raise_on_error=False, run_config=run_config
    )


def _query(root, sql):
    with duckdb.connect(str(root / "radiomics.duckdb"), read_only=True) as con:
        return con.execute(sql).df()


def test_nifti_nrrd_pairs_through_assets(root):
    nested = root / "inbox" / "site A" / "batch"
    nested.mkdir(parents=True)
    image = _volume()
    sitk.WriteImage(image, str(nested / "case 1.nii.gz"))
    sitk.WriteImage(_labels(image), str(nested / "case 1_mask.nii.gz"))
    mr = _volume(seed=1)
    sitk.WriteImage(mr, str(root / "inbox" / "p2.nrrd"))
    sitk.WriteImage(_labels(mr, (1, 3)), str(root / "inbox" / "p2_mask.nrrd"))
    (root / "inbox" / "p2.json").write_text(json.dumps({"modality": "MR"}))

    pairs, _ = scan_file_pairs(root / "inbox")
    assert sorted(pairs) == [patient_key("case 1"), "p2"]
    with dg.instance_for_test() as instance:
        # The sensor registers files that are the same on two ticks (settle time 0 here: written just now).
        resources = {"radiomics": RadiomicsConfig(inbox_settle_seconds=0)}
        seen = inbox_sensor(dg.build_sensor_context(instance=instance, resources=resources))
        found = inbox_sensor(dg.build_sensor_context(instance=instance, resources=resources, cursor=seen.cursor))
        assert [key for key, _ in requested_runs(found)] == [patient_key("case 1"), "p2"]
        for key in (patient_key("case 1"), "p2"):
            result = _run(instance, key)
            assert result.success, step_failure_messages(result)
    series = _query(root, "SELECT patient_id, modality, series_uid, size_z FROM series ORDER BY patient_id")
    assert series.modality.tolist() == ["CT", "MR"] and series.size_z.tolist() == [20, 20]
    assert all(uid.startswith("file-") for uid in series.series_uid)
    masks = _query(root, "SELECT patient_id, roi, source_kind, voxel_count FROM masks ORDER BY patient_id, roi")
    assert masks.roi.tolist() == ["mask", "label_1", "label_3"]
    assert set(masks.source_kind) == {"file"} and masks.voxel_count.tolist() == [2400, 2400, 2400]
    rois = _query(root, "SELECT patient_id, roi, count(*) AS n FROM features GROUP BY ALL ORDER BY ALL")
    assert rois.roi.tolist() == ["mask", "label_1", "label_3"] and rois.n.min() >= 100


def test_geometry_mismatch_fails_clearly_and_resample_option_fixes_it(root):
    image = _volume()
    sitk.WriteImage(image, str(root / "inbox" / "g1.nii.gz"))
    fine = _volume(size=(80, 80, 20), spacing=(0.4, 0.4, 2.0))
    sitk.WriteImage(_labels(fine), str(root / "inbox" / "g1_mask.nii.gz"))
    with dg.instance_for_test() as instance:
        failed = _run(instance, "g1")
        assert not failed.success
        (message,) = step_failure_messages(failed)
        assert message.startswith("g1 roi_masks:") and "g1_mask.nii.gz" in message and "g1.nii.gz" in message
        assert "geometry differs" in message and "resample_masks_to_image" in message

        fixed = _run(instance, "g1", resample_masks_to_image=True)
        assert fixed.success, step_failure_messages(fixed)
    (voxels,) = _query(root, "SELECT voxel_count FROM masks").voxel_count
    # Nearest neighbour onto the 0.8 mm grid: image voxel i sits on fine voxel 2i, so the 20 x 12 x 10 fine box
    # (columns 10-29, rows 8-19) keeps columns 5-14 and rows 4-9 of the image: 10 x 6 x 10 voxels.
    assert voxels == 600


def _png(path, array):
    sitk.WriteImage(sitk.GetImageFromArray(array.astype(np.uint8), isVector=array.ndim == 3), str(path))


def _busi_like(folder, name, rng, shape=(60, 70)):
    folder.mkdir(parents=True, exist_ok=True)
    grey = rng.integers(0, 255, (*shape, 1))
    _png(folder / f"{name}.png", np.repeat(grey, 3, axis=-1))  # grey stored as RGB, as BUSI stores it
    mask = np.zeros(shape, np.uint8)
    mask[10:30, 10:30] = 255
    _png(folder / f"{name}_mask.png", mask)
    return mask


def test_png_pairs_broken_png_and_size_mismatch(root):
    rng = np.random.default_rng(3)
    inbox = root / "inbox"
    _busi_like(inbox / "benign", "benign (1)", rng)
    extra = np.zeros((60, 70), np.uint8)
    extra[40:55, 40:60] = 255
    _png(inbox / "benign" / "benign (1)_mask_1.png", extra)
    _busi_like(inbox / "malignant", "malignant (2)", rng)
    (inbox / "malignant" / "malignant (3).png").write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    _png(inbox / "malignant" / "malignant (3)_mask.png", np.full((60, 70), 255, np.uint8))  # not empty
    _busi_like(inbox / "malignant", "malignant (4)", rng)
    _png(inbox / "malignant" / "malignant (4)_mask.png", np.full((50, 70), 255, np.uint8))
    _busi_like(inbox / "normal", "normal (5)", rng)

    with dg.instance_for_test() as instance:
        for key in (patient_key("benign (1)"), patient_key("malignant (2)")):
            result = _run(instance, key)
            assert result.success, step_failure_messages(result)
        broken = _run(instance, patient_key("malignant (3)"))
        (message,) = step_failure_messages(broken)
        assert (
            message.startswith(f"{patient_key('malignant (3)')} studies:")
            and "malignant (3).png: unreadable image" in message
        )
        mismatch = _run(instance, patient_key("malignant (4)"))
        (message,) = step_failure_messages(mismatch)
        assert (
            message.startswith(f"{patient_key('malignant (4)')} roi_masks:")
            and "malignant (4)_mask.png: mask size (70, 50)" in message
        )
    masks = _query(root, "SELECT patient_id, roi, voxel_count FROM masks ORDER BY patient_id")
    assert masks.patient_id.tolist() == [patient_key("benign (1)"), patient_key("malignant (2)")]
    assert masks.voxel_count.tolist() == [400 + 300, 400]  # mask and mask_1 merged by OR
    series = _query(root, "SELECT DISTINCT modality FROM series")
    assert series.modality.tolist() == ["US"]
    classes = _query(root, "SELECT DISTINCT feature_class FROM features ORDER BY 1").feature_class.tolist()
    assert "shape2D" in classes and "shape" not in classes

    table, notes = labels_from_folders(inbox)
    assert dict(zip(table.patient_id, table.label, strict=True)) == {
        patient_key("benign (1)"): "benign",
        patient_key("malignant (2)"): "malignant",
        patient_key("malignant (3)"): "malignant",
        patient_key("malignant (4)"): "malignant",
    }
    assert len(notes) == 1 and "normal (5).png" in notes[0]
    assert cli_main(["--data-dir", str(root), "labels-from-folders"]) == 0
    assert (root / "labels.csv").read_text().splitlines()[0] == "patient_id,label"
    # study.yaml beside it makes malignant the positive class explicitly (not by sort order)
    from radiomics_assets.modelling.study import load_outcomes, load_study
    from radiomics_assets.paths import DataRoot

    study = load_study(DataRoot(root))
    assert study.outcome.positive == "malignant" and "labels-from-folders" in (root / "study.yaml").read_text()
    outcomes = load_outcomes(DataRoot(root), study)
    assert outcomes.classes == ("benign", "malignant") and outcomes.table.label.sum() == 3
