"""Multi-frame CT/MR objects (one file, many frames) as the frames of a series, placed like single-frame slices.

Two kinds reach the inbox:
- **enhanced** objects (Enhanced CT/MR, Legacy Converted Enhanced CT/MR): each frame's ImagePositionPatient,
  ImageOrientationPatient, PixelSpacing and rescale come from its per-frame functional group, else from the shared
  one (DICOM PS3.3 C.7.6.16);
- **classic** multi-frame images (an MR Image object with NumberOfFrames > 1): one ImagePositionPatient for the
  first frame; frame k lies k x SpacingBetweenSlices along the slice normal (row x column direction cosines), the
  convention of GDCM and dcm2niix for such files. Without SpacingBetweenSlices the frames cannot be placed: the
  file is refused, never stacked on a guessed spacing.

The frames then pass the same checks as single-frame slices (one orientation, one in-plane geometry, even spacing,
no tilt; ``dicom_series``) and become the volume single-frame files of the same series give: origin at the first
frame along the normal, direction (row, column, normal), values rescaled in floating point per frame.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk

from radiomics_assets.errors import DicomInputError


@dataclass(frozen=True)
class Frame:
    """One frame of a multi-frame file (or one single-frame file), with what places and scales it."""

    name: str
    """``<file>`` or ``<file> frame <k>`` (1-based), as error messages name it."""
    path: Path
    index: int | None
    """0-based frame in the file, None for a single-frame file."""
    position: np.ndarray
    orientation: np.ndarray
    spacing: tuple[float, float]
    """PixelSpacing: (row spacing, column spacing) in mm."""
    slope: float
    intercept: float
    size: tuple[int, int] = (0, 0)
    """(Rows, Columns) of the file."""


def _group_value(groups: list, sequence: str, keyword: str):
    """``keyword`` in the first item of ``sequence`` of the first functional group that has it."""
    for group in groups:
        if group is not None and sequence in group and len(group[sequence].value) and keyword in group[sequence][0]:
            return group[sequence][0][keyword].value
    return None


def _numbers(value, count: int) -> list[float] | None:
    try:
        numbers = [float(v) for v in (value if isinstance(value, list | tuple | pydicom.multival.MultiValue) else [])]
    except (TypeError, ValueError):
        return None
    return numbers if len(numbers) == count and np.isfinite(numbers).all() else None


def frames_of(ds: pydicom.Dataset, path: Path) -> list[Frame]:
    """The frames of a multi-frame data set, each placed in patient coordinates; raises naming the file and the
    frame when a frame cannot be placed."""
    n = int(ds.get("NumberOfFrames", 1) or 1)
    shared = ds.SharedFunctionalGroupsSequence[0] if "SharedFunctionalGroupsSequence" in ds else None
    per_frame = list(ds.PerFrameFunctionalGroupsSequence) if "PerFrameFunctionalGroupsSequence" in ds else None
    frames = []
    if per_frame is not None or shared is not None:
        if per_frame is None or len(per_frame) != n:
            have = 0 if per_frame is None else len(per_frame)
            raise DicomInputError(f"{path}: {n} frames but {have} items in PerFrameFunctionalGroupsSequence")
        for k, group in enumerate(per_frame):
            groups = [group, shared]
            position = _numbers(_group_value(groups, "PlanePositionSequence", "ImagePositionPatient"), 3)
            orientation = _numbers(_group_value(groups, "PlaneOrientationSequence", "ImageOrientationPatient"), 6)
            spacing = _numbers(_group_value(groups, "PixelMeasuresSequence", "PixelSpacing"), 2)
            named = (("position", position), ("orientation", orientation), ("spacing", spacing))
            lacking = [name for name, value in named if value is None]
            if lacking:
                raise DicomInputError(
                    f"{path}: frame {k + 1} has no valid plane {', '.join(lacking)} in its functional groups"
                )
            slope = _group_value(groups, "PixelValueTransformationSequence", "RescaleSlope")
            intercept = _group_value(groups, "PixelValueTransformationSequence", "RescaleIntercept")
            frames.append(
                Frame(
                    f"{path} frame {k + 1}",
                    path,
                    k,
                    np.array(position),
                    np.array(orientation),
                    (spacing[0], spacing[1]),
                    float(slope if slope is not None else 1.0),
                    float(intercept if intercept is not None else 0.0),
                )
            )
        return _sized(frames, ds)
    position = _numbers(ds.get("ImagePositionPatient"), 3)
    orientation = _numbers(ds.get("ImageOrientationPatient"), 6)
    spacing = _numbers(ds.get("PixelSpacing"), 2)
    if position is None or orientation is None or spacing is None:
        raise DicomInputError(
            f"{path}: no functional groups and no valid ImagePositionPatient, ImageOrientationPatient or PixelSpacing"
        )
    step = ds.get("SpacingBetweenSlices")
    try:
        step = float(step)
    except (TypeError, ValueError):
        step = None
    if n > 1 and not step:
        raise DicomInputError(
            f"{path}: {n} frames in one file without per-frame positions or SpacingBetweenSlices: where each frame "
            "lies cannot be known; export the series as single-frame or enhanced images"
        )
    normal = np.cross(orientation[:3], orientation[3:])
    slope, intercept = float(ds.get("RescaleSlope", 1) or 1), float(ds.get("RescaleIntercept", 0) or 0)
    for k in range(n):
        where = np.array(position) + k * (step or 0.0) * normal
        frames.append(
            Frame(
                f"{path} frame {k + 1}",
                path,
                k,
                where,
                np.array(orientation),
                (spacing[0], spacing[1]),
                slope,
                intercept,
            )
        )
    return _sized(frames, ds)


def _sized(frames: list[Frame], ds: pydicom.Dataset) -> list[Frame]:
    size = (int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0))
    return [replace(frame, size=size) for frame in frames]


def frame_geometry_problem(ds: pydicom.Dataset) -> str | None:
    """Why the frames of a multi-frame data set (header without pixels) cannot be placed, or None."""
    try:
        frames_of(ds, Path(""))
    except DicomInputError as exc:
        return str(exc).removeprefix(f"{Path()}: ")
    except Exception as exc:  # any malformed value in the functional groups
        return f"malformed functional groups ({type(exc).__name__}: {exc})"
    return None


def read_frames_volume(paths: list[Path], order) -> sitk.Image:
    """The float32 volume of the frames of ``paths`` (multi-frame and single-frame files of one series).

    ``order(frames)`` checks the frames as slices and returns their names in position order (``dicom_series``)."""
    datasets, frames = {}, []
    for path in paths:
        try:
            ds = pydicom.dcmread(path)
        except Exception as exc:
            raise DicomInputError(f"{path}: unreadable DICOM ({type(exc).__name__}: {exc})") from exc
        datasets[path] = ds
        if int(ds.get("NumberOfFrames", 1) or 1) > 1 or "PerFrameFunctionalGroupsSequence" in ds:
            frames += frames_of(ds, path)
        else:
            frames += [
                Frame(
                    str(path),
                    path,
                    None,
                    np.array([float(v) for v in ds.ImagePositionPatient]),
                    np.array([float(v) for v in ds.ImageOrientationPatient]),
                    tuple(float(v) for v in ds.PixelSpacing),
                    float(ds.get("RescaleSlope", 1) or 1),
                    float(ds.get("RescaleIntercept", 0) or 0),
                    (int(ds.Rows), int(ds.Columns)),
                )
            ]
    by_name = {frame.name: frame for frame in frames}
    ordered = [by_name[name] for name in order(frames)]
    pixels = {}
    slices = []
    for frame in ordered:
        if frame.path not in pixels:
            try:
                pixels[frame.path] = datasets[frame.path].pixel_array
            except Exception as exc:
                raise DicomInputError(f"{frame.path}: pixel data unreadable ({type(exc).__name__}: {exc})") from exc
        array = pixels[frame.path]
        plane = array[frame.index] if frame.index is not None and array.ndim == 3 else array
        # rescaled in double and stored as float32, as ITK's series reader does for single-frame files
        slices.append((plane.astype(np.float64) * frame.slope + frame.intercept).astype(np.float32))
    image = sitk.GetImageFromArray(np.stack(slices))
    first = ordered[0]
    row, column = first.orientation[:3], first.orientation[3:]
    normal = np.cross(row, column)
    step = float((ordered[-1].position - first.position) @ normal) / (len(ordered) - 1) if len(ordered) > 1 else 1.0
    image.SetOrigin(tuple(float(v) for v in first.position))
    image.SetSpacing((first.spacing[1], first.spacing[0], step))
    image.SetDirection(tuple(float(v) for v in np.column_stack([row, column, normal]).ravel()))
    return image
