"""Feature robustness: PyRadiomics features re-extracted under small perturbations of the mask and the image.

A feature that changes more between a lesion's plausible re-segmentations (or re-scans) than between
patients cannot carry a signal; radiomics quality practice (MIRP, the R package familiar) measures this with
an ICC over perturbed re-extractions and keeps only features above a threshold. This module makes the
perturbations and re-extracts one (image, mask) pair under each of them; the ICC is computed over the cohort
by ``modelling.feature_icc``.

Perturbations of one (series, ROI), all on the stored image grid (before any resampling PyRadiomics does):

- ``original``: the stored image and mask, unchanged (its values equal the stored ``features`` rows);
- ``erode``: the ROI voxels that have a face-neighbour outside the ROI removed (one voxel; in-plane only for
  2D extraction, i.e. a one-slice image or a ``force2D`` parameter file);
- ``dilate``: the outside voxels that have a face-neighbour in the ROI added (the same neighbourhood);
- ``contour_<i>``: contour randomisation by a random boundary shift. The signed distance to the ROI boundary
  (mm, voxel centres, in-plane for 2D) plus a smooth Gaussian random field (unit SD, correlation length
  ``contour_correlation_voxels``, clipped to +/- 2 SD, scaled by ``contour_shift_voxels`` in-plane voxel spacings)
  is thresholded at 0. The boundary moves in and out by about one voxel in patches; no voxel further than
  ``2 * contour_shift_voxels`` in-plane spacings from the boundary changes. (MIRP draws supervoxels instead; a
  smooth field gives the same kind of locally coherent boundary change without a supervoxel library.)
- ``noise_<i>``: Gaussian noise with the image's own noise level added to the image (mask unchanged). The
  level is estimated robustly around the ROI (Immerkaer's Laplacian-difference operator per slice, its median
  absolute deviation / 0.6745 / 6), so it is in image units (HU, SUV, grey levels) and hardly raised by edges.

Every random draw comes from a generator seeded by (``seed``, patient, series, ROI): the same settings give the
same perturbations in any process and task order.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk
import yaml
from scipy import ndimage

from radiomics_assets.errors import ExtractionError, InputError, ParameterFileError
from radiomics_assets.features.extraction import ExtractionTarget, extract, prepare_pyradiomics

ORIGINAL = "original"
PERTURBATION_COLUMNS = ["patient_id", "feature", "perturbation", "value"]
FAILURE_COLUMNS = ["patient_id", "series_uid", "roi", "error"]
NOISE_MARGIN_VOXELS = 10
"""Noise is added in the ROI's bounding box plus this many voxels on every side (clipped to the image): enough
for PyRadiomics' resampling kernel and padding around the ROI, without drawing noise for a whole 512 x 512 CT."""
NOISE_ESTIMATE_MARGIN_VOXELS = 5
"""The noise level is estimated in-plane over the ROI's bounding box grown by this many voxels."""
_MAD_TO_SD = 1.4826  # 1 / Phi^-1(3/4): the median absolute deviation of a normal distribution times this is its SD
_IMMERKAER = np.array([[1.0, -2.0, 1.0], [-2.0, 4.0, -2.0], [1.0, -2.0, 1.0]])
_IMMERKAER_NORM = float(np.sqrt((_IMMERKAER**2).sum()))  # = 6: the operator's gain on white noise


@dataclass(frozen=True)
class PerturbationSettings:
    """How each (series, ROI) is perturbed; plain values so it pickles to worker processes."""

    repetitions: int
    """Random draws of each random kind (contour randomisation, noise); erosion and dilation are made once."""
    seed: int = 0
    contour_shift_voxels: float = 1.0
    """Scale of the random boundary shift, in in-plane voxel spacings (the shift is clipped to twice this)."""
    contour_correlation_voxels: float = 2.0
    """Smoothing (Gaussian sigma, voxels) of the random field: how large the patches that move together are."""

    def names(self) -> list[str]:
        """The perturbations of one (series, ROI), in order, ``original`` first."""
        draws = range(1, self.repetitions + 1)
        return [ORIGINAL, "erode", "dilate", *(f"contour_{i}" for i in draws), *(f"noise_{i}" for i in draws)]


def feature_name(modality: str, roi: str, image_type: str, feature_class: str, feature: str) -> str:
    """The feature-matrix column of a feature: ``<modality>__<roi>__<image_type>__<class>__<feature>``."""
    return f"{modality}__{roi}__{image_type}__{feature_class}__{feature}"


# --- mask perturbations (numpy arrays in (z, y, x) order, as sitk.GetArrayFromImage returns them) ----------


def _face_neighbourhood(in_plane: bool) -> np.ndarray:
    """Face-connected 3D neighbourhood (6 neighbours), or the 4 in-plane ones for 2D extraction."""
    structure = ndimage.generate_binary_structure(3, 1)
    if in_plane:
        structure[0], structure[2] = False, False
    return structure


def boundary_voxels(mask: np.ndarray, *, in_plane: bool) -> np.ndarray:
    """ROI voxels with at least one face-neighbour outside the ROI (outside the image counts as outside)."""
    mask = mask.astype(bool)
    return mask & ~ndimage.binary_erosion(mask, _face_neighbourhood(in_plane), border_value=0)


def erode_mask(mask: np.ndarray, *, in_plane: bool) -> np.ndarray:
    """The ROI without its boundary voxels (see :func:`boundary_voxels`)."""
    return ndimage.binary_erosion(mask.astype(bool), _face_neighbourhood(in_plane), border_value=0)


def dilate_mask(mask: np.ndarray, *, in_plane: bool) -> np.ndarray:
    """The ROI plus every voxel that has a face-neighbour in it (within the image)."""
    return ndimage.binary_dilation(mask.astype(bool), _face_neighbourhood(in_plane))


def _bounding_box(mask: np.ndarray, margin: tuple[int, int, int]) -> tuple[slice, ...]:
    where = np.argwhere(mask)
    low = np.maximum(where.min(axis=0) - margin, 0)
    high = np.minimum(where.max(axis=0) + 1 + np.asarray(margin), mask.shape)
    return tuple(slice(int(a), int(b)) for a, b in zip(low, high, strict=True))


def signed_distance_mm(mask: np.ndarray, spacing_zyx: tuple[float, float, float], *, in_plane: bool) -> np.ndarray:
    """Distance (mm) of each voxel centre to the nearest centre on the other side: negative inside, positive outside.

    In-plane (2D extraction): distances within each slice only, so a slice's ROI never grows into its neighbours.
    """
    mask = mask.astype(bool)
    if in_plane:
        slices = [signed_distance_mm(s[None], (1.0, *spacing_zyx[1:]), in_plane=False)[0] for s in mask]
        return np.stack(slices)
    inside = ndimage.distance_transform_edt(mask, sampling=spacing_zyx) if (~mask).any() else np.full(mask.shape, 1e9)
    outside = ndimage.distance_transform_edt(~mask, sampling=spacing_zyx) if mask.any() else np.full(mask.shape, 1e9)
    return np.where(mask, -inside, outside)


def randomise_contour(
    mask: np.ndarray,
    spacing_zyx: tuple[float, float, float],
    rng: np.random.Generator,
    *,
    in_plane: bool,
    shift_voxels: float = 1.0,
    correlation_voxels: float = 2.0,
) -> np.ndarray:
    """The ROI with its boundary shifted in and out by a smooth random field (module docstring).

    Voxels further than ``2 * shift_voxels`` in-plane spacings from the other side never change. Work is done in the
    ROI's bounding box grown by the largest possible shift, so large images cost no more than small ones.
    """
    mask = mask.astype(bool)
    step_mm = float(min(spacing_zyx[1:]))
    max_shift_mm = 2.0 * shift_voxels * step_mm
    grow = int(np.ceil(max_shift_mm / min(spacing_zyx))) + 1
    margin = (0 if in_plane else grow, grow, grow)
    box = _bounding_box(mask, margin)
    local = mask[box]
    distance = signed_distance_mm(local, spacing_zyx, in_plane=in_plane)
    sigma = (0.0 if in_plane else correlation_voxels, correlation_voxels, correlation_voxels)
    field = ndimage.gaussian_filter(rng.standard_normal(local.shape), sigma=sigma, mode="reflect")
    field = np.clip(field / (field.std() or 1.0), -2.0, 2.0)
    shifted = distance + shift_voxels * step_mm * field < 0  # positive field pushes the boundary inwards
    result = mask.copy()
    result[box] = shifted
    return result


# --- image noise -----------------------------------------------------------------------------------------


def estimate_noise_sd(
    image: np.ndarray, mask: np.ndarray, *, margin_voxels: int = NOISE_ESTIMATE_MARGIN_VOXELS
) -> float:
    """Noise standard deviation (image units) around the ROI, robust to edges and texture.

    Immerkaer's operator (the difference of two Laplacians, zero on any linear ramp) is applied per slice inside the
    ROI's bounding box grown in-plane by ``margin_voxels``; on white Gaussian noise of SD s its output has SD 6 s, so
    SD = 1.4826 * MAD(output) / 6. Pixels whose 3 x 3 neighbourhood crosses the ROI boundary are left out (the
    lesion edge is structure, not noise), and the median ignores the remaining minority of edge responses.
    """
    mask = mask.astype(bool)
    box = _bounding_box(mask, (0, margin_voxels, margin_voxels))
    region, roi = np.asarray(image[box], dtype=np.float64), mask[box]
    if region.shape[1] < 3 or region.shape[2] < 3:
        raise InputError(f"image region around the ROI is {region.shape[1:]} pixels in-plane: too small for noise")
    square = np.zeros((3, 3, 3), dtype=bool)
    square[1] = True
    crosses_edge = ndimage.binary_dilation(roi, square) & ~ndimage.binary_erosion(roi, square, border_value=1)
    responses = [
        ndimage.correlate(plane, _IMMERKAER, mode="constant")[1:-1, 1:-1][~edge[1:-1, 1:-1]]
        for plane, edge in zip(region, crosses_edge, strict=True)
    ]
    responses = np.concatenate(responses)
    if responses.size < 9:
        raise InputError(f"only {responses.size} pixels around the ROI away from its edge: too few to estimate noise")
    mad = np.median(np.abs(responses - np.median(responses)))
    return float(_MAD_TO_SD * mad / _IMMERKAER_NORM)


def add_noise(image: np.ndarray, mask: np.ndarray, sd: float, rng: np.random.Generator) -> np.ndarray:
    """``image`` plus Gaussian noise of ``sd`` (image units) in the ROI's box grown by ``NOISE_MARGIN_VOXELS``.

    Floating-point images keep their dtype (stored volumes are float32); integer images are rounded and clipped to
    their type, as a scanner would store them.
    """
    box = _bounding_box(mask.astype(bool), (NOISE_MARGIN_VOXELS,) * 3)
    noisy = np.asarray(image, dtype=np.float64).copy()
    noisy[box] += rng.normal(0.0, sd, size=noisy[box].shape)
    if np.issubdtype(image.dtype, np.integer):
        limits = np.iinfo(image.dtype)
        return np.clip(np.rint(noisy), limits.min, limits.max).astype(image.dtype)
    return noisy.astype(image.dtype)


# --- one (series, ROI): every perturbation re-extracted --------------------------------------------------


def extracts_in_plane(image: sitk.Image, params_path: Path) -> bool:
    """Whether PyRadiomics extracts in 2D here: a one-slice image, or ``force2D`` in the parameter file."""
    if image.GetDimension() == 2 or image.GetSize()[2] == 1:
        return True
    settings = (yaml.safe_load(Path(params_path).read_text()) or {}).get("setting") or {}
    if not settings.get("force2D", False):
        return False
    if settings.get("force2Ddimension", 0) != 0:  # in-plane here means within an axial slice (array axis 0)
        raise ParameterFileError(
            f"{params_path}: force2Ddimension {settings['force2Ddimension']} is not supported by the robustness "
            "perturbations (they erode, dilate and randomise within axial slices: use force2Ddimension 0)"
        )
    return True


def _rng(settings: PerturbationSettings, target: ExtractionTarget) -> np.random.Generator:
    """A generator for this (seed, patient, series, ROI), independent of process and task order."""
    digest = hashlib.sha256(f"{target.patient_id}\0{target.series_uid}\0{target.roi}".encode()).digest()
    return np.random.default_rng([settings.seed, int.from_bytes(digest[:8], "little")])


def _as_image(array: np.ndarray, like: sitk.Image, *, mask: bool) -> sitk.Image:
    image = sitk.GetImageFromArray(array.astype(np.uint8) if mask else array)
    image.CopyInformation(like)
    return image


def perturbed_inputs(
    target: ExtractionTarget, params_path: Path, settings: PerturbationSettings
) -> Iterator[tuple[str, sitk.Image, sitk.Image]]:
    """(perturbation name, image, mask) for every name of ``settings.names()``, in that order.

    The mask's label value is 1 (as stored); the original image and mask objects are passed through unchanged.
    """
    rng = _rng(settings, target)
    image_array = sitk.GetArrayFromImage(target.image)
    mask_array = sitk.GetArrayFromImage(target.mask) == 1
    if not mask_array.any():
        raise InputError("mask has no voxel with label 1")
    in_plane = extracts_in_plane(target.image, params_path)
    spacing_zyx = tuple(float(s) for s in reversed(target.image.GetSpacing()))
    yield ORIGINAL, target.image, target.mask
    yield "erode", target.image, _as_image(erode_mask(mask_array, in_plane=in_plane), target.mask, mask=True)
    yield "dilate", target.image, _as_image(dilate_mask(mask_array, in_plane=in_plane), target.mask, mask=True)
    for i in range(1, settings.repetitions + 1):
        contour = randomise_contour(
            mask_array,
            spacing_zyx,
            rng,
            in_plane=in_plane,
            shift_voxels=settings.contour_shift_voxels,
            correlation_voxels=settings.contour_correlation_voxels,
        )
        yield f"contour_{i}", target.image, _as_image(contour, target.mask, mask=True)
    noise_sd = estimate_noise_sd(image_array, mask_array)
    for i in range(1, settings.repetitions + 1):
        noisy = add_noise(image_array, mask_array, noise_sd, rng)
        yield f"noise_{i}", _as_image(noisy, target.image, mask=False), target.mask


def perturbed_features(target: ExtractionTarget, params_path: Path, settings: PerturbationSettings) -> pd.DataFrame:
    """PyRadiomics features of one (series, ROI) under every perturbation: long rows ``PERTURBATION_COLUMNS``.

    A perturbation PyRadiomics rejects (e.g. an eroded ROI below ``minimumROISize``) fails the whole (series, ROI)
    with the perturbation named: a feature without all its perturbations has no ICC.
    """
    frames = []
    for name, image, mask in perturbed_inputs(target, params_path, settings):
        perturbed = ExtractionTarget(target.patient_id, target.series_uid, target.modality, target.roi, image, mask)
        try:
            rows, _ = extract(perturbed, params_path)
        except InputError:
            raise
        except Exception as exc:  # noqa: BLE001 - PyRadiomics raises ValueError etc.; say which perturbation
            raise ExtractionError(f"perturbation {name!r}: PyRadiomics failed: {type(exc).__name__}: {exc}") from None
        names = [
            feature_name(target.modality, target.roi, t, c, f)
            for t, c, f in zip(rows.image_type, rows.feature_class, rows.feature, strict=True)
        ]
        frames.append(
            pd.DataFrame(
                {
                    "patient_id": target.patient_id,
                    "feature": names,
                    "perturbation": name,
                    "value": rows.value.to_numpy(),
                }
            )
        )
    return pd.concat(frames, ignore_index=True)[PERTURBATION_COLUMNS]


# --- the cohort: one task per stored (series, ROI) on a pool of workers ----------------------------------


@dataclass(frozen=True)
class PerturbationTask:
    """One stored (series, ROI) to perturb; plain values so it pickles to a worker."""

    patient_id: str
    series_uid: str
    modality: str
    roi: str
    volume_path: str
    mask_path: str
    params_path: str


def run_task(task: PerturbationTask, settings: PerturbationSettings) -> pd.DataFrame:
    """Read the stored volume and mask, then :func:`perturbed_features`; errors name both files. Runs in a worker."""
    where = f"{task.mask_path} on {task.volume_path}"
    if not task.params_path:
        raise ParameterFileError(f"{where}: no parameter file for modality {task.modality}")
    try:
        target = ExtractionTarget(
            task.patient_id,
            task.series_uid,
            task.modality,
            task.roi,
            sitk.ReadImage(task.volume_path),
            sitk.ReadImage(task.mask_path),
        )
        return perturbed_features(target, Path(task.params_path), settings)
    except InputError as exc:
        raise ExtractionError(f"{where}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - the pool loses the traceback: keep type and files
        raise ExtractionError(f"{where}: {type(exc).__name__}: {exc}") from None


def cohort_tasks(series: pd.DataFrame, masks: pd.DataFrame, params: dict[str, Path]) -> list[PerturbationTask]:
    """One task per row of ``masks`` (the stored ROI masks) joined with its ``series`` row (the stored volume)."""
    joined = masks.merge(
        series[["patient_id", "series_uid", "modality", "volume_path"]], on=["patient_id", "series_uid"]
    )
    tasks = []
    for row in joined.sort_values(["patient_id", "series_uid", "roi"]).itertuples(index=False):
        tasks.append(
            PerturbationTask(
                row.patient_id,
                row.series_uid,
                row.modality,
                row.roi,
                row.volume_path,
                row.mask_path,
                str(params.get(row.modality, "")),  # none: the task fails for this patient only
            )
        )
    return tasks


def perturb_cohort(
    tasks: list[PerturbationTask], settings: PerturbationSettings, pool: Executor
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Run every task on ``pool``; returns (perturbation rows of the patients whose every ROI succeeded, failures).

    A failing (series, ROI) costs its patient only: none of that patient's rows are returned (a patient with some
    ROIs perturbed and others not would enter the ICC of only some features), and the failure names the files.
    """
    prepare_pyradiomics()  # for an in-process pool; worker processes do it in their initialiser
    futures = [(task, pool.submit(run_task, task, settings)) for task in tasks]
    results, failures = [], []
    for task, future in futures:
        try:
            results.append(future.result())
        except Exception as exc:  # noqa: BLE001 - reported per patient
            failures.append(
                {"patient_id": task.patient_id, "series_uid": task.series_uid, "roi": task.roi, "error": str(exc)}
            )
    failed = {f["patient_id"] for f in failures}
    kept = [rows for rows in results if len(rows) and rows.patient_id.iloc[0] not in failed]
    rows = pd.concat(kept, ignore_index=True) if kept else pd.DataFrame(columns=PERTURBATION_COLUMNS)
    return rows, pd.DataFrame(failures, columns=FAILURE_COLUMNS)
