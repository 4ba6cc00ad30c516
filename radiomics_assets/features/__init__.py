"""Features: PyRadiomics extraction into long rows with provenance, its speed-ups, quality checks and IBSI.

``extraction`` runs PyRadiomics with a parameter file per modality (shipped under ``params/``, named and versioned
by ``parameter_files``), ``speedups`` replaces four hot spots with value-identical code, ``quality`` holds the data
checks of a patient's rows, ``perturbations`` re-extracts a (series, ROI) under mask and noise perturbations, and
``ibsi`` measures conformance on the IBSI phantoms.

The names below are loaded on first use: the run process names and versions parameter files and checks rows, while
its workers extract, so it does not import PyRadiomics and the compiled kernels.
"""

from radiomics_assets.lazy_names import lazy_names

_EXPORTS = {
    "DEFAULT_MAX_GREY_LEVELS": "parameter_files",
    "MODALITIES": "parameter_files",
    "PARAMS_DIR": "parameter_files",
    "PARAMS_DIR_ENV": "parameter_files",
    "params_by_modality": "parameter_files",
    "params_version": "parameter_files",
    "FEATURE_COLUMNS": "extraction",
    "ExtractionTarget": "extraction",
    "check_grey_levels": "extraction",
    "extract": "extraction",
    "grey_levels": "extraction",
    "load_extractor": "extraction",
    "prepare_pyradiomics": "extraction",
    "PerturbationSettings": "perturbations",
    "perturb_cohort": "perturbations",
    "perturbed_features": "perturbations",
    "feature_count_mismatches": "quality",
    "non_finite_features": "quality",
    "small_rois": "quality",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_names(__name__, _EXPORTS)
