"""Modelling: from the feature table to a validated model (the cohort assets).

``duplicates`` groups duplicate images (and labels.csv groups) for grouped CV, ``robustness`` computes each
feature's ICC over perturbed re-extractions.

``matrix`` builds the patients x features matrix with labels, ``selection`` and ``estimators`` make the one
scikit-learn Pipeline that holds everything learned from data, ``validation`` cross-validates it, ``training``
fits and saves the model, ``registry`` keeps every version and decides promotion, ``report`` writes the
validation report. The settings travel as one frozen :class:`ModellingSettings`.

Names are imported on first use: scikit-learn, SciPy and matplotlib cost ~3 s, which patient runs and sensor
ticks (they load the code location too) never need.
"""

import importlib

_EXPORTS = {
    "ModellingSettings": "settings",
    "MODELS": "settings",
    "SELECTION_METHODS": "settings",
    "build_feature_matrix": "matrix",
    "training_set": "matrix",
    "external_test_set": "matrix",
    "label_groups": "matrix",
    "load_labels": "matrix",
    "missing_data_summary": "matrix",
    "store_labels": "matrix",
    "unlabelled_set": "matrix",
    "wide_matrix": "matrix",
    "NearZeroVariance": "selection",
    "Selector": "selection",
    "rank_features": "selection",
    "selected_columns": "selection",
    "selection_scores": "selection",
    "CalibratedSVC": "estimators",
    "PARAM_GRIDS": "estimators",
    "make_pipeline": "estimators",
    "CandidateSearch": "estimators",
    "KeepColumns": "estimators",
    "CrossValidation": "validation",
    "binary_metrics": "validation",
    "bootstrap_aucs": "validation",
    "compare_candidates": "validation",
    "bootstrap_fold_mean_aucs": "validation",
    "calibration": "validation",
    "decision_curve": "validation",
    "expected_null_sd": "validation",
    "fold_aucs": "validation",
    "permutation_test": "validation",
    "cross_validate": "validation",
    "fit_final": "validation",
    "metrics": "validation",
    "THRESHOLD": "training",
    "load_model": "training",
    "SavedModel": "training",
    "ValidationResult": "training",
    "feature_selection_table": "training",
    "load_validation": "training",
    "predict_unlabelled": "training",
    "score": "training",
    "train_model": "training",
    "icc_by_feature": "robustness",
    "robust_features": "robustness",
    "robustness_table": "robustness",
    "validate": "report",
    "write_report": "report",
    "Groups": "duplicates",
    "patient_groups": "duplicates",
    "perceptual_hash": "duplicates",
    "middle_slice": "duplicates",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)


def __dir__() -> list[str]:
    return __all__
