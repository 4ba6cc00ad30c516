"""DICOM-SEG (Segmentation Storage) to voxel masks, one per segment, on the grid of the segmented image series.

Why by position: a SEG stores only the frames that hold a segment (empty frames are usually omitted) in no
guaranteed order, so its frames are placed by their positions: highdicom builds the segments' volume and matches
it to the image's geometry without resampling. BINARY, FRACTIONAL (thresholded at half the maximum) and LABELMAP
segmentations are read.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import SimpleITK as sitk

from radiomics_assets.errors import DicomInputError
from radiomics_assets.masks.roi_names import name_matcher

if TYPE_CHECKING:  # imported where used: highdicom takes 0.2 s to import, and most patients have no SEG
    import highdicom as hd


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
    import highdicom as hd

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
    segments = [Segment(number=n, label=str(seg.get_segment_description(n).segment_label)) for n in seg.segment_numbers]
    return SegmentationFile(
        path=Path(path),
        dataset=seg,
        referenced_series_uids=frozenset(referenced),
        frame_of_reference_uid=str(getattr(seg, "FrameOfReferenceUID", "")),
        segments=segments,
    )


def select_segments(segmentation: SegmentationFile, name_pattern: str) -> list[Segment]:
    """Segments whose label fully matches the regular expression ``name_pattern`` (case-insensitive)."""
    matches = name_matcher(name_pattern)
    return [s for s in segmentation.segments if matches(s.label)]


def _functional_item(seg: hd.seg.Segmentation, frame: int, sequence: str, path: Path):
    """An item of a functional group sequence for one frame: per-frame if present, else shared."""
    per_frame = seg.PerFrameFunctionalGroupsSequence[frame] if "PerFrameFunctionalGroupsSequence" in seg else None
    shared = seg.SharedFunctionalGroupsSequence[0] if "SharedFunctionalGroupsSequence" in seg else None
    for group in (per_frame, shared):
        if group is not None and sequence in group:
            return group[sequence].value[0]
    raise DicomInputError(f"{path}: frame {frame + 1} has no {sequence} (cannot place it on the image)")


def segment_masks(segmentation: SegmentationFile, segments: list[Segment], image: sitk.Image) -> dict[int, sitk.Image]:
    """Segment number -> binary uint8 mask on the grid of ``image`` (the SEG's referenced series).

    highdicom builds the segments' volume from the frames' positions and matches it to the image's geometry
    (axes, flips, padding and cropping, never resampling); a SEG that is not on the image grid is refused.
    """
    import highdicom as hd

    seg, path = segmentation.dataset, segmentation.path
    if "PerFrameFunctionalGroupsSequence" not in seg:
        raise DicomInputError(f"{path}: SEG without per-frame positions (TILED_FULL) is not supported for volumes")
    numbers = [s.number for s in segments]
    try:
        volume = seg.get_volume(segment_numbers=numbers, combine_segments=False, rescale_fractional=True)
        volume = volume.match_geometry(hd.Volume.from_simpleitk(image).get_geometry())
    except (RuntimeError, ValueError) as exc:
        raise DicomInputError(f"{path}: its frames do not lie on the grid of the image series ({exc})") from exc
    fractional = seg.segmentation_type == hd.seg.SegmentationTypeValues.FRACTIONAL
    out = {}
    for index, number in enumerate(numbers):
        channel = volume.with_array(volume.array[..., index]) if volume.array.ndim == 4 else volume
        values = channel.to_simpleitk()
        # Fractional values are rescaled to 0..1: thresholded at half the maximum. Binary and labelmap: > 0.
        mask = sitk.Cast(values >= 0.5 if fractional else values > 0, sitk.sitkUInt8)
        mask.CopyInformation(image)  # same grid (match_geometry); exact image metadata
        out[number] = mask
    return out


def frame_corners_mm(segmentation: SegmentationFile, segments: list[Segment]) -> list[np.ndarray]:
    """Patient coordinates (mm) of the four corner pixel centres of each frame that holds one of ``segments``.

    One (4, 3) array per frame, for finding the image series a SEG lies on when its UIDs do not say which. A SEG
    without per-frame positions gives none (:func:`segment_masks` rejects it anyway).
    """
    import highdicom as hd

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
        row_spacing, column_spacing = (
            float(v) for v in _functional_item(seg, frame, "PixelMeasuresSequence", path).PixelSpacing
        )
        along_row = orientation[:3] * column_spacing * (columns - 1)  # to the frame's last column
        along_column = orientation[3:] * row_spacing * (rows - 1)  # to its last row
        corners.append(
            np.array([position, position + along_row, position + along_column, position + along_row + along_column])
        )
    return corners
