"""Real exports, round three (issue 24): inputs that used to give silently wrong features, merged or lost patients.

Every case is built here from the project's synthetic data, stored the way scanners, PACS and annotation tools
write them, beside an untouched control. Each ends with the control's exact features (same pixels) or a failure
that names the file and the problem.
"""

import dataclasses
import io
import shutil
import zlib
from pathlib import Path

import duckdb
import highdicom as hd
import numpy as np
import pandas as pd
import pydicom
import pytest
import SimpleITK as sitk
from PIL import Image
from pydicom.uid import generate_uid
from radiomics import featureextractor

from radiomics_assets.batch import run_patients
from radiomics_assets.defs.resources import RadiomicsConfig
from radiomics_assets.errors import FileInputError
from radiomics_assets.features import PARAMS_DIR, params_by_modality
from radiomics_assets.ingest.dicom_headers import scan_inbox
from radiomics_assets.ingest.file_pairs import COLOUR_ENV, png_header, read_png_grey, read_png_mask
from radiomics_assets.ingest.manifests import write_manifests
from radiomics_assets.ingest.patient_lookup import patient_inputs
from radiomics_assets.masks.file_masks import _label_map
from radiomics_assets.modelling.matrix import build_feature_matrix, wide_matrix
from radiomics_assets.modelling.study import StudyError, csv_separator, load_outcomes, load_study, read_table_csv
from radiomics_assets.modelling.timepoints import feature_rows_at_timepoint
from radiomics_assets.paths import DataRoot, patient_key
from radiomics_assets.synth import (
    SynthConfig,
    SyntheticPatient,
    add_roi,
    make_patient,
    shifted,
    write_ct_series,
    write_mr_series,
    write_rtstruct,
)
from radiomics_assets.warehouse import Warehouse
from radiomics_assets_tests.test_ultrasound import speckled_lesion

STAGES = {"studies", "roi_masks", "features"}


def _run(root: Path, keys: list[str]) -> dict[str, str | None]:
    """Every stage for ``keys`` in this process; patient -> error (None when it got its features)."""
    settings = RadiomicsConfig(data_dir=str(root)).patient_settings()
    return {outcome.key: outcome.error for outcome in run_patients(keys, STAGES, settings, workers=1)}


def _query(root: Path, sql: str) -> pd.DataFrame:
    with duckdb.connect(str(root / "radiomics.duckdb"), read_only=True) as con:
        return con.execute(sql).df()


def _features(root: Path, key: str) -> pd.Series:
    rows = _query(root, f"SELECT feature_class, feature, value FROM features WHERE patient_id = '{key}'")
    return rows.set_index(["feature_class", "feature"]).value.sort_index()


def _save(path: Path, image: Image.Image) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


def _grey_palette_png(grey: np.ndarray) -> Image.Image:
    palette = Image.new("P", grey.shape[::-1])
    palette.putpalette([v for level in range(256) for v in (level, level, level)])
    palette.putdata(list(grey.ravel()))
    return palette


def _jpeg_round_trip(array: np.ndarray, quality: int) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buffer.getvalue())))


@pytest.fixture
def lesion():
    grey, truth = speckled_lesion(shape=(90, 110), centre=(45, 55), radii=(16, 22), seed=11)
    grey[grey == 214] = 215  # the value the old float conversion read as 214.99998
    assert (grey == 215).any()
    return grey, truth


# --- a. grey stored in colour, d. 16-bit PNGs ------------------------------------------------------------------


def test_grey_stored_as_rgb_rgba_palette_or_16_bit_gives_the_grey_features_exactly(tmp_path, lesion, monkeypatch):
    grey, truth = lesion
    inbox = tmp_path / "inbox"
    mask = Image.fromarray((truth * 255).astype(np.uint8))
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    images = {
        "control": Image.fromarray(grey),
        "rgb": Image.fromarray(rgb),
        "rgba": Image.fromarray(np.concatenate([rgb, np.full(grey.shape + (1,), 255, np.uint8)], axis=-1)),
        "palette": _grey_palette_png(grey),
        "la": Image.fromarray(grey).convert("LA"),
        "grey16": Image.fromarray(grey.astype(np.uint16)),  # 8-bit data in a 16-bit PNG: the same grey levels
    }
    for name, image in images.items():
        _save(inbox / f"{name}.png", image)
        _save(inbox / f"{name}_mask.png", mask)
    assert png_header(inbox / "palette.png")[1] == 3 and png_header(inbox / "grey16.png")[0] == 16
    assert np.array_equal(read_png_grey(inbox / "rgb.png").array, grey.astype(np.float32))

    outcomes = _run(tmp_path, sorted(images))
    assert outcomes == dict.fromkeys(sorted(images)), outcomes
    control = _features(tmp_path, "control")
    assert len(control) > 90 and control.notna().all()
    for name in images:
        pd.testing.assert_series_equal(_features(tmp_path, name), control, check_exact=True, obj=name)
    units = _query(tmp_path, "SELECT patient_id, units FROM series").set_index("patient_id").units
    assert units["control"] == "grey; 8-bit"
    assert units["rgb"] == units["rgba"] == units["palette"] == "grey stored as RGB (equal channels); 8-bit"
    assert units["grey16"] == "grey; 8-bit data in a 16-bit PNG (maximum 255)"


def test_twelve_bit_data_in_a_16_bit_png_fails_naming_the_bit_depth_and_the_parameters(tmp_path, lesion):
    grey, truth = lesion
    inbox = tmp_path / "inbox"
    _save(inbox / "ct12.png", Image.fromarray(grey.astype(np.uint16) * 16))  # 12-bit data, as a scanner exports
    _save(inbox / "ct12_mask.png", Image.fromarray((truth * 255).astype(np.uint8)))
    outcomes = _run(tmp_path, ["ct12"])
    error = outcomes["ct12"]
    assert error is not None and "inbox/ct12.png (US), ROI mask: the image holds 12-bit data" in error, error
    assert "holds 12-bit data (values up to 4095)" in error, error
    assert "bin width 5 gives up to 820 grey levels, more than 256" in error, error
    assert "binWidth >= 16" in error
    units = _query(tmp_path, "SELECT units FROM series").units.iloc[0]
    assert units == "grey; 12-bit data in a 16-bit PNG (maximum 4080)"
    assert _query(tmp_path, "SELECT count(*) AS n FROM features").n.iloc[0] == 0


# --- b. colour ultrasound ------------------------------------------------------------------------------------


def test_colour_doppler_png_fails_naming_the_file_or_gives_its_luma_when_set(tmp_path, lesion, monkeypatch):
    grey, truth = lesion
    inbox = tmp_path / "inbox"
    doppler = np.repeat(grey[..., None], 3, axis=-1)
    doppler[30:40, 50:62] = (200, 30, 20)  # a red flow signal inside the lesion
    near_grey = np.repeat(grey[..., None], 3, axis=-1).astype(np.int16)
    near_grey[..., 2] += np.random.default_rng(1).integers(-2, 3, grey.shape)  # chroma noise of a JPEG round trip
    for name, image in {"doppler": doppler, "jpeggrey": np.clip(near_grey, 0, 255).astype(np.uint8)}.items():
        _save(inbox / f"{name}.png", Image.fromarray(image))
        _save(inbox / f"{name}_mask.png", Image.fromarray((truth * 255).astype(np.uint8)))

    outcomes = _run(tmp_path, ["doppler", "jpeggrey"])
    assert outcomes["jpeggrey"] is None, outcomes
    assert "doppler.png: colour image (1.2% of pixels have channels more than 16 levels apart" in outcomes["doppler"]
    assert f"set {COLOUR_ENV}=luminance" in outcomes["doppler"]
    # Noise-level channel differences: the rounded luma, integer grey levels (never 214.99998).
    stored = read_png_grey(inbox / "jpeggrey.png")
    assert np.array_equal(stored.array, np.rint(stored.array)) and np.abs(stored.array - grey).max() <= 1

    monkeypatch.setenv(COLOUR_ENV, "luminance")
    assert _run(tmp_path, ["doppler"]) == {"doppler": None}
    units = _query(tmp_path, "SELECT units FROM series WHERE patient_id = 'doppler'").units.iloc[0]
    assert units == f"luma of a colour image (1.2% coloured pixels; {COLOUR_ENV}=luminance); 8-bit"
    expected = np.rint(np.array([200, 30, 20]) @ np.array([0.299, 0.587, 0.114]))
    assert read_png_grey(inbox / "doppler.png").array[35, 55] == expected == 80

    monkeypatch.setenv(COLOUR_ENV, "maybe")
    with pytest.raises(FileInputError, match="RADIOMICS_COLOUR_IMAGES='maybe': expected one of"):
        read_png_grey(inbox / "doppler.png")


# --- c. masks that are not clean ------------------------------------------------------------------------------


def test_jpeg_compressed_png_mask_is_thresholded_at_half_its_maximum(tmp_path, lesion, caplog):
    grey, truth = lesion
    inbox = tmp_path / "inbox"
    clean = (truth * 255).astype(np.uint8)
    lossy = _jpeg_round_trip(clean, quality=40)
    assert ((lossy > 0) & (lossy < 255)).sum() > 0.5 * truth.sum()  # scattered values, as the exports had
    assert (lossy > 0).sum() > 1.1 * truth.sum()  # the old > 0 rule grew the lesion
    for name, mask in {"clean": clean, "lossy": lossy}.items():
        _save(inbox / f"{name}.png", Image.fromarray(grey))
        _save(inbox / f"{name}_mask.png", Image.fromarray(mask))
    with caplog.at_level("WARNING"):
        assert _run(tmp_path, ["clean", "lossy"]) == {"clean": None, "lossy": None}
    assert np.array_equal(read_png_mask(inbox / "lossy_mask.png"), truth)
    assert "lossy_mask.png: " in caplog.text and "thresholded at half the maximum" in caplog.text
    assert "clean_mask.png" not in caplog.text
    counts = _query(tmp_path, "SELECT patient_id, voxel_count FROM masks").set_index("patient_id").voxel_count
    assert counts["lossy"] == counts["clean"] == int(truth.sum())
    pd.testing.assert_series_equal(_features(tmp_path, "lossy"), _features(tmp_path, "clean"), check_exact=True)


def _nifti_pair(inbox: Path, name: str, image: sitk.Image, mask_values: np.ndarray) -> None:
    inbox.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(inbox / f"{name}.nii.gz"))
    mask = sitk.GetImageFromArray(mask_values)
    mask.CopyInformation(image)
    sitk.WriteImage(mask, str(inbox / f"{name}_mask.nii.gz"))


def test_float_nifti_masks_binary_probability_and_label_maps(tmp_path, caplog):
    rng = np.random.default_rng(4)
    image = sitk.GetImageFromArray(rng.normal(100, 20, (12, 30, 30)).astype(np.float32))
    image.SetSpacing((0.9, 0.9, 2.0))
    z, y, x = np.ogrid[:12, :30, :30]
    distance = np.sqrt(((z - 6) * 2.0) ** 2 + ((y - 15) * 0.9) ** 2 + ((x - 15) * 0.9) ** 2)
    truth = distance <= 7.0
    probability = np.clip(1.2 - distance / 7.0 * 0.7, 0, 1).astype(np.float32)  # >= 0.5 exactly where truth is
    assert np.array_equal(probability >= 0.5, truth) and len(np.unique(probability)) > 10
    cases = {
        "control": truth.astype(np.uint8),
        "float01": truth.astype(np.float32),
        "float255": truth.astype(np.float32) * 255,
        "odd": truth.astype(np.float32) * 0.7,  # one non-zero value, not an integer: still one binary mask
        "prob": probability,
    }
    inbox = tmp_path / "inbox"
    for name, values in cases.items():
        _nifti_pair(inbox, name, image, values)
    _nifti_pair(inbox, "signed", image, (probability * 3 - 1).astype(np.float32))
    labels = truth.astype(np.float32)
    labels[:, :, 20:] *= 2  # two labels stored as floats 1.0 and 2.0: a label map
    _nifti_pair(inbox, "labels", image, labels)

    with caplog.at_level("WARNING"):
        outcomes = _run(tmp_path, [*cases, "signed", "labels"])
    assert {k: v for k, v in outcomes.items() if k != "signed"} == dict.fromkeys([*cases, "labels"]), outcomes
    signed = "signed_mask.nii.gz: mask holds non-integer values from -1 to 2 (329 distinct): not a label map"
    assert signed in outcomes["signed"], outcomes
    assert "prob_mask.nii.gz: float mask with" in caplog.text and "probability map" in caplog.text
    masks = _query(tmp_path, "SELECT patient_id, roi, voxel_count FROM masks ORDER BY ALL")
    assert set(masks[masks.patient_id != "labels"].roi) == {"mask"}  # never a label_0 background ROI
    assert (masks[masks.patient_id.isin(list(cases))].voxel_count == int(truth.sum())).all()
    labelled = masks[masks.patient_id == "labels"].set_index("roi").voxel_count
    assert sorted(labelled.index) == ["label_1", "label_2"] and labelled.sum() == int(truth.sum())
    control = _features(tmp_path, "control")
    for name in cases:
        pd.testing.assert_series_equal(_features(tmp_path, name), control, check_exact=True, obj=name)
    assert np.array_equal(_label_map(Path("x"), np.array([0.0, 2.0, 3.0])), np.array([0, 2, 3]))


# --- e. RTSTRUCTs: two frames of reference, same-named ROIs, empty structures, broken contours -----------------

COHORT = SynthConfig(n_patients=4, seed=31, rows=40, columns=40, slices=12)
MR_SHIFT = (30.0, -12.0, 8.0)  # the MR's own frame: the same anatomy at other patient coordinates


def _ct_with_rtstruct(inbox: Path, index: int) -> tuple[SyntheticPatient, list, Path]:
    patient = make_patient(COHORT, index - 1, label=index % 2)  # index 1 is SYN-0001
    ct = write_ct_series(patient, inbox / patient.patient_id / "CT", COHORT.seed)
    rt = inbox / patient.patient_id / "RTSTRUCT" / "RS.dcm"
    write_rtstruct(patient, ct, rt, "GTV", COHORT.seed)
    return patient, ct, rt


def _masks(root: Path, key: str) -> pd.DataFrame:
    return _query(root, f"SELECT * FROM masks WHERE patient_id = '{key}' ORDER BY roi")


def _mask_array(path: str) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(path))


def test_rtstruct_rois_on_two_frames_of_reference_land_each_on_its_own_series(tmp_path):
    inbox = tmp_path / "inbox"
    # SYN-0001: a GTV drawn on the MR (its own frame) inside the CT's structure set, the MR beside it.
    patient, _, rt = _ct_with_rtstruct(inbox, 1)
    on_mr = shifted(patient, MR_SHIFT)
    mr = write_mr_series(on_mr, inbox / patient.patient_id / "MR", COHORT.seed + 1)
    assert mr[0].FrameOfReferenceUID != pydicom.dcmread(rt).FrameOfReferenceUID
    add_roi(rt, "GTV_MR", list(on_mr.contours_mm.values()), frame_uid=mr[0].FrameOfReferenceUID)
    # SYN-0002: the same structure set without the MR series: the MR ROI has no series of its frame.
    other, _, rt2 = _ct_with_rtstruct(inbox, 2)
    add_roi(rt2, "GTV_MR", list(shifted(other, MR_SHIFT).contours_mm.values()), frame_uid="1.2.826.0.1.3680043.8.9")

    outcomes = _run(tmp_path, ["SYN-0001", "SYN-0002"])
    assert outcomes["SYN-0001"] is None, outcomes
    masks = _masks(tmp_path, "SYN-0001")
    series = _query(tmp_path, "SELECT series_uid, modality FROM series WHERE patient_id = 'SYN-0001'")
    modality = dict(zip(series.series_uid, series.modality, strict=True))
    assert {roi: modality[uid] for roi, uid in zip(masks.roi, masks.series_uid, strict=True)} == {
        "GTV": "CT",
        "GTV_MR": "MR",
    }
    by_roi = masks.set_index("roi")
    # the same voxels on either grid: the MR ROI was placed by the MR's own geometry (on the CT it would be
    # 30 mm off, and partly outside the image)
    assert np.array_equal(_mask_array(by_roi.mask_path["GTV_MR"]), _mask_array(by_roi.mask_path["GTV"]))
    assert by_roi.voxel_count["GTV_MR"] == by_roi.voxel_count["GTV"] == int(patient.lesion.sum())
    assert set(_query(tmp_path, "SELECT DISTINCT modality FROM features WHERE patient_id = 'SYN-0001'").modality) == {
        "CT",
        "MR",
    }

    error = outcomes["SYN-0002"]
    assert "SYN-0002/RTSTRUCT/RS.dcm: cannot pair the RTSTRUCT" in error, error
    assert "frame of reference 1.2.826.0.1.3680043.8.9" in error and "no image series of this patient has that" in error
    assert error.endswith("(ROI 'GTV_MR')"), error
    assert _masks(tmp_path, "SYN-0002").empty  # nothing of the patient was placed on the wrong grid


def test_same_named_rois_stay_distinct_and_an_empty_structure_is_left_out(tmp_path, caplog):
    inbox = tmp_path / "inbox"
    patient, _, rt = _ct_with_rtstruct(inbox, 1)
    # a second outline also called GTV: the lesion's contours moved 6 mm sideways (another lesion)
    moved = [points + np.array([6.0, 0.0, 0.0]) for points in patient.contours_mm.values()]
    second = add_roi(rt, "GTV", moved)
    empty = add_roi(rt, "GTV_boost", [])  # an extra empty structure, as planning systems leave them
    _, _, rt2 = _ct_with_rtstruct(inbox, 2)
    add_roi(rt2, "GTV2", [])

    with caplog.at_level("WARNING"):
        outcomes = _run(tmp_path, ["SYN-0001", "SYN-0002"])
    assert outcomes == {"SYN-0001": None, "SYN-0002": None}, outcomes
    masks = _masks(tmp_path, "SYN-0001")
    assert masks.roi.tolist() == ["GTV (ROI 1)", f"GTV (ROI {second})"]
    assert masks.mask_path.nunique() == 2
    for row in masks.itertuples():  # each row's count is its own file's
        assert int(_mask_array(row.mask_path).sum()) == row.voxel_count
    features = _query(tmp_path, "SELECT roi, feature_class, feature FROM features WHERE patient_id = 'SYN-0001'")
    assert not features.duplicated().any() and features.roi.value_counts().nunique() == 1
    assert f"several ROIs are named 'GTV'; ROI {second} is stored as 'GTV (ROI {second})'" in caplog.text
    assert "ROI 'GTV_boost' has no contour inside a voxel; left out (patient SYN-0001)" in caplog.text
    assert empty == second + 1
    assert _masks(tmp_path, "SYN-0002").roi.tolist() == ["GTV"]


def test_broken_contour_data_fails_naming_the_file_and_roi(tmp_path):
    inbox = tmp_path / "inbox"
    _, _, rt = _ct_with_rtstruct(inbox, 1)
    ds = pydicom.dcmread(rt)
    ds.ROIContourSequence[0].ContourSequence[2].ContourData = (
        ds.ROIContourSequence[0].ContourSequence[2].ContourData[:-1]
    )
    ds.save_as(rt)
    _ct_with_rtstruct(inbox, 2)
    outcomes = _run(tmp_path, ["SYN-0001", "SYN-0002"])
    assert outcomes["SYN-0002"] is None
    assert "SYN-0001/RTSTRUCT/RS.dcm: ROI 'GTV' contour 3: broken ContourData" in outcomes["SYN-0001"]
    assert "need x, y, z triplets" in outcomes["SYN-0001"]


# --- f. one PatientID from two issuers, i. a file pair named like a DICOM patient -----------------------------


def _relabel(folder: Path, **attributes) -> None:
    for path in folder.rglob("*.dcm"):
        ds = pydicom.dcmread(path)
        for keyword, value in attributes.items():
            setattr(ds, keyword, value)
        ds.save_as(path)


def test_one_patient_id_from_two_issuers_is_two_patients(tmp_path):
    inbox = tmp_path / "inbox"
    for index, (issuer, name) in enumerate([("HOSP_A", "Alpha^Ann"), ("HOSP B", "Beta^Bob")], start=1):
        patient, _, _ = _ct_with_rtstruct(inbox / issuer, index)
        _relabel(inbox / issuer, PatientID="12345", IssuerOfPatientID=issuer, PatientName=name)
    patient, _, _ = _ct_with_rtstruct(inbox / "single", 3)  # one issuer only: the PatientID's own key
    _relabel(inbox / "single", IssuerOfPatientID="HOSP_A")

    scan = scan_inbox(inbox)
    second = patient_key("12345_HOSP B")
    assert sorted(scan.patients) == sorted(["12345_HOSP_A", second, "SYN-0003"])
    assert second.startswith("12345_HOSP_B-")
    assert not any(p.conflicts for p in scan.patients.values())
    assert {f.path.parts[-4] for f in scan.patients["12345_HOSP_A"].all_files()} == {"HOSP_A"}

    # the sensor's manifests hold one issuer's files each: the key stays the split one
    root = DataRoot(tmp_path)
    write_manifests(root)
    for key in ("12345_HOSP_A", second):
        dicom = patient_inputs(root, key).dicom
        assert dicom is not None and dicom.key == key and len(dicom.paths) == COHORT.slices + 1

    outcomes = _run(tmp_path, sorted(scan.patients))
    assert set(outcomes.values()) == {None}, outcomes
    series = _query(tmp_path, "SELECT patient_id, count(*) AS n FROM series GROUP BY ALL ORDER BY 1")
    assert series.n.tolist() == [1, 1, 1]  # each hospital's CT with its own patient, nothing merged
    rows = _query(tmp_path, "SELECT patient_id, count(*) AS n FROM features GROUP BY ALL")
    assert sorted(rows.patient_id) == sorted(scan.patients) and rows.n.nunique() == 1


def test_file_pair_named_like_a_dicom_patient_is_listed_not_silently_dropped(tmp_path, caplog):
    inbox = tmp_path / "inbox"
    _ct_with_rtstruct(inbox, 1)
    image = sitk.GetImageFromArray(np.random.default_rng(2).normal(50, 10, (8, 20, 20)).astype(np.float32))
    mask = np.zeros((8, 20, 20), np.uint8)
    mask[2:6, 5:15, 5:15] = 1
    _nifti_pair(inbox / "niftis", "SYN-0001", image, mask)
    root = DataRoot(tmp_path)
    snapshot = write_manifests(root)
    assert snapshot.patients["SYN-0001"].pair is None
    for name in ("SYN-0001.nii.gz", "SYN-0001_mask.nii.gz"):
        why = snapshot.ignored[f"niftis/{name}"]
        assert why.endswith(
            f"niftis/{name}: image/mask file named like DICOM patient 'SYN-0001'; not used (the patient is read from "
            "its DICOM files): rename the file pair to make it a patient of its own"
        ), why
    assert _run(tmp_path, ["SYN-0001"]) == {"SYN-0001": None}
    assert _query(tmp_path, "SELECT modality FROM series").modality.tolist() == ["CT"]
    (root.path / "manifests" / "SYN-0001.json").unlink()  # without a manifest: the same choice, with a warning
    with caplog.at_level("WARNING"):
        assert patient_inputs(root, "SYN-0001").pair is None
    assert "SYN-0001_mask.nii.gz: image/mask file named like DICOM patient 'SYN-0001'" in caplog.text


# --- g. labels.csv checked before any work ---------------------------------------------------------------------


def test_labels_csv_from_excel_bom_semicolons_spaces_and_duplicates(tmp_path):
    root = DataRoot(tmp_path)
    study = load_study(root)
    reference = "patient_id,label,age\nP1,malignant,61\nP2,benign,50\nP3,benign,47\n"
    (tmp_path / "labels.csv").write_text(reference)
    expected = load_outcomes(root, study).table
    # Excel (a comma decimal locale): byte-order mark, `;` separators, CRLF, spaces around names and values, a
    # decimal comma in a value, and one patient twice with identical values.
    excel = "\ufeffpatient_id ; label ;age\r\nP1; malignant ;61,5\r\nP2;benign;50\r\n P3 ;benign;47\r\nP2;benign;50\r\n"
    (tmp_path / "labels.csv").write_bytes(excel.encode("utf-8"))
    outcomes = load_outcomes(root, study)
    pd.testing.assert_frame_equal(outcomes.table, expected)
    assert outcomes.notes == (
        "labels.csv: patient(s) ['P2'] appear more than once with identical values; one row kept",
    )
    assert read_table_csv(tmp_path / "labels.csv").age.tolist() == ["61,5", "50", "47", "50"]

    (tmp_path / "labels.csv").write_text("patient_id;label\nP1;malignant\nP2;benign\nP2;malignant\nP1;malignant\n")
    with pytest.raises(StudyError) as failure:
        load_outcomes(root, study)
    assert str(failure.value) == (
        f"{tmp_path / 'labels.csv'}: patient(s) appear more than once with different values: P2 (lines 3, 4 differ "
        "in ['label']); keep one row per patient"
    )
    # the same PatientID written once as the ID and once as its key is one patient too
    (tmp_path / "labels.csv").write_text("patient_id,label\nAB 20,malignant\nAB_20-cee3add5,benign\nP9,benign\n")
    with pytest.raises(StudyError, match=r"AB_20-cee3add5 \(lines 2, 3 differ in \['label'\]\)"):
        load_outcomes(root, study)
    assert csv_separator("patient_id\tlabel") == "\t" and csv_separator("patient_id") == ","


# --- h. multi-frame DICOM: classic and enhanced, read as the single-frame export -----------------------------


def _classic_multiframe(slices: list[pydicom.Dataset], path: Path, spacing_mm: float) -> None:
    """One MR Image object holding every slice as a frame: the first slice's position, SpacingBetweenSlices."""
    ds = slices[0].copy()
    ds.NumberOfFrames = len(slices)
    ds.SpacingBetweenSlices = spacing_mm
    ds.PixelData = b"".join(s.PixelData for s in slices)
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def _enhanced(slices: list[pydicom.Dataset], path: Path) -> None:
    """A Legacy Converted Enhanced CT/MR object (highdicom) of the slices: per-frame functional groups."""
    kind = (
        hd.legacy.LegacyConvertedEnhancedMRImage
        if slices[0].Modality == "MR"
        else hd.legacy.LegacyConvertedEnhancedCTImage
    )
    converted = kind(
        legacy_datasets=slices,
        series_instance_uid=generate_uid(),
        series_number=9,
        sop_instance_uid=generate_uid(),
        instance_number=1,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    converted.save_as(path)


def test_classic_and_enhanced_multiframe_give_the_single_frame_volume_and_features(tmp_path):
    inbox = tmp_path / "inbox"
    patient = make_patient(COHORT, 0, label=1)
    source = tmp_path / "source"
    ct = write_ct_series(patient, source / "CT", COHORT.seed)
    mr = write_mr_series(patient, source / "MR", COHORT.seed + 1)
    write_rtstruct(patient, ct, source / "RS_CT.dcm", "GTV", COHORT.seed)
    write_rtstruct(patient, mr, source / "RS_MR.dcm", "GTV", COHORT.seed + 1)
    ct_files = [pydicom.dcmread(p) for p in sorted((source / "CT").glob("*.dcm"))]
    mr_files = [pydicom.dcmread(p) for p in sorted((source / "MR").glob("*.dcm"))]
    cases = {
        "CT-SINGLE": ("CT", None),
        "CT-ENHANCED": ("CT", lambda folder: _enhanced(ct_files, folder / "ENHANCED_CT.dcm")),
        "MR-SINGLE": ("MR", None),
        "MR-CLASSIC": (
            "MR",
            lambda folder: _classic_multiframe(mr_files, folder / "MR_MF.dcm", COHORT.slice_thickness_mm),
        ),
        "MR-ENHANCED": ("MR", lambda folder: _enhanced(mr_files, folder / "ENHANCED_MR.dcm")),
    }
    for key, (modality, write) in cases.items():
        folder = inbox / key
        if write is None:
            shutil.copytree(source / modality, folder / modality)
        else:
            write(folder)
        shutil.copy(source / f"RS_{modality}.dcm", folder / "RS.dcm")
        _relabel(folder, PatientID=key)
    # a classic multi-frame MR without SpacingBetweenSlices: where its frames lie is unknown
    _classic_multiframe(mr_files, inbox / "MR-NOSPACING" / "MR_MF.dcm", COHORT.slice_thickness_mm)
    ds = pydicom.dcmread(inbox / "MR-NOSPACING" / "MR_MF.dcm")
    del ds.SpacingBetweenSlices
    ds.save_as(inbox / "MR-NOSPACING" / "MR_MF.dcm")
    shutil.copy(source / "RS_MR.dcm", inbox / "MR-NOSPACING" / "RS.dcm")
    _relabel(inbox / "MR-NOSPACING", PatientID="MR-NOSPACING")

    scan = scan_inbox(inbox)
    assert [len(s) for s in scan.patients["MR-ENHANCED"].image_series.values()] == [1]
    outcomes = _run(tmp_path, sorted(scan.patients))
    assert {k: v for k, v in outcomes.items() if k != "MR-NOSPACING"} == dict.fromkeys(cases), outcomes
    assert "MR-NOSPACING: no CT/MR/PET image series" in outcomes["MR-NOSPACING"], outcomes
    assert (
        "MR_MF.dcm: multi-frame image whose frames cannot be placed: 12 frames in one file without per-frame "
        "positions or SpacingBetweenSlices" in outcomes["MR-NOSPACING"]
    )
    series = _query(tmp_path, "SELECT * FROM series").set_index("patient_id")
    for key, (modality, _) in cases.items():
        control = f"{modality}-SINGLE"
        same = ["size_x", "size_y", "size_z", "spacing_x", "spacing_y", "spacing_z", "origin_x", "origin_y", "origin_z"]
        assert series.loc[key, same].tolist() == series.loc[control, same].tolist(), key
        assert series.loc[key, "image_hash"] == series.loc[control, "image_hash"], key
        assert series.loc[key, "n_slices"] == COHORT.slices
        pd.testing.assert_series_equal(
            _features(tmp_path, key), _features(tmp_path, control), check_exact=True, obj=key
        )


# --- i. a series without any ROI is visible as such ------------------------------------------------------------


def test_series_without_roi_is_named_in_the_log_and_the_roi_masks_metadata(tmp_path, caplog):
    from radiomics_assets.defs.patient_assets import _patient_events

    inbox = tmp_path / "inbox"
    patient, _, _ = _ct_with_rtstruct(inbox, 1)
    mr = write_mr_series(patient, inbox / patient.patient_id / "MR", COHORT.seed + 1)  # no contour on the MR
    settings = RadiomicsConfig(data_dir=str(tmp_path)).patient_settings()
    with caplog.at_level("WARNING"):
        (outcome,) = run_patients(["SYN-0001"], {"studies", "roi_masks"}, settings, workers=1)
    assert outcome.error is None and outcome.masks.roi.tolist() == ["GTV"]
    message = f"patient SYN-0001: MR series {mr[0].SeriesInstanceUID} has no ROI (no RTSTRUCT, SEG or automated mask"
    assert message in caplog.text
    events = list(_patient_events(outcome, RadiomicsConfig(data_dir=str(tmp_path)), {}, "test"))
    (masks_event,) = [e for e in events if e.asset_key.path == ["roi_masks"]]
    assert masks_event.metadata["series_without_roi"].value == f"MR {mr[0].SeriesInstanceUID}"


# --- j. baseline and follow-up studies of one patient ----------------------------------------------------------


OUTCOME = "outcome: {type: binary, column: label, positive: 1}\n"


def test_baseline_and_follow_up_studies_are_kept_and_the_timepoint_rule_picks(tmp_path):
    inbox = tmp_path / "inbox"
    # SYN-0001: a baseline study and a follow-up study (another lesion: SYN-0002's voxels), as two exports.
    _ct_with_rtstruct(inbox / "baseline", 1)
    _relabel(inbox / "baseline", StudyDate="20250105")
    _ct_with_rtstruct(inbox / "followup", 2)
    _relabel(inbox / "followup", PatientID="SYN-0001", StudyDate="20250610")
    # controls: each study alone, as a patient of its own
    _ct_with_rtstruct(inbox / "base_only", 1)
    _relabel(inbox / "base_only", PatientID="BASE", StudyDate="20250105")
    _ct_with_rtstruct(inbox / "follow_only", 2)
    _relabel(inbox / "follow_only", PatientID="FOLLOW", StudyDate="20250610")
    # a patient whose two studies have no StudyDate: they cannot be ordered
    _ct_with_rtstruct(inbox / "undated_a", 3)
    _ct_with_rtstruct(inbox / "undated_b", 4)
    _relabel(inbox / "undated_a", PatientID="UNDATED", StudyDate="")
    _relabel(inbox / "undated_b", PatientID="UNDATED", StudyDate="")

    keys = ["BASE", "FOLLOW", "SYN-0001", "UNDATED"]
    assert _run(tmp_path, keys) == dict.fromkeys(keys)
    series = _query(tmp_path, "SELECT patient_id, study_date FROM series ORDER BY ALL")
    assert series[series.patient_id == "SYN-0001"].study_date.tolist() == ["20250105", "20250610"]  # both kept

    warehouse = Warehouse(DataRoot(tmp_path).warehouse)
    matrices = {rule: build_feature_matrix(warehouse, rule)[0] for rule in ("baseline", "latest")}
    # the follow-up blocks exist for 1 of 4 patients here, below the matrix's block coverage: compare them unfiltered
    matrices |= {rule: wide_matrix(feature_rows_at_timepoint(warehouse, rule)) for rule in ("all", "delta")}
    gtv = [c for c in matrices["baseline"] if c.startswith("CT__GTV__")]
    assert len(gtv) > 90
    baseline = matrices["baseline"]
    assert baseline.loc["SYN-0001", gtv].equals(baseline.loc["BASE", gtv])
    assert matrices["latest"].loc["SYN-0001", gtv].equals(baseline.loc["FOLLOW", gtv])
    assert "UNDATED" not in baseline.index or baseline.loc["UNDATED", gtv].isna().all()

    every = matrices["all"]
    t0 = [c.replace("CT__GTV__", "CT__GTV@t0__") for c in gtv]
    t1 = [c.replace("CT__GTV__", "CT__GTV@t1__") for c in gtv]
    assert every.loc["SYN-0001", t0].to_numpy().tolist() == baseline.loc["BASE", gtv].to_numpy().tolist()
    assert every.loc["SYN-0001", t1].to_numpy().tolist() == baseline.loc["FOLLOW", gtv].to_numpy().tolist()

    delta = matrices["delta"]
    first, last = baseline.loc["BASE", gtv].to_numpy(), baseline.loc["FOLLOW", gtv].to_numpy()
    change = [c.replace("CT__GTV__", "CT__GTV@delta__") for c in gtv]
    relative = [c.replace("CT__GTV__", "CT__GTV@relative__") for c in gtv]
    np.testing.assert_array_equal(delta.loc["SYN-0001", change].to_numpy(dtype=float), last - first)
    with np.errstate(divide="ignore", invalid="ignore"):
        expected = np.where(first != 0, (last - first) / np.abs(first), np.nan)
    np.testing.assert_array_equal(delta.loc["SYN-0001", relative].to_numpy(dtype=float), expected)
    assert delta.loc["SYN-0001", gtv].equals(baseline.loc["BASE", gtv])

    summary = _query(tmp_path, "SELECT * FROM timepoints ORDER BY patient_id").set_index("patient_id")
    assert summary.loc["SYN-0001"].tolist() == [
        "CT__GTV",
        2,
        "20250105, 20250610",
        "baseline (20250105) and delta to 20250610",
    ]
    assert summary.loc["UNDATED", "used"].startswith("none: the studies cannot be ordered")

    (tmp_path / "study.yaml").write_text(f"{OUTCOME}timepoint: latest\n")
    assert build_feature_matrix(warehouse)[0].loc["SYN-0001", gtv].equals(baseline.loc["FOLLOW", gtv])
    (tmp_path / "study.yaml").write_text(f"{OUTCOME}timepoint: newest\n")
    with pytest.raises(StudyError, match=r"key 'timepoint' must be one of \['baseline', 'latest', 'all', 'delta'\]"):
        build_feature_matrix(warehouse)


# --- k. MR normalisation over the foreground: the field of view does not move the features ---------------------


def _zero_padded(patient: SyntheticPatient, pad: int) -> SyntheticPatient:
    """The same MR with ``pad`` columns of zero signal (stored value 0) on each side: a larger field of view."""
    hu = np.pad(patient.hu, ((0, 0), (0, 0), (pad, pad)), constant_values=-1024.0)  # stored = hu + 1024 = 0
    lesion = np.pad(patient.lesion, ((0, 0), (0, 0), (pad, pad)))
    origin = (patient.origin_mm[0] - pad * patient.spacing_mm[0], *patient.origin_mm[1:])
    return dataclasses.replace(patient, hu=hu, lesion=lesion, origin_mm=origin)


def test_zero_padding_around_an_mr_leaves_its_features_unchanged(tmp_path):
    inbox = tmp_path / "inbox"
    wide = SynthConfig(n_patients=1, seed=31, rows=64, columns=64, slices=12)
    # a lesion 12 voxels from the image's edge: its resampling window (padDistance 5 mm) lies inside both images
    patient = make_patient(wide, 0, label=1)
    for key, version in (("MR-FOV", patient), ("MR-PADDED", _zero_padded(patient, 10))):
        mr = write_mr_series(version, inbox / key / "MR", COHORT.seed + 1)
        write_rtstruct(version, mr, inbox / key / "RS.dcm", "GTV", COHORT.seed + 1)
        _relabel(inbox / key, PatientID=key)
    assert _run(tmp_path, ["MR-FOV", "MR-PADDED"]) == {"MR-FOV": None, "MR-PADDED": None}
    sizes = _query(tmp_path, "SELECT patient_id, size_x FROM series ORDER BY 1").size_x.tolist()
    assert sizes == [64, 84]  # MR-FOV, MR-PADDED
    ours, padded = _features(tmp_path, "MR-FOV"), _features(tmp_path, "MR-PADDED")
    # equal up to the last digits of the B-spline resampling on the larger grid (ITK sums in another order)
    relative = ((padded - ours).abs() / ours.abs().clip(lower=1e-12)).max()
    assert relative < 1e-7, relative

    # PyRadiomics' own normalisation (over the whole image) on the same two stored volumes: the features moved
    params = str(params_by_modality(PARAMS_DIR)["MR"])
    rows = _query(
        tmp_path, "SELECT s.patient_id, s.volume_path, m.mask_path FROM series s JOIN masks m USING (series_uid)"
    )
    whole = {
        row.patient_id: featureextractor.RadiomicsFeatureExtractor(params).execute(row.volume_path, row.mask_path)
        for row in rows.itertuples()
    }
    names = [k for k in whole["MR-FOV"] if not k.startswith("diagnostics_")]
    change = {
        k: abs(float(whole["MR-PADDED"][k]) / float(whole["MR-FOV"][k]) - 1) for k in names if float(whole["MR-FOV"][k])
    }
    moved = sorted(k for k, v in change.items() if v > 1e-3)
    assert len(moved) > 60 and max(change.values()) > 0.1, (len(moved), max(change.values()))


def test_png_sbit_chunk_gives_the_data_bit_depth(tmp_path, lesion):
    grey, _ = lesion
    # 12-bit data (grey x 16) written as the PNG standard says: shifted to the top of 16 bits, sBIT = 12
    path = _save(tmp_path / "img.png", Image.fromarray((grey.astype(np.uint16) * 16) << 4))
    data = path.read_bytes()
    ihdr_end = 8 + 4 + 4 + 13 + 4  # signature, IHDR length, type, data, CRC
    chunk = b"sBIT" + bytes([12])
    sbit = (1).to_bytes(4, "big") + chunk + zlib.crc32(chunk).to_bytes(4, "big")
    path.write_bytes(data[:ihdr_end] + sbit + data[ihdr_end:])
    assert png_header(path) == (16, 0, 12)
    read = read_png_grey(path)
    # libpng (through ITK) honours sBIT and shifts the samples back: the 12-bit values themselves
    assert read.description == "grey; 12-bit data in a 16-bit PNG (maximum 4080)"
    assert np.array_equal(read.array, grey.astype(np.float32) * 16)
