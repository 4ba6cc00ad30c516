"""Value-preserving replacements for nine hot spots of PyRadiomics 3.1.4, so extraction costs less CPU.

Profiling extraction on the sarcoma sample (1 mm resampling) showed two places where PyRadiomics does far more
work than its result needs:

1. ``cShape.calculate_coefficients`` compares every mesh vertex with every other one to find the maximum 3D
   and 2D diameters: O(V^2) in the number of surface vertices, 46 % of all extraction time with the shipped CT
   parameters. The farthest pair of a point set is a pair of its extreme points, so :func:`mesh_coefficients`
   keeps only the vertices that can be extreme (the first and last vertex on every grid line, then the convex
   hull) and evaluates PyRadiomics' own distance expression on those (in a compiled kernel,
   ``fast_texture.max_squared_distance``, 5x faster than NumPy pair blocks): the same maximum, to the last bit.
   Surface area and volume come from per-cube-configuration tables that PyRadiomics' C routine itself
   computes on single cubes, so the mesh (its marching-cubes triangle table) stays PyRadiomics' own; they agree
   with the C routine to floating-point rounding (relative 1e-13 or better).
2. ``imageoperations.getBinEdges`` finds the minimum and maximum of the ROI's grey levels with Python's
   built-in ``min``/``max``, which walk a NumPy array element by element: 20 % of extraction time with LoG and
   wavelet filters. NumPy's ``min``/``max`` return the same element.
3. The diagnostics hash every image and mask with ``sitk.Hash`` (SHA-1 of the voxel buffer), 12 % of extraction
   time with the CT parameters; ``hashlib.sha1`` of the same buffer gives the same digest about ten times faster.
4. ``imageoperations.resampleImage`` with B-spline interpolation makes ITK compute B-spline coefficients for the
   whole image, however small the ROI: seconds for a full 512 x 512 CT. :func:`resample_image` hands it the
   image cropped to the ROI plus a margin in which the coefficients' recursive filter settles to the last bit
   (its pole is 0.268: after 30 voxels a difference at the crop edge is below 1e-17), and the uncropped mask,
   from which PyRadiomics derives the output grid as before: 12x faster for a 512 x 512 x 120 CT. On the
   sarcoma sample all 11.6 million resampled voxels are bit-identical to PyRadiomics' own; on white noise 2 in
   215,822 differ by one float32 unit (the crop's origin rounds differently), so in general the voxels agree
   to float32 rounding, and a feature could change only if such a voxel sat exactly on a grey-level bin edge.
   ITK then evaluates each output voxel from 64 coefficients in a generic loop, still 40 % of extraction time
   on the sarcoma sample; :mod:`~radiomics_assets.features.bspline_resampling` interpolates one axis at a time
   on PyRadiomics' own grid (12 products per voxel), 2x faster, with voxels equal to ITK's after the cast to
   float32 (1 in 5.8 million differs by one float32 unit on the sarcoma sample).

5. The texture matrices (GLCM, GLRLM, GLSZM, GLDM, NGTDM) from ``radiomics._cmatrices``: 45 % of extraction time
   with LoG and wavelet filters once 1-4 were in place. :mod:`~radiomics_assets.features.fast_texture` computes
   them with Numba kernels that count exactly what the C code counts (equal matrices, hence the same feature
   doubles from PyRadiomics' own formulas); the texture modules see it in place of ``cMatrices``. Voxel-based
   extraction and every input the C code rejects still go to the C code.
6. Every feature class of an image type bins the same image in the same ROI (``_applyBinning``: bin edges,
   ``np.digitize``, ``np.unique``), six times per image type; :func:`fast_texture.apply_binning` reuses the
   previous class's result when image, ROI and settings are equal element by element.
7. ``imageoperations.checkMask`` runs ITK's ``LabelStatisticsImageFilter`` (mean, variance, sums of every label
   over the whole image) only for the ROI's bounding box and voxel count: 8 % of extraction time on the sarcoma
   sample. When image and mask share one grid exactly (no tolerance needed) and the mask has integer labels,
   :func:`check_mask` takes both from the mask's array; the same bounding box, so the same crop. Any other input,
   and every ROI that fails a check, goes to PyRadiomics' function, which raises its own error.
8. On full-size scans, whole-image bookkeeping outweighed the features: ``getMask`` sorted a copy of every mask
   voxel (``np.unique``) to list its labels, and the mask diagnostics (``GeneralInfo.addMaskElements``) ran ITK's
   label statistics and connected components over the whole mask. :func:`get_mask` checks the labels on the
   mask's values in place, and :func:`add_mask_elements` computes the diagnostics on the ROI's crop and puts
   them back in the whole mask's frame (the same values and text), 8.1x faster extraction than stock on
   512 x 512 x 96 CTs (3.4x before).

9. The image's diagnostics (``GeneralInfo.addImageElements``) copy the whole image to float64 for its mean, minimum
   and maximum: 200 MB and a third of the remaining extraction time on a 512 x 512 x 96 CT. :func:`add_image_elements`
   takes the minimum and maximum of the voxels in place and the mean as NumPy's pairwise sum of the float64 values,
   converted a block at a time along the same halving (:func:`pairwise_sum_float64`): the same doubles.

:func:`install` applies all nine (``features`` calls it); ``RADIOMICS_STOCK_PYRADIOMICS=1`` or
:func:`stock_pyradiomics` keeps PyRadiomics untouched, which the tests use to compare against the original;
:func:`without_fast_texture` leaves out 5 and 6 (for before/after benchmarks).
Nothing is replaced for a PyRadiomics version other than the one these were checked against.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
from collections.abc import Iterator

import numpy as np
import radiomics
import SimpleITK as sitk
from radiomics import (
    base,
    cMatrices,
    cShape,
    generalinfo,
    glcm,
    gldm,
    glrlm,
    glszm,
    imageoperations,
    ngtdm,
    shape,
)

from radiomics_assets import environment
from radiomics_assets.features import fast_texture
from radiomics_assets.features.bspline_resampling import FLOAT_PIXELS, resample_bspline
from radiomics_assets.geometry import grid_mismatch

logger = logging.getLogger(__name__)

CHECKED_PYRADIOMICS_VERSIONS = ("v3.1.4", "3.1.4")
STOCK_ENV = environment.STOCK_PYRADIOMICS.name
SMALL_MESH_VERTICES = 4000  # below this, PyRadiomics' all-pairs comparison is the cheaper one
ALL_PAIRS_MAX = 1500  # candidate points compared pair by pair; more go through a convex hull first

# Corner k of a marching cube, as (z, y, x) offsets from its origin voxel, in PyRadiomics' bit order.
CUBE_CORNERS = ((0, 0, 0), (0, 0, 1), (0, 1, 1), (0, 1, 0), (1, 0, 0), (1, 0, 1), (1, 1, 1), (1, 1, 0))

_stock_calculate_coefficients = cShape.calculate_coefficients
_stock_get_bin_edges = imageoperations.getBinEdges
_stock_resample_image = imageoperations.resampleImage
_stock_check_mask = imageoperations.checkMask
INTEGER_LABEL_PIXELS = (sitk.sitkUInt8, sitk.sitkInt8, sitk.sitkUInt16, sitk.sitkInt16, sitk.sitkUInt32, sitk.sitkInt32)
"""Mask types whose labels NumPy compares as ITK does (ITK compares a 64-bit label through a double: 2**53 + 1 would
match 2**53 there and not here, so 64-bit masks stay with PyRadiomics)."""


# --- shape: surface area, volume and diameters of the marching-cubes mesh --------------------------------


def _cube(config: int) -> np.ndarray:
    cube = np.zeros((2, 2, 2), dtype=bool)
    for bit, corner in enumerate(CUBE_CORNERS):
        cube[corner] = bool(config >> bit & 1)
    return cube


@functools.lru_cache(maxsize=64)
def _config_tables(spacing: tuple[float, float, float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per cube configuration: its triangles' area, their volume term at the origin, and its slope per mm.

    PyRadiomics' volume is a sum over triangles of det(a, b, c) / 6 with a, b, c in patient-scaled grid
    coordinates; moving a cube by p adds p . (b - a) x (c - a) / 6, linear in p. Each term is measured by
    PyRadiomics' C routine on one cube (at the origin, and one step along each axis).
    """
    spacing_array = np.asarray(spacing, dtype=np.float64)
    area, volume_at_origin, slope = np.zeros(256), np.zeros(256), np.zeros((256, 3))
    for config in range(1, 255):  # 0 and 255 (all outside, all inside) have no triangles
        cube = _cube(config)
        area[config], volume_at_origin[config], _ = _stock_calculate_coefficients(cube, spacing_array)
        for axis in range(3):
            lower = np.take(cube, [0], axis=axis)
            # Two cubes along the axis: (lower, lower) at the origin and the wanted cube one step further.
            two_cubes, lower_cube = np.concatenate([lower, cube], axis=axis), np.concatenate([lower, lower], axis=axis)
            _, both, _ = _stock_calculate_coefficients(two_cubes, spacing_array)
            _, first, _ = _stock_calculate_coefficients(lower_cube, spacing_array)
            slope[config, axis] = (both - first - volume_at_origin[config]) / spacing[axis]
    return area, volume_at_origin, slope


def _cube_configs(mask: np.ndarray) -> np.ndarray:
    nz, ny, nx = mask.shape
    configs = np.zeros((nz - 1, ny - 1, nx - 1), dtype=np.uint8)
    for bit, (dz, dy, dx) in enumerate(CUBE_CORNERS):
        configs |= mask[dz : nz - 1 + dz, dy : ny - 1 + dy, dx : nx - 1 + dx].astype(np.uint8) << bit
    return configs


def _mesh_vertices(mask: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """The vertices PyRadiomics collects: midpoints of grid edges whose two voxels differ, (z, y, x) in mm.

    Its C routine takes, per cube, the edges at the cube's (1, 1, 0) corner; the index ranges below are those.
    """
    nz, ny, nx = mask.shape
    edges = (  # (edge direction, crossings on that edge family restricted as the C loop does)
        (2, mask[1:, 1:, 1:] != mask[1:, 1:, :-1], (1, 1, 0)),
        (1, mask[1:, 1:, : nx - 1] != mask[1:, :-1, : nx - 1], (1, 0, 0)),
        (0, mask[1:, 1:, : nx - 1] != mask[:-1, 1:, : nx - 1], (0, 1, 0)),
    )
    blocks = []
    for direction, crossing, offset in edges:
        index = np.stack(np.nonzero(crossing), axis=1).astype(np.float64) + offset
        index[:, direction] += 0.5  # the vertex sits halfway along the edge
        blocks.append(index * spacing)  # the same (index + offset) * spacing as the C code: same doubles
    return np.concatenate(blocks)


def _line_extremes(points: np.ndarray, along: int) -> np.ndarray:
    """Mask of points that are first or last on their grid line along ``along``: only these can be extreme."""
    others = [axis for axis in range(3) if axis != along]
    order = np.lexsort((points[:, along], points[:, others[1]], points[:, others[0]]))
    line = points[order][:, others]
    new_line = np.ones(len(points) + 1, dtype=bool)
    new_line[1:-1] = np.any(line[1:] != line[:-1], axis=1)
    keep = np.zeros(len(points), dtype=bool)
    keep[order[new_line[:-1]]] = True  # first on its line
    keep[order[new_line[1:]]] = True  # last on its line
    return keep


def _max_squared_distance(points: np.ndarray, pairs_per_block: int = 1 << 21) -> float:
    """PyRadiomics' expression ((dz*dz + dy*dy) + dx*dx), maximised over all pairs: the compiled kernel, or blockwise
    in NumPy (bounded memory) when the kernels are not available."""
    if fast_texture.ready():
        best = fast_texture.max_squared_distance(points, np.array([0]), np.array([len(points)]))
        if best is not None:
            return best
    block = max(1, pairs_per_block // max(1, len(points)))
    best = 0.0
    for start in range(0, len(points), block):
        chunk = points[start : start + block]
        delta = chunk[:, None, :] - points[None, start:, :]
        squared = delta * delta
        best = max(best, float(np.max(squared[..., 0] + squared[..., 1] + squared[..., 2], initial=0.0)))
    return best


def _hull_candidates(candidates: np.ndarray) -> np.ndarray:
    """Of points that are extreme on all their grid lines, those that may be vertices of the convex hull."""
    if len(candidates) <= ALL_PAIRS_MAX:
        return candidates
    from scipy.spatial import ConvexHull, QhullError

    try:
        # "Qc" also reports points within rounding of a facet: an extreme point is never lost to precision.
        hull = ConvexHull(candidates, qhull_options="Qc")
    except QhullError:  # flat or degenerate point set: keep every candidate
        return candidates
    return candidates[np.union1d(hull.vertices, hull.coplanar[:, 0])]


def _diameters(points: np.ndarray) -> tuple[float, float, float, float]:
    """(slice, column, row, 3D) maximum diameters as PyRadiomics defines them (pairs sharing z, y, x; any pair)."""
    ends = [_line_extremes(points, along) for along in range(3)]  # a point between two others is not extreme
    squared = [0.0, 0.0, 0.0, _max_squared_distance(_hull_candidates(points[ends[0] & ends[1] & ends[2]]))]
    for axis in range(3):
        # Within a plane (fixed ``axis``), only the ends of its grid lines along the two other axes.
        in_plane = [ends[other] for other in range(3) if other != axis]
        squared[axis] = _max_squared_distance_in_planes(points[in_plane[0] & in_plane[1]], axis)
    return tuple(float(np.sqrt(value)) for value in squared)


def _max_squared_distance_in_planes(points: np.ndarray, axis: int, block: int = 1024) -> float:
    """The same maximum over the pairs of points with exactly the same coordinate ``axis`` (one plane).

    All planes at once: the compiled kernel pairs each point with the points after it in its plane; without the
    kernels, NumPy does the same ``block`` points at a time.
    """
    points = points[np.argsort(points[:, axis], kind="stable")]
    plane = points[:, axis]
    starts = np.flatnonzero(np.r_[True, plane[1:] != plane[:-1]])
    ends = np.r_[starts[1:], len(points)]
    if fast_texture.ready():
        best = fast_texture.max_squared_distance(points, starts, ends)
        if best is not None:
            return best
    later_in_plane = np.repeat(ends, ends - starts) - np.arange(len(points)) - 1
    best = 0.0
    for start in range(0, len(points), block):
        counts = later_in_plane[start : start + block]
        if not counts.any():
            continue
        first = np.repeat(np.arange(start, start + len(counts)), counts)
        step = np.arange(len(first)) - np.repeat(np.cumsum(counts) - counts, counts)
        delta = points[first] - points[first + 1 + step]
        squared = delta * delta
        best = max(best, float(np.max(squared[:, 0] + squared[:, 1] + squared[:, 2])))
    return best


def mesh_coefficients(mask: np.ndarray, spacing: np.ndarray) -> tuple[float, float, tuple[float, ...]]:
    """Drop-in for ``cShape.calculate_coefficients(mask, spacing)``: (surface area, volume, diameters).

    For the boolean masks PyRadiomics passes; any other mask goes to the C routine as it is.
    """
    if not isinstance(mask, np.ndarray) or mask.dtype != bool or mask.ndim != 3:
        return _stock_calculate_coefficients(mask, spacing)
    spacing = np.asarray(spacing, dtype=np.float64)
    vertices = _mesh_vertices(mask, spacing)
    if len(vertices) < SMALL_MESH_VERTICES:
        return _stock_calculate_coefficients(mask, spacing)
    area_table, volume_table, slope_table = _config_tables(tuple(float(s) for s in spacing))
    configs = _cube_configs(mask)
    surface = np.flatnonzero((configs != 0) & (configs != 255))
    surface_configs = configs.ravel()[surface]
    position_mm = np.stack(np.unravel_index(surface, configs.shape), axis=1) * spacing
    area = float(np.sum(area_table[surface_configs]))
    volume = float(np.sum(volume_table[surface_configs]) + np.sum(position_mm * slope_table[surface_configs]))
    return area, volume, _diameters(vertices)


# --- grey-level binning -----------------------------------------------------------------------------------


def bin_edges(parameterValues, **kwargs):  # noqa: N803 - PyRadiomics' keyword names
    """``imageoperations.getBinEdges`` with NumPy's min/max; delegates every case it does not speed up."""
    values = parameterValues
    if kwargs.get("binCount") is not None or not isinstance(values, np.ndarray) or values.ndim != 1 or not values.size:
        return _stock_get_bin_edges(parameterValues, **kwargs)
    minimum, maximum = values.min(), values.max()
    # Built-in min/max treat NaN by position, and return the first of 0.0 and -0.0: keep theirs for those.
    if np.isnan(minimum) or np.isnan(maximum) or minimum == 0:
        return _stock_get_bin_edges(parameterValues, **kwargs)
    bin_width = kwargs.get("binWidth", 25)
    low = minimum - (minimum % bin_width)
    edges = np.arange(low, maximum + 2 * bin_width, bin_width)
    if len(edges) == 1:  # flat region: one bin of width 1, as PyRadiomics makes it
        edges = [edges[0] - 0.5, edges[0] + 0.5]
    return edges


# --- B-spline resampling of a cropped image ----------------------------------------------------------------

SETTLE_VOXELS = 30
"""Voxels from a crop edge after which the B-spline coefficients equal the uncropped image's (see item 4)."""
MIN_SAVING = 0.8
"""Crop only when it leaves at most this share of the image's voxels (else nothing worth saving)."""


def resample_image(imageNode, maskNode, **kwargs):  # noqa: N803 - PyRadiomics' names
    """``imageoperations.resampleImage`` with B-spline interpolation on the image cropped around the ROI, its values
    computed axis by axis (``bspline_resampling``).

    Everything else (other interpolators, masks on another grid, no resampling needed, an absent label, small
    images) goes to PyRadiomics' function unchanged, which also does every check and computes the grid.
    """
    interpolator = kwargs.get("interpolator", sitk.sitkBSpline)
    interpolator = getattr(sitk, interpolator, None) if isinstance(interpolator, str) else interpolator
    spacing = kwargs.get("resampledPixelSpacing")
    if (
        interpolator != sitk.sitkBSpline
        or spacing is None
        or imageNode is None
        or maskNode is None
        or len(spacing) != imageNode.GetDimension()
    ):
        return _stock_resample_image(imageNode, maskNode, **kwargs)
    image_spacing = np.array(imageNode.GetSpacing())
    new_spacing = np.where(np.array(spacing, dtype=float) == 0, image_spacing, np.array(spacing, dtype=float))
    if grid_mismatch(imageNode, maskNode) is not None or np.allclose(image_spacing, new_spacing):
        return _stock_resample_image(imageNode, maskNode, **kwargs)
    box = label_box(maskNode, int(kwargs.get("label", 1)))
    if box is None:
        return _stock_resample_image(imageNode, maskNode, **kwargs)
    # The output grid reaches padDistance output voxels beyond the ROI; the interpolation kernel 2 more voxels.
    reach = np.ceil(kwargs.get("padDistance", 5) * new_spacing / image_spacing).astype(int) + 2
    margin = SETTLE_VOXELS + reach
    size = np.array(imageNode.GetSize())
    low = np.maximum(box[0] - margin, 0)
    high = np.minimum(box[1] + 1 + margin, size)
    # Integer images stay whole: ITK truncates the interpolated double to an integer, so the crop's last-bit
    # differences could move a voxel by one.
    cropped = imageNode
    if np.prod(high - low) <= MIN_SAVING * np.prod(size) and imageNode.GetPixelID() in FLOAT_PIXELS:
        cropped = sitk.RegionOfInterest(imageNode, (high - low).tolist(), low.tolist())
    return resample_bspline(cropped, imageNode, maskNode, kwargs, _stock_resample_image)


# --- the ROI's bounding box ---------------------------------------------------------------------------------


def label_box(mask: sitk.Image, label: int) -> tuple[np.ndarray, np.ndarray] | None:
    """(lowest, highest) index of the voxels equal to ``label``, in ITK's axis order (x, y, z), from the mask's
    array (projections, not ITK's label statistics over every label); None when the label is absent or the mask is
    not one scalar label per voxel."""
    if mask.GetNumberOfComponentsPerPixel() != 1 or mask.GetPixelID() not in INTEGER_LABEL_PIXELS:
        return None
    roi = sitk.GetArrayViewFromImage(mask) == label
    low, high = [], []
    for axis in range(roi.ndim):  # ITK's axis order (x, y, z) is NumPy's reversed
        numpy_axis = roi.ndim - 1 - axis
        occupied = np.flatnonzero(roi.any(axis=tuple(a for a in range(roi.ndim) if a != numpy_axis)))
        if occupied.size == 0:
            return None
        low.append(int(occupied[0]))
        high.append(int(occupied[-1]))
    return np.array(low), np.array(high)


def _same_grid_exactly(image: sitk.Image, mask: sitk.Image) -> bool:
    return (
        image.GetSize() == mask.GetSize()
        and image.GetSpacing() == mask.GetSpacing()
        and image.GetOrigin() == mask.GetOrigin()
        and image.GetDirection() == mask.GetDirection()
    )


def _voxels_in_box(mask: sitk.Image, label: int, box: tuple[np.ndarray, np.ndarray]) -> int:
    region = tuple(slice(lo, hi + 1) for lo, hi in zip(box[0][::-1], box[1][::-1], strict=True))
    return int(np.count_nonzero(sitk.GetArrayViewFromImage(mask)[region] == label))


def check_mask(imageNode, maskNode, **kwargs):  # noqa: N803 - PyRadiomics' names
    """``imageoperations.checkMask``: (bounding box ``(L_x, U_x, L_y, U_y, L_z, U_z)``, corrected mask or None),
    from the mask's array when image and mask share one grid (item 7); otherwise, or when a check fails, PyRadiomics'
    own function, with its corrections and errors."""
    if (
        imageNode is None
        or maskNode is None
        or imageNode.GetNumberOfComponentsPerPixel() != 1
        or not _same_grid_exactly(imageNode, maskNode)
    ):
        return _stock_check_mask(imageNode, maskNode, **kwargs)
    label = int(kwargs.get("label", 1))
    box = label_box(maskNode, label)
    if box is None:  # the label is absent, or a mask type label_box leaves to PyRadiomics
        return _stock_check_mask(imageNode, maskNode, **kwargs)
    bounding_box = np.stack(box, axis=1).ravel()  # (L_x, U_x, L_y, U_y, L_z, U_z)
    extended = int(np.sum((bounding_box[1::2] - bounding_box[0::2] + 1) > 1))
    minimum_size = kwargs.get("minimumROISize")
    if (
        extended == 0
        or extended < kwargs.get("minimumROIDimensions", 2)
        or (minimum_size is not None and _voxels_in_box(maskNode, label, box) <= minimum_size)
    ):
        return _stock_check_mask(imageNode, maskNode, **kwargs)  # the failing check raises PyRadiomics' error
    return bounding_box, None


# --- diagnostics hashes -------------------------------------------------------------------------------------


_SCALAR_PIXEL_TYPES = {
    sitk.sitkUInt8,
    sitk.sitkInt8,
    sitk.sitkUInt16,
    sitk.sitkInt16,
    sitk.sitkUInt32,
    sitk.sitkInt32,
    sitk.sitkUInt64,
    sitk.sitkInt64,
    sitk.sitkFloat32,
    sitk.sitkFloat64,
}


def image_sha1(image: sitk.Image) -> str:
    """``sitk.Hash(image)`` (SHA-1 of the voxel buffer) by hashlib; other image kinds go to SimpleITK."""
    if image.GetPixelID() not in _SCALAR_PIXEL_TYPES:  # vector, complex and label-map images
        return sitk.Hash(image)
    # The array view is the voxel buffer itself (C order): hashed in place, not copied first (100 MB for a full CT).
    return hashlib.sha1(np.ascontiguousarray(sitk.GetArrayViewFromImage(image))).hexdigest()


# --- the whole-image mask passes: labels present, and the mask's diagnostics ----------------------------------

COUNTABLE_LABEL_PIXELS = (sitk.sitkUInt8, sitk.sitkUInt16)
"""Masks whose check is done on their own values (unsigned, so casting to UInt32 keeps every value)."""
_stock_get_mask = imageoperations.getMask
_stock_add_mask_elements = generalinfo.GeneralInfo.addMaskElements


def get_mask(mask, **kwargs):
    """``imageoperations.getMask`` (the mask as UInt32, after checking that it has labels and ``label`` among them)
    with both checks done on a UInt8/UInt16 mask's values in place, instead of ``np.unique``, which sorts a copy of
    every voxel: 0.2 s for a full CT. Anything else, and a mask that fails a check, goes to PyRadiomics' function
    and its error."""
    if mask is None or mask.GetPixelID() not in COUNTABLE_LABEL_PIXELS:
        return _stock_get_mask(mask, **kwargs)
    voxels = sitk.GetArrayViewFromImage(mask)
    if not voxels.any() or not np.any(voxels == kwargs.get("label", 1)):
        return _stock_get_mask(mask, **kwargs)
    return sitk.Cast(mask, sitk.sitkUInt32)


def add_mask_elements(self, image, mask, label, prefix="original"):
    """``GeneralInfo.addMaskElements`` (the mask's diagnostics) computed on image and mask cropped to the ROI plus
    one voxel, then put back in the whole mask's frame: its hash, size, bounding box and centre of mass. Every
    other figure (voxel count, connected volumes, mean, minimum, maximum) sees the same ROI voxels in the same
    order. The centre of mass is the mean of integer coordinates, so it is recomputed from their exact sum, as
    NumPy's mean of the whole mask's coordinates computes it: the same doubles. A mask on another grid than the
    image, a mask without the label and any other kind of mask go to PyRadiomics' method."""
    # 3D masks and ROI labels only: label 0 (the background) fails in ITK before anything is known.
    box = None if mask is None or mask.GetDimension() != 3 or int(label) < 1 else label_box(mask, label)
    if box is None or (image is not None and not _same_grid_exactly(image, mask)):
        return _stock_add_mask_elements(self, image, mask, label, prefix)
    low = np.maximum(box[0] - 1, 0)  # ITK order (x, y, z), one voxel around the ROI
    high = np.minimum(box[1] + 2, mask.GetSize())
    start, size = [int(v) for v in low], [int(v) for v in high - low]
    _stock_add_mask_elements(
        self,
        None if image is None else sitk.RegionOfInterest(image, size, start),
        sitk.RegionOfInterest(mask, size, start),
        label,
        prefix,
    )
    key = f"{self.generalInfo_prefix}Mask-{prefix}_"
    if prefix == "original":
        self.generalInfo[key + "Hash"] = generalinfo.sitk.Hash(mask)
    self.generalInfo[key + "Size"] = mask.GetSize()
    in_crop = self.generalInfo[key + "BoundingBox"]  # (x, y, z of the lower corner, then the size)
    self.generalInfo[key + "BoundingBox"] = tuple(int(v) for v in np.add(in_crop[:3], start)) + tuple(in_crop[3:])
    region = tuple(slice(lo, hi) for lo, hi in zip(low[::-1], high[::-1], strict=True))
    coordinates = np.nonzero(sitk.GetArrayViewFromImage(mask)[region] == label)  # NumPy order (z, y, x)
    n = coordinates[0].size
    # sum of the whole mask's coordinates = sum in the crop + n x the crop's start: integers, so exact
    sums = [int(np.sum(c, dtype=np.int64)) + n * int(offset) for c, offset in zip(coordinates, low[::-1], strict=True)]
    center_index = tuple(np.float64(total) / n for total in sums[::-1])
    self.generalInfo[key + "CenterOfMassIndex"] = center_index
    self.generalInfo[key + "CenterOfMass"] = mask.TransformContinuousIndexToPhysicalPoint(center_index)


# --- the image's diagnostics: mean, minimum and maximum without a float64 copy ----------------------------------

_stock_add_image_elements = generalinfo.GeneralInfo.addImageElements
EXACT_SUM_PIXELS = _SCALAR_PIXEL_TYPES - {sitk.sitkUInt64, sitk.sitkInt64}
"""Pixel types that float64 holds exactly, so each voxel's float64 copy is one exact conversion."""
PAIRWISE_LEAF = 1 << 16
"""Voxels converted to float64 at a time by :func:`pairwise_sum_float64`: 512 kB, far below a full CT's 200 MB."""


def pairwise_sum_float64(values: np.ndarray) -> np.float64:
    """``np.add.reduce(values.astype(np.float64))`` for a contiguous 1D array, without the whole float64 copy.

    NumPy adds a contiguous float64 array pairwise: a block of n > 128 is the sum of its first n2 and its last n - n2
    elements, n2 = n // 2 rounded down to a multiple of 8. Halving the same way until a block is small enough and
    converting only that block gives each partial sum exactly as NumPy forms it, so the same double."""
    n = values.size
    if n <= PAIRWISE_LEAF:
        return np.add.reduce(values.astype(np.float64))
    half = n // 2
    half -= half % 8
    return pairwise_sum_float64(values[:half]) + pairwise_sum_float64(values[half:])


def add_image_elements(self, image, prefix="original"):
    """``GeneralInfo.addImageElements`` (the image's diagnostics) without the float64 copy of the whole image that
    PyRadiomics makes for its mean, minimum and maximum: 200 MB and a third of extraction time on a full CT. The
    minimum and maximum are those of the voxels themselves (converting to float64 is exact and keeps their order),
    the mean is NumPy's pairwise sum of the float64 values (:func:`pairwise_sum_float64`) over their number: the
    same doubles. Vector images and 64-bit integer images go to PyRadiomics' method, and so does an image whose mean
    is NaN (which NaN's bits survive depends on the order of the additions) or whose minimum or maximum is a zero
    when it holds a -0.0 (which zero a minimum returns depends on NumPy's float32 or float64 loop)."""
    if image.GetPixelID() not in EXACT_SUM_PIXELS:
        return _stock_add_image_elements(self, image, prefix)
    voxels = sitk.GetArrayViewFromImage(image).ravel()  # C order, a view: the buffer itself
    mean = np.float64(pairwise_sum_float64(voxels) / voxels.size)
    low, high = np.float64(np.min(voxels)), np.float64(np.max(voxels))
    if np.isnan(mean) or ((low == 0 or high == 0) and np.any(np.signbit(voxels[voxels == 0]))):
        return _stock_add_image_elements(self, image, prefix)
    key = f"{self.generalInfo_prefix}Image-"
    if prefix == "original":
        self.generalInfo[key + "original_Hash"] = generalinfo.sitk.Hash(image)
        self.generalInfo[key + "original_Dimensionality"] = "%iD" % image.GetDimension()  # noqa: UP031 - its text
    self.generalInfo[f"{key}{prefix}_Spacing"] = image.GetSpacing()
    self.generalInfo[f"{key}{prefix}_Size"] = image.GetSize()
    self.generalInfo[f"{key}{prefix}_Mean"] = mean
    self.generalInfo[f"{key}{prefix}_Minimum"] = low
    self.generalInfo[f"{key}{prefix}_Maximum"] = high


# --- switching them on and off ------------------------------------------------------------------------------


class _Proxy:
    """A module as one PyRadiomics module sees it: some functions replaced, every other name the module's own."""

    def __init__(self, module, **replacements):
        self._module = module
        self.__dict__.update(replacements)

    def __getattr__(self, name: str):
        return getattr(self._module, name)


def _texture_replacements() -> list[tuple[object, str, object, object]]:
    """The texture matrices (items 5 and 6)."""
    return [
        *(
            (module, "cMatrices", cMatrices, fast_texture.texture_matrices)
            for module in (glcm, glrlm, glszm, gldm, ngtdm)
            if fast_texture.ready()  # compiled, or loaded from the disk cache, at the first install
        ),
        (base.RadiomicsFeaturesBase, "_applyBinning", fast_texture.stock_apply_binning, fast_texture.apply_binning),
    ]


def _replacements() -> list[tuple[object, str, object, object]]:
    """(PyRadiomics module, name in it, original, replacement)."""
    return [
        (shape, "cShape", cShape, _Proxy(cShape, calculate_coefficients=mesh_coefficients)),
        (imageoperations, "getBinEdges", _stock_get_bin_edges, bin_edges),
        (generalinfo, "sitk", sitk, _Proxy(sitk, Hash=image_sha1)),
        (imageoperations, "resampleImage", _stock_resample_image, resample_image),
        (imageoperations, "checkMask", _stock_check_mask, check_mask),
        (imageoperations, "getMask", _stock_get_mask, get_mask),
        (generalinfo.GeneralInfo, "addMaskElements", _stock_add_mask_elements, add_mask_elements),
        (generalinfo.GeneralInfo, "addImageElements", _stock_add_image_elements, add_image_elements),
        *_texture_replacements(),
    ]


def installed() -> bool:
    return isinstance(shape.cShape, _Proxy)


def _apply(use_replacements: bool) -> None:
    for module, name, original, replacement in _replacements():
        setattr(module, name, replacement if use_replacements else original)


def install() -> bool:
    """Apply the replacements unless disabled or PyRadiomics is a version they were not checked against."""
    if environment.read_flag(environment.STOCK_PYRADIOMICS):
        return False
    if radiomics.__version__ not in CHECKED_PYRADIOMICS_VERSIONS:
        logger.warning(
            "PyRadiomics %s: speed-ups not applied (checked against %s)",
            radiomics.__version__,
            ", ".join(CHECKED_PYRADIOMICS_VERSIONS),
        )
        return False
    if not installed():
        _apply(True)
    return True


def uninstall() -> None:
    _apply(False)


@contextlib.contextmanager
def stock_pyradiomics() -> Iterator[None]:
    """PyRadiomics exactly as installed, for the duration of the block, in this process (for comparisons in
    tests and benchmarks; not thread-safe, and worker processes keep their own setting)."""
    was_installed = installed()
    uninstall()
    try:
        yield
    finally:
        if was_installed:
            _apply(True)


@contextlib.contextmanager
def without_fast_texture() -> Iterator[None]:
    """The speed-ups without the texture kernels and the binning reuse (items 5 and 6), for before/after benchmarks."""
    was_installed = installed()
    for module, name, original, _ in _texture_replacements():
        setattr(module, name, original)
    try:
        yield
    finally:
        if was_installed:
            _apply(True)
