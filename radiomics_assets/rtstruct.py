"""RTSTRUCT contours to voxel masks, by patient coordinates.

Why by coordinates: RTSTRUCTs in the wild often reference SOP instances that are not in the series, so
each contour point (mm) is mapped to a continuous voxel index of the image, and the voxel centres inside the
polygon are filled on that slice. Several contours on one slice are combined with XOR, so an inner contour
cuts a hole.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk
from matplotlib.path import Path as Polygon

from radiomics_assets.dicom_series import DicomInputError


@dataclass(frozen=True)
class RoiContours:
    name: str
    number: int
    frame_of_reference_uid: str
    contours_mm: list[np.ndarray]  # each (N, 3): x, y, z in patient coordinates


@dataclass(frozen=True)
class StructureSet:
    path: Path
    referenced_series_uids: frozenset[str]
    rois: list[RoiContours]


def read_structure_set(path: Path) -> StructureSet:
    try:
        ds = pydicom.dcmread(path)
    except Exception as exc:
        raise DicomInputError(f"{path}: unreadable RTSTRUCT ({type(exc).__name__}: {exc})") from exc
    referenced = {
        str(series.SeriesInstanceUID)
        for frame in getattr(ds, "ReferencedFrameOfReferenceSequence", [])
        for study in getattr(frame, "RTReferencedStudySequence", [])
        for series in getattr(study, "RTReferencedSeriesSequence", [])
    }
    names = {int(r.ROINumber): (str(r.ROIName), str(getattr(r, "ReferencedFrameOfReferenceUID", "")))
             for r in getattr(ds, "StructureSetROISequence", [])}  # fmt: skip
    rois = []
    for roi_contour in getattr(ds, "ROIContourSequence", []):
        number = int(roi_contour.ReferencedROINumber)
        name, frame_uid = names.get(number, (f"ROI_{number}", ""))
        contours = [
            np.asarray(c.ContourData, dtype=float).reshape(-1, 3)
            for c in getattr(roi_contour, "ContourSequence", [])
            if str(getattr(c, "ContourGeometricType", "CLOSED_PLANAR")).upper() == "CLOSED_PLANAR"
        ]
        rois.append(RoiContours(name=name, number=number, frame_of_reference_uid=frame_uid, contours_mm=contours))
    return StructureSet(path=Path(path), referenced_series_uids=frozenset(referenced), rois=rois)


def select_rois(structure_set: StructureSet, name_pattern: str) -> list[RoiContours]:
    """ROIs whose name fully matches the regular expression ``name_pattern`` (case-insensitive)."""
    pattern = re.compile(name_pattern, re.IGNORECASE)
    return [roi for roi in structure_set.rois if pattern.fullmatch(roi.name)]


def rasterise(roi: RoiContours, image: sitk.Image, source: Path | str = "RTSTRUCT") -> sitk.Image:
    """Voxel mask (uint8, 1 inside) of ``roi`` on the grid of ``image``."""
    size_x, size_y, size_z = image.GetSize()
    mask = np.zeros((size_z, size_y, size_x), dtype=bool)
    yy, xx = np.mgrid[0:size_y, 0:size_x]
    centres = np.column_stack([xx.ravel(), yy.ravel()])
    for points in roi.contours_mm:
        index = np.array([image.TransformPhysicalPointToContinuousIndex(tuple(p)) for p in points])
        k = int(round(float(np.median(index[:, 2]))))
        if np.ptp(index[:, 2]) > 0.5:
            raise DicomInputError(f"{source}: ROI {roi.name!r} has a contour that is not in one image plane")
        if not 0 <= k < size_z:
            raise DicomInputError(
                f"{source}: ROI {roi.name!r} has a contour at slice index {k}, outside the image (0..{size_z - 1})"
            )
        inside = Polygon(index[:, :2]).contains_points(centres).reshape(size_y, size_x)
        mask[k] ^= inside
    out = sitk.GetImageFromArray(mask.astype(np.uint8))
    out.CopyInformation(image)
    return out
