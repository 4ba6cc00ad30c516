"""Semi-automatic segmentation of a lesion in a 2D ultrasound image from one seed point (the "click in the lesion").

Method (SimpleITK), chosen by measuring it against the ground-truth masks of the BUSI sample
(``benchmarks/bench_ultrasound_seg.py``, README "Ultrasound"):

1. speckle reduction: a median filter (radius ``MEDIAN_RADIUS_PX``), which removes speckle without blurring
   the lesion edge as much as a Gaussian would;
2. edge maps: gradient magnitude of a Gaussian, at each of ``GRADIENT_SIGMAS_PX``;
3. marker-controlled watersheds on each edge map, one per marker pair: the lesion marker is a disc at the seed
   (radii ``SEED_MARKER_RADII_PX``), the background marker the image border, or the border plus everything
   beyond a ring around the seed (``BACKGROUND_RING_FRACTIONS`` of the shorter image side);
4. holes filled, and the connected component holding the seed kept, for every candidate;
5. the candidate chosen by its boundary contrast, without any ground truth: breast lesions are hypoechoic, so the
   right region is darker than the band just outside it (``SURROUND_WIDTH_PX``); the criterion is (mean of the
   band - mean of the region) / their pooled standard deviation, on the median-filtered image. A candidate that
   did not grow past its marker (``MIN_GROWTH``) is only taken when no other is left;
6. the chosen region dilated by ``OUTLINE_MARGIN_PX``, from the steepest edge out to the margin's outer edge.

Why several candidates: with one small marker and the border as background (the first version, median Dice 0.82, 8
of 40 BUSI images below 0.5), the misses had these causes, seen on overlays. (a) The marker sat on a local gradient
peak inside the lesion (speckle, the caliper cross or dotted line burnt into the image): the background flooded the
lesion first and the mask was the 7 x 7 px marker alone or little more (4 images). (b) The lesion boundary was weak
on one side (iso-echoic or equally dark tissue next to it): the region leaked into the tissue (3 images). (c) A
large heterogeneous lesion: the region stopped at an inner edge (1 image). A larger marker fixes (a), a background
ring fixes (b); which of them fits an image shows in the contrast of the result: a leaked region takes in bright
tissue or has dark tissue in its surround, a stuck marker has lesion (or a bright caliper) on both sides of its
edge. (c) remains: the two worst images left (Dice 0.52 and 0.53). Posterior acoustic shadowing, dark like the
lesion, was not among the causes and is not treated specially.

The method is deterministic and the parameters are fixed for every image. They are in pixels, not mm: they were
set on BUSI images whose pixel spacing is unknown, so an image of a very different resolution may want other values.
The candidate set and the outline margin were chosen on the same 40 BUSI images they are measured on (no separate
tuning set).

Measured on the 40 benign/malignant BUSI sample images, seeds at the maximum of the ground truth's distance
transform: median Dice 0.85 (quartiles 0.80-0.92), none of 40 below 0.5 (0.86 and 2 below 0.5 without the
outline margin). Confidence-connected region growing after
the same filter gave 0.61, the single watershed after anisotropic diffusion instead of the median 0.69 (README
"Ultrasound").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from radiomics_assets.errors import DicomInputError

MEDIAN_RADIUS_PX = 3
"""Median filter radius (pixels) against speckle."""
GRADIENT_SIGMAS_PX = (2.0, 4.0)
"""Gaussian sigmas (pixels) of the gradient magnitude that the watershed follows: 2 px keeps sharp edges, 4 px
bridges a boundary that speckle breaks up."""
SEED_MARKER_RADII_PX = (3, 8, 15)
"""Radii (pixels) of the disc-shaped lesion marker at the seed. A small disc can sit on a local gradient peak
(speckle, a caliper cross, an inner septum): the background then floods the whole lesion before the marker grows
and the mask is the marker alone; a larger disc starts past such peaks but cannot give a lesion smaller than it."""
BACKGROUND_RING_FRACTIONS = (0.15, 0.25, 0.35)
"""Radii of the extra background rings, as fractions of the image's shorter side. With the image border as the
only background marker a lesion whose boundary is weak somewhere leaks into the tissue around it; a ring
centred on the seed stops the leak at that distance (the contrast criterion rejects a ring that cuts the lesion)."""
RING_MARKER_RADIUS_PX = 8
"""Lesion marker radius (pixels) of the ring candidates."""
SURROUND_WIDTH_PX = 10
"""Width (pixels) of the band just outside a candidate region whose grey levels the region is compared with."""
MIN_GROWTH = 2.0
"""A candidate must cover at least this multiple of its marker's area: one that did not grow past its marker
found no boundary of its own."""
OUTLINE_MARGIN_PX = 4
"""Radius (pixels) by which the chosen region is dilated. The watershed stops on the steepest grey-level change,
inside the lesion margin; the outlines drawn by radiologists (BUSI ground truth) follow the margin's outer edge,
including the brighter rim of many malignant lesions. On the 40 BUSI sample images the chosen regions had a median
area of 0.77 of the ground truth (benign 0.90, malignant 0.70), which biases the intensity and shape features
(mean grey 0.83 of the ground truth's); 4 px is the smallest margin that brings the median area ratio to 1 (0.99)."""
LESION, BACKGROUND = 1, 2


def segment_ultrasound(image: sitk.Image, seed_index: tuple[int, int, int], source: str) -> sitk.Image:
    """Binary uint8 lesion mask on the grid of ``image`` (a one-slice 3D volume or a 2D image).

    ``seed_index`` is the (column, row, slice) voxel index of a point inside the lesion; ``source`` names the image
    in messages. Raises DicomInputError for a volume of more than one slice or a seed outside the image.
    """
    if image.GetDimension() == 3 and image.GetSize()[2] != 1:
        raise DicomInputError(
            f"{source}: ultrasound segmentation works on 2D images; this series has {image.GetSize()[2]} slices "
            "(choose another auto_segmentation method for 3D series)"
        )
    pixels = sitk.GetArrayFromImage(image).astype(np.float32).reshape(image.GetSize()[1], image.GetSize()[0])
    column, row = int(seed_index[0]), int(seed_index[1])
    if not (0 <= row < pixels.shape[0] and 0 <= column < pixels.shape[1]):
        raise DicomInputError(f"{source}: seed column {column}, row {row} lies outside the {pixels.shape} image")
    lesion = segment_ultrasound_array(pixels, (row, column))
    mask = sitk.GetImageFromArray(lesion.astype(np.uint8).reshape(sitk.GetArrayViewFromImage(image).shape))
    mask.CopyInformation(image)
    return mask


@dataclass(frozen=True)
class Candidate:
    """One watershed result: its region and how well it stands out as a hypoechoic lesion."""

    region: np.ndarray
    contrast: float
    grew: bool


def segment_ultrasound_array(pixels: np.ndarray, seed_row_column: tuple[int, int]) -> np.ndarray:
    """Boolean lesion mask of a 2D grey-level array (rows, columns) from a seed (row, column) inside the lesion.

    Works in pixel units (the spacing is set to 1), so the parameters mean the same on every image.
    """
    candidates = ultrasound_candidates(pixels, seed_row_column)
    grown = [c for c in candidates if c.grew] or candidates
    chosen = max(grown, key=lambda c: c.contrast).region  # max keeps the first of equals: deterministic
    if not chosen.any():
        return chosen
    outline = sitk.BinaryDilate(
        sitk.GetImageFromArray(chosen.astype(np.uint8)), [OUTLINE_MARGIN_PX] * 2, sitk.sitkBall, 0, 1
    )
    return sitk.GetArrayFromImage(outline) > 0


def ultrasound_candidates(pixels: np.ndarray, seed_row_column: tuple[int, int]) -> list[Candidate]:
    """Every (edge scale, marker pair) watershed region of the method, in a fixed order."""
    plane = sitk.GetImageFromArray(np.asarray(pixels, dtype=np.float32))
    smooth = sitk.Median(plane, [MEDIAN_RADIUS_PX] * 2)
    smooth_pixels = sitk.GetArrayFromImage(smooth)
    row, column = seed_row_column
    rows, columns = np.ogrid[: pixels.shape[0], : pixels.shape[1]]
    distance = np.hypot(rows - row, columns - column)
    marker_pairs = [(radius, None) for radius in SEED_MARKER_RADII_PX] + [
        (RING_MARKER_RADIUS_PX, fraction * min(pixels.shape)) for fraction in BACKGROUND_RING_FRACTIONS
    ]
    marker_images = []  # the same markers serve every edge scale
    for marker_radius, ring_radius in marker_pairs:
        markers = np.zeros(pixels.shape, dtype=np.uint32)
        markers[0, :] = markers[-1, :] = markers[:, 0] = markers[:, -1] = BACKGROUND
        if ring_radius is not None:
            markers[distance >= ring_radius] = BACKGROUND
        seed_disc = distance <= marker_radius
        markers[seed_disc] = LESION  # a seed near the border wins over the background marker there
        marker_images.append((markers, int(seed_disc.sum())))
    candidates = []
    for sigma in GRADIENT_SIGMAS_PX:
        edges = sitk.GradientMagnitudeRecursiveGaussian(smooth, sigma)
        for markers, seed_area in marker_images:
            region = _watershed_region(edges, markers, (row, column))
            contrast = _surround_contrast(region, smooth_pixels)
            candidates.append(Candidate(region, contrast, region.sum() >= MIN_GROWTH * seed_area))
    return candidates


def _watershed_region(edges: sitk.Image, markers: np.ndarray, seed_row_column: tuple[int, int]) -> np.ndarray:
    regions = sitk.MorphologicalWatershedFromMarkers(
        edges, sitk.GetImageFromArray(markers), markWatershedLine=False, fullyConnected=False
    )
    lesion = sitk.BinaryFillhole(sitk.Cast(regions == LESION, sitk.sitkUInt8), fullyConnected=False, foregroundValue=1)
    components = sitk.GetArrayFromImage(sitk.ConnectedComponent(lesion))
    keep = components[seed_row_column]
    if keep == 0:
        return np.zeros(markers.shape, dtype=bool)
    return components == keep


def _surround_contrast(region: np.ndarray, smooth_pixels: np.ndarray) -> float:
    """(mean of the band outside the region - mean inside) / pooled standard deviation; -inf for an empty region
    or one without a surround (it fills the image)."""
    if not region.any():
        return -np.inf
    grown = sitk.BinaryDilate(
        sitk.GetImageFromArray(region.astype(np.uint8)), [SURROUND_WIDTH_PX] * 2, sitk.sitkBall, 0, 1
    )
    band = (sitk.GetArrayFromImage(grown) > 0) & ~region
    if not band.any():
        return -np.inf
    inside, outside = smooth_pixels[region], smooth_pixels[band]
    spread = np.sqrt(0.5 * (inside.var() + outside.var()))
    return float((outside.mean() - inside.mean()) / max(spread, 1e-6))
