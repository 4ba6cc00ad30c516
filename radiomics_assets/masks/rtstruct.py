"""RTSTRUCT contours to voxel masks, by patient coordinates.

Why by coordinates: RTSTRUCTs in the wild often reference SOP instances that are not in the series, so
each contour point (mm) is mapped to a continuous voxel index of the image, and the voxel centres inside the
polygon are filled on that slice. A contour must lie on a slice (within a stated tolerance); on one slice, a contour
inside another is a hole (nested rings alternate). Contours of different planes are never combined.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk
from matplotlib.path import Path as Polygon
from pydicom.dataelem import RawDataElement

from radiomics_assets.errors import DicomInputError
from radiomics_assets.masks.pairing import SLICE_TOLERANCE
from radiomics_assets.masks.roi_names import name_matcher

CONTOUR_DATA = 0x30060050


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
    series_by_frame: dict[str, frozenset[str]] = field(default_factory=dict)
    """Referenced series UIDs listed under each ReferencedFrameOfReferenceSequence item's frame UID."""


def read_structure_set(path: Path) -> StructureSet:
    try:
        ds = pydicom.dcmread(path)
    except Exception as exc:
        raise DicomInputError(f"{path}: unreadable RTSTRUCT ({type(exc).__name__}: {exc})") from exc
    series_by_frame: dict[str, set[str]] = {}
    for frame in getattr(ds, "ReferencedFrameOfReferenceSequence", []):
        listed = series_by_frame.setdefault(str(getattr(frame, "FrameOfReferenceUID", "") or ""), set())
        for study in getattr(frame, "RTReferencedStudySequence", []):
            listed.update(str(series.SeriesInstanceUID) for series in getattr(study, "RTReferencedSeriesSequence", []))
    referenced = set().union(*series_by_frame.values())
    try:
        names = {
            int(r.ROINumber): (str(r.ROIName).strip(), str(getattr(r, "ReferencedFrameOfReferenceUID", "") or ""))
            for r in getattr(ds, "StructureSetROISequence", [])
        }
        numbers = [int(item.ReferencedROINumber) for item in getattr(ds, "ROIContourSequence", [])]
    except (AttributeError, TypeError, ValueError) as exc:
        raise DicomInputError(f"{path}: broken ROI numbering in the RTSTRUCT ({type(exc).__name__}: {exc})") from exc
    repeated = sorted({n for n in numbers if numbers.count(n) > 1})
    if repeated:
        # Two contour items for one ROI number: which outline is which structure cannot be told.
        raise DicomInputError(f"{path}: ROI number(s) {repeated} have several ROIContourSequence items")
    rois = []
    for number, roi_contour in zip(numbers, getattr(ds, "ROIContourSequence", []), strict=True):
        name, frame_uid = names.get(number, (f"ROI_{number}", ""))
        contours = []
        for place, contour in enumerate(getattr(roi_contour, "ContourSequence", []), start=1):
            if str(getattr(contour, "ContourGeometricType", "CLOSED_PLANAR")).upper() != "CLOSED_PLANAR":
                continue
            try:
                contours.append(_contour_points(contour))
            except (AttributeError, TypeError, ValueError) as exc:
                raise DicomInputError(
                    f"{path}: ROI {name!r} contour {place}: broken ContourData ({type(exc).__name__}: {exc}); "
                    "re-export the structure set"
                ) from exc
        rois.append(RoiContours(name=name, number=number, frame_of_reference_uid=frame_uid, contours_mm=contours))
    return StructureSet(
        path=Path(path),
        referenced_series_uids=frozenset(referenced),
        rois=rois,
        series_by_frame={uid: frozenset(listed) for uid, listed in series_by_frame.items()},
    )


def _contour_points(contour: pydicom.Dataset) -> np.ndarray:
    """ContourData as (N, 3) mm, parsed from the file's text in one go.

    pydicom makes one validated decimal-string object per number, 0.3 s for a patient's three structure sets.
    """
    element = contour.get_item(CONTOUR_DATA)
    if isinstance(element, RawDataElement) and element.value:
        try:  # trailing NUL or space padding is common (pydicom strips it too)
            points = np.array(element.value.rstrip(b"\x00 ").split(b"\\"), dtype=np.float64).reshape(-1, 3)
        except ValueError:  # anything unusual: pydicom's own parsing
            points = None
        if points is not None and np.isfinite(points).all() and len(points):
            return points
    values = np.asarray(contour.ContourData, dtype=float)
    if values.size % 3 or not values.size or not np.isfinite(values).all():
        raise ValueError(f"{values.size} numbers (finite: {bool(np.isfinite(values).all())}), need x, y, z triplets")
    return values.reshape(-1, 3)


def select_rois(structure_set: StructureSet, name_pattern: str) -> list[RoiContours]:
    """ROIs whose name fully matches the regular expression ``name_pattern`` (case-insensitive)."""
    matches = name_matcher(name_pattern)
    return [roi for roi in structure_set.rois if matches(roi.name)]


def rasterise(roi: RoiContours, image: sitk.Image, source: Path | str = "RTSTRUCT") -> sitk.Image:
    """Voxel mask (uint8, 1 inside) of ``roi`` on the grid of ``image``.

    Every contour must lie in one plane within ``SLICE_TOLERANCE`` slice spacings of a slice of the image (a
    contour drawn between two slices belongs to neither: rounding it onto one would put it on the wrong slice);
    otherwise :class:`DicomInputError` names the ROI, the contour (its 1-based place in the ROI's contour
    sequence) and its distance (mm). On each slice a contour inside another contour of the same slice is a
    hole, a contour inside a hole an island, and so on; contours side by side (or overlapping) add up.
    """
    size_x, size_y, size_z = image.GetSize()
    slice_spacing_mm = float(image.GetSpacing()[2])
    mask = np.zeros((size_z, size_y, size_x), dtype=bool)
    to_index = _physical_to_index(image)
    by_slice: dict[int, list[np.ndarray]] = {}
    for number, points in enumerate(roi.contours_mm, start=1):
        index = to_index(points)
        where = f"{source}: ROI {roi.name!r} contour {number}"
        if np.ptp(index[:, 2]) > 2 * SLICE_TOLERANCE:
            spread_mm = float(np.ptp(index[:, 2])) * slice_spacing_mm
            raise DicomInputError(f"{where} is not in one image plane (its points spread {spread_mm:.2f} mm)")
        k = int(round(float(np.median(index[:, 2]))))
        if not 0 <= k < size_z:
            raise DicomInputError(
                f"{source}: ROI {roi.name!r} has a contour at slice index {k}, outside the image (0..{size_z - 1})"
            )
        off_slice = float(np.abs(index[:, 2] - k).max())
        if off_slice > SLICE_TOLERANCE:
            raise DicomInputError(
                f"{where} lies {off_slice * slice_spacing_mm:.2f} mm from the nearest slice (index {k}), beyond "
                f"{SLICE_TOLERANCE:g} of the slice spacing ({SLICE_TOLERANCE * slice_spacing_mm:.2f} mm): it lies "
                "between slices, so it was drawn on another grid; export the contours on this series' slices"
            )
        by_slice.setdefault(k, []).append(index[:, :2])
    for k, contours in by_slice.items():
        mask[k] = _fill_plane(contours, (size_y, size_x))
    out = sitk.GetImageFromArray(mask.astype(np.uint8))
    out.CopyInformation(image)
    return out


def _fill_plane(contours: list[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """One slice's mask (rows, columns) from its contours ((x, y) continuous voxel indices), holes by containment.

    A contour lies inside another when most of its points are inside that one and its area is smaller (a hole
    may touch its outline at a point; two copies of one outline contain neither). A contour's depth is the number
    of contours it lies inside; contours are applied from the outermost in: an even depth adds its inside, an
    odd depth cuts it out. For nested rings that is the XOR of their insides (outline, hole, island, ...); for
    outlines that overlap or repeat, their union.
    """
    polygons = [Polygon(points) for points in contours]
    areas = [_polygon_area(points) for points in contours]

    def inside(inner: int, outer: int) -> bool:
        return areas[inner] < areas[outer] and polygons[outer].contains_points(contours[inner]).mean() > 0.5

    depth = [sum(inside(i, j) for j in range(len(contours)) if j != i) for i in range(len(contours))]
    size_y, size_x = shape
    plane = np.zeros(shape, dtype=bool)
    for i in sorted(range(len(contours)), key=lambda i: depth[i]):
        points = contours[i]
        # Only voxel centres within the contour's bounding box can be inside it: test those, not the slice.
        low = np.clip(np.floor(points.min(axis=0)).astype(int), 0, [size_x - 1, size_y - 1])
        high = np.clip(np.ceil(points.max(axis=0)).astype(int), 0, [size_x - 1, size_y - 1])
        yy, xx = np.mgrid[low[1] : high[1] + 1, low[0] : high[0] + 1]
        filled = polygons[i].contains_points(np.column_stack([xx.ravel(), yy.ravel()])).reshape(xx.shape)
        window = plane[low[1] : high[1] + 1, low[0] : high[0] + 1]
        if depth[i] % 2 == 0:
            window |= filled
        else:
            window &= ~filled
    return plane


def _polygon_area(points: np.ndarray) -> float:
    """Area enclosed by a closed polygon of (x, y) points (shoelace formula), in squared index units."""
    x, y = points[:, 0], points[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def _physical_to_index(image: sitk.Image):
    """``TransformPhysicalPointToContinuousIndex`` for many points: index = (direction x spacing)^-1 (point - origin).

    For axis-aligned images (direction diagonal, +-1) vectorised and summed term by term in ITK's order, which
    gives ITK's doubles; for oblique ones ITK's own per point, whose matrix inverse NumPy does not reproduce
    to the last bit (a voxel centre exactly on a contour edge could otherwise flip).
    """
    direction = np.array(image.GetDirection()).reshape(3, 3)
    if np.count_nonzero(direction - np.diag(np.diag(direction))):
        return lambda points_mm: np.array([image.TransformPhysicalPointToContinuousIndex(tuple(p)) for p in points_mm])
    matrix = np.linalg.inv(direction @ np.diag(image.GetSpacing()))
    origin = np.array(image.GetOrigin())

    def to_index(points_mm: np.ndarray) -> np.ndarray:
        offset = points_mm - origin
        return offset[:, 0:1] * matrix[:, 0] + offset[:, 1:2] * matrix[:, 1] + offset[:, 2:3] * matrix[:, 2]

    return to_index
