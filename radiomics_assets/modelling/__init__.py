"""Modelling: from the feature table to a validated model (the cohort assets).

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
    "labelled_training_set": "matrix",
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
    "tuned_model": "estimators",
    "CrossValidation": "validation",
    "binary_metrics": "validation",
    "bootstrap_aucs": "validation",
    "compare_models": "validation",
    "cross_validate": "validation",
    "fit_final": "validation",
    "metrics": "validation",
    "THRESHOLD": "training",
    "load_model": "training",
    "predict": "training",
    "select_features": "training",
    "train_model": "training",
    "validate": "report",
    "write_report": "report",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)


def __dir__() -> list[str]:
    return __all__
