"""Synthetic CT cohort: real DICOM series with an RTSTRUCT lesion contour and a binary outcome.

Why synthetic: the core test suite and the demo must run anywhere without patient data. The two outcome
classes differ in lesion *shape* (lobulation of the contour) and *texture* (heterogeneity of the lesion
HU values), scaled by ``effect_size``; per-patient ``noise`` blurs the classes so a model learns them well
but not perfectly. Lesion size is drawn from the same range for both classes, so size alone is no cue.

Geometry is exact: the lesion voxel set is defined as the voxel centres inside each slice's contour
polygon (in patient coordinates, mm), and the same polygons are written to the RTSTRUCT.
"""

from __future__ import annotations

import csv
import datetime as dt
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk
import yaml
from matplotlib.path import Path as Polygon
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
RT_STRUCTURE_SET_STORAGE = "1.2.840.10008.5.1.4.1.1.481.3"
PET_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.128"
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
HU_INTERCEPT = -1024.0
CONTOUR_VERTICES = 120


@dataclass(frozen=True)
class SynthConfig:
    n_patients: int = 30
    seed: int = 7
    effect_size: float = 1.0
    """Scales the class difference in lobulation and heterogeneity; 0 makes the classes identical."""
    noise: float = 1.0
    """Scales per-patient variation that is unrelated to the outcome."""
    rows: int = 80
    columns: int = 80
    slices: int = 24
    pixel_spacing_mm: float = 0.8
    slice_thickness_mm: float = 2.0
    roi_name: str = "GTV"
    id_prefix: str = "SYN"


@dataclass
class SyntheticPatient:
    patient_id: str
    label: int
    hu: np.ndarray  # (slices, rows, columns), float HU
    lesion: np.ndarray  # (slices, rows, columns), bool: the voxel set the RTSTRUCT contours enclose
    origin_mm: tuple[float, float, float]
    spacing_mm: tuple[float, float, float]  # (column, row, slice) spacing, i.e. x, y, z
    contours_mm: dict[int, np.ndarray] = field(default_factory=dict)  # slice index -> (N, 3) x,y,z


def _uid(*parts: object) -> str:
    """Deterministic UID: the same seed and patient always give the same UIDs."""
    return generate_uid(entropy_srcs=[str(p) for p in parts])


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma_vox: float) -> np.ndarray:
    """Gaussian random field with unit standard deviation (SimpleITK smoothing of white noise)."""
    white = sitk.GetImageFromArray(rng.standard_normal(shape).astype(np.float32))
    field_ = sitk.GetArrayFromImage(sitk.SmoothingRecursiveGaussian(white, sigma_vox))
    return (field_ - field_.mean()) / (field_.std() + 1e-6)


def make_patient(config: SynthConfig, index: int, label: int) -> SyntheticPatient:
    rng = np.random.default_rng([config.seed, index])
    n_z, n_y, n_x = config.slices, config.rows, config.columns
    ps, st = config.pixel_spacing_mm, config.slice_thickness_mm
    origin = (-(n_x - 1) * ps / 2, -(n_y - 1) * ps / 2, float(rng.uniform(-60, 60)))
    xs = origin[0] + np.arange(n_x) * ps
    ys = origin[1] + np.arange(n_y) * ps
    zs = origin[2] + np.arange(n_z) * st

    # Background: air, a body ellipse of soft tissue with a fat rim, scanner noise added at the end.
    yy, xx = np.meshgrid(ys, xs, indexing="ij")
    body = (xx / 30.0) ** 2 + (yy / 26.0) ** 2
    slice_hu = np.where(body <= 1.0, 35.0, -1000.0)
    slice_hu = np.where((body > 0.75) & (body <= 1.0), -90.0, slice_hu)
    hu = np.repeat(slice_hu[None], n_z, axis=0)

    # Lesion: an ellipsoid whose in-plane radius is modulated by lobulation harmonics.
    centre = (rng.uniform(-5, 5), rng.uniform(-4, 4), origin[2] + (n_z - 1) * st / 2 + rng.uniform(-4, 4))
    radii = (rng.uniform(7.0, 11.5), rng.uniform(7.0, 11.5), rng.uniform(9.0, 14.0))
    lobulation = max(0.0, 0.04 + 0.09 * config.effect_size * label + 0.045 * config.noise * rng.standard_normal())
    harmonics = [(k, rng.uniform(0.5, 1.0), rng.uniform(0, 2 * np.pi)) for k in (3, 4, 5, 7)]
    theta = np.linspace(0, 2 * np.pi, CONTOUR_VERTICES, endpoint=False)
    wobble = sum(a * np.cos(k * theta + phase) for k, a, phase in harmonics) / len(harmonics)

    lesion = np.zeros((n_z, n_y, n_x), dtype=bool)
    contours: dict[int, np.ndarray] = {}
    centres_xy = np.column_stack([xx.ravel(), yy.ravel()])
    for k, z in enumerate(zs):
        dz = (z - centre[2]) / radii[2]
        if abs(dz) >= 0.97:
            continue
        scale = np.sqrt(1 - dz**2)
        r_ellipse = 1.0 / np.sqrt((np.cos(theta) / radii[0]) ** 2 + (np.sin(theta) / radii[1]) ** 2)
        r = scale * r_ellipse * (1 + 2.5 * lobulation * wobble)
        polygon = np.column_stack([centre[0] + r * np.cos(theta), centre[1] + r * np.sin(theta)])
        inside = Polygon(polygon).contains_points(centres_xy).reshape(n_y, n_x)
        if inside.sum() < 3:
            continue
        lesion[k] = inside
        contours[k] = np.column_stack([polygon, np.full(len(polygon), z)])

    # Lesion texture: a mean HU plus a smooth random field whose amplitude is the class cue.
    heterogeneity = max(2.0, 9.0 + 16.0 * config.effect_size * label + 7.0 * config.noise * rng.standard_normal())
    texture = _smooth_noise(rng, lesion.shape, sigma_vox=1.2)
    lesion_mean = rng.uniform(25.0, 55.0)
    hu = np.where(lesion, lesion_mean + heterogeneity * texture, hu)
    hu = hu + 10.0 * rng.standard_normal(hu.shape)

    return SyntheticPatient(
        patient_id=f"{config.id_prefix}-{index + 1:04d}",
        label=label,
        hu=hu,
        lesion=lesion,
        origin_mm=origin,
        spacing_mm=(ps, ps, st),
        contours_mm=contours,
    )


def _patient_module(ds: Dataset, patient: SyntheticPatient, study_uid: str, frame_uid: str) -> None:
    number = patient.patient_id.rsplit("-", 1)[-1]
    ds.PatientName = f"Synthetic^Case{number}"
    ds.PatientID = patient.patient_id
    ds.PatientBirthDate = ""
    ds.PatientSex = "O"
    ds.StudyInstanceUID = study_uid
    ds.StudyDate = "20260101"
    ds.StudyTime = "120000"
    ds.StudyID = "1"
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ""
    ds.FrameOfReferenceUID = frame_uid
    ds.Manufacturer = "radiomics_assets synthetic"


def _file_meta(sop_class: str, sop_instance: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_instance
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return meta


def _axial_slice(
    patient: SyntheticPatient, k: int, sop_class: str, sop_uid: str, study_uid: str, frame_uid: str
) -> Dataset:
    """Slice ``k`` of an axial series on the patient's grid: SOP identity, patient/study, position (mm), spacing."""
    ds = Dataset()
    ds.file_meta = _file_meta(sop_class, sop_uid)
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    _patient_module(ds, patient, study_uid, frame_uid)
    ds.InstanceNumber = k + 1
    z = patient.origin_mm[2] + k * patient.spacing_mm[2]
    ds.ImagePositionPatient = [f"{patient.origin_mm[0]:.4f}", f"{patient.origin_mm[1]:.4f}", f"{z:.4f}"]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = [patient.spacing_mm[1], patient.spacing_mm[0]]  # row spacing (y), column spacing (x)
    ds.SliceThickness = patient.spacing_mm[2]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    return ds


def _twelve_bit_pixels(ds: Dataset, pixels: np.ndarray) -> None:
    """The image pixel module of one unsigned 12-bit slice (stored in 16 bits), as CT and MR scanners write it."""
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.PixelData = pixels.tobytes()


def write_ct_series(patient: SyntheticPatient, folder: Path, seed: int) -> list[Dataset]:
    """Write one axial CT slice per file; returns the written datasets (headers and pixels)."""
    folder.mkdir(parents=True, exist_ok=True)
    study_uid = _uid(seed, patient.patient_id, "study")
    series_uid = _uid(seed, patient.patient_id, "ct-series")
    frame_uid = _uid(seed, patient.patient_id, "frame")
    stored = np.clip(np.rint(patient.hu - HU_INTERCEPT), 0, 4095).astype(np.uint16)
    written = []
    for k in range(stored.shape[0]):
        ds = _axial_slice(patient, k, CT_IMAGE_STORAGE, _uid(seed, patient.patient_id, "ct", k), study_uid, frame_uid)
        ds.Modality = "CT"
        ds.SeriesInstanceUID = series_uid
        ds.SeriesNumber = 1
        ds.SeriesDescription = "synthetic CT"
        ds.SliceLocation = ds.ImagePositionPatient[2]
        _twelve_bit_pixels(ds, stored[k])
        ds.RescaleIntercept = HU_INTERCEPT
        ds.RescaleSlope = 1
        ds.RescaleType = "HU"
        ds.KVP = 120
        ds.save_as(folder / f"CT_{k + 1:04d}.dcm", enforce_file_format=True)
        written.append(ds)
    return written


@dataclass(frozen=True)
class PetHeader:
    """The PET tags SUV depends on (QIBA vendor-neutral procedure); defaults are a plausible FDG scan."""

    units: str = "BQML"
    decay_correction: str = "START"
    corrected_image: tuple[str, ...] = ("DECY", "ATTN", "SCAT", "DTIM", "RAN", "NORM")
    weight_kg: float | None = 75.0
    dose_bq: float | None = 370e6
    half_life_s: float | None = 6586.2  # F-18
    injection_time: str | None = "093000"
    """RadiopharmaceuticalStartTime (TM); None leaves it out."""
    injection_date_time: str | None = None
    """RadiopharmaceuticalStartDateTime (DT); None leaves it out."""
    series_date: str = "20260101"
    series_time: str = "104500"
    acquisition_times: tuple[str, ...] | None = None
    """AcquisitionTime per slice (TM); None = SeriesTime for every slice."""


def pet_slopes(values: np.ndarray, first_slope_one: bool = True) -> list[float]:
    """Per-slice RescaleSlope that fits each slice's values into int16, as PET scanners write them.

    ``first_slope_one`` makes the first slice's slope exactly 1 (its values are then rounded to integers), the
    case in which a reader that takes its pixel type from the first slice truncates every other slice.
    """
    slopes = [max(float(np.abs(plane).max()), 1e-6) / 32000.0 for plane in values]
    if first_slope_one:
        slopes[0] = 1.0
    return slopes


def write_pet_series(
    patient: SyntheticPatient,
    values: np.ndarray,
    folder: Path,
    seed: int,
    *,
    header: PetHeader = PetHeader(),
    slopes: list[float] | None = None,
) -> list[Dataset]:
    """Write a PET series (one slice per file, int16 pixels with a RescaleSlope per slice) on ``patient``'s grid.

    ``values`` (slices, rows, columns) are in ``header.units`` (Bq/ml for BQML, SUV for GML); the stored pixels
    are ``round(value / slope)``, so the values read back are ``pixel * slope`` (not exactly ``values``).
    """
    folder.mkdir(parents=True, exist_ok=True)
    study_uid = _uid(seed, patient.patient_id, "study")
    series_uid = _uid(seed, patient.patient_id, "pet-series")
    frame_uid = _uid(seed, patient.patient_id, "frame")
    slopes = pet_slopes(values) if slopes is None else slopes
    written = []
    for k, plane in enumerate(values):
        ds = _axial_slice(patient, k, PET_IMAGE_STORAGE, _uid(seed, patient.patient_id, "pet", k), study_uid, frame_uid)
        ds.Modality = "PT"
        ds.SeriesInstanceUID = series_uid
        ds.SeriesNumber = 3
        ds.SeriesDescription = "synthetic PET"
        ds.SeriesDate = ds.AcquisitionDate = header.series_date
        ds.SeriesTime = header.series_time
        ds.AcquisitionTime = header.acquisition_times[k] if header.acquisition_times else header.series_time
        if header.weight_kg is not None:
            ds.PatientWeight = f"{header.weight_kg:g}"
        ds.Rows, ds.Columns = plane.shape
        ds.BitsAllocated = ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1
        ds.CorrectedImage = list(header.corrected_image)
        ds.RescaleIntercept = 0
        ds.RescaleSlope = f"{slopes[k]:.10g}"
        ds.Units = header.units
        ds.DecayCorrection = header.decay_correction
        info = Dataset()
        info.Radiopharmaceutical = "Fluorodeoxyglucose"
        if header.injection_time is not None:
            info.RadiopharmaceuticalStartTime = header.injection_time
        if header.injection_date_time is not None:
            info.RadiopharmaceuticalStartDateTime = header.injection_date_time
        if header.dose_bq is not None:
            info.RadionuclideTotalDose = f"{header.dose_bq:.6g}"
        if header.half_life_s is not None:
            info.RadionuclideHalfLife = f"{header.half_life_s:g}"
        ds.RadiopharmaceuticalInformationSequence = Sequence([info])
        stored = np.clip(np.rint(plane / float(ds.RescaleSlope)), -32768, 32767).astype(np.int16)
        ds.PixelData = stored.tobytes()
        ds.save_as(folder / f"PT_{k + 1:04d}.dcm", enforce_file_format=True)
        written.append(ds)
    return written


def write_rtstruct(patient: SyntheticPatient, ct_slices: list[Dataset], path: Path, roi_name: str, seed: int):
    """RTSTRUCT with one CLOSED_PLANAR contour per lesion slice, in patient coordinates (mm)."""
    first = ct_slices[0]
    sop_uid = _uid(seed, patient.patient_id, "rtstruct")
    ds = Dataset()
    ds.file_meta = _file_meta(RT_STRUCTURE_SET_STORAGE, sop_uid)
    ds.SOPClassUID = RT_STRUCTURE_SET_STORAGE
    ds.SOPInstanceUID = sop_uid
    _patient_module(ds, patient, first.StudyInstanceUID, first.FrameOfReferenceUID)
    ds.Modality = "RTSTRUCT"
    ds.SeriesInstanceUID = _uid(seed, patient.patient_id, "rtstruct-series")
    ds.SeriesNumber = 2
    ds.InstanceNumber = 1
    ds.StructureSetLabel = "lesion"
    ds.StructureSetDate = dt.date(2026, 1, 1).strftime("%Y%m%d")
    ds.StructureSetTime = "120000"

    contour_images = []
    for sl in ct_slices:
        item = Dataset()
        item.ReferencedSOPClassUID = CT_IMAGE_STORAGE
        item.ReferencedSOPInstanceUID = sl.SOPInstanceUID
        contour_images.append(item)
    series_ref = Dataset()
    series_ref.SeriesInstanceUID = first.SeriesInstanceUID
    series_ref.ContourImageSequence = Sequence(contour_images)
    study_ref = Dataset()
    study_ref.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"
    study_ref.ReferencedSOPInstanceUID = first.StudyInstanceUID
    study_ref.RTReferencedSeriesSequence = Sequence([series_ref])
    frame_ref = Dataset()
    frame_ref.FrameOfReferenceUID = first.FrameOfReferenceUID
    frame_ref.RTReferencedStudySequence = Sequence([study_ref])
    ds.ReferencedFrameOfReferenceSequence = Sequence([frame_ref])

    roi = Dataset()
    roi.ROINumber = 1
    roi.ReferencedFrameOfReferenceUID = first.FrameOfReferenceUID
    roi.ROIName = roi_name
    roi.ROIGenerationAlgorithm = "MANUAL"
    ds.StructureSetROISequence = Sequence([roi])

    contour_items = []
    for k, points in sorted(patient.contours_mm.items()):
        image_ref = Dataset()
        image_ref.ReferencedSOPClassUID = CT_IMAGE_STORAGE
        image_ref.ReferencedSOPInstanceUID = ct_slices[k].SOPInstanceUID
        contour = Dataset()
        contour.ContourImageSequence = Sequence([image_ref])
        contour.ContourGeometricType = "CLOSED_PLANAR"
        contour.NumberOfContourPoints = len(points)
        contour.ContourData = [f"{v:.6g}" for v in points.ravel()]
        contour_items.append(contour)
    roi_contour = Dataset()
    roi_contour.ROIDisplayColor = [255, 0, 0]
    roi_contour.ReferencedROINumber = 1
    roi_contour.ContourSequence = Sequence(contour_items)
    ds.ROIContourSequence = Sequence([roi_contour])

    observation = Dataset()
    observation.ObservationNumber = 1
    observation.ReferencedROINumber = 1
    observation.RTROIInterpretedType = "GTV"
    observation.ROIInterpreter = ""
    ds.RTROIObservationsSequence = Sequence([observation])
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def shifted(patient: SyntheticPatient, shift_mm: tuple[float, float, float]) -> SyntheticPatient:
    """The same patient on a grid moved by ``shift_mm`` (the origin and every contour point), e.g. an MR acquired
    in its own frame of reference: the voxels, and so the rasterised lesion, are the same."""
    origin = tuple(float(o + d) for o, d in zip(patient.origin_mm, shift_mm, strict=True))
    contours = {k: points + np.asarray(shift_mm, dtype=float) for k, points in patient.contours_mm.items()}
    return replace(patient, origin_mm=origin, contours_mm=contours)


def write_mr_series(patient: SyntheticPatient, folder: Path, seed: int) -> list[Dataset]:
    """One axial MR slice per file (MR Image Storage, its own study, series and frame of reference from ``seed``):
    the patient's values shifted to non-negative signal, no rescale; returns the written datasets."""
    folder.mkdir(parents=True, exist_ok=True)
    study_uid = _uid(seed, patient.patient_id, "mr-study")
    series_uid = _uid(seed, patient.patient_id, "mr-series")
    frame_uid = _uid(seed, patient.patient_id, "mr-frame")
    stored = np.clip(np.rint(patient.hu - HU_INTERCEPT), 0, 4095).astype(np.uint16)
    written = []
    for k in range(stored.shape[0]):
        ds = _axial_slice(patient, k, MR_IMAGE_STORAGE, _uid(seed, patient.patient_id, "mr", k), study_uid, frame_uid)
        ds.Modality = "MR"
        ds.SeriesInstanceUID = series_uid
        ds.SeriesNumber = 3
        ds.SeriesDescription = "synthetic T1"
        _twelve_bit_pixels(ds, stored[k])
        ds.MagneticFieldStrength = 1.5
        ds.save_as(folder / f"MR_{k + 1:04d}.dcm", enforce_file_format=True)
        written.append(ds)
    return written


def add_roi(path: Path, name: str, contours_mm: list[np.ndarray], frame_uid: str | None = None) -> int:
    """Add an ROI of CLOSED_PLANAR ``contours_mm`` (none: an empty structure) to the RTSTRUCT at ``path``, on
    ``frame_uid`` (default the structure set's own); returns its ROI number."""
    ds = pydicom.dcmread(path)
    number = max(int(r.ROINumber) for r in ds.StructureSetROISequence) + 1
    roi = Dataset()
    roi.ROINumber = number
    roi.ReferencedFrameOfReferenceUID = frame_uid or ds.FrameOfReferenceUID
    roi.ROIName = name
    roi.ROIGenerationAlgorithm = "MANUAL"
    ds.StructureSetROISequence.append(roi)
    roi_contour = Dataset()
    roi_contour.ROIDisplayColor = [0, 255, 0]
    roi_contour.ReferencedROINumber = number
    items = []
    for points in contours_mm:
        contour = Dataset()
        contour.ContourGeometricType = "CLOSED_PLANAR"
        contour.NumberOfContourPoints = len(points)
        contour.ContourData = [f"{v:.6g}" for v in np.asarray(points).ravel()]
        items.append(contour)
    if items:
        roi_contour.ContourSequence = Sequence(items)
    ds.ROIContourSequence.append(roi_contour)
    observation = Dataset()
    observation.ObservationNumber = number
    observation.ReferencedROINumber = number
    observation.RTROIInterpretedType = "GTV"
    observation.ROIInterpreter = ""
    ds.RTROIObservationsSequence.append(observation)
    ds.save_as(path, enforce_file_format=True)
    return number


def cohort_labels(config: SynthConfig) -> list[int]:
    """Balanced, shuffled outcome labels (deterministic given the seed)."""
    labels = np.arange(config.n_patients) % 2
    np.random.default_rng(config.seed).shuffle(labels)
    return [int(v) for v in labels]


def write_patient(config: SynthConfig, index: int, label: int, inbox: Path) -> SyntheticPatient:
    patient = make_patient(config, index, label)
    folder = inbox / patient.patient_id
    ct = write_ct_series(patient, folder / "CT", config.seed)
    write_rtstruct(patient, ct, folder / "RTSTRUCT" / "RS.dcm", config.roi_name, config.seed)
    return patient


COHORT_STUDY = {"outcome": {"type": "binary", "column": "label", "positive": 1}}
"""``study.yaml`` of the cohort: ``label`` is binary, 1 (the lobulated, heterogeneous class) is the positive class."""


def write_cohort_study(config: SynthConfig, data_dir: Path) -> Path:
    """Write ``<data_dir>/study.yaml`` (:data:`COHORT_STUDY`, under a generated-by comment); returns its path."""
    path = Path(data_dir) / "study.yaml"
    header = f"# Generated by radiomics_assets.synth.write_cohort from {config!r}: label 1 is the positive class\n"
    path.write_text(header + yaml.safe_dump(COHORT_STUDY, sort_keys=False))
    return path


def write_cohort(config: SynthConfig, data_dir: Path) -> list[str]:
    """Write the cohort into ``<data_dir>/inbox``, ``<data_dir>/labels.csv`` (``patient_id,label``, 0/1) and
    ``<data_dir>/study.yaml`` (binary outcome ``label``, positive class 1); returns patient ids."""
    inbox = Path(data_dir) / "inbox"
    labels = cohort_labels(config)
    ids = [write_patient(config, i, label, inbox).patient_id for i, label in enumerate(labels)]
    with open(Path(data_dir) / "labels.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["patient_id", "label"])
        writer.writerows(zip(ids, labels, strict=True))
    write_cohort_study(config, data_dir)
    return ids
