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

from radiomics_assets.errors import ParameterFileError
from radiomics_assets.features import speedups
from radiomics_assets.hashing import file_hash, image_hash

PARAMS_DIR = Path(__file__).parent / "params"
PARAMS_DIR_ENV = "RADIOMICS_PARAMS_DIR"
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


def extract(target: ExtractionTarget, params_path: Path) -> tuple[pd.DataFrame, dict]:
    """Run PyRadiomics on one image/mask pair; returns (long feature rows, diagnostics dict)."""
    extractor = load_extractor(params_path)
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
