"""Masks given as files beside their image: NIfTI/NRRD label volumes and PNG masks, on the image's grid."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from radiomics_assets.errors import FileInputError
from radiomics_assets.geometry import grid_mismatch
from radiomics_assets.ingest.file_pairs import MASK_NAME, FilePair, read_image_file, read_png_mask, split_suffix

log = logging.getLogger(__name__)

SPACING_TOLERANCE_MM = 1e-3


DIRECTION_TOLERANCE = 1e-4


def read_pair_masks(pair: FilePair, image: sitk.Image, resample_masks_to_image: bool = False) -> dict[str, sitk.Image]:
    """ROI name -> binary uint8 mask on the grid of ``image`` (as returned by :func:`read_pair_image`)."""
    if pair.kind == "png":
        merged = np.zeros(sitk.GetArrayViewFromImage(image).shape[1:], dtype=bool)
        for path in pair.masks:
            array = read_png_mask(path)
            if array.shape != merged.shape:
                raise FileInputError(
                    f"{path}: mask size {array.shape[::-1]} differs from its image {pair.image} {merged.shape[::-1]}"
                )
            merged |= array
        if not merged.any():
            raise FileInputError(f"{', '.join(map(str, pair.masks))}: empty mask (no lesion) for image {pair.image}")
        mask = sitk.GetImageFromArray(merged[None].astype(np.uint8))
        mask.CopyInformation(image)
        return {"mask": mask}
    out: dict[str, sitk.Image] = {}
    for path in pair.masks:
        out.update(_volume_mask_rois(pair, path, image, resample_masks_to_image))
    return out


PROBABILITY_THRESHOLD = 0.5
"""A probability map (values between 0 and 1, not only two) becomes the mask of values >= 0.5: the voxels more
likely lesion than not, the rule segmentation networks' own outputs are binarised by."""


def _label_map(path: Path, values: np.ndarray) -> np.ndarray:
    """The integer label map a mask file stands for.

    Only integer values are labels (each non-zero value one ROI). A float mask of two values, 0 and one other
    (0/1, 0/255, 0/0.5), is one binary mask whatever the other value. A float mask of more values, all within
    0..1, is a probability map: thresholded at ``PROBABILITY_THRESHOLD`` with a warning. Anything else (negative
    or fractional values above 1) is not a mask: it fails naming the file rather than being truncated to labels."""
    if np.issubdtype(values.dtype, np.integer):
        return values
    if not np.isfinite(values).all():
        raise FileInputError(f"{path}: mask holds NaN or infinite values")
    distinct = np.unique(values)
    if np.array_equal(distinct, np.rint(distinct)):
        return values.astype(np.int64)
    if len(distinct) <= 2 and distinct.min() == 0:
        return (values != 0).astype(np.uint8)
    if distinct.min() >= 0 and distinct.max() <= 1:
        kept = values >= PROBABILITY_THRESHOLD
        log.warning(
            "%s: float mask with %d distinct values in 0..1 read as a probability map: voxels >= %g are the ROI "
            "(%d of %d non-zero voxels)",
            path,
            len(distinct),
            PROBABILITY_THRESHOLD,
            int(kept.sum()),
            int((values > 0).sum()),
        )
        return kept.astype(np.uint8)
    raise FileInputError(
        f"{path}: mask holds non-integer values from {distinct.min():g} to {distinct.max():g} ({len(distinct)} "
        "distinct): not a label map (integers), a binary mask (0 and one value) or a probability map (0..1)"
    )


def mask_file_roi(path: Path) -> str:
    """ROI name (or prefix) of a volume mask file: ``mask`` for ``<id>_mask``, else the part after ``_mask_``."""
    split = split_suffix(path)
    match = MASK_NAME.match(split[0]) if split else None
    name = match.group("name") if match else None
    if not name:
        return "mask"
    return f"mask_{name}" if name.isdigit() else name


def _volume_mask_rois(pair: FilePair, path: Path, image: sitk.Image, resample_masks_to_image: bool):
    base = mask_file_roi(path)
    mask = read_image_file(path, "mask")
    if mask.GetNumberOfComponentsPerPixel() > 1:
        raise FileInputError(f"{path}: multi-component mask, expected a label image")
    if mask.GetDimension() == 2:
        mask = sitk.JoinSeries(mask)
    mismatch = grid_mismatch(
        image, mask, position_tolerance_mm=SPACING_TOLERANCE_MM, direction_tolerance=DIRECTION_TOLERANCE
    )
    if mismatch:
        if not resample_masks_to_image:
            raise FileInputError(
                f"{path}: mask geometry differs from image {pair.image} ({mismatch}); fix the files or set "
                "resample_masks_to_image to resample the mask (nearest neighbour)"
            )
        log.warning("resampling mask %s onto the grid of %s (nearest neighbour): %s", path, pair.image, mismatch)
        mask = sitk.Resample(mask, image, sitk.Transform(), sitk.sitkNearestNeighbor, 0, mask.GetPixelID())
    labels = _label_map(path, sitk.GetArrayFromImage(mask))
    values = sorted(int(v) for v in np.unique(labels) if v != 0)
    if not values:
        raise FileInputError(f"{path}: empty mask (no non-zero voxel) for image {pair.image}")
    out = {}
    for value in values:
        roi = sitk.GetImageFromArray((labels == value).astype(np.uint8))
        roi.CopyInformation(image)
        if len(values) == 1:
            out[base] = roi
        else:
            out[f"label_{value}" if base == "mask" else f"{base}_label_{value}"] = roi
    return out
