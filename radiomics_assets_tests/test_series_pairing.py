"""Pairing an RTSTRUCT or SEG with its image series by geometry when its UIDs do not say which series.

Several series of a patient in one frame of reference (real data: CT, MR and PET), and a referenced series UID
that is not in the inbox: the series on whose slices every contour or SEG frame lies is used, and the mask
equals the generator's lesion; several or no fitting series fail naming the file and the candidates.
"""

import dataclasses

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from radiomics_assets.errors import DicomInputError
from radiomics_assets.ingest import ingest_studies
from radiomics_assets.masks import MaskOptions, build_masks
from radiomics_assets.paths import DataRoot
from radiomics_assets.synth import make_patient, write_ct_series, write_rtstruct
from radiomics_assets_tests.conftest import SHARED_DATA, SMALL, write_ct, write_seg

UNKNOWN_SERIES = "1.2.826.0.1.3680043.8.498.999"


def _edit(path, change):
    ds = pydicom.dcmread(path)
    change(ds)
    ds.save_as(path)


def _unknown_rtstruct_series(ds):
    for frame in ds.ReferencedFrameOfReferenceSequence:
        for study in frame.RTReferencedStudySequence:
            for series in study.RTReferencedSeriesSequence:
                series.SeriesInstanceUID = UNKNOWN_SERIES


def _unknown_seg_series(ds):
    for series in ds.ReferencedSeriesSequence:
        series.SeriesInstanceUID = UNKNOWN_SERIES


def write_ct_in_same_frame(patient, slices, folder, shift_mm, seed):
    """Another CT series of ``patient`` (new series and SOP UIDs, same study and frame of reference) moved by
    ``shift_mm``; returns its series UID."""
    origin = tuple(float(o + s) for o, s in zip(patient.origin_mm, shift_mm, strict=True))
    moved = dataclasses.replace(patient, origin_mm=origin)
    write_ct_series(moved, folder, seed)  # another seed gives other UIDs

    def join_study(ds):
        ds.FrameOfReferenceUID = slices[0].FrameOfReferenceUID
        ds.StudyInstanceUID = slices[0].StudyInstanceUID

    for path in folder.glob("CT_*.dcm"):
        _edit(path, join_study)
    return str(pydicom.dcmread(next(folder.glob("CT_*.dcm"))).SeriesInstanceUID)


def _mask_file(root, patient, slices, kind, folder):
    """RTSTRUCT or SEG of the lesion on ``slices`` whose referenced series UID is not in the inbox."""
    if kind == "rtstruct":
        path = folder / "RTSTRUCT" / "RS.dcm"
        write_rtstruct(patient, slices, path, "GTV", SMALL.seed)
        _edit(path, _unknown_rtstruct_series)
    else:
        path = folder / "SEG" / "seg.dcm"
        write_seg(slices, {"GTV": patient.lesion}, path)
        _edit(path, _unknown_seg_series)
    return path


@pytest.mark.parametrize("kind", ["rtstruct", "seg"])
def test_absent_referenced_series_is_paired_with_the_series_its_contours_lie_on(tmp_path, kind):
    root = DataRoot(tmp_path)
    patient = make_patient(SMALL, 0, label=1)
    folder = root.inbox / patient.patient_id
    slices = write_ct(patient, folder / "CT")
    half_slice = (0.0, 0.0, patient.spacing_mm[2] / 2)
    shifted = write_ct_in_same_frame(patient, slices, folder / "CT_shifted", half_slice, SMALL.seed + 100)
    _mask_file(root, patient, slices, kind, folder)
    series = ingest_studies(root, patient.patient_id)
    assert len(series) == 2 and series.frame_of_reference_uid.nunique() == 1 and shifted in set(series.series_uid)
    masks = build_masks(root, patient.patient_id, series, MaskOptions())
    assert list(masks.series_uid) == [slices[0].SeriesInstanceUID]
    mask = sitk.GetArrayFromImage(sitk.ReadImage(masks.mask_path.iloc[0])).astype(bool)
    assert patient.lesion.sum() > 100 and np.array_equal(mask, patient.lesion)


def test_two_series_that_both_fit_fail_naming_both(tmp_path):
    root = DataRoot(tmp_path)
    patient = make_patient(SMALL, 1, label=0)
    folder = root.inbox / patient.patient_id
    slices = write_ct(patient, folder / "CT")
    twin = write_ct_in_same_frame(patient, slices, folder / "CT_twin", (0.0, 0.0, 0.0), SMALL.seed + 100)
    rtstruct = _mask_file(root, patient, slices, "rtstruct", folder)
    series = ingest_studies(root, patient.patient_id)
    with pytest.raises(DicomInputError, match="several series fit") as failure:
        build_masks(root, patient.patient_id, series, MaskOptions())
    message = str(failure.value)
    assert message.startswith(f"{rtstruct}: cannot pair the RTSTRUCT")
    assert str(slices[0].SeriesInstanceUID) in message and twin in message and UNKNOWN_SERIES in message


def test_no_fitting_series_fails_with_the_reason_for_each(tmp_path):
    root = DataRoot(tmp_path)
    patient = make_patient(SMALL, 2, label=0)
    folder = root.inbox / patient.patient_id
    slices = write_ct(patient, tmp_path / "not_in_inbox" / "CT")  # the contoured series never arrived
    between = write_ct_in_same_frame(patient, slices, folder / "CT_a", (0.0, 0.0, 0.8), SMALL.seed + 100)
    beside = write_ct_in_same_frame(patient, slices, folder / "CT_b", (80.0, 0.0, 0.0), SMALL.seed + 200)
    _mask_file(root, patient, slices, "rtstruct", folder)
    series = ingest_studies(root, patient.patient_id)
    with pytest.raises(DicomInputError, match="no series fits") as failure:
        build_masks(root, patient.patient_id, series, MaskOptions())
    reasons = dict(part.split(" (CT): ", 1) for part in str(failure.value).split("contours/frames: ", 1)[1].split("; "))
    assert "0.40 slice spacings (0.80 mm) from the nearest slice" in reasons[between]
    assert "lies outside its volume" in reasons[beside]


SARCOMA = SHARED_DATA / "sarcoma"
FOLDERS = {"CT": "CT", "MR": "MR_T1", "PT": "PET"}


def _sarcoma_inbox(root, folders, change):
    """STS_002's image series of ``folders`` linked into the inbox, with their RTSTRUCTs rewritten by ``change``."""
    for folder in folders:
        source = SARCOMA / "dicom" / "STS_002" / folder
        target = root.inbox / "STS_002" / folder
        target.mkdir(parents=True)
        (target / "image").symlink_to(source / "image", target_is_directory=True)
        ds = pydicom.dcmread(source / "mask" / "RS.dcm")
        change(ds)
        (target / "mask").mkdir()
        ds.save_as(target / "mask" / "RS.dcm")


def _without_frame_of_reference(ds):
    _unknown_rtstruct_series(ds)
    for roi in ds.StructureSetROISequence:
        del roi.ReferencedFrameOfReferenceUID
    for frame in ds.ReferencedFrameOfReferenceSequence:
        del frame.FrameOfReferenceUID
    if "FrameOfReferenceUID" in ds:
        del ds.FrameOfReferenceUID


@pytest.mark.skipif(not SARCOMA.exists(), reason="../shared/data is not present")
def test_sarcoma_ct_mr_pet_in_one_frame_cannot_be_told_apart_by_geometry(tmp_path):
    """Every STS_002 contour lies on a slice of the CT, the MR and the PET (slice positions agree to < 0.1 mm,
    3.27 mm spacing) and inside all three volumes: with the referenced series UIDs gone, pairing must refuse."""
    root = DataRoot(tmp_path)
    _sarcoma_inbox(root, FOLDERS.values(), _unknown_rtstruct_series)
    series = ingest_studies(root, "STS_002")
    assert sorted(series.modality) == ["CT", "MR", "PT"] and series.frame_of_reference_uid.nunique() == 1
    with pytest.raises(DicomInputError, match="several series fit") as failure:
        build_masks(root, "STS_002", series, MaskOptions())
    assert all(f"{row.series_uid} ({row.modality})" in str(failure.value) for row in series.itertuples())


@pytest.mark.skipif(not SARCOMA.exists(), reason="../shared/data is not present")
@pytest.mark.parametrize("modality", FOLDERS)
def test_sarcoma_rtstruct_without_uids_fits_its_series_and_equals_the_reference(tmp_path, modality):
    """Real contours pass the geometry check (an RTSTRUCT naming no series and no frame of reference) and the mask
    equals the reference mask voxel for voxel."""
    root = DataRoot(tmp_path)
    _sarcoma_inbox(root, [FOLDERS[modality]], _without_frame_of_reference)
    series = ingest_studies(root, "STS_002")
    masks = build_masks(root, "STS_002", series, MaskOptions())
    assert list(masks.series_uid) == list(series.series_uid) and list(masks.roi) == [f"GTV_Mass_{FOLDERS[modality]}"]
    reference = sitk.ReadImage(str(SARCOMA / "reference_masks" / "STS_002" / f"{FOLDERS[modality]}_mask.nii.gz"))
    ours = sitk.ReadImage(masks.mask_path.iloc[0])
    assert ours.GetSize() == reference.GetSize()
    assert np.allclose(ours.GetOrigin(), reference.GetOrigin(), atol=1e-3)
    a, b = sitk.GetArrayFromImage(ours) > 0, sitk.GetArrayFromImage(reference) > 0
    assert b.sum() > 100 and np.array_equal(a, b)
