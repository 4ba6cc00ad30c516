"""Modelling: from the feature table to a validated model (the cohort assets).

``duplicates`` groups duplicate images (and labels.csv groups) for grouped CV, ``feature_icc`` computes each
feature's ICC over perturbed re-extractions.

``study`` types the outcome and the covariates (``study.yaml``); ``tasks`` holds one file per outcome type
(binary, multiclass, continuous, survival: models, grids, metrics, report figures). ``matrix`` builds the
patients x features matrix with the outcome and covariates, ``selection`` and ``estimators`` make the one
scikit-learn Pipeline that holds everything learned from data, ``validation`` cross-validates it, ``training``
fits and saves the model, ``registry`` keeps every version and decides promotion, ``report`` writes the
validation report. The settings travel as one frozen :class:`ModellingSettings`, the study as one :class:`Study`.

Names are imported on first use: scikit-learn, SciPy and matplotlib cost ~3 s, which patient runs and sensor
ticks (they load the code location too) never need.
"""

from radiomics_assets.lazy_names import lazy_names

_EXPORTS = {
    "ModellingSettings": "settings",
    "MODEL_FAMILIES": "settings",
    "Study": "study",
    "Outcome": "study",
    "Covariates": "study",
    "OutcomeType": "study",
    "Predictors": "study",
    "StudyError": "study",
    "load_study": "study",
    "load_outcomes": "study",
    "write_study_file": "study",
    "task_for": "tasks",
    "Task": "tasks",
    "PrimaryMetric": "tasks",
    "cohort_data": "matrix",
    "CohortData": "matrix",
    "compare_predictors": "validation",
    "PredictorComparison": "validation",
    "prediction_columns": "training",
    "task_of": "training",
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
    "CalibratedSVC": "tasks.binary",
    "PARAM_GRIDS": "tasks.binary",
    "ColumnRoles": "estimators",
    "make_pipeline": "estimators",
    "CandidateSearch": "estimators",
    "KeepColumns": "estimators",
    "CrossValidation": "validation",
    "binary_metrics": "tasks.binary",
    "bootstrap_aucs": "tasks.binary",
    "compare_candidates": "validation",
    "bootstrap_fold_mean_aucs": "tasks.binary",
    "calibration": "tasks.binary",
    "decision_curve": "tasks.binary",
    "expected_null_sd": "tasks.binary",
    "fold_aucs": "tasks.binary",
    "permutation_test": "validation",
    "cross_validate": "validation",
    "fit_final": "validation",
    "metrics": "tasks.binary",
    "THRESHOLD": "training",
    "load_model": "training",
    "SavedModel": "training",
    "ValidationResult": "training",
    "feature_selection_table": "training",
    "load_validation": "training",
    "predict_unlabelled": "training",
    "score": "training",
    "train_model": "training",
    "ModelCard": "training",
    "icc_by_feature": "feature_icc",
    "robust_features": "feature_icc",
    "robustness_table": "feature_icc",
    "build_validation_report": "validation_report",
    "ValidationReport": "validation_report",
    "write_report": "report",
    "Groups": "duplicates",
    "patient_groups": "duplicates",
    "perceptual_hash": "duplicates",
    "middle_slice": "duplicates",
}
__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_names(__name__, _EXPORTS)
