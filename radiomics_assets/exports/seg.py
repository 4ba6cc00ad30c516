"""Automated masks as DICOM Segmentations (BINARY) that reference the SOP instances of their source series.

Why the frames are placed by geometry: the stored mask is a volume on the grid of the stored image volume, whose
slice ``k`` was read from one DICOM file. Each source slice's ImagePositionPatient is mapped into the mask's grid;
it must land on the voxel (0, 0, k) of a distinct slice ``k``, otherwise the export fails naming the file (a mask
frame placed on the wrong slice would be a silently wrong SEG). highdicom then writes each non-empty mask slice as
a frame derived from exactly that source image, with its position, orientation and frame of reference.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk

from radiomics_assets.errors import DicomInputError

SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
ALGORITHM_NAME = "radiomics_assets automated segmentation"
INDEX_TOLERANCE = 0.01
"""Largest distance (in voxels) between a source slice's position and the grid point it is placed on."""

# CID 7162 "Algorithm Family": region growing looks at neighbouring voxels; (Otsu) thresholds use the histogram.
_FAMILY = {
    "threshold": "HistogramAnalysis",
    "otsu": "HistogramAnalysis",
    "connected_threshold": "NeighborhoodAnalysis",
    "confidence_connected": "NeighborhoodAnalysis",
}


@dataclass(frozen=True)
class Producer:
    """Who writes the exports: the equipment attributes every exported object carries."""

    manufacturer: str = "radiomics_assets"
    model_name: str = "radiomics_assets"
    software_version: str = "0.1.0"
    device_serial_number: str = "0"


def read_source_slices(paths: list[Path], grid: sitk.Image) -> list[pydicom.Dataset]:
    """The source series' datasets in the slice order of ``grid`` (the stored volume or a mask on it).

    Headers only (no pixel data): a SEG derives its frames from the source images' geometry and identifiers,
    not from their pixels. Fails naming the file when a slice does not lie on a distinct slice of the grid.
    """
    by_slice: dict[int, pydicom.Dataset] = {}
    depth = grid.GetSize()[2]
    for path in paths:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        try:
            position = [float(v) for v in ds.ImagePositionPatient]
        except (AttributeError, TypeError, ValueError):
            raise DicomInputError(f"{path}: no ImagePositionPatient, cannot place a SEG frame on it") from None
        index = np.array(grid.TransformPhysicalPointToContinuousIndex(position))
        k = int(round(index[2]))
        if np.abs(index - [0, 0, k]).max() > INDEX_TOLERANCE or not 0 <= k < depth:
            raise DicomInputError(
                f"{path}: slice position {position} mm lies at voxel index {index.round(3).tolist()} of the stored "
                f"volume, not on the first voxel of one of its {depth} slices; re-run the patient's studies"
            )
        if k in by_slice:
            raise DicomInputError(f"{path}: lies on slice {k}, as {by_slice[k].filename} does")
        by_slice[k] = ds
    if sorted(by_slice) != list(range(depth)):
        missing = sorted(set(range(depth)) - set(by_slice))
        raise DicomInputError(
            f"{paths[0].parent if paths else '?'}: the source series lacks the slices {missing} of the stored volume; "
            "re-run the patient's studies"
        )
    return [by_slice[k] for k in range(depth)]


def automated_segmentation(
    mask: sitk.Image,
    sources: list[pydicom.Dataset],
    *,
    roi: str,
    method: str,
    tracking_uid: str,
    series_uid: str,
    sop_uid: str,
    series_number: int,
    producer: Producer,
):
    """A BINARY highdicom ``Segmentation`` of one automated mask (``roi``) on its source slices.

    ``sources`` are in the mask's slice order (:func:`read_source_slices`); ``method`` is the segmentation method
    of the mask's ``source_kind`` (``auto:<method>``); ``tracking_uid`` identifies the ROI here and in the SR.
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes

    array = sitk.GetArrayFromImage(mask) > 0  # (slices, rows, columns), slice k on sources[k]
    if array.shape[0] != len(sources):
        raise DicomInputError(f"mask of ROI {roi!r} has {array.shape[0]} slices, its source series {len(sources)}")
    if not array.any():
        raise DicomInputError(f"mask of ROI {roi!r} is empty: nothing to export")
    family = getattr(codes.DCM, _FAMILY.get(method, "NeighborhoodAnalysis"))
    algorithm = hd.AlgorithmIdentificationSequence(
        name=ALGORITHM_NAME, family=family, version=producer.software_version, parameters={"method": method}
    )
    description = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label=roi,
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.Lesion,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm,
        tracking_uid=tracking_uid,
        tracking_id=roi,
    )
    return hd.seg.Segmentation(
        source_images=sources,
        pixel_array=array.astype(np.uint8),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[description],
        series_instance_uid=series_uid,
        series_number=series_number,
        sop_instance_uid=sop_uid,
        instance_number=1,
        manufacturer=producer.manufacturer,
        manufacturer_model_name=producer.model_name,
        software_versions=producer.software_version,
        device_serial_number=producer.device_serial_number,
        series_description=f"radiomics_assets {method} segmentation",
        content_label="AUTOSEG",
        content_description=f"automated segmentation ({method})",
    )
