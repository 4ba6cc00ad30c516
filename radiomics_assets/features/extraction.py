"""PyRadiomics feature extraction into long-format rows with provenance.

One row per (series, ROI, image type, feature class, feature). PyRadiomics' ``diagnostics_*`` entries are
returned separately, so the feature table holds only numbers a model may use.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import radiomics
import SimpleITK as sitk
from radiomics import featureextractor

from radiomics_assets.errors import ExtractionError, ParameterFileError
from radiomics_assets.features.parameter_files import DEFAULT_MAX_GREY_LEVELS
from radiomics_assets.features.speedups import install as install_speedups
from radiomics_assets.features.speedups import installed as installed_speedups
from radiomics_assets.geometry import grid_mismatch
from radiomics_assets.hashing import file_hash, image_hash

FEATURE_COLUMNS = [
    "patient_id",
    "series_uid",
    "modality",
    "roi",
    "image_type",
    "feature_class",
    "feature",
    "value",
    "params_hash",
    "pyradiomics_version",
    "image_hash",
    "mask_hash",
    "extracted_at",
]


def prepare_pyradiomics() -> None:
    """Make PyRadiomics ready in this process; called by every worker's initialiser and by the in-process path.

    PyRadiomics logs every filter at INFO and warns on every GLCM (symmetry note): errors only. The value-preserving
    speed-ups of its hot spots are installed (``RADIOMICS_STOCK_PYRADIOMICS=1`` leaves PyRadiomics untouched).
    """
    logging.getLogger("radiomics").setLevel(logging.ERROR)
    install_speedups()


@dataclass(frozen=True)
class ExtractionTarget:
    patient_id: str
    series_uid: str
    modality: str
    roi: str
    image: sitk.Image
    mask: sitk.Image
    data_bits: int | None = None
    """Bit depth of the data of a PNG image (``series.units``, ``file_pairs.png_bits``); None for other images."""
    source: str = ""
    """The input file the image was read from (``series.source_path``), named in refusals about its data."""


def load_extractor(params_path: Path) -> featureextractor.RadiomicsFeatureExtractor:
    """The extractor for a parameter file; a file PyRadiomics rejects raises with the schema message.

    One extractor per file version and process: PyRadiomics validates the file against its schema on every
    construction (0.1 s, as long as extracting 107 features from a small ROI), and ``execute`` leaves the
    extractor unchanged, so workers and the batch driver reuse it.
    """
    path = Path(params_path)
    if not path.is_file():
        raise ParameterFileError(f"{params_path}: parameter file not found")
    stat = path.stat()
    try:
        return _extractor_for(str(path.resolve()), stat.st_mtime_ns, stat.st_size)
    except Exception as exc:  # PyRadiomics raises ValueError or pykwalify's SchemaError
        raise ParameterFileError(f"{params_path}: invalid PyRadiomics parameter file: {exc}") from exc


@functools.lru_cache(maxsize=32)
def _extractor_for(path: str, mtime_ns: int, size: int) -> featureextractor.RadiomicsFeatureExtractor:
    return featureextractor.RadiomicsFeatureExtractor(path)  # the file's version is part of the cache key


@functools.lru_cache(maxsize=32)
def _unnormalising_extractor_for(path: str, mtime_ns: int, size: int) -> featureextractor.RadiomicsFeatureExtractor:
    extractor = featureextractor.RadiomicsFeatureExtractor(path)
    extractor.settings["normalize"] = False  # done before, over the foreground (foreground_normalised)
    return extractor


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold of ``values`` (a 256-bin histogram over their range): the split of largest between-class
    variance."""
    counts, edges = np.histogram(values, bins=bins)
    centres = (edges[:-1] + edges[1:]) / 2
    weight = np.cumsum(counts).astype(np.float64)
    total = weight[-1]
    mean_below = np.cumsum(counts * centres) / np.maximum(weight, 1)
    mean_all = float(np.sum(counts * centres)) / total
    above = total - weight
    mean_above = (mean_all * total - mean_below * weight) / np.maximum(above, 1)
    between = weight * above * (mean_below - mean_above) ** 2
    return float(edges[int(np.argmax(between[:-1])) + 1])


def foreground(array: np.ndarray) -> np.ndarray:
    """The voxels normalisation is computed over: of the non-zero voxels, those above their Otsu threshold.

    Zero voxels (padding around a larger field of view, the outside of a masked export) never count, and Otsu's
    split of the rest keeps the air and noise around the body out; so the same anatomy gives the same statistics
    whatever the field of view. Falls back to every non-zero voxel (then every voxel) when the split leaves fewer
    than two."""
    nonzero = array != 0
    if nonzero.sum() < 2:
        return np.ones(array.shape, dtype=bool)
    kept = nonzero & (array > otsu_threshold(array[nonzero]))
    return kept if kept.sum() >= 2 else nonzero


def foreground_normalised(image: sitk.Image, settings: dict) -> sitk.Image:
    """PyRadiomics' ``normalize`` (z-score, optional ``removeOutliers`` clipping, then ``normalizeScale``) with the
    mean and standard deviation of :func:`foreground` instead of the whole image's (IBSI's re-segmentation of the
    normalisation region): zero padding or a larger field of view no longer moves the features."""
    array = sitk.GetArrayFromImage(image).astype(np.float64)
    inside = array[foreground(array)]
    mean, sigma = float(inside.mean()), float(inside.std(ddof=1)) or 1.0
    normalised = (array - mean) / sigma
    if settings.get("removeOutliers") is not None:
        outliers = float(settings["removeOutliers"])
        normalised = np.clip(normalised, -outliers, outliers)
    out = sitk.GetImageFromArray(normalised * float(settings.get("normalizeScale", 1)))
    out.CopyInformation(image)
    return out


def split_feature_name(name: str) -> tuple[str, str, str]:
    """``wavelet-LLH_glcm_Contrast`` -> (``wavelet-LLH``, ``glcm``, ``Contrast``)."""
    image_type, feature_class, feature = name.rsplit("_", 2)
    return image_type, feature_class, feature


def grey_levels(
    extractor: featureextractor.RadiomicsFeatureExtractor, image: sitk.Image, mask: sitk.Image
) -> tuple[int, float | None, float, float]:
    """(grey levels, bin width or None, lowest, highest value in the ROI) that ``extractor`` would discretise to.

    From the parameter file's binCount, else its smallest binWidth (global or per image type), and the range of
    the image values inside the mask label, after ``normalize`` and ``resegmentRange`` as PyRadiomics applies
    them. Resampling cannot widen the range much (interpolated values stay near it), so it is not done here.
    """
    settings = extractor.settings
    label = int(settings.get("label", 1))
    if grid_mismatch(image, mask) is not None:  # PyRadiomics resamples such a mask (correctMask); so do we
        mask = sitk.Resample(mask, image, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    inside = sitk.GetArrayViewFromImage(image)[sitk.GetArrayViewFromImage(mask) == label].astype(np.float64)
    if inside.size == 0:
        return 0, None, float("nan"), float("nan")
    if settings.get("normalize"):  # PyRadiomics normalises by the whole image's mean and standard deviation
        statistics = sitk.StatisticsImageFilter()
        statistics.Execute(image)
        inside = (inside - statistics.GetMean()) / (statistics.GetSigma() or 1.0)
        if settings.get("removeOutliers") is not None:
            outliers = float(settings["removeOutliers"])
            inside = np.clip(inside, -outliers, outliers)
        inside = inside * float(settings.get("normalizeScale", 1))
    low, high = float(inside.min()), float(inside.max())
    if settings.get("resegmentRange") and settings.get("resegmentMode", "absolute") == "absolute":
        bounds = [float(v) for v in settings["resegmentRange"]]
        low, high = max(low, bounds[0]), min(high, bounds[1]) if len(bounds) > 1 else high
    counts = [s["binCount"] for s in [settings, *extractor.enabledImagetypes.values()] if s and s.get("binCount")]
    if counts:
        return int(max(counts)), None, low, high
    widths = [s["binWidth"] for s in [settings, *extractor.enabledImagetypes.values()] if s and s.get("binWidth")]
    width = float(min(widths)) if widths else 25.0  # PyRadiomics' default bin width
    # PyRadiomics' fixed bin width: edges from floor(low / width) * width up past high.
    return int(np.floor(high / width) - np.floor(low / width)) + 1, width, low, high


def check_grey_levels(
    target: ExtractionTarget,
    extractor: featureextractor.RadiomicsFeatureExtractor,
    *,
    max_grey_levels: int = DEFAULT_MAX_GREY_LEVELS,
) -> None:
    """Refuse an extraction that would discretise the ROI into more than ``max_grey_levels`` bins."""
    levels, width, low, high = grey_levels(extractor, target.image, target.mask)
    if levels <= max_grey_levels:
        return
    binning = f"bin width {width:g}" if width is not None else f"bin count {levels}"
    raise ExtractionError(
        f"series {target.series_uid} ({target.modality}), ROI {target.roi}: {binning} over the ROI's intensity "
        f"range {low:g} to {high:g} gives {levels} grey levels, more than the maximum {max_grey_levels}; the image "
        "units do not match the parameter file (e.g. PET not in SUV, CT not in HU): fix the parameter file's "
        "binWidth or the input's units, or raise max_grey_levels (RADIOMICS_MAX_GREY_LEVELS)"
    )


PNG_GREY_LEVELS = 256
"""Most bins a fixed bin width may give over a PNG image's full data range: what an 8-bit image can hold. The shipped
``us.yaml`` (bin width 5) gives 52 on 8-bit data but 820 on 12-bit data, where every texture feature would be on
another scale than the 8-bit images it was written for."""


def check_png_bit_depth(target: ExtractionTarget, extractor: featureextractor.RadiomicsFeatureExtractor) -> None:
    """Refuse a fixed bin width that does not fit a PNG image's data range (e.g. 8-bit parameters on 12-bit data)."""
    if not target.data_bits or target.data_bits <= 8:
        return
    settings = extractor.settings
    if any(s and s.get("binCount") for s in [settings, *extractor.enabledImagetypes.values()]):
        return
    widths = [s["binWidth"] for s in [settings, *extractor.enabledImagetypes.values()] if s and s.get("binWidth")]
    width = float(min(widths)) if widths else 25.0
    levels = int(np.ceil(2**target.data_bits / width))
    if levels <= PNG_GREY_LEVELS:
        return
    fitting = int(np.ceil(2**target.data_bits / PNG_GREY_LEVELS))
    raise ExtractionError(
        f"{target.source or target.series_uid} ({target.modality}), ROI {target.roi}: the image holds "
        f"{target.data_bits}-bit data (values up to {2**target.data_bits - 1}) and the parameter file's bin width "
        f"{width:g} gives up to {levels} grey levels, more than {PNG_GREY_LEVELS}: the parameters are for 8-bit "
        f"images; convert the images to 8-bit, or use a parameter file with binWidth >= {fitting} or binCount"
    )


def extract(
    target: ExtractionTarget, params_path: Path, *, max_grey_levels: int = DEFAULT_MAX_GREY_LEVELS
) -> tuple[pd.DataFrame, dict]:
    """Run PyRadiomics on one image/mask pair; returns (long feature rows, diagnostics dict).

    Refused first (:class:`ExtractionError`) when the ROI would have more than ``max_grey_levels`` grey levels,
    so a units/parameter mismatch fails this one extraction instead of exhausting memory.
    """
    extractor = load_extractor(params_path)
    check_png_bit_depth(target, extractor)
    image = target.image
    if extractor.settings.get("normalize"):
        # Normalised over the foreground, not the whole image (PyRadiomics'), so the field of view cannot move it.
        image = foreground_normalised(image, extractor.settings)
        path = Path(params_path).resolve()
        extractor = _unnormalising_extractor_for(str(path), path.stat().st_mtime_ns, path.stat().st_size)
    check_grey_levels(replace(target, image=image), extractor, max_grey_levels=max_grey_levels)
    result = extractor.execute(image, target.mask)
    diagnostics = {k: v for k, v in result.items() if k.startswith("diagnostics_")}
    diagnostics["diagnostics_Versions_radiomics_assets_speedups"] = installed_speedups()
    provenance = {
        "patient_id": target.patient_id,
        "series_uid": target.series_uid,
        "modality": target.modality,
        "roi": target.roi,
        "params_hash": file_hash(params_path),
        "pyradiomics_version": radiomics.__version__,
        "image_hash": image_hash(target.image),
        "mask_hash": image_hash(target.mask),
        "extracted_at": dt.datetime.now(dt.UTC).replace(tzinfo=None),
    }
    rows = []
    for name, value in result.items():
        if name.startswith("diagnostics_"):
            continue
        image_type, feature_class, feature = split_feature_name(name)
        rows.append(
            {
                **provenance,
                "image_type": image_type,
                "feature_class": feature_class,
                "feature": feature,
                "value": float(np.asarray(value)),
            }
        )
    return pd.DataFrame(rows, columns=FEATURE_COLUMNS), diagnostics
