"""DICOM-SEG (Segmentation Storage) to voxel masks, one per segment, on the grid of the segmented image series.

Why by position: a SEG stores only the frames that hold a segment (empty frames are usually omitted) in no
guaranteed order, so each frame is placed by its ImagePositionPatient on the image grid, after checking that
the SEG's orientation and pixel spacing are the image's. BINARY, FRACTIONAL (thresholded at half the maximum)
and LABELMAP segmentations are read; highdicom decodes the frames (bit-packed or compressed).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import highdicom as hd
import numpy as np
import SimpleITK as sitk

from radiomics_assets.dicom_series import DicomInputError

POSITION_TOLERANCE_VOXELS = 0.1
"""A frame whose position is further than this from a voxel centre of the image is not on its grid."""
GEOMETRY_TOLERANCE = 1e-3


@dataclass(frozen=True)
class Segment:
    number: int
    label: str


@dataclass(frozen=True)
class SegmentationFile:
    path: Path
    dataset: hd.seg.Segmentation
    referenced_series_uids: frozenset[str]
    frame_of_reference_uid: str
    segments: list[Segment]


def read_segmentation(path: Path) -> SegmentationFile:
    try:
        seg = hd.seg.segread(path)
    except Exception as exc:  # highdicom and pydicom raise many kinds of error on a broken or non-SEG file
        raise DicomInputError(f"{path}: unreadable DICOM-SEG ({type(exc).__name__}: {exc})") from exc
    referenced = {str(item.SeriesInstanceUID) for item in getattr(seg, "ReferencedSeriesSequence", [])}
    referenced |= {
        str(item.SeriesInstanceUID)
        for study in getattr(seg, "StudiesContainingOtherReferencedInstancesSequence", [])
        for item in getattr(study, "ReferencedSeriesSequence", [])
    }
    segments = [
        Segment(number=n, label=str(seg.get_segment_description(n).segment_label)) for n in seg.segment_numbers
    ]
    return SegmentationFile(
        path=Path(path),
        dataset=seg,
        referenced_series_uids=frozenset(referenced),
        frame_of_reference_uid=str(getattr(seg, "FrameOfReferenceUID", "")),
        segments=segments,
    )


def select_segments(segmentation: SegmentationFile, name_pattern: str) -> list[Segment]:
    """Segments whose label fully matches the regular expression ``name_pattern`` (case-insensitive)."""
    pattern = re.compile(name_pattern, re.IGNORECASE)
    return [s for s in segmentation.segments if pattern.fullmatch(s.label)]


def _functional_item(seg: hd.seg.Segmentation, frame: int, sequence: str, path: Path):
    """An item of a functional group sequence for one frame: per-frame if present, else shared."""
    per_frame = seg.PerFrameFunctionalGroupsSequence[frame] if "PerFrameFunctionalGroupsSequence" in seg else None
    shared = seg.SharedFunctionalGroupsSequence[0] if "SharedFunctionalGroupsSequence" in seg else None
    for group in (per_frame, shared):
        if group is not None and sequence in group:
            return group[sequence].value[0]
    raise DicomInputError(f"{path}: frame {frame + 1} has no {sequence} (cannot place it on the image)")


def _check_plane(seg: hd.seg.Segmentation, frame: int, image: sitk.Image, path: Path) -> None:
    orientation = np.array([float(v) for v in _functional_item(seg, frame, "PlaneOrientationSequence", path)
                            .ImageOrientationPatient])  # fmt: skip
    direction = np.array(image.GetDirection()).reshape(3, 3)
    if not np.allclose(orientation, np.concatenate([direction[:, 0], direction[:, 1]]), atol=GEOMETRY_TOLERANCE):
        raise DicomInputError(
            f"{path}: frame {frame + 1} orientation {orientation.round(4).tolist()} differs from its image series "
            f"({np.concatenate([direction[:, 0], direction[:, 1]]).round(4).tolist()})"
        )
    row_spacing, column_spacing = (float(v) for v in _functional_item(seg, frame, "PixelMeasuresSequence", path)
                                   .PixelSpacing)  # fmt: skip
    spacing = image.GetSpacing()
    if not np.allclose((column_spacing, row_spacing), spacing[:2], atol=GEOMETRY_TOLERANCE):
        raise DicomInputError(
            f"{path}: frame {frame + 1} pixel spacing ({column_spacing}, {row_spacing}) mm differs from its image "
            f"series ({spacing[0]}, {spacing[1]}) mm"
        )


def segment_masks(segmentation: SegmentationFile, segments: list[Segment], image: sitk.Image) -> dict[int, sitk.Image]:
    """Segment number -> binary uint8 mask on the grid of ``image`` (the SEG's referenced series)."""
    seg, path = segmentation.dataset, segmentation.path
    if "PerFrameFunctionalGroupsSequence" not in seg:
        raise DicomInputError(f"{path}: SEG without per-frame positions (TILED_FULL) is not supported for volumes")
    size_x, size_y, size_z = image.GetSize()
    wanted = {s.number for s in segments}
    masks = {n: np.zeros((size_z, size_y, size_x), dtype=bool) for n in wanted}
    kind = seg.segmentation_type
    labelmap = kind == hd.seg.SegmentationTypeValues.LABELMAP
    rows, columns = int(seg.Rows), int(seg.Columns)
    for frame in range(int(getattr(seg, "NumberOfFrames", 1))):
        if labelmap:
            numbers = wanted
        else:
            number = int(_functional_item(seg, frame, "SegmentIdentificationSequence", path).ReferencedSegmentNumber)
            if number not in wanted:
                continue
            numbers = {number}
        _check_plane(seg, frame, image, path)
        position = [float(v) for v in _functional_item(seg, frame, "PlanePositionSequence", path).ImagePositionPatient]
        index = np.array(image.TransformPhysicalPointToContinuousIndex(position))
        corner = np.rint(index).astype(int)
        if np.abs(index - corner).max() > POSITION_TOLERANCE_VOXELS:
            raise DicomInputError(
                f"{path}: frame {frame + 1} at {position} mm is not on the image grid (voxel index {index.round(3)})"
            )
        i, j, k = (int(v) for v in corner)
        if not (0 <= k < size_z and 0 <= i and i + columns <= size_x and 0 <= j and j + rows <= size_y):
            raise DicomInputError(
                f"{path}: frame {frame + 1} at {position} mm ({columns}x{rows} pixels from voxel {i, j, k}) lies "
                f"outside the image ({size_x}x{size_y}x{size_z})"
            )
        stored = seg.get_stored_frame(frame, as_index=True)
        for number in numbers:
            if labelmap:
                inside = stored == number
            elif kind == hd.seg.SegmentationTypeValues.FRACTIONAL:
                inside = stored >= 0.5 * float(seg.MaximumFractionalValue)
            else:
                inside = stored > 0
            masks[number][k, j : j + rows, i : i + columns] |= inside
    out = {}
    for number, array in masks.items():
        mask = sitk.GetImageFromArray(array.astype(np.uint8))
        mask.CopyInformation(image)
        out[number] = mask
    return out


def frame_corners_mm(segmentation: SegmentationFile, segments: list[Segment]) -> list[np.ndarray]:
    """Patient coordinates (mm) of the four corner pixel centres of each frame that holds one of ``segments``.

    One (4, 3) array per frame, for finding the image series a SEG lies on when its UIDs do not say which. A SEG
    without per-frame positions gives none (:func:`segment_masks` rejects it anyway).
    """
    seg, path = segmentation.dataset, segmentation.path
    if "PerFrameFunctionalGroupsSequence" not in seg:
        return []
    wanted = {s.number for s in segments}
    labelmap = seg.segmentation_type == hd.seg.SegmentationTypeValues.LABELMAP
    rows, columns = int(seg.Rows), int(seg.Columns)
    corners = []
    for frame in range(int(getattr(seg, "NumberOfFrames", 1))):
        if not labelmap:
            number = int(_functional_item(seg, frame, "SegmentIdentificationSequence", path).ReferencedSegmentNumber)
            if number not in wanted:
                continue
        item = _functional_item(seg, frame, "PlanePositionSequence", path)
        position = np.array([float(v) for v in item.ImagePositionPatient])
        item = _functional_item(seg, frame, "PlaneOrientationSequence", path)
        orientation = np.array([float(v) for v in item.ImageOrientationPatient])
        row_spacing, column_spacing = (float(v) for v in _functional_item(seg, frame, "PixelMeasuresSequence", path)
                                       .PixelSpacing)  # fmt: skip
        along_row = orientation[:3] * column_spacing * (columns - 1)  # to the frame's last column
        along_column = orientation[3:] * row_spacing * (rows - 1)  # to its last row
        corners.append(np.array([position, position + along_row, position + along_column,
                                 position + along_row + along_column]))  # fmt: skip
    return corners
