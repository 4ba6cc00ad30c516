"""Pictures of what was measured: a mask's outline drawn over its image, as a small PNG.

Used by ``radiomics-assets predict`` (the PNG beside its output) and the report's gallery; plain bytes, so UI
metadata can embed them too. The picture is for a reader's eye only: grey levels are windowed to the image's
1st-99th percentiles and the picture is shrunk, nothing here feeds a feature.
"""

from __future__ import annotations

import io

import numpy as np
import SimpleITK as sitk

__all__ = ["mask_outline_png", "lesion_plane"]

OUTLINE_RGB = (255, 48, 48)


def lesion_plane(image: sitk.Image, mask: sitk.Image) -> tuple[np.ndarray, np.ndarray]:
    """The (grey, mask) 2D arrays (rows, columns) of the 2D image or of the slice holding most of the lesion."""
    pixels = sitk.GetArrayFromImage(image).astype(np.float32)
    lesion = sitk.GetArrayFromImage(mask) > 0
    if pixels.shape != lesion.shape:
        raise ValueError(f"image array {pixels.shape} and mask array {lesion.shape} differ")
    if pixels.ndim == 2:
        return pixels, lesion
    plane = int(np.argmax(lesion.reshape(lesion.shape[0], -1).sum(axis=1)))  # slice 0 if the mask is empty
    return pixels[plane], lesion[plane]


def _outline(lesion: np.ndarray, width_px: int) -> np.ndarray:
    """Pixels of ``lesion`` within ``width_px`` of its edge (a lesion pixel with a background 4-neighbour)."""
    edge = np.zeros_like(lesion)
    inside = lesion.copy()
    for _ in range(max(width_px, 1)):
        padded = np.pad(inside, 1, constant_values=False)
        core = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:] & inside
        edge |= inside & ~core
        inside = core
    return edge


def _shrink(grey: np.ndarray, step: int) -> np.ndarray:
    """Block means of ``step`` x ``step`` pixels (edge blocks padded by repetition): averaging, not dropping, pixels
    keeps the picture's look and removes the speckle that would make the PNG large."""
    rows, columns = -(-grey.shape[0] // step), -(-grey.shape[1] // step)
    padded = np.pad(grey, ((0, rows * step - grey.shape[0]), (0, columns * step - grey.shape[1])), mode="edge")
    return padded.reshape(rows, step, columns, step).mean(axis=(1, 3))


def mask_outline_png(image: sitk.Image, mask: sitk.Image, *, max_side_px: int = 192, grey_levels: int = 32) -> bytes:
    """PNG bytes (longest side at most ``max_side_px``) of the image in ``grey_levels`` greys with the mask's
    outline in red, as an indexed-colour PNG of a few kB.

    For a 3D volume the slice with the largest lesion area is drawn (voxel spacing ignored: rows and columns
    as stored).
    """
    from PIL import Image  # Pillow comes with matplotlib

    grey, lesion = lesion_plane(image, mask)
    step = max(1, int(np.ceil(max(grey.shape) / max_side_px)))
    low, high = np.percentile(grey, [1, 99]) if grey.size else (0.0, 1.0)
    scaled = _shrink(np.clip((grey - low) / max(float(high - low), 1e-6), 0.0, 1.0), step)
    index = np.rint(scaled * (grey_levels - 1)).astype(np.uint8)
    # the outline is found at full resolution, then drawn where any pixel of a shrunk block is on it
    edge = _shrink(_outline(lesion, width_px=step).astype(np.float32), step) > 0
    index[edge] = grey_levels
    palette = [round(255 * k / (grey_levels - 1)) for k in range(grey_levels) for _ in range(3)]
    picture = Image.fromarray(index, mode="P")
    picture.putpalette([*palette, *OUTLINE_RGB])
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()
