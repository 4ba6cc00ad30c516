"""Validate a DICOM series' slice geometry and read it as one volume.

A series becomes a volume only when its slices are consistent: one orientation, one in-plane geometry,
and slice positions (from ImagePositionPatient) that are evenly spaced with no gap or duplicate and that lie
along the slice normal (a gantry-tilted stack does not; it is refused, not resampled). Anything else raises
:class:`DicomInputError` naming the file and the problem, instead of producing a wrong volume.

Values are read in floating point with each slice's own RescaleSlope/RescaleIntercept, and PET is converted
to SUVbw (see :mod:`radiomics_assets.ingest.pet_suv`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk

from radiomics_assets.errors import DicomInputError
from radiomics_assets.ingest.dicom_headers import ENHANCED_MULTIFRAME_SOP_CLASSES, DicomFile
from radiomics_assets.ingest.pet_suv import suv_conversion

MAX_SIDEWAYS_DRIFT_PIXELS = 0.1
"""Largest in-plane drift of slice positions over the stack (in pixels) that is still stacked as is: below it no
voxel centre moves by more than a tenth of a pixel; above it the stack is gantry-tilted (or inconsistent)."""


@dataclass(frozen=True)
class SeriesInfo:
    series_uid: str
    study_uid: str
    modality: str
    frame_of_reference_uid: str
    n_slices: int
    size: tuple[int, int, int]
    spacing_mm: tuple[float, float, float]
    origin_mm: tuple[float, float, float]
    first_file: Path
    study_date: str = ""


def _slice_geometry(files: list[DicomFile]) -> list[tuple[Path, np.ndarray, np.ndarray, tuple]]:
    """(path, position, orientation, (rows, columns, spacing)) per slice, from the headers already read."""
    rows = []
    for file in files:
        numbers = {
            name: [float(v) for v in text.split("\\")] if text else []
            for name, text in (
                ("position", file.image_position),
                ("orientation", file.image_orientation),
                ("size", file.rows_columns),
                ("spacing", file.pixel_spacing),
            )
        }
        lacking = [
            name
            for name, count in (("position", 3), ("orientation", 6), ("size", 2), ("spacing", 2))
            if len(numbers[name]) != count
        ]
        if lacking:
            raise DicomInputError(f"{file.path}: missing image geometry (no valid {', '.join(lacking)})")
        in_plane = (*(int(v) for v in numbers["size"]), *(round(v, 4) for v in numbers["spacing"]))
        rows.append((file.path, np.array(numbers["position"]), np.array(numbers["orientation"]), in_plane))
    return rows


def sorted_slice_files(files: list[DicomFile]) -> list[Path]:
    """Slice files in position order, after checking orientation, in-plane geometry and slice spacing."""
    return _ordered(_slice_geometry(files))


def _frame_order(frames: list) -> list[str]:
    """Frame names (``multiframe.Frame``) in position order, after the same checks as single-frame slices."""
    geometry = [(f.name, f.position, f.orientation, (*f.size, *(round(v, 4) for v in f.spacing))) for f in frames]
    return _ordered(geometry)


def is_multiframe(file: DicomFile) -> bool:
    return file.sop_class_uid in ENHANCED_MULTIFRAME_SOP_CLASSES or file.frames not in ("", "1")


def _ordered(geometry: list[tuple]) -> list:
    """The first item of each geometry row (path or frame name) in position order, after checking orientation,
    in-plane geometry, slice spacing and tilt."""
    path0, _, orientation0, plane0 = geometry[0]
    for path, _, orientation, plane in geometry[1:]:
        if not np.allclose(orientation, orientation0, atol=1e-4):
            raise DicomInputError(f"{path}: orientation {orientation.tolist()} differs from {path0} in the same series")
        if plane != plane0:
            raise DicomInputError(f"{path}: rows/columns/pixel spacing {plane} differ from {path0} {plane0}")
    normal = np.cross(orientation0[:3], orientation0[3:])
    ordered = sorted(geometry, key=lambda g: float(g[1] @ normal))
    positions = np.array([float(g[1] @ normal) for g in ordered])
    if len(positions) > 1:
        steps = np.diff(positions)
        duplicate = np.flatnonzero(steps < 1e-3)
        if duplicate.size:
            i = duplicate[0]
            raise DicomInputError(
                f"{ordered[i + 1][0]}: duplicate slice at position {positions[i + 1]:.3f} mm (same as {ordered[i][0]})"
            )
        _check_not_tilted(ordered, normal, min(plane0[2:]))
        step = float(np.median(steps))
        gaps = np.flatnonzero(np.abs(steps - step) > max(0.01 * step, 1e-3))
        if gaps.size:
            i = gaps[0]
            raise DicomInputError(
                f"{ordered[i + 1][0]}: slice spacing {steps[i]:.3f} mm after {ordered[i][0]} where the series has "
                f"{step:.3f} mm: a slice is missing or out of place"
            )
    return [g[0] for g in ordered]


def _check_not_tilted(ordered: list[tuple], normal: np.ndarray, pixel_mm: float) -> None:
    """Refuse a stack whose slice positions move sideways (gantry tilt): stacked as axial it would get a wrong
    slice spacing and shear, and masks rasterised by patient coordinates would miss the voxels they name."""
    positions = np.array([g[1] for g in ordered])
    offsets = positions - positions[0]
    along = offsets @ normal
    sideways = np.linalg.norm(offsets - np.outer(along, normal), axis=1)
    drifting = np.flatnonzero(sideways > MAX_SIDEWAYS_DRIFT_PIXELS * pixel_mm)
    if drifting.size:
        i = int(drifting[0])
        tilt = float(np.degrees(np.arctan2(sideways[-1], abs(along[-1]))))
        raise DicomInputError(
            f"{ordered[i][0]}: slice position lies {sideways[i]:.3f} mm sideways of the slice normal through "
            f"{ordered[0][0]} ({along[i]:.3f} mm along it): a gantry tilt of {tilt:.2f} degrees (or inconsistent "
            "ImagePositionPatient). Tilted stacks are not resampled; reconstruct the series axially or resample it "
            "onto an axial grid (e.g. dcm2niix, which corrects gantry tilt) and ingest that"
        )


@dataclass(frozen=True)
class SeriesVolume:
    """A series read as a volume, with the units its values were exported in."""

    image: sitk.Image
    """float32, after each slice's rescale: HU for CT, SUVbw (g/ml) for PET, scanner units for MR."""
    units: str | None
    """Units of the exported values: PET Units (GML, BQML), ``HU`` for CT, None for MR."""
    suv_factor: float | None
    """PET only: factor from the exported values to SUVbw (1 for GML; the first slice's when DecayCorrection is
    NONE, whose factor differs per slice); None for other modalities."""


def read_series_volume(files: list[DicomFile]) -> SeriesVolume:
    """Read a validated series in floating point, each slice with its own rescale; PET is converted to SUVbw.

    Reading in float matters: ITK's series reader otherwise takes the pixel type from the first slice, and when
    that slice's RescaleSlope is 1 every other slice's values are truncated to integers.
    """
    if any(is_multiframe(f) for f in files):
        from radiomics_assets.ingest.multiframe import read_frames_volume

        image = read_frames_volume(sorted(f.path for f in files), _frame_order)
        return SeriesVolume(image, "HU" if files[0].modality == "CT" else None, None)
    ordered = sorted_slice_files(files)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([str(p) for p in ordered])
    reader.SetOutputPixelType(sitk.sitkFloat32)  # float32 holds int16 HU exactly and is what is stored
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise DicomInputError(_first_unreadable_pixels(ordered) or f"{ordered[0].parent}: unreadable series") from exc
    modality = files[0].modality
    if modality != "PT":
        return SeriesVolume(image, "HU" if modality == "CT" else None, None)
    # The SUV tags lie after the pixel spacing, where the inbox header read stops: read each slice's full header.
    conversion = suv_conversion([pydicom.dcmread(path, stop_before_pixels=True) for path in ordered])
    factors = np.asarray(conversion.factors)
    if np.any(factors != 1.0):
        suv = sitk.GetImageFromArray(sitk.GetArrayViewFromImage(image) * factors[:, None, None])
        suv.CopyInformation(image)
        image = suv
    return SeriesVolume(sitk.Cast(image, sitk.sitkFloat32), conversion.units, conversion.series_factor)


def read_series(files: list[DicomFile]) -> sitk.Image:
    """Read a validated series as a float32 volume after rescale (HU for CT, SUVbw for PET); see
    :func:`read_series_volume`."""
    return read_series_volume(files).image


def _first_unreadable_pixels(paths: list[Path]) -> str | None:
    """Name the slice whose pixel data is broken (ITK's own error does not say which file)."""
    for path in paths:
        try:
            _ = pydicom.dcmread(path).pixel_array  # decoding is the check
        except Exception as exc:
            return f"{path}: pixel data unreadable ({type(exc).__name__}: {exc})"
    return None


def describe_series(files: list[DicomFile], image: sitk.Image) -> SeriesInfo:
    first = files[0]
    return SeriesInfo(
        series_uid=first.series_uid,
        study_uid=first.study_uid,
        modality=first.modality,
        frame_of_reference_uid=first.frame_of_reference_uid,
        n_slices=int(image.GetSize()[2]) if any(is_multiframe(f) for f in files) else len(files),
        size=tuple(int(v) for v in image.GetSize()),
        spacing_mm=tuple(float(v) for v in image.GetSpacing()),
        origin_mm=tuple(float(v) for v in image.GetOrigin()),
        first_file=min(f.path for f in files),
        study_date=first.study_date,
    )
