"""Values from real-style scanner exports: per-slice rescale in float, PET in Bq/ml as SUVbw, gantry tilt
refused, and a grey-level guard so a units/parameter mismatch fails one extraction instead of memory."""

from __future__ import annotations

import duckdb
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from radiomics_assets.batch import STAGES, PatientSettings, run_patients
from radiomics_assets.defs.resources import RadiomicsConfig
from radiomics_assets.errors import DicomInputError, ExtractionError
from radiomics_assets.features import PARAMS_DIR, ExtractionTarget, extract, params_by_modality
from radiomics_assets.ingest import ingest_studies, read_series, scan_inbox, suv_conversion
from radiomics_assets.paths import DataRoot
from radiomics_assets.synth import (
    PetHeader,
    make_patient,
    pet_slopes,
    write_ct_series,
    write_pet_series,
    write_rtstruct,
)
from radiomics_assets.warehouse import Warehouse
from radiomics_assets_tests.conftest import SHARED_DATA, SMALL

# Hand-computed SUVbw factors (g/Bq) for 75 kg, 370 MBq of F-18 (half-life 6586.2 s) injected at 09:30:00:
START_FACTOR = 3.254897503e-4  # scan start 10:45:00, dt = 4500 s: 75000 / (370e6 * 2 ** (-4500 / 6586.2))
ADMIN_FACTOR = 2.027027027e-4  # decay corrected to the injection: 75000 / 370e6
LATER_FACTOR = 3.359302932e-4  # a slice acquired at 10:50:00, dt = 4800 s (DecayCorrection NONE)


def _suv_phantom(config=SMALL, index=0):
    """A patient and an SUV volume on its grid: background ~1.5 SUV, lesion ~8 SUV with texture."""
    patient = make_patient(config, index, label=1)
    rng = np.random.default_rng(index)
    suv = np.where(patient.lesion, 8.0 + 0.02 * (patient.hu - patient.hu[patient.lesion].mean()), 1.5)
    suv = np.clip(suv + 0.1 * rng.standard_normal(suv.shape), 0.0, None)
    suv[0] = np.rint(suv[0])  # slope 1 on the first slice stores integers there
    return patient, suv


def _written_pet(tmp_path, header, suv_slopes=None, factor=START_FACTOR, folder="PT"):
    """The phantom written as PET in ``header.units`` (Bq/ml = SUV / factor); returns (patient, suv, slices)."""
    patient, suv = _suv_phantom()
    slopes = suv_slopes or pet_slopes(suv)
    if header.units == "GML":
        slices = write_pet_series(patient, suv, tmp_path / folder, SMALL.seed, header=header, slopes=slopes)
    else:  # the same stored integers, with slopes that give Bq/ml
        values, slopes = suv / factor, [s / factor for s in slopes]
        slices = write_pet_series(patient, values, tmp_path / folder, SMALL.seed, header=header, slopes=slopes)
    return patient, suv, slices


def _pydicom_values(folder):
    """(slices, rows, columns) of ``pixel_array * RescaleSlope + RescaleIntercept``, slice by slice, in z order."""
    datasets = sorted(
        (pydicom.dcmread(p) for p in folder.glob("*.dcm")), key=lambda d: float(d.ImagePositionPatient[2])
    )
    return np.stack([d.pixel_array * float(d.RescaleSlope) + float(d.RescaleIntercept) for d in datasets])


def _only_series(folder):
    (patient,) = scan_inbox(folder).patients.values()
    (files,) = patient.image_series.values()
    return files


# --- 1. per-slice rescale in floating point ---------------------------------------------------------------


def test_per_slice_rescale_is_read_in_float_like_pydicom(tmp_path):
    _written_pet(tmp_path, PetHeader(units="GML"))
    expected = _pydicom_values(tmp_path / "PT")
    assert float(pydicom.dcmread(tmp_path / "PT" / "PT_0001.dcm").RescaleSlope) == 1.0
    assert not np.allclose(expected, np.trunc(expected), atol=0.01)  # truncation would be seen
    image = read_series(_only_series(tmp_path / "PT"))
    values = sitk.GetArrayFromImage(image)
    assert values.dtype == np.float32
    np.testing.assert_allclose(values, expected, rtol=1e-6, atol=1e-6)


def test_ct_geometry_and_values_are_unchanged_by_the_float_read(tmp_path):
    patient = make_patient(SMALL, 1, label=0)
    write_ct_series(patient, tmp_path / "CT", SMALL.seed)
    image = read_series(_only_series(tmp_path / "CT"))
    assert image.GetSize() == (SMALL.columns, SMALL.rows, SMALL.slices)
    np.testing.assert_allclose(image.GetSpacing(), patient.spacing_mm)
    np.testing.assert_allclose(
        image.GetOrigin(), (patient.origin_mm[0], patient.origin_mm[1], patient.origin_mm[2]), atol=1e-4
    )
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), _pydicom_values(tmp_path / "CT"))


# --- 2. gantry tilt -----------------------------------------------------------------------------------------


def _tilt(folder, degrees):
    """Move each slice sideways (y) by its z offset times tan(tilt), as a tilted gantry's positions do."""
    for path in sorted(folder.glob("CT_*.dcm")):
        ds = pydicom.dcmread(path)
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        k = ds.InstanceNumber - 1
        ds.ImagePositionPatient = [x, y + k * SMALL.slice_thickness_mm * np.tan(np.radians(degrees)), z]
        ds.save_as(path)


def test_gantry_tilted_ct_fails_naming_the_file_and_the_angle(tmp_path):
    patient = make_patient(SMALL, 2, label=0)
    write_ct_series(patient, tmp_path / "CT", SMALL.seed)
    _tilt(tmp_path / "CT", 15.0)
    with pytest.raises(DicomInputError, match=r"CT_0002\.dcm: .*gantry tilt of 15\.00 degrees"):
        read_series(_only_series(tmp_path / "CT"))


def test_tilted_slice_planes_stacked_along_the_table_fail_with_the_angle(tmp_path):
    """As a tilted gantry writes them: slice planes rotated about x, positions moving along the table (z)."""
    patient = make_patient(SMALL, 5, label=0)
    write_ct_series(patient, tmp_path / "CT", SMALL.seed)
    tilt = np.radians(12.0)
    for path in sorted((tmp_path / "CT").glob("CT_*.dcm")):
        ds = pydicom.dcmread(path)
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, float(np.cos(tilt)), float(np.sin(tilt))]
        ds.save_as(path)
    with pytest.raises(DicomInputError, match=r"CT_0002\.dcm: .*gantry tilt of 12\.00 degrees"):
        read_series(_only_series(tmp_path / "CT"))


def test_oblique_stack_along_its_own_normal_is_not_taken_for_tilt(tmp_path):
    patient = make_patient(SMALL, 3, label=0)
    write_ct_series(patient, tmp_path / "CT", SMALL.seed)
    angle = np.radians(20.0)
    row, column = np.array([1.0, 0.0, 0.0]), np.array([0.0, np.cos(angle), np.sin(angle)])
    normal = np.cross(row, column)
    for path in sorted((tmp_path / "CT").glob("CT_*.dcm")):
        ds = pydicom.dcmread(path)
        ds.ImageOrientationPatient = [*row, *column]
        ds.ImagePositionPatient = list(np.array([-20.0, -25.0, 10.0]) + (ds.InstanceNumber - 1) * 2.0 * normal)
        ds.save_as(path)
    image = read_series(_only_series(tmp_path / "CT"))
    np.testing.assert_allclose(image.GetSpacing()[2], 2.0, rtol=1e-6)
    np.testing.assert_allclose(image.GetDirection()[2::3], normal, atol=1e-6)


def test_a_sub_voxel_drift_below_the_tolerance_is_accepted(tmp_path):
    patient = make_patient(SMALL, 4, label=0)
    write_ct_series(patient, tmp_path / "CT", SMALL.seed)
    _tilt(tmp_path / "CT", 0.05)  # 0.033 mm over the stack: under a tenth of a 0.8 mm pixel
    assert read_series(_only_series(tmp_path / "CT")).GetSize()[2] == SMALL.slices


# --- 4. PET in Bq/ml -> SUVbw ---------------------------------------------------------------------------


def _headers(folder):
    return [pydicom.dcmread(p, stop_before_pixels=True) for p in sorted(folder.glob("*.dcm"))]


@pytest.mark.parametrize(
    ("header", "factors"),
    [
        (PetHeader(decay_correction="START"), {0: START_FACTOR, 19: START_FACTOR}),
        (PetHeader(decay_correction="ADMIN"), {0: ADMIN_FACTOR, 19: ADMIN_FACTOR}),
        (
            PetHeader(decay_correction="NONE", acquisition_times=("104500",) * 10 + ("105000",) * 10),
            {0: START_FACTOR, 9: START_FACTOR, 10: LATER_FACTOR, 19: LATER_FACTOR},
        ),
        # Injection just before midnight, scan after it: the time of day alone would be negative, the DateTime is not.
        (
            PetHeader(injection_time="233000", injection_date_time="20251231233000", series_time="004500"),
            {0: START_FACTOR},
        ),
        (PetHeader(units="GML", weight_kg=None, dose_bq=None), {0: 1.0, 19: 1.0}),
    ],
    ids=["start", "admin", "none-per-slice", "over-midnight", "gml"],
)
def test_suv_factor_equals_the_hand_computed_value(tmp_path, header, factors):
    patient, suv = _suv_phantom()
    write_pet_series(patient, suv, tmp_path / "PT", SMALL.seed, header=header)
    conversion = suv_conversion(_headers(tmp_path / "PT"))
    assert conversion.units == header.units
    for index, factor in factors.items():
        assert conversion.factors[index] == pytest.approx(factor, rel=1e-9)


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (PetHeader(weight_kg=None), r"PT_0001\.dcm: PET in BQML lacks PatientWeight"),
        (PetHeader(dose_bq=None), r"PT_0001\.dcm: PET in BQML lacks RadionuclideTotalDose in Radiopharm"),
        (PetHeader(half_life_s=None), r"PT_0001\.dcm: PET in BQML lacks RadionuclideHalfLife"),
        (PetHeader(injection_time=None), r"PT_0001\.dcm: PET in BQML lacks a valid RadiopharmaceuticalStartTime"),
        (PetHeader(units=""), r"PT_0001\.dcm: PET series lacks Units \(0054,1001\)"),
        (PetHeader(units="CNTS"), r"PT_0001\.dcm: PET Units CNTS cannot be converted to SUV"),
        (PetHeader(corrected_image=("DECY",)), r"PT_0001\.dcm: PET in BQML is not ATTN corrected"),
        (PetHeader(injection_time="120000"), r"PT_0001\.dcm: injection at 2026-01-01 12:00:00 .* negative"),
    ],
    ids=["weight", "dose", "half-life", "injection", "no-units", "counts", "no-attenuation", "injection-after-scan"],
)
def test_pet_that_cannot_become_suv_fails_naming_the_file_and_tag(tmp_path, header, message):
    patient, suv = _suv_phantom()
    write_pet_series(patient, suv / START_FACTOR, tmp_path / "PT", SMALL.seed, header=header)
    with pytest.raises(DicomInputError, match=message):
        read_series(_only_series(tmp_path / "PT"))


def _pet_inbox(root, header, factor=START_FACTOR):
    """A data root whose inbox holds the phantom as one PET series with an RTSTRUCT on it."""
    patient, suv, slices = _written_pet(root / "inbox" / "P1", header, factor=factor)
    write_rtstruct(patient, slices, root / "inbox" / "P1" / "RS" / "RS.dcm", "GTV", SMALL.seed)
    return patient, suv


def test_bqml_series_is_stored_as_suv_with_units_and_factor_in_series(tmp_path):
    root = DataRoot(tmp_path)
    patient, _ = _pet_inbox(tmp_path, PetHeader())
    rows = ingest_studies(root, patient.patient_id)
    (row,) = rows.to_dict("records")
    assert row["modality"] == "PT" and row["units"] == "BQML"
    assert row["suv_factor"] == pytest.approx(START_FACTOR, rel=1e-9)
    stored = sitk.GetArrayFromImage(sitk.ReadImage(row["volume_path"]))
    np.testing.assert_allclose(stored, _pydicom_values(tmp_path / "inbox" / "P1" / "PT") * START_FACTOR, rtol=1e-6)
    Warehouse(root.warehouse).replace_patient(patient.patient_id, {"series": rows})
    stored_row = Warehouse(root.warehouse).query("SELECT units, suv_factor FROM series").iloc[0]
    assert stored_row.units == "BQML" and stored_row.suv_factor == pytest.approx(START_FACTOR, rel=1e-9)


def test_bqml_and_gml_twins_give_equal_suv_volumes_and_features(tmp_path):
    """The same scan exported in Bq/ml and in SUV: equal stored volumes, equal PyRadiomics features."""
    features = {}
    volumes = {}
    for units in ("BQML", "GML"):
        root = tmp_path / units
        patient, _ = _pet_inbox(root, PetHeader(units=units))
        settings = PatientSettings(data_dir=root, params=params_by_modality(PARAMS_DIR))
        (outcome,) = run_patients([patient.patient_id], set(STAGES), settings, workers=1)
        assert outcome.failed_stage is None, outcome.error
        assert outcome.series.units.tolist() == [units]
        volumes[units] = sitk.GetArrayFromImage(sitk.ReadImage(outcome.series.volume_path.iloc[0]))
        features[units] = outcome.features.set_index(["image_type", "feature_class", "feature"]).value.sort_index()
    np.testing.assert_allclose(volumes["BQML"], volumes["GML"], rtol=1e-6, atol=1e-6)
    assert len(features["GML"]) > 90
    np.testing.assert_allclose(features["BQML"], features["GML"], rtol=1e-5, atol=1e-8)


def test_older_warehouse_gets_the_new_series_columns(tmp_path):
    path = tmp_path / "radiomics.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute("CREATE TABLE series (patient_id VARCHAR NOT NULL, series_uid VARCHAR NOT NULL, modality VARCHAR)")
        con.execute("INSERT INTO series VALUES ('P1', '1.2.3', 'CT')")
    rows = Warehouse(path).query("SELECT * FROM series")
    assert {"units", "suv_factor"} <= set(rows.columns)
    assert rows.patient_id.tolist() == ["P1"] and rows.units.isna().all()


# --- grey-level guard -------------------------------------------------------------------------------------


def _pet_target(values_per_suv: float) -> ExtractionTarget:
    patient, suv = _suv_phantom()
    image = sitk.GetImageFromArray((suv * values_per_suv).astype(np.float32))
    image.SetSpacing(patient.spacing_mm)
    mask = sitk.GetImageFromArray(patient.lesion.astype(np.uint8))
    mask.CopyInformation(image)
    return ExtractionTarget("P1", "1.2.3.4", "PT", "GTV", image, mask)


def test_pet_in_bq_per_ml_with_the_suv_bin_width_is_refused_before_pyradiomics():
    target = _pet_target(1.0 / START_FACTOR)  # Bq/ml: ~25,000 in the lesion
    with pytest.raises(
        ExtractionError, match=r"series 1\.2\.3\.4 \(PT\), ROI GTV: bin width 0\.25 over .* grey levels"
    ):
        extract(target, PARAMS_DIR / "pt.yaml")


def test_grey_level_guard_passes_suv_and_follows_its_setting():
    target = _pet_target(1.0)
    rows, _ = extract(target, PARAMS_DIR / "pt.yaml")
    assert len(rows) > 90
    with pytest.raises(ExtractionError, match=r"more than the maximum 5"):
        extract(target, PARAMS_DIR / "pt.yaml", max_grey_levels=5)


def test_max_grey_levels_is_threaded_from_the_environment_to_the_batch(tmp_path, monkeypatch):
    monkeypatch.setenv("RADIOMICS_DATA_DIR", str(tmp_path))
    config = RadiomicsConfig.from_env({"RADIOMICS_MAX_GREY_LEVELS": "5"})
    assert config.max_grey_levels == 5 and RadiomicsConfig.from_env({}).max_grey_levels == 1000
    settings = config.patient_settings()
    assert settings.max_grey_levels == 5
    patient, _ = _pet_inbox(tmp_path, PetHeader())
    (outcome,) = run_patients([patient.patient_id], set(STAGES), settings, workers=1)
    assert outcome.failed_stage == "features"
    assert "grey levels, more than the maximum 5" in outcome.error and outcome.done_stages == ["studies", "roi_masks"]


# --- real data: the sarcoma PET re-encoded as Bq/ml ---------------------------------------------------------

SARCOMA_PET = SHARED_DATA / "sarcoma" / "dicom" / "STS_002" / "PET"


@pytest.mark.skipif(not SARCOMA_PET.exists(), reason="../shared/data is not present")
def test_real_pet_reencoded_as_bqml_gives_the_original_suv_and_features(tmp_path):
    """STS_002's PET (SUV, GML) re-encoded as a scanner writes Bq/ml: same pixels, RescaleSlope / SUV factor,
    DecayCorrection START; its own weight, dose, half-life and times (the de-identified StartDateTime is a day
    off, the StartTime is not) must give back the original SUV volume and features."""
    original = tmp_path / "original"
    (original / "inbox" / "STS_002").mkdir(parents=True)
    (original / "inbox" / "STS_002" / "PET").symlink_to(SARCOMA_PET, target_is_directory=True)
    encoded = tmp_path / "encoded" / "inbox" / "STS_002" / "PET"
    (encoded / "image").mkdir(parents=True)
    (encoded / "mask").symlink_to(SARCOMA_PET / "mask", target_is_directory=True)
    factor = 99.0 * 1000 / (433344096 * 2 ** (-4019 / 6588))  # 99 kg, 433 MBq, 14:57:59 - 13:51:00 = 4019 s
    for path in sorted((SARCOMA_PET / "image").glob("*.dcm")):
        ds = pydicom.dcmread(path)
        assert (ds.Units, float(ds.PatientWeight), ds.SeriesTime) == ("GML", 99.0, "145759")
        ds.Units, ds.DecayCorrection = "BQML", "START"
        ds.RescaleSlope = f"{float(ds.RescaleSlope) / factor:.10g}"
        ds.save_as(encoded / "image" / path.name)
    outcomes = {}
    for name in ("original", "encoded"):
        settings = PatientSettings(data_dir=tmp_path / name, params=params_by_modality(PARAMS_DIR))
        (outcomes[name],) = run_patients(["STS_002"], set(STAGES), settings, workers=1)
        assert outcomes[name].failed_stage is None, outcomes[name].error
    assert outcomes["encoded"].series.suv_factor.iloc[0] == pytest.approx(factor, rel=1e-9)
    assert outcomes["original"].series.units.iloc[0] == "GML"
    a, b = (sitk.GetArrayFromImage(sitk.ReadImage(o.series.volume_path.iloc[0])) for o in outcomes.values())
    np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-6)
    fa, fb = (
        o.features.set_index(["image_type", "feature_class", "feature"]).value.sort_index() for o in outcomes.values()
    )
    assert len(fa) > 90
    np.testing.assert_allclose(fb, fa, rtol=1e-5, atol=1e-8)
