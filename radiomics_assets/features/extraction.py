"""PyRadiomics feature extraction into long-format rows with provenance.

One row per (series, ROI, image type, feature class, feature). PyRadiomics' ``diagnostics_*`` entries are
returned separately, so the feature table holds only numbers a model may use.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import radiomics
import SimpleITK as sitk
from radiomics import featureextractor

from radiomics_assets.errors import ExtractionError, ParameterFileError
from radiomics_assets.features import speedups
from radiomics_assets.geometry import grid_mismatch
from radiomics_assets.hashing import file_hash, image_hash

PARAMS_DIR = Path(__file__).parent / "params"
PARAMS_DIR_ENV = "RADIOMICS_PARAMS_DIR"
DEFAULT_MAX_GREY_LEVELS = 1000
"""Most grey levels (bins) an extraction may discretise the ROI into. The shipped parameter files give at most
a few hundred on CT (HU), PET (SUV), MR and ultrasound; tens of thousands mean units that do not match the
parameter file (e.g. PET in Bq/ml with an SUV bin width), whose texture matrices would exhaust memory."""
MODALITIES = ("CT", "MR", "PT", "US")
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
    speedups.install()


@dataclass(frozen=True)
class ExtractionTarget:
    patient_id: str
    series_uid: str
    modality: str
    roi: str
    image: sitk.Image
    mask: sitk.Image


def params_by_modality(params_dir: Path = PARAMS_DIR, single_file: Path | None = None) -> dict[str, Path]:
    """Parameter file per modality: ``<dir>/ct.yaml``, ``mr.yaml``, ``pt.yaml``, ``us.yaml`` (2D), or one for all."""
    if single_file is not None:
        return dict.fromkeys(MODALITIES, Path(single_file))
    return {m: Path(params_dir) / f"{m.lower()}.yaml" for m in MODALITIES}


def configured_params_dir() -> Path:
    """``$RADIOMICS_PARAMS_DIR`` if set, else the shipped parameter files."""
    return Path(os.environ.get(PARAMS_DIR_ENV, PARAMS_DIR))


def params_version(params: dict[str, Path]) -> str:
    """Hash of the parameter files' contents: changes whenever any file used for extraction changes."""
    digest = hashlib.sha256()
    for modality, path in sorted(params.items()):
        digest.update(modality.encode() + (Path(path).read_bytes() if Path(path).is_file() else b"missing"))
    return digest.hexdigest()[:12]


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


def extract(
    target: ExtractionTarget, params_path: Path, *, max_grey_levels: int = DEFAULT_MAX_GREY_LEVELS
) -> tuple[pd.DataFrame, dict]:
    """Run PyRadiomics on one image/mask pair; returns (long feature rows, diagnostics dict).

    Refused first (:class:`ExtractionError`) when the ROI would have more than ``max_grey_levels`` grey levels,
    so a units/parameter mismatch fails this one extraction instead of exhausting memory.
    """
    extractor = load_extractor(params_path)
    check_grey_levels(target, extractor, max_grey_levels=max_grey_levels)
    result = extractor.execute(target.image, target.mask)
    diagnostics = {k: v for k, v in result.items() if k.startswith("diagnostics_")}
    diagnostics["diagnostics_Versions_radiomics_assets_speedups"] = speedups.installed()
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
