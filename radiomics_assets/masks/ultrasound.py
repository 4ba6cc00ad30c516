"""Semi-automatic segmentation of a lesion in a 2D ultrasound image from one seed point (the "click in the lesion").

Method (SimpleITK), chosen by measuring it against the ground-truth masks of the BUSI sample
(``benchmarks/bench_ultrasound_seg.py``, docs/tutorials/ultrasound.md):

1. speckle reduction: a median filter (radius ``MEDIAN_RADIUS_PX``), which removes speckle without blurring
   the lesion edge as much as a Gaussian would;
2. edge maps: gradient magnitude of a Gaussian, at each of ``GRADIENT_SIGMAS_PX``, rescaled to 65,536 levels;
3. marker-controlled watersheds on each edge map, one per marker pair: the lesion marker is a disc at the seed
   (radii ``SEED_MARKER_RADII_PX``), the background marker the image border, or the border plus everything
   beyond a ring around the seed (``BACKGROUND_RING_FRACTIONS`` of the shorter image side);
4. holes filled, and the connected component holding the seed kept, for every candidate;
5. the candidate chosen without any ground truth, by its boundary contrast plus ``AGREEMENT_WEIGHT`` times its
   agreement with the other candidates. Breast lesions are hypoechoic, so the right region is darker than the
   band just outside it (``SURROUND_WIDTH_PX``); the contrast is (mean of the band - mean of the region) / their
   pooled standard deviation, on the median-filtered image. The agreement is the median Dice between the region
   and every other candidate: a leak or a stuck marker is usually an outlier. Only candidates darker than their
   surround (positive contrast) compete while there are any; one that did not grow past its marker (``MIN_GROWTH``)
   is only taken when no other is left;
6. when the click lies off-centre in that choice (``RESEED_BELOW_CENTRALITY``), steps 3-5 again from two points
   nearer the lesion's centre, choosing among all the candidates;
7. the chosen region dilated by ``OUTLINE_MARGIN_PX``, from the steepest edge out to the margin's outer edge.

Why several candidates: with one small marker and the border as background (the first version, median Dice 0.82, 8
of 40 BUSI images below 0.5), the misses had these causes, seen on overlays. (a) The marker sat on a local gradient
peak inside the lesion (speckle, the caliper cross or dotted line burnt into the image): the background flooded the
lesion first and the mask was the 7 x 7 px marker alone or little more (4 images). (b) The lesion boundary was weak
on one side (iso-echoic or equally dark tissue next to it): the region leaked into the tissue (3 images). (c) A
large heterogeneous lesion: the region stopped at an inner edge (1 image). A larger marker fixes (a), a background
ring fixes (b); which of them fits an image shows in the contrast of the result: a leaked region takes in bright
tissue or has dark tissue in its surround, a stuck marker has lesion (or a bright caliper) on both sides of its
edge. (c) remains: the two worst images left (Dice 0.52 and 0.53 then, 0.49 and 0.50 now). Posterior acoustic
shadowing, dark like the lesion, was not among the causes and is not treated specially.

The method is deterministic and the parameters are fixed for every image. They are in pixels, not mm: they were
set on BUSI images whose pixel spacing is unknown, so an image of a very different resolution may want other values.
The candidate set and the outline margin were chosen on the same 40 BUSI images they are measured on (no separate
tuning set).

Measured on the 40 benign/malignant BUSI sample images, seeds at the maximum of the ground truth's distance
transform: median Dice 0.852 (quartiles 0.811-0.920), 2 of 40 below 0.5 (0.49 and 0.50; the contrast choice alone
gave 0.848, 0.804-0.919 and none below 0.5, those two at 0.52 and 0.53). Confidence-connected region growing after
the same filter gave 0.61, the single watershed after anisotropic diffusion instead of the median 0.69
(docs/tutorials/ultrasound.md).

What did not help (issue 29, measured on the same 40 images with the contrast choice alone, against median 0.848,
lower quartile 0.804): for clicks at the deepest point that choice is already close to the best candidate chosen
*with* the ground truth (median 0.853, lower quartile 0.826), so a better rule among these twelve can gain little,
and adding candidates gives the rule more ways to go wrong. Candidates from a half-resolution image (a coarser
median and edge scale, for large heterogeneous lesions): 0.844, 0.796, 4 below 0.7 instead of 2. A third edge scale
(sigma 8 px): 0.845, 0.801. Inpainting bright thin marks (calipers, text: saturated pixels removed by a 3 px white
top-hat, filled by a grey opening): 0.847, 0.798. A solidity (convex-hull) term in the score: 0.852, 0.807 (within
noise, not kept). A local region-competition refinement of the chosen region (pixels near its edge reassigned by the
inside/outside mean): worse on every setting tried (lower quartile 0.66-0.81). A morphological opening against thin
leaks: 0.850-0.859, lower quartile 0.800-0.806. Leaving the band beneath a candidate out of its surround (so that
posterior acoustic shadowing, dark like the lesion, does not lower the right region's contrast): 0.839, 0.792. The
poorest masks left are large malignant lesions with posterior shadowing (the region takes in the shadow or stops at
an inner edge; Dice 0.52, 0.53, 0.72) and an image whose ground truth holds two lesions (one click finds one: 0.76).

Where the click lands matters more than any of these (``bench_ultrasound_seg.py --clicks 3``). With the contrast
choice alone, three random clicks per image anywhere at least 3 px inside the lesion instead of at its deepest point
gave median Dice 0.822, lower quartile 0.700 (30 of 120 below 0.7); in the lesion's inner half 0.836, 0.787 (16 of
120). The agreement term and the re-seeding of off-centre clicks (steps 5 and 6) were chosen on two other draws of 4
clicks per image (lower quartile 0.588 -> 0.770 there) and give, on this draw: anywhere inside 0.839, **0.770** (24 of
120 below 0.7), inner half 0.837, 0.788 (14 of 120), at the deepest point 0.852, 0.811. Tried on those draws and not
kept: a choice learned from candidate features (ridge regression or gradient boosting on contrast, agreement, the
click's centrality and offset, fitted on 4 of 5 image groups: no better than the fixed weight), re-seeding every
click (lower quartile 0.781 for clicks anywhere, but a lesion found from its centre lost: Dice 0.87 -> 0.40), only
candidates that hold the click (no better), and, earlier: marker discs limited to the click's grey level (0.43-0.51,
speckle splits them), discs no larger than 0.7-0.8 of the distance to the nearest strong edge (0.47-0.55), background
rings 1.5 times as large (0.67), a fourth disc of 25 px (no change). The masks still below 0.5 from such clicks are
mostly from the twelve candidates of the click itself (a large shadowed malignant lesion, clicks near a lesion's
edge where every watershed stays in a small dark pocket); their low contrast and agreement flag them in the report.

Confidence: the chosen candidate's contrast and the agreement of the candidates are stored in the mask's header
(``CONTRAST_KEY``, ``AGREEMENT_KEY``); on the sample they rank the masks by Dice with Spearman 0.41 and 0.32 (0.42
and 0.41 with the contrast choice alone, when the agreement did not take part in the choice;
``masks/ultrasound_quality.py`` reports them).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

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
RESEED_BELOW_CENTRALITY = 0.6
"""When the click lies off-centre in the region its candidates choose (its distance from the region's edge below
this fraction of the region's largest; ``_centrality``), segment again from two points nearer the lesion's centre
and choose among all the candidates: the deepest point (farthest from the edge) of the click's highest-contrast
candidate, and that of the majority vote of the click's grown candidates. People do not click at the lesion's
centre; a click near the edge puts the larger discs across it, and the candidates leak (into posterior shadowing,
say) or stop short. Re-seeding every click helped clicks off the centre a little more but lost a lesion found from
its centre (Dice 0.87 -> 0.40 on one BUSI image); this threshold keeps centred clicks as they were. Measured on the
40 BUSI sample images (docs/tutorials/ultrasound.md, "Where the click lands"): about 60 % of random clicks inside
the lesion are re-seeded, each costing two more runs of the candidates (median 1.9 s per image instead of 0.7 s
on one core)."""
AGREEMENT_WEIGHT = 2.0
"""Weight of a candidate's agreement (median Dice with every other grown candidate) beside its surround contrast
in the choice: a leak or a stuck marker is usually an outlier among the candidates, the lesion what most of them
find. Measured on the same clicks (weights 0, 0.5, 1, 1.5, 2, 3): 2 gave the highest lower quartile; with the
click's candidates alone, a weight of 1 already lifts it from 0.588 to 0.729 (contrast alone: the first version)."""
LESION, BACKGROUND = 1, 2


CONTRAST_KEY = "ultrasound_contrast"
"""Metadata key (stored in the mask's NRRD header) of the chosen candidate's surround contrast: the segmentation's
own confidence (on the 40 BUSI sample images its Spearman correlation with the Dice against the expert outline is
0.41; a low value flags a mask to look at)."""
AGREEMENT_KEY = "ultrasound_candidate_agreement"
"""Metadata key of the median Dice between the chosen region and the other grown candidates (before the outline
margin): near 1 when every marker pair and edge scale found the same boundary, low when the boundary is ambiguous
(Spearman 0.32 with the Dice against the expert outline on the BUSI sample)."""
SEED_KEY = "ultrasound_seed"
"""Metadata key of the seed (``column,row``) the mask was grown from."""


@dataclass(frozen=True)
class UltrasoundSegmentation:
    """The mask of one seeded segmentation and the segmentation's own confidence in it."""

    mask: np.ndarray
    contrast: float
    """Surround contrast of the chosen candidate (see ``_surround_contrast``); -inf when nothing grew."""
    candidate_agreement: float
    """Median Dice between the chosen region and the other grown candidates; NaN when it is the only one."""


def segment_ultrasound(image: sitk.Image, seed_index: tuple[int, int, int], source: str) -> sitk.Image:
    """Binary uint8 lesion mask on the grid of ``image`` (a one-slice 3D volume or a 2D image).

    ``seed_index`` is the (column, row, slice) voxel index of a point inside the lesion; ``source`` names the image
    in messages. The mask carries the segmentation's confidence as metadata (``CONTRAST_KEY``, ``AGREEMENT_KEY``,
    ``SEED_KEY``), which the NRRD file the masks step writes keeps (``masks/ultrasound_quality.py`` reads it).
    Raises DicomInputError for a volume of more than one slice or a seed outside the image.
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
    result = segment_ultrasound_result(pixels, (row, column))
    mask = sitk.GetImageFromArray(result.mask.astype(np.uint8).reshape(sitk.GetArrayViewFromImage(image).shape))
    mask.CopyInformation(image)
    mask.SetMetaData(CONTRAST_KEY, repr(result.contrast))
    mask.SetMetaData(AGREEMENT_KEY, repr(result.candidate_agreement))
    mask.SetMetaData(SEED_KEY, f"{column},{row}")
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
    return segment_ultrasound_result(pixels, seed_row_column).mask


def segment_ultrasound_result(pixels: np.ndarray, seed_row_column: tuple[int, int]) -> UltrasoundSegmentation:
    """``segment_ultrasound_array`` with the confidence of the result (contrast and candidate agreement)."""
    grown = _grown(seeded_candidates(pixels, seed_row_column))
    best, agreement = choose_candidate(grown)
    return UltrasoundSegmentation(with_outline_margin(grown[best].region), grown[best].contrast, agreement)


def seeded_candidates(pixels: np.ndarray, seed_row_column: tuple[int, int]) -> list[Candidate]:
    """The candidates of the click and, when the click is off-centre in their choice (``RESEED_BELOW_CENTRALITY``),
    then those of the two re-seeds, in a fixed order. A re-seed point equal to an earlier one gives the same
    candidates again (they count twice in the agreement, as they did when the rule was measured)."""
    maps = edge_maps(pixels)
    first = ultrasound_candidates(pixels, seed_row_column, maps)
    grown = _grown(first)
    if _centrality(grown[choose_candidate(grown)[0]].region, seed_row_column) >= RESEED_BELOW_CENTRALITY:
        return first
    by_contrast = max(grown, key=lambda c: c.contrast).region  # max keeps the first of equals
    majority = np.mean([c.region for c in grown], axis=0) >= 0.5
    computed = {tuple(seed_row_column): first}
    candidates = list(first)
    for region in (by_contrast, majority):
        if not region.any():
            continue
        point = _deepest_point(region)
        if point not in computed:
            computed[point] = ultrasound_candidates(pixels, point, maps)
        candidates += computed[point]
    return candidates


def _centrality(region: np.ndarray, seed_row_column: tuple[int, int]) -> float:
    """The click's distance from the region's edge as a fraction of the largest such distance in the region: 1 at
    its deepest point, near 0 at its edge, 0 outside it."""
    if not region[seed_row_column]:
        return 0.0
    depth = _depth(region)
    return float(depth[seed_row_column] / depth.max())


def _depth(region: np.ndarray) -> np.ndarray:
    """Distance of each region pixel from the region's edge, the image border counting as edge."""
    return ndimage.distance_transform_edt(np.pad(region, 1))[1:-1, 1:-1]


def choose_candidate(grown: list[Candidate]) -> tuple[int, float]:
    """Index of the candidate of highest ``contrast + AGREEMENT_WEIGHT * agreement`` among those of positive contrast
    (among all when none is; the first of equals) and its agreement: the median Dice between its region and every
    other candidate's (NaN when it is the only one)."""
    if len(grown) == 1:
        return 0, float("nan")
    packed = [np.packbits(c.region, axis=None) for c in grown]  # Dice from bit counts: up to 630 pairs per image
    areas = np.array([np.bitwise_count(bits).sum() for bits in packed], dtype=float)
    overlap = np.zeros((len(grown), len(grown)))
    for i in range(len(grown)):
        for j in range(i + 1, len(grown)):
            overlap[i, j] = overlap[j, i] = np.bitwise_count(packed[i] & packed[j]).sum()
    totals = areas[:, None] + areas[None, :]
    dice = np.divide(2.0 * overlap, totals, out=np.ones_like(overlap), where=totals > 0)
    agreements = [float(np.median(np.delete(dice[i], i))) for i in range(len(grown))]
    scores = [c.contrast + AGREEMENT_WEIGHT * a for c, a in zip(grown, agreements, strict=True)]
    # A region brighter than its surround is no hypoechoic lesion, however well the candidates agree on it.
    darker = [i for i, c in enumerate(grown) if c.contrast > 0] or range(len(grown))
    best = max(darker, key=lambda i: scores[i])  # max keeps the first of equals: deterministic
    return best, agreements[best]


def _grown(candidates: list[Candidate]) -> list[Candidate]:
    """The candidates that grew past their marker; all of them when none did."""
    return [c for c in candidates if c.grew] or candidates


def _deepest_point(region: np.ndarray) -> tuple[int, int]:
    """(row, column) of the region's pixel farthest from its edge or the image border (the first in row order among
    equals)."""
    depth = _depth(region)
    row, column = np.unravel_index(int(np.argmax(depth)), depth.shape)
    return int(row), int(column)


def with_outline_margin(region: np.ndarray) -> np.ndarray:
    """The region dilated by ``OUTLINE_MARGIN_PX`` (step 7)."""
    grown = sitk.BinaryDilate(
        sitk.GetImageFromArray(region.astype(np.uint8)), [OUTLINE_MARGIN_PX] * 2, sitk.sitkBall, 0, 1
    )
    return sitk.GetArrayFromImage(grown) > 0


def ultrasound_candidate_masks(image: sitk.Image, seed_index: tuple[int, int, int]) -> list[sitk.Image]:
    """Every grown candidate of the seeded segmentation (``seeded_candidates``) as a mask on the grid of ``image``
    (a one-slice volume), with the outline margin, in the candidates' fixed order (all of them when none grew).

    For features averaged over the candidate outlines instead of taken on the chosen one: on the 40 BUSI sample
    images such averages gave a higher proxy AUC than the chosen mask's features
    (``benchmarks/bench_ultrasound_features.py --candidates``), the outline's arbitrariness averaging out.
    """
    rows, columns = image.GetSize()[1], image.GetSize()[0]
    pixels = sitk.GetArrayFromImage(image).astype(np.float32).reshape(rows, columns)
    masks = []
    for candidate in _grown(seeded_candidates(pixels, (int(seed_index[1]), int(seed_index[0])))):
        outline = with_outline_margin(candidate.region)
        mask = sitk.GetImageFromArray(outline.astype(np.uint8).reshape(sitk.GetArrayViewFromImage(image).shape))
        mask.CopyInformation(image)
        masks.append(mask)
    return masks


@dataclass(frozen=True)
class EdgeMaps:
    """What the candidates of every seed in one image share: the median-filtered pixels and the edge maps."""

    smooth_pixels: np.ndarray
    edges: tuple[sitk.Image, ...]
    """Gradient magnitude at each of ``GRADIENT_SIGMAS_PX``, rescaled to 65,536 levels (uint16): the watershed
    floods an integer image about four times faster than a float one (floats kept: ``MAX_EDGE_RANGE_RATIO``)."""


def edge_maps(pixels: np.ndarray) -> EdgeMaps:
    """Steps 1 and 2 of the method for a 2D grey-level array (rows, columns)."""
    smooth = sitk.Median(sitk.GetImageFromArray(np.asarray(pixels, dtype=np.float32)), [MEDIAN_RADIUS_PX] * 2)
    edges = tuple(_quantised(sitk.GradientMagnitudeRecursiveGaussian(smooth, sigma)) for sigma in GRADIENT_SIGMAS_PX)
    return EdgeMaps(sitk.GetArrayFromImage(smooth), edges)


MAX_EDGE_RANGE_RATIO = 64.0
"""The edge map stays in floats when its maximum exceeds this multiple of its 99th percentile: rescaled to 65,536
levels, the bulk of the edges would then share fewer than about 1,000 (a block of extreme values, such as a burnt-in
label of a float or 16-bit image, would flatten the lesion's edges). On the BUSI sample the ratio is 1.4-4."""


def _quantised(magnitude: sitk.Image) -> sitk.Image:
    values = sitk.GetArrayViewFromImage(magnitude)
    top, bulk = float(values.max()), float(np.percentile(values, 99))
    if not (bulk > 0 and top / bulk <= MAX_EDGE_RANGE_RATIO):  # also a flat or non-finite map
        return magnitude
    return sitk.Cast(sitk.RescaleIntensity(magnitude, 0, 65535), sitk.sitkUInt16)


def ultrasound_candidates(
    pixels: np.ndarray, seed_row_column: tuple[int, int], maps: EdgeMaps | None = None
) -> list[Candidate]:
    """Every (edge scale, marker pair) watershed region of the method, in a fixed order (``maps``: the image's
    ``edge_maps``, computed here when not given)."""
    maps = maps or edge_maps(pixels)
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
    for edges in maps.edges:
        for markers, seed_area in marker_images:
            region = _watershed_region(edges, markers, (row, column))
            contrast = _surround_contrast(region, maps.smooth_pixels)
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
