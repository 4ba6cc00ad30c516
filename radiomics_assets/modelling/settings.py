"""How the cohort model is built and validated: one frozen settings object passed whole down the training path."""

from __future__ import annotations

from dataclasses import dataclass

from radiomics_assets.modelling.choices import ModelFamily, SelectionMethod

MODEL_FAMILIES = tuple(ModelFamily)
"""Every model family some outcome type fits (``tasks.<type>.model_families`` says which, and the default order)."""
SELECTION_METHODS = tuple(SelectionMethod)
"""Every selection method (``selection.SELECTION_METHODS_BY_OUTCOME`` says which apply to which outcome type)."""


@dataclass(frozen=True, kw_only=True)
class ModellingSettings:
    """Candidates, selection and cross-validation scheme; keyword-only, so no two numbers can swap places."""

    seed: int = 0
    models: tuple[str, ...] = ()
    """Candidate model families; with several, the inner CV of every outer training set chooses among them.
    Empty = the outcome type's default (binary and multiclass: ``consensus``, the soft vote of a filtered logistic
    regression and a random forest, or, with clinical covariates, the inner CV's pick among logreg, random_forest,
    svm and gradient_boosting; continuous and survival: every family of the type)."""
    selection_methods: tuple[str, ...] = ()
    """Feature selection methods inside the Pipeline; with several, each model family x method pair is a candidate
    of the inner CV. Empty = the outcome type's default (binary: anova; survival: cox)."""
    folds: int = 5
    """Outer cross-validation folds (fewer when the smallest class has fewer patients or groups)."""
    repeats: int = 2
    """Repeats of the outer cross-validation with new splits."""
    inner_folds: int = 3
    """Inner cross-validation folds that choose the candidate (fewer when a class is smaller)."""
    standardise: bool = True
    """Z-score each feature inside the Pipeline (fitted on the training folds); off suits tree models only."""
    permutations: int = 199
    """Outcome permutations of the permutation test of the whole procedure (0 = no test); p >= 1 / (1 + permutations):
    19 let p reach 0.05, 199 reach 0.005. Each costs one outer repeat of the whole procedure; with the default
    consensus (one forest and one linear fit per fold, no inner loop) 199 take about 2 minutes of 2 cores at 51
    patients (docs: "Permutation test")."""
    permutation_seconds: float = 300.0
    """Time budget of the permutation test (0 = none): past it, the test stops after the current batch and reports
    the permutations done (the p-value stays exact for that count; the report says it stopped). 199 fit well inside
    it at 51 patients; at 600 patients x 100 features it bounds the cohort job to a few minutes."""
    group_column: str = "group"
    """Optional labels.csv column: patients sharing a value (e.g. lesions of one person) stay in one fold."""
    duplicate_max_distance: int = 8
    """Hamming distance (of 64 bits) at or below which two stored images' perceptual hashes count as the same
    image (see ``modelling.duplicates``); -1 = only exact duplicates (same content hash)."""
    robustness_icc_threshold: float = 0.0
    """Keep only features whose ICC(1,1) over perturbations (training patients of the fold) is >= this; 0 = off."""
    n_jobs: int = 1
    """Processes that fit outer folds / permutations in parallel (1 = in this process)."""

    def __post_init__(self) -> None:
        unknown = [m for m in self.models if m not in MODEL_FAMILIES]
        if unknown:
            raise ValueError(f"candidate models must be some of {list(MODEL_FAMILIES)}, got {list(self.models)}")
        bad = [s for s in self.selection_methods if s not in SELECTION_METHODS]
        if bad:
            raise ValueError(f"unknown selection method(s) {bad}; choose some of {list(SELECTION_METHODS)}")
        if self.folds < 2 or self.repeats < 1 or self.inner_folds < 2:
            raise ValueError(
                f"cross-validation needs folds >= 2, inner_folds >= 2 and repeats >= 1, got {self.folds}, "
                f"{self.inner_folds} and {self.repeats}"
            )
        if self.permutation_seconds < 0:
            raise ValueError(f"permutation_seconds must be >= 0, got {self.permutation_seconds}")
        if self.permutations < 0 or self.n_jobs < 1:
            raise ValueError(f"permutations must be >= 0 and n_jobs >= 1, got {self.permutations}, {self.n_jobs}")
        if not 0.0 <= self.robustness_icc_threshold <= 1.0:
            raise ValueError(f"robustness_icc_threshold must be in [0, 1], got {self.robustness_icc_threshold}")
        object.__setattr__(self, "models", tuple(self.models))
        object.__setattr__(self, "selection_methods", tuple(dict.fromkeys(self.selection_methods)))

    def candidates_for(self, task, with_covariates: bool = False) -> list[tuple[str, str]]:
        """(model family, selection method) pairs the inner CV chooses among, for ``task`` (a ``tasks.Task``);
        a family or method the outcome type cannot use is an error naming it."""
        models = self.models or task.default_models(with_covariates)
        methods = self.selection_methods or task.selection_methods[:1]
        wrong = [m for m in models if m not in task.model_families]
        if wrong:
            raise ValueError(
                f"candidate model(s) {wrong} do not fit a {task.kind} outcome; choose some of "
                f"{list(task.model_families)}"
            )
        wrong = [s for s in methods if s not in task.selection_methods]
        if wrong:
            raise ValueError(
                f"selection method(s) {wrong} do not apply to a {task.kind} outcome; choose some of "
                f"{list(task.selection_methods)}"
            )
        # Plain strings from here on: candidate names are data (model card, metrics.json, Dagster metadata).
        return [(str(m), str(s)) for m in models for s in methods]

    @property
    def candidates(self) -> list[tuple[str, str]]:
        """The binary candidates (kept for callers without a study)."""
        from radiomics_assets.modelling.tasks import task_for

        return self.candidates_for(task_for())


DEFAULT_SETTINGS = ModellingSettings()
