"""Small pictures for people: a mask's outline over the image, as PNG bytes an operator can glance at.

Used for the ``roi_masks`` metadata in the UI (one picture per series) and for the report's gallery. The PNG is
written with ``zlib`` alone (8-bit palette: grey levels plus the outline colours), so a picture costs a few kB
and no plotting library is imported in the workers.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence

import numpy as np
import SimpleITK as sitk

__all__ = ["OUTLINE_COLOURS", "lesion_slice_index", "mask_outline_png"]

GREY_LEVELS = 64
"""Grey levels of the picture: enough to see anatomy, few enough that noisy images compress to a few kB."""

OUTLINE_COLOURS = ((255, 40, 40), (40, 220, 255), (255, 220, 0), (80, 255, 80), (255, 60, 255))
"""Outline colour of the first, second, ... mask (cycled)."""

CONTEXT_FACTOR = 1.0
"""Margin around the lesion's bounding box on each side, as a multiple of its extent (at least 20 mm)."""

MIN_CONTEXT_MM = 20.0


def _planes(image: sitk.Image, masks: Sequence[sitk.Image], z: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """Slice ``z`` of the image (float, components averaged for RGB) and of each mask (bool), as (y, x) arrays.

    Only that slice is copied: a full-size CT is 100 MB as float32.
    """
    for mask in masks:
        if mask.GetSize() != image.GetSize():
            raise ValueError(f"mask of size {mask.GetSize()} is not on the image grid of size {image.GetSize()}")
    view = sitk.GetArrayViewFromImage(image)
    plane = view if image.GetDimension() == 2 else view[z]
    plane = plane.astype(np.float32)
    if image.GetNumberOfComponentsPerPixel() > 1:
        plane = plane.mean(axis=-1)
    planes = []
    for mask in masks:
        array = sitk.GetArrayViewFromImage(mask)
        planes.append((array if mask.GetDimension() == 2 else array[z]) != 0)
    return plane, planes


def lesion_slice_index(mask: sitk.Image | Sequence[sitk.Image]) -> int:
    """The z index (0-based, SimpleITK's third axis) of the middle slice among those the mask(s) cover.

    The median of the covered slice indices, so a lesion with a gap still gets a slice it covers. 0 for a 2D mask
    and for an empty one.
    """
    masks = [mask] if isinstance(mask, sitk.Image) else list(mask)
    if masks[0].GetDimension() == 2:
        return 0
    covered = np.zeros(masks[0].GetSize()[2], bool)
    for each in masks:
        view = sitk.GetArrayViewFromImage(each)
        covered |= view.reshape(view.shape[0], -1).any(axis=1)
    indices = np.flatnonzero(covered)
    return int(indices[len(indices) // 2]) if len(indices) else 0


def _crop_box(union: np.ndarray, spacing_xy: tuple[float, float]) -> tuple[slice, slice]:
    """Rows and columns around the lesion with some context, or the whole slice when the slice has no lesion."""
    if not union.any():
        return slice(None), slice(None)
    rows, columns = np.flatnonzero(union.any(axis=1)), np.flatnonzero(union.any(axis=0))
    box = []
    for (first, last), size, spacing in zip(
        ((rows[0], rows[-1]), (columns[0], columns[-1])), union.shape, (spacing_xy[1], spacing_xy[0]), strict=True
    ):
        margin = max(int(np.ceil(CONTEXT_FACTOR * (last - first + 1))), int(np.ceil(MIN_CONTEXT_MM / spacing)))
        box.append(slice(max(0, first - margin), min(size, last + margin + 1)))
    return box[0], box[1]


def _resize_nearest(array: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    rows = np.minimum((np.arange(shape[0]) + 0.5) * array.shape[0] / shape[0], array.shape[0] - 1).astype(int)
    columns = np.minimum((np.arange(shape[1]) + 0.5) * array.shape[1] / shape[1], array.shape[1] - 1).astype(int)
    return array[np.ix_(rows, columns)]


def _outline(mask: np.ndarray) -> np.ndarray:
    """Pixels of ``mask`` with a 4-neighbour outside it (one pixel wide, at display resolution)."""
    padded = np.pad(mask, 1)
    inner = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return mask & ~inner


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _palette_png(indices: np.ndarray, palette: np.ndarray) -> bytes:
    """An 8-bit palette PNG of ``indices`` (rows x columns, uint8) with ``palette`` (n x 3, uint8)."""
    height, width = indices.shape
    # Filter type 1 (Sub: each byte minus its left neighbour) lets zlib find the smooth runs of an image.
    rows = np.empty((height, width + 1), np.uint8)
    rows[:, 0] = 1
    rows[:, 1] = indices[:, 0]
    rows[:, 2:] = indices[:, 1:] - indices[:, :-1]
    header = struct.pack(">IIBBBBB", width, height, 8, 3, 0, 0, 0)
    return b"".join(
        [
            b"\x89PNG\r\n\x1a\n",
            _png_chunk(b"IHDR", header),
            _png_chunk(b"PLTE", palette.astype(np.uint8).tobytes()),
            _png_chunk(b"IDAT", zlib.compress(rows.tobytes(), 9)),
            _png_chunk(b"IEND", b""),
        ]
    )


LESION_WINDOW_MARGIN = 0.5
"""The window reaches this fraction of the lesion's own 1st-99th percentile range beyond it on each side, so the
lesion's edge against its surroundings stays visible."""


def grey_window(plane: np.ndarray, lesion: np.ndarray) -> tuple[float, float]:
    """(low, high) of the grey scale: the lesion's 1st to 99th percentile widened by :data:`LESION_WINDOW_MARGIN`,
    within the shown region's 1st to 99th percentile. A window over the whole region put a soft-tissue lesion
    between air and bone into a few grey levels (a CT lesion of 20-60 HU was one flat grey)."""
    if not plane.size:
        return 0.0, 1.0
    low, high = (float(v) for v in np.percentile(plane, [1, 99]))
    if lesion.sum() >= 4:
        inside_low, inside_high = (float(v) for v in np.percentile(plane[lesion], [1, 99]))
        margin = LESION_WINDOW_MARGIN * (inside_high - inside_low)
        low, high = max(low, inside_low - margin), min(high, inside_high + margin)
    return (low, high) if high > low else (low, low + 1.0)


def mask_outline_png(image: sitk.Image, mask: sitk.Image | Sequence[sitk.Image], *, size_px: int = 160) -> bytes:
    """PNG bytes of the mask outline(s) over the image's middle lesion slice (or the 2D image).

    ``mask`` is one mask or several on the image's grid (non-zero = inside); each gets its outline colour
    (:data:`OUTLINE_COLOURS`). The picture shows the lesion's bounding box with as much context again on each
    side (at least 20 mm), with square pixels in millimetres, its longer side ``size_px`` pixels. Grey levels are
    windowed by percentiles (:func:`grey_window`) on the lesion, so CT (HU), MR, PET (SUV) and ultrasound all show
    the lesion's texture, not only the air-to-bone range of its surroundings.
    """
    masks = [mask] if isinstance(mask, sitk.Image) else list(mask)
    if not masks:
        raise ValueError("no mask to draw")
    plane, planes = _planes(image, masks, lesion_slice_index(masks))
    spacing = image.GetSpacing()
    rows, columns = _crop_box(np.logical_or.reduce(planes), (spacing[0], spacing[1]))
    plane, planes = plane[rows, columns], [each[rows, columns] for each in planes]
    height_mm, width_mm = plane.shape[0] * spacing[1], plane.shape[1] * spacing[0]
    scale = size_px / max(height_mm, width_mm)
    shape = (max(1, round(height_mm * scale)), max(1, round(width_mm * scale)))

    low, high = grey_window(plane, np.logical_or.reduce(planes))
    grey = np.clip((plane - low) / (high - low if high > low else 1.0), 0, 1)
    indices = _resize_nearest(np.round(grey * (GREY_LEVELS - 1)).astype(np.uint8), shape)
    for number, each in enumerate(planes):
        indices[_outline(_resize_nearest(each, shape))] = GREY_LEVELS + number % len(OUTLINE_COLOURS)
    greys = np.linspace(0, 255, GREY_LEVELS).round()
    palette = np.vstack([np.repeat(greys[:, np.newaxis], 3, axis=1), np.array(OUTLINE_COLOURS)])
    return _palette_png(indices, palette)
