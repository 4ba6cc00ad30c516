"""PyRadiomics' texture matrices (GLCM, GLRLM, GLSZM, GLDM, NGTDM) computed by Numba kernels, to the last bit.

PyRadiomics 3.1.4 computes these matrices in its C extension ``radiomics._cmatrices``, written for any number of
dimensions: for every voxel of the bounding box it recovers the voxel's position by integer division and modulo
per dimension, and it grows GLSZM zones and GLRLM runs the same way. With LoG and wavelet filters these five
functions were 45 % of extraction time. The kernels here walk a copy of the grid padded with voxels outside the
ROI, so a neighbour is one addition away and needs no bounds check, grow zones from a stack of flat indices, and
count each run once from its first voxel; 1.5 to 3.5 times faster than the C code, and they count exactly what it
counts:

* the angles are PyRadiomics' own (``cMatrices.generate_angles`` with the arguments its wrapper uses), so the
  matrices have the same shape and the same angle order;
* GLCM, GLRLM, GLSZM and GLDM hold counts (whole numbers below 2**53, exact in float64), so equal counts are
  equal matrices; NGTDM's sums of absolute differences are accumulated in the C code's voxel order (raster order,
  neighbours in angle order), so they are the same doubles;
* GLRLM keeps the C code's rule for an angle whose every line holds at most one ROI voxel (its length-1 counts
  are zeroed: "segmentation is 2D for this angle"), GLSZM its empty-ROI matrix of one column.

Everything else goes to the C function as it is: voxel-based extraction (a kernel radius and voxel list), arrays
that are neither 2D nor 3D, and any input on which the C code would fail (a grey level outside 1..Ng, a GLSZM
voxel count smaller than the ROI), so its error is raised as before. :func:`texture_matrices` is the proxy of
``cMatrices`` that the PyRadiomics texture modules see once :func:`radiomics_assets.features.speedups.install`
has run; the feature formulas stay PyRadiomics' own. The same compiled kernels find the mesh's maximum diameters
for ``speedups`` (:func:`max_squared_distance`: PyRadiomics' distance expression over every candidate pair, the
same doubles in the same order).

The kernels are compiled once and cached on disk (``cache=True``, next to this file or in Numba's user cache
directory): :func:`warm_up`, run by ``speedups.install`` in every worker, compiles them under a file lock, so the
first worker writes the cache and the others load it (0.2-0.3 s). A cache that cannot be written only costs the
compilation in each process; a kernel that fails to compile or run hands its matrix to the C code.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import logging
import tempfile
from pathlib import Path

import numpy as np
from radiomics import base, cMatrices, imageoperations

logger = logging.getLogger(__name__)

_stock = cMatrices
stock_apply_binning = base.RadiomicsFeaturesBase._applyBinning

try:  # Numba is a dependency; should it fail to import, PyRadiomics' C functions stay in place
    from numba import njit
except ImportError:  # pragma: no cover - exercised only on a broken install
    njit = None


def _compile(function):
    """``njit(cache=True)``: compiled once, then loaded from Numba's on-disk cache by every process. Where no cache
    directory is writable Numba refuses ``cache=True``; the kernels are then compiled in each process instead."""
    if njit is None:
        return None
    try:
        return njit(cache=True, nogil=True)(function)
    except Exception:  # noqa: BLE001 - Numba's "no locator available": compile without a disk cache
        logger.warning("no writable Numba cache directory: %s is compiled in each process", function.__name__)
        return njit(nogil=True)(function)


def _run(kernel, *args):
    """(True, ``kernel(*args)``), or (False, None) if the kernel fails to compile or run: the caller then hands the
    matrix to PyRadiomics' C code, so a broken Numba install slows extraction down but never changes or fails it."""
    try:
        return True, kernel(*args)
    except Exception:  # noqa: BLE001 - any failure of the fast path falls back to PyRadiomics' own
        logger.warning("texture kernel %s failed; PyRadiomics' C code computes the matrix", kernel, exc_info=True)
        return False, None


# --- kernels ------------------------------------------------------------------------------------------------
# The grid arrives padded by each angle's reach with voxels outside the ROI, flattened: ``image`` int32, ``mask``
# bool, ``shape`` the padded (z, y, x) size, ``pad`` the padding per axis, ``offsets`` each angle's step in the
# flat array. A neighbour outside the grid is then a padding voxel outside the ROI, as the C code treats it.
# Grey levels are checked (1..Ng) before any kernel runs.


def _glcm_kernel(image, mask, shape, pad, offsets, out):
    na = offsets.shape[0]
    for z in range(pad[0], shape[0] - pad[0]):
        for y in range(pad[1], shape[1] - pad[1]):
            row = (z * shape[1] + y) * shape[2]
            for x in range(pad[2], shape[2] - pad[2]):
                i = row + x
                if not mask[i]:
                    continue
                gi = image[i] - 1
                for a in range(na):
                    j = i + offsets[a]
                    if mask[j]:
                        out[gi, image[j] - 1, a] += 1.0


def _gldm_kernel(image, mask, shape, pad, offsets, alpha, out):
    na = offsets.shape[0]
    for z in range(pad[0], shape[0] - pad[0]):
        for y in range(pad[1], shape[1] - pad[1]):
            row = (z * shape[1] + y) * shape[2]
            for x in range(pad[2], shape[2] - pad[2]):
                i = row + x
                if not mask[i]:
                    continue
                gi = image[i]
                dependent = 0
                for a in range(na):
                    j = i + offsets[a]
                    if mask[j] and abs(gi - image[j]) <= alpha:
                        dependent += 1
                out[gi - 1, dependent] += 1.0


def _ngtdm_kernel(image, mask, shape, pad, offsets, out):
    na = offsets.shape[0]
    for level in range(out.shape[0]):
        out[level, 2] = level + 1
    for z in range(pad[0], shape[0] - pad[0]):
        for y in range(pad[1], shape[1] - pad[1]):
            row = (z * shape[1] + y) * shape[2]
            for x in range(pad[2], shape[2] - pad[2]):
                i = row + x
                if not mask[i]:
                    continue
                gi = image[i]
                count = 0.0
                total = 0.0
                for a in range(na):  # the C code's order of summation: the same double
                    j = i + offsets[a]
                    if mask[j]:
                        count += 1.0
                        total += image[j]
                diff = 0.0 if count == 0 else float(gi) - total / count
                if diff < 0:
                    diff = -diff
                out[gi - 1, 0] += 1.0
                out[gi - 1, 1] += diff


def _glszm_kernel(image, mask, shape, pad, offsets, voxels, zones):
    """Zones (grey level, size) of the ROI connected through ``offsets``; returns (zone count, largest zone).

    ``voxels`` is the ROI's voxel count: each voxel enters the stack once."""
    na = offsets.shape[0]
    todo = mask.copy()
    stack = np.empty(max(voxels, 1), dtype=np.int64)
    n_zones = 0
    largest = 0
    for z in range(pad[0], shape[0] - pad[0]):
        for y in range(pad[1], shape[1] - pad[1]):
            row = (z * shape[1] + y) * shape[2]
            for x in range(pad[2], shape[2] - pad[2]):
                i = row + x
                if not todo[i]:
                    continue
                level = image[i]
                todo[i] = False
                stack[0] = i
                top = 1
                size = 0
                while top > 0:
                    top -= 1
                    k = stack[top]
                    size += 1
                    for a in range(na):
                        j = k + offsets[a]
                        if todo[j] and image[j] == level:
                            todo[j] = False
                            stack[top] = j
                            top += 1
                zones[n_zones, 0] = level
                zones[n_zones, 1] = size
                n_zones += 1
                if size > largest:
                    largest = size
    return n_zones, largest


def _glrlm_kernel(image, mask, shape, pad, offsets, nr, out):
    """Runs along every line of the grid in each angle's direction, as PyRadiomics' C code counts them.

    ``offsets`` point forward in raster order (a run is the same run walked either way): a run starts at an ROI
    voxel whose predecessor on the line is not in the same run, and is walked from there. Returns False where a
    run would not fit in ``nr`` (the C code fails)."""
    na = offsets.shape[0]
    multi_element = np.zeros(na, dtype=np.bool_)  # per angle: some line holds two ROI voxels
    for z in range(pad[0], shape[0] - pad[0]):
        for y in range(pad[1], shape[1] - pad[1]):
            row = (z * shape[1] + y) * shape[2]
            for x in range(pad[2], shape[2] - pad[2]):
                i = row + x
                if not mask[i]:
                    continue
                level = image[i]
                for a in range(na):
                    step = offsets[a]
                    before = i - step
                    if mask[before]:
                        multi_element[a] = True
                        if image[before] == level:
                            continue  # inside a run counted from its start
                    length = 0
                    j = i + step
                    while mask[j] and image[j] == level:
                        length += 1
                        j += step
                    if length >= nr:
                        return False
                    out[level - 1, length, a] += 1.0
    for a in range(na):
        if not multi_element[a] and not _two_on_a_line(mask, shape, pad, offsets[a]):
            for level in range(out.shape[0]):  # "segmentation is 2D for this angle": PyRadiomics drops its runs
                out[level, 0, a] = 0.0
    return True


def _two_on_a_line(mask, shape, pad, step):
    """Whether a line along ``step`` holds two ROI voxels (not next to each other: that case is seen directly)."""
    on_line = np.zeros(mask.shape[0], dtype=np.int32)
    for z in range(pad[0], shape[0] - pad[0]):
        for y in range(pad[1], shape[1] - pad[1]):
            row = (z * shape[1] + y) * shape[2]
            for x in range(pad[2], shape[2] - pad[2]):
                i = row + x
                on_line[i] = on_line[i - step] + (1 if mask[i] else 0)
                if on_line[i] > 1:
                    return True
    return False


def _max_squared_distance_kernel(points, starts, ends):
    """The largest ``(dz * dz + dy * dy) + dx * dx`` over pairs of rows of ``points`` within each group
    ``starts[g]:ends[g]``: PyRadiomics' diameter expression, in its order, so the same doubles."""
    best = 0.0
    for g in range(starts.shape[0]):
        for i in range(starts[g], ends[g]):
            for j in range(i + 1, ends[g]):
                dz = points[i, 0] - points[j, 0]
                dy = points[i, 1] - points[j, 1]
                dx = points[i, 2] - points[j, 2]
                squared = (dz * dz + dy * dy) + dx * dx
                if squared > best:
                    best = squared
    return best


_two_on_a_line = _compile(_two_on_a_line)
_max_squared_distance = _compile(_max_squared_distance_kernel)
_glcm = _compile(_glcm_kernel)
_gldm = _compile(_gldm_kernel)
_ngtdm = _compile(_ngtdm_kernel)
_glszm = _compile(_glszm_kernel)
_glrlm = _compile(_glrlm_kernel)
AVAILABLE = njit is not None


def warm_up() -> bool:
    """Compile (or load from the disk cache) every kernel now, one process at a time.

    Worker processes start together; without this each would compile the kernels on its first ROI when the
    cache is empty (after an install or an upgrade). Under a file lock the first compiles and writes the cache,
    the others wait and then load it. Returns False (and extraction uses the C code) if the kernels fail."""
    if not AVAILABLE:
        return False
    lock_path = Path(tempfile.gettempdir()) / "radiomics_assets_numba_kernels.lock"
    try:
        lock = open(lock_path, "a")  # noqa: SIM115 - held for the duration, closed below
    except OSError:
        lock = None
    try:
        if lock is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(lock, fcntl.LOCK_EX)
        image, mask = np.ones((2, 2, 2), dtype=np.intc), np.ones((2, 2, 2), dtype=bool)
        ok = [
            calculate_glcm(image, mask, np.array([1]), 1, False, 0) is not None,
            calculate_gldm(image, mask, np.array([1]), 1, 0, False, 0) is not None,
            calculate_ngtdm(image, mask, np.array([1]), 1, False, 0) is not None,
            calculate_glszm(image, mask, 1, 8, False, 0) is not None,
            calculate_glrlm(image, mask, 1, 2, False, 0) is not None,
        ]
        ok.append(max_squared_distance(np.zeros((2, 3)), np.array([0]), np.array([2])) == 0.0)
        kernels = (_glcm, _gldm, _ngtdm, _glszm, _glrlm, _max_squared_distance)
        return all(ok) and all(kernel.signatures for kernel in kernels)
    finally:
        if lock is not None:
            lock.close()  # releases the lock


@functools.cache
def ready() -> bool:
    """:func:`warm_up`, once per process: whether the kernels are there to be used."""
    return warm_up()


def max_squared_distance(points: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> float | None:
    """PyRadiomics' largest squared distance between two of ``points`` (float64, rows z, y, x in mm) in the same
    group ``starts[g]:ends[g]`` (the mesh diameters: one group, or one per plane); None if the kernel failed."""
    ok, best = _run(
        _max_squared_distance,
        np.ascontiguousarray(points, dtype=np.float64),
        np.asarray(starts, dtype=np.int64),
        np.asarray(ends, dtype=np.int64),
    )
    return float(best) if ok else None


# --- PyRadiomics' calling convention ------------------------------------------------------------------------


def _grid(image, mask, ng):
    """(image int32 3D, mask bool 3D) as the C wrapper reads them, a 2D grid as one slice; None for what the kernels
    leave to the C code: other dimensions, and grey levels in the ROI outside 1..Ng (on which it fails)."""
    image, mask = np.asarray(image), np.asarray(mask)
    if image.ndim not in (2, 3) or image.shape != mask.shape or 0 in image.shape:
        return None
    # The C wrapper casts the same way (NPY_INT, NPY_BOOL with forced casting).
    image = np.ascontiguousarray(image, dtype=np.intc)
    mask = np.ascontiguousarray(mask, dtype=bool)
    levels = image[mask]
    if levels.size and (levels.min() < 1 or levels.max() > int(ng)):
        return None
    if image.ndim == 2:  # a 2D grid is a 3D grid of one slice; its angles never move along that slice axis
        image, mask = image[None], mask[None]
    return image, mask


def _angles(shape, distances, bidirectional, force2d, force2d_dimension):
    """PyRadiomics' angles for this grid (its own generator, hence its order), and the same as (dz, dy, dx)."""
    angles = _stock.generate_angles(np.array(shape), distances, bidirectional, force2d, force2d_dimension)
    as_3d = np.zeros((angles.shape[0], 3), dtype=np.int64)
    as_3d[:, 3 - angles.shape[1] :] = angles
    return angles, as_3d


def _padded(image, mask, angles3, forward=False):
    """The grid padded by the angles' reach, flattened, with its shape, padding and each angle's flat step.

    ``forward``: each angle or its opposite, whichever steps forward in raster order (for runs)."""
    pad = np.abs(angles3).max(axis=0) if len(angles3) else np.zeros(3, dtype=np.int64)
    width = [(int(p), int(p)) for p in pad]
    image_p = np.pad(image, width).ravel()
    mask_p = np.pad(mask, width).ravel()
    shape = np.array(image.shape, dtype=np.int64) + 2 * pad
    offsets = angles3 @ np.array([shape[1] * shape[2], shape[2], 1], dtype=np.int64)
    if forward:
        offsets = np.abs(offsets)
    return image_p, mask_p, shape, pad.astype(np.int64), offsets


def calculate_glcm(image, mask, distances, ng, force2d, force2d_dimension, *voxel_based):
    grid = None if voxel_based else _grid(image, mask, ng)
    if grid is None:
        return _stock.calculate_glcm(image, mask, distances, ng, force2d, force2d_dimension, *voxel_based)
    angles, angles3 = _angles(np.shape(image), distances, 0, force2d, force2d_dimension)
    out = np.zeros((int(ng), int(ng), len(angles)))
    if not _run(_glcm, *_padded(*grid, angles3), out)[0]:
        return _stock.calculate_glcm(image, mask, distances, ng, force2d, force2d_dimension)
    return out[None], angles


def calculate_gldm(image, mask, distances, ng, alpha, force2d, force2d_dimension, *voxel_based):
    grid = None if voxel_based or not isinstance(alpha, (int, np.integer)) else _grid(image, mask, ng)
    if grid is None:
        return _stock.calculate_gldm(image, mask, distances, ng, alpha, force2d, force2d_dimension, *voxel_based)
    _, angles3 = _angles(np.shape(image), distances, 1, force2d, force2d_dimension)
    out = np.zeros((int(ng), 2 * len(angles3) + 1))
    if not _run(_gldm, *_padded(*grid, angles3), int(alpha), out)[0]:
        return _stock.calculate_gldm(image, mask, distances, ng, alpha, force2d, force2d_dimension)
    return out[None]


def calculate_ngtdm(image, mask, distances, ng, force2d, force2d_dimension, *voxel_based):
    grid = None if voxel_based else _grid(image, mask, ng)
    if grid is None:
        return _stock.calculate_ngtdm(image, mask, distances, ng, force2d, force2d_dimension, *voxel_based)
    _, angles3 = _angles(np.shape(image), distances, 1, force2d, force2d_dimension)
    out = np.zeros((int(ng), 3))
    if not _run(_ngtdm, *_padded(*grid, angles3), out)[0]:
        return _stock.calculate_ngtdm(image, mask, distances, ng, force2d, force2d_dimension)
    return out[None]


def calculate_glszm(image, mask, ng, ns, force2d, force2d_dimension, *voxel_based):
    grid = None if voxel_based else _grid(image, mask, ng)
    voxels = 0 if grid is None else int(np.count_nonzero(grid[1]))
    # The C code fails when ns is 0 and overflows its buffers when ns is below the ROI's size: its case.
    if grid is None or int(ns) < max(voxels, 1):
        return _stock.calculate_glszm(image, mask, ng, ns, force2d, force2d_dimension, *voxel_based)
    _, angles3 = _angles(np.shape(image), np.array([1]), 1, force2d, force2d_dimension)
    zones = np.empty((max(voxels, 1), 2), dtype=np.int64)
    ran, result = _run(_glszm, *_padded(*grid, angles3), voxels, zones)
    if not ran:
        return _stock.calculate_glszm(image, mask, ng, ns, force2d, force2d_dimension)
    count, largest = result
    out = np.zeros((int(ng), max(int(largest), 1)))
    np.add.at(out, (zones[:count, 0] - 1, zones[:count, 1] - 1), 1.0)
    return out[None]


def calculate_glrlm(image, mask, ng, nr, force2d, force2d_dimension, *voxel_based):
    grid = None if voxel_based else _grid(image, mask, ng)
    if grid is None:
        return _stock.calculate_glrlm(image, mask, ng, nr, force2d, force2d_dimension, *voxel_based)
    angles, angles3 = _angles(np.shape(image), np.array([1]), 0, force2d, force2d_dimension)
    out = np.zeros((int(ng), int(nr), len(angles)))
    ran, complete = _run(_glrlm, *_padded(*grid, angles3, forward=True), int(nr), out)
    if not (ran and complete):
        return _stock.calculate_glrlm(image, mask, ng, nr, force2d, force2d_dimension)
    return out[None], angles


class _FastMatrices:
    """``radiomics.cMatrices`` as the texture modules see it: the five matrices from the kernels above, every
    other name (``generate_angles``) the C module's own."""

    calculate_glcm = staticmethod(calculate_glcm)
    calculate_gldm = staticmethod(calculate_gldm)
    calculate_ngtdm = staticmethod(calculate_ngtdm)
    calculate_glszm = staticmethod(calculate_glszm)
    calculate_glrlm = staticmethod(calculate_glrlm)

    def __getattr__(self, name: str):
        return getattr(_stock, name)


texture_matrices = _FastMatrices()


# --- binning once per image type ----------------------------------------------------------------------------

_last_binning: tuple | None = None
"""(image array, mask, settings, binned array, grey levels) of the last binning, for the next feature class."""


def _same_settings(first: dict, second: dict) -> bool:
    try:
        return bool(first == second)
    except ValueError:  # array-valued settings: compare as unequal, and bin again
        return False


def apply_binning(self, matrix):
    """``RadiomicsFeaturesBase._applyBinning``, done once for the feature classes of one image type.

    Every feature class of an image type bins the same image in the same ROI with the same settings; the result
    of the last binning is reused when all three are equal (compared element by element, so nothing is reused
    for different input; NaN never compares equal, so such input is binned again). The grey levels present are
    ``np.unique`` of the binned ROI, found by counting (the binned values are small non-negative bin indices).
    """
    global _last_binning
    mask = self.maskArray
    if self.voxelBased or not isinstance(matrix, np.ndarray) or mask.shape != matrix.shape:
        return stock_apply_binning(self, matrix)
    last = _last_binning
    if (
        last is not None
        and last[0].shape == matrix.shape
        and last[0].dtype == matrix.dtype
        and _same_settings(last[2], self.settings)
        and np.array_equal(last[1], mask)
        and np.array_equal(last[0], matrix)
    ):
        binned, levels = last[3].copy(), last[4].copy()
    else:
        binned, _ = imageoperations.binImage(matrix, mask, **self.settings)
        inside = binned[mask]
        countable = (
            inside.size and np.issubdtype(inside.dtype, np.integer) and inside.min() >= 0 and inside.max() < 1 << 24
        )
        levels = np.flatnonzero(np.bincount(inside)).astype(inside.dtype) if countable else np.unique(inside)
        _last_binning = (matrix.copy(), mask.copy(), dict(self.settings), binned.copy(), levels.copy())
    self.coefficients["grayLevels"] = levels
    self.coefficients["Ng"] = int(np.max(levels))  # empty ROI: the same ValueError as PyRadiomics'
    return binned
