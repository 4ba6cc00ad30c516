"""Features: PyRadiomics extraction into long rows with provenance, its speed-ups, quality checks and IBSI.

``extraction`` runs PyRadiomics with a parameter file per modality (shipped under ``params/``), ``speedups``
replaces four hot spots with value-identical code, ``quality`` holds the data checks of a patient's rows,
``perturbations`` re-extracts a (series, ROI) under mask and noise perturbations, and ``ibsi`` measures conformance on
the IBSI phantoms.
"""

from radiomics_assets.features.extraction import (
    DEFAULT_MAX_GREY_LEVELS,
    FEATURE_COLUMNS,
    MODALITIES,
    PARAMS_DIR,
    PARAMS_DIR_ENV,
    ExtractionTarget,
    check_grey_levels,
    extract,
    grey_levels,
    load_extractor,
    params_by_modality,
    params_version,
    prepare_pyradiomics,
)
from radiomics_assets.features.perturbations import PerturbationSettings, perturb_cohort, perturbed_features
from radiomics_assets.features.quality import feature_count_mismatches, non_finite_features, small_rois

__all__ = [
    "DEFAULT_MAX_GREY_LEVELS",
    "FEATURE_COLUMNS",
    "MODALITIES",
    "PARAMS_DIR",
    "PARAMS_DIR_ENV",
    "ExtractionTarget",
    "check_grey_levels",
    "PerturbationSettings",
    "extract",
    "feature_count_mismatches",
    "grey_levels",
    "load_extractor",
    "non_finite_features",
    "params_by_modality",
    "params_version",
    "perturb_cohort",
    "perturbed_features",
    "prepare_pyradiomics",
    "small_rois",
]
