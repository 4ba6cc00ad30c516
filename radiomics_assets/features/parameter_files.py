"""The PyRadiomics parameter files a run extracts with: which file per modality, and their version.

Apart from ``extraction`` so that the run process, which only names and versions the files (its workers extract),
does not import PyRadiomics and the compiled kernels (about 0.4 s of a run's start-up).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from radiomics_assets import environment

PARAMS_DIR = environment.SHIPPED_PARAMS_DIR
PARAMS_DIR_ENV = environment.PARAMS_DIR.name
DEFAULT_MAX_GREY_LEVELS = int(environment.MAX_GREY_LEVELS.default)
"""Most grey levels (bins) an extraction may discretise the ROI into. The shipped parameter files give at most
a few hundred on CT (HU), PET (SUV), MR and ultrasound; tens of thousands mean units that do not match the
parameter file (e.g. PET in Bq/ml with an SUV bin width), whose texture matrices would exhaust memory."""
MODALITIES = ("CT", "MR", "PT", "US")


def params_by_modality(params_dir: Path = PARAMS_DIR, single_file: Path | None = None) -> dict[str, Path]:
    """Parameter file per modality: ``<dir>/ct.yaml``, ``mr.yaml``, ``pt.yaml``, ``us.yaml`` (2D), or one for all."""
    if single_file is not None:
        return dict.fromkeys(MODALITIES, Path(single_file))
    return {m: Path(params_dir) / f"{m.lower()}.yaml" for m in MODALITIES}


def params_version(params: dict[str, Path]) -> str:
    """Hash of the parameter files' contents: changes whenever any file used for extraction changes."""
    digest = hashlib.sha256()
    for modality, path in sorted(params.items()):
        digest.update(modality.encode() + (Path(path).read_bytes() if Path(path).is_file() else b"missing"))
    return digest.hexdigest()[:12]
