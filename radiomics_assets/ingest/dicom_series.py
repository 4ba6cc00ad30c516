"""Validate a DICOM series' slice geometry and read it as one volume.

A series becomes a volume only when its slices are consistent: one orientation, one in-plane geometry,
and slice positions (from ImagePositionPatient) that are evenly spaced with no gap or duplicate. Anything
else raises :class:`DicomInputError` naming the file and the problem, instead of producing a wrong volume.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk

from radiomics_assets.errors import DicomInputError
from radiomics_assets.ingest.dicom_headers import DicomFile


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
    geometry = _slice_geometry(files)
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
        step = float(np.median(steps))
        gaps = np.flatnonzero(np.abs(steps - step) > max(0.01 * step, 1e-3))
        if gaps.size:
            i = gaps[0]
            raise DicomInputError(
                f"{ordered[i + 1][0]}: slice spacing {steps[i]:.3f} mm after {ordered[i][0]} where the series has "
                f"{step:.3f} mm: a slice is missing or out of place"
            )
    return [g[0] for g in ordered]


def read_series(files: list[DicomFile]) -> sitk.Image:
    """Read a validated series as a float32 volume in stored units after rescale (HU for CT, SUV for PET)."""
    ordered = sorted_slice_files(files)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([str(p) for p in ordered])
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise DicomInputError(_first_unreadable_pixels(ordered) or f"{ordered[0].parent}: unreadable series") from exc
    return sitk.Cast(image, sitk.sitkFloat32)


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
        n_slices=len(files),
        size=tuple(int(v) for v in image.GetSize()),
        spacing_mm=tuple(float(v) for v in image.GetSpacing()),
        origin_mm=tuple(float(v) for v in image.GetOrigin()),
        first_file=min(f.path for f in files),
    )
