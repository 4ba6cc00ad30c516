"""PyRadiomics feature extraction into long-format rows with provenance.

One row per (series, ROI, image type, feature class, feature). PyRadiomics' ``diagnostics_*`` entries are
returned separately, so the feature table holds only numbers a model may use.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import radiomics
import SimpleITK as sitk
from radiomics import featureextractor

DEFAULT_PARAMS = Path(__file__).parent / "params" / "ct_default.yaml"
FEATURE_COLUMNS = [
    "patient_id", "series_uid", "modality", "roi", "image_type", "feature_class", "feature", "value",
    "params_hash", "pyradiomics_version", "image_hash", "mask_hash", "extracted_at",
]  # fmt: skip

# PyRadiomics logs every filter at INFO and warns on every GLCM (symmetry note); keep errors only.
logging.getLogger("radiomics").setLevel(logging.ERROR)


def file_hash(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def image_hash(image: sitk.Image) -> str:
    """Content hash of voxels and geometry, so the same volume hashes alike wherever it is stored."""
    digest = hashlib.sha256(sitk.GetArrayViewFromImage(image).tobytes())
    digest.update(repr((image.GetSize(), image.GetSpacing(), image.GetOrigin(), image.GetDirection())).encode())
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class ExtractionTarget:
    patient_id: str
    series_uid: str
    modality: str
    roi: str
    image: sitk.Image
    mask: sitk.Image


def split_feature_name(name: str) -> tuple[str, str, str]:
    """``wavelet-LLH_glcm_Contrast`` -> (``wavelet-LLH``, ``glcm``, ``Contrast``)."""
    image_type, feature_class, feature = name.rsplit("_", 2)
    return image_type, feature_class, feature


def extract(target: ExtractionTarget, params_path: Path = DEFAULT_PARAMS) -> tuple[pd.DataFrame, dict]:
    """Run PyRadiomics on one image/mask pair; returns (long feature rows, diagnostics dict)."""
    extractor = featureextractor.RadiomicsFeatureExtractor(str(params_path))
    result = extractor.execute(target.image, target.mask)
    diagnostics = {k: v for k, v in result.items() if k.startswith("diagnostics_")}
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
        rows.append({**provenance, "image_type": image_type, "feature_class": feature_class,
                     "feature": feature, "value": float(np.asarray(value))})  # fmt: skip
    return pd.DataFrame(rows, columns=FEATURE_COLUMNS), diagnostics
