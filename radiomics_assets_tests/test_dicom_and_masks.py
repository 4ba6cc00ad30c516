import numpy as np
import pytest
import SimpleITK as sitk

from radiomics_assets.errors import DicomInputError
from radiomics_assets.ingest import read_series, scan_inbox
from radiomics_assets.masks import RoiContours, rasterise, read_structure_set, select_rois
from radiomics_assets.synth import cohort_labels, make_patient, write_cohort


def test_rtstruct_rasterisation_reproduces_generated_lesion(tmp_path, small_config):
    write_cohort(small_config, tmp_path)
    scan = scan_inbox(tmp_path / "inbox")
    labels = cohort_labels(small_config)
    for index in range(4):
        patient = make_patient(small_config, index, labels[index])
        files = scan.patients[patient.patient_id]
        image = read_series(next(iter(files.image_series.values())))
        (roi,) = select_rois(read_structure_set(files.rtstructs[0].path), "GTV.*")
        mask = sitk.GetArrayFromImage(rasterise(roi, image)).astype(bool)
        assert patient.lesion.sum() > 100
        assert np.array_equal(mask, patient.lesion)


def test_inner_contour_cuts_a_hole():
    image = sitk.Image(20, 20, 3, sitk.sitkFloat32)
    image.SetSpacing((1.0, 1.0, 2.0))
    square = lambda lo, hi: np.array([[lo, lo, 2.0], [hi, lo, 2.0], [hi, hi, 2.0], [lo, hi, 2.0]])  # noqa: E731
    roi = RoiContours("ring", 1, "", [square(1.5, 10.5), square(4.5, 7.5)])
    mask = sitk.GetArrayFromImage(rasterise(roi, image))
    assert mask[1].sum() == 9 * 9 - 3 * 3 and mask[1, 6, 6] == 0 and mask[0].sum() == mask[2].sum() == 0


def test_missing_slice_is_reported_with_the_file(tmp_path, small_config):
    write_cohort(small_config, tmp_path)
    ct = tmp_path / "inbox" / "SYN-0002" / "CT"
    (ct / "CT_0007.dcm").unlink()
    files = scan_inbox(tmp_path / "inbox").patients["SYN-0002"]
    with pytest.raises(DicomInputError, match=r"CT_0008\.dcm: slice spacing 4\.000 mm .* missing"):
        read_series(next(iter(files.image_series.values())))


def test_non_dicom_and_truncated_files_are_ignored_with_a_reason(tmp_path, small_config):
    write_cohort(small_config, tmp_path)
    (tmp_path / "inbox" / "notes.txt").write_text("not an image")
    good = (tmp_path / "inbox" / "SYN-0001" / "CT" / "CT_0001.dcm").read_bytes()
    (tmp_path / "inbox" / "broken.dcm").write_bytes(good[:200])
    scan = scan_inbox(tmp_path / "inbox")
    assert set(scan.patients) == {f"SYN-{i:04d}" for i in range(1, 9)}
    reasons = {p.name: why for p, why in scan.ignored.items()}
    assert set(reasons) == {"notes.txt", "broken.dcm"}
    assert "notes.txt" in reasons["notes.txt"]


def test_contour_data_padded_with_nul_is_parsed_like_pydicom():
    from pydicom.dataelem import RawDataElement
    from pydicom.dataset import Dataset
    from pydicom.tag import Tag

    from radiomics_assets.masks.rtstruct import CONTOUR_DATA, _contour_points

    raw = b"1.5\\-2\\3e1\\4\\5.25\\6 \x00"
    contour = Dataset({Tag(CONTOUR_DATA): RawDataElement(Tag(CONTOUR_DATA), "DS", len(raw), raw, 0, True, True)})
    reference = Dataset({Tag(CONTOUR_DATA): RawDataElement(Tag(CONTOUR_DATA), "DS", len(raw), raw, 0, True, True)})
    np.testing.assert_array_equal(_contour_points(contour), np.asarray(reference.ContourData, float).reshape(-1, 3))
    assert _contour_points(contour).tolist() == [[1.5, -2.0, 30.0], [4.0, 5.25, 6.0]]


@pytest.mark.parametrize("oblique", [False, True])
def test_contour_points_map_to_itk_continuous_indices(oblique):
    from radiomics_assets.masks.rtstruct import _physical_to_index

    image = sitk.Image(20, 30, 10, sitk.sitkUInt8)
    image.SetSpacing((0.976562, 0.976562, 3.27))
    image.SetOrigin((-120.5, 33.25, -629.04))
    if oblique:
        angle = np.deg2rad(17.0)
        image.SetDirection((np.cos(angle), -np.sin(angle), 0.0, np.sin(angle), np.cos(angle), 0.0, 0.0, 0.0, 1.0))
    points = np.random.default_rng(5).uniform(-150, 150, (500, 3))
    itk = np.array([image.TransformPhysicalPointToContinuousIndex(tuple(p)) for p in points])
    np.testing.assert_array_equal(_physical_to_index(image)(points), itk)  # the same doubles
