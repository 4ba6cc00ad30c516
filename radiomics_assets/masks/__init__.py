"""Masks: from RTSTRUCT, DICOM-SEG, mask files or automated segmentation to voxel masks (the ``roi_masks`` step).

``pairing`` decides which image series an RTSTRUCT or SEG belongs to, ``rtstruct`` rasterises contours by patient
coordinates, ``dicom_seg`` places SEG frames on the image grid, ``file_masks`` reads label files beside an image,
``autoseg`` segments a series that came without a mask (``ultrasound``: 2D images from a seed), and ``build``
makes a patient's ``masks`` rows.
"""

from radiomics_assets.masks.autoseg import (
    AutoSegmentation,
    Seed,
    maskless_images_accepted,
    read_seeds,
    segment_lesion,
)
from radiomics_assets.masks.build import MaskOptions, build_masks
from radiomics_assets.masks.dicom_seg import read_segmentation, segment_masks
from radiomics_assets.masks.file_masks import read_pair_masks
from radiomics_assets.masks.pairing import image_series_for
from radiomics_assets.masks.rtstruct import RoiContours, StructureSet, rasterise, read_structure_set, select_rois
from radiomics_assets.masks.ultrasound import segment_ultrasound

__all__ = [
    "AutoSegmentation",
    "MaskOptions",
    "RoiContours",
    "Seed",
    "StructureSet",
    "build_masks",
    "image_series_for",
    "maskless_images_accepted",
    "rasterise",
    "read_pair_masks",
    "read_seeds",
    "read_segmentation",
    "read_structure_set",
    "segment_lesion",
    "segment_masks",
    "segment_ultrasound",
    "select_rois",
]
