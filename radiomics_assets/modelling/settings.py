"""How the cohort model is built and validated: one frozen settings object passed whole down the training path."""

from __future__ import annotations

from dataclasses import dataclass

MODELS = ("logreg", "random_forest", "svm", "gradient_boosting")
SELECTION_METHODS = ("anova", "mannwhitney", "mutual_info", "rfe", "l1", "tree")


@dataclass(frozen=True, kw_only=True)
class ModellingSettings:
    """Candidates, selection and cross-validation scheme; keyword-only, so no two numbers can swap places."""

    seed: int = 0
    models: tuple[str, ...] = MODELS
    """Candidate model families compared by nested CV."""
    selection: str = "anova"
    """Feature selection inside the Pipeline: one of :data:`SELECTION_METHODS`."""
    folds: int = 5
    """Outer cross-validation folds (fewer when the smallest class has fewer patients)."""
    repeats: int = 2
    """Repeats of the outer cross-validation with new splits."""
    standardise: bool = True
    """Z-score each feature inside the Pipeline (fitted on the training folds); off suits tree models only."""

    def __post_init__(self) -> None:
        unknown = [m for m in self.models if m not in MODELS]
        if not self.models or unknown:
            raise ValueError(f"candidate models must be some of {list(MODELS)}, got {list(self.models)}")
        if self.selection not in SELECTION_METHODS:
            raise ValueError(f"unknown selection method {self.selection!r}; choose one of {list(SELECTION_METHODS)}")
        if self.folds < 2 or self.repeats < 1:
            raise ValueError(f"cross-validation needs folds >= 2 and repeats >= 1, got {self.folds} and {self.repeats}")
        object.__setattr__(self, "models", tuple(self.models))


DEFAULT_SETTINGS = ModellingSettings()
