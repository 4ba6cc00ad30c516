"""The validation report as one typed result: :class:`ValidationReport`, built by :func:`build_validation_report`.

``build_validation_report`` reads what training stored (``models/cv_results.pkl``, ``models/model.pkl``, the model
card's timings) and the warehouse, assembles the report's figures, then writes them (``report.write_report``:
``reports/metrics.json``, ``reports/checklist.json`` and ``reports/report.html``). ``metrics.json`` is
:meth:`ValidationReport.as_json`; the HTML page and the ``validation_report`` asset's Dagster metadata read the
same fields. The figures that differ by outcome type (binary, multiclass, continuous, survival: ``auc``,
``harrell_c``, ``decision_curve``, ...) stay one mapping, :attr:`ValidationReport.performance`, as each task
returns it (``Task.metrics``).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from radiomics_assets.modelling.batch_effect import batch_effect_report
from radiomics_assets.modelling.checklist import ReviewerSections, report_sections
from radiomics_assets.modelling.matrix import cohort_data, missing_data_summary
from radiomics_assets.modelling.report import ReportFiles, gallery_html, write_report
from radiomics_assets.modelling.seeded_masks_report import seeded_masks_section
from radiomics_assets.modelling.selection import filtered_columns, selected_columns, selection_scores
from radiomics_assets.modelling.study import Study
from radiomics_assets.modelling.tasks import PrimaryMetric
from radiomics_assets.modelling.training import (
    ValidationResult,
    library_versions,
    load_model,
    load_validation,
    robustness_report,
    score,
    study_summary,
    task_of,
)
from radiomics_assets.modelling.validation import PredictorComparison, compare_candidates
from radiomics_assets.paths import DataRoot
from radiomics_assets.warehouse import Warehouse


@dataclass(frozen=True)
class PermutationTest:
    """``metrics.json`` ``permutation``: the whole procedure re-run on permuted outcomes
    (``validation.permutation_test``), with what the report adds (expected null SD, run time)."""

    metric: str
    """The primary metric's name: the JSON keys are ``observed_<metric>``, ``null_<metric>_mean``, ..."""
    n_permutations: int
    p_value: float | None
    null_values: list[float]
    observed: float | None = None
    """None when the test was off (setting ``permutations`` = 0)."""
    null_mean: float | None = None
    null_sd: float | None = None
    n_permutations_requested: int | None = None
    stopped_by_time_budget: bool | None = None
    time_budget_seconds: float | None = None
    chance: float | None = None
    statistic: str | None = None
    expected_null_sd: float | None = None
    """Binary only: the SD chance predicts for one repeat's fold-mean AUC."""
    timed: bool = False
    """The model card was there: ``seconds`` and ``n_jobs`` are reported (``seconds`` may be None)."""
    seconds: float | None = None
    n_jobs: int | None = None

    @classmethod
    def from_stored(cls, stored: dict, metric: str, **extra) -> PermutationTest:
        """From the dict ``validation.permutation_test`` stored in ``models/cv_results.pkl`` (``metric``: the task's
        primary metric, for results stored before the dict named it)."""
        name = stored.get("metric", metric)
        return cls(
            metric=name,
            n_permutations=stored["n_permutations"],
            p_value=stored["p_value"],
            null_values=list(stored.get(f"null_{name}s", [])),
            observed=stored.get(f"observed_{name}"),
            null_mean=stored.get(f"null_{name}_mean"),
            null_sd=stored.get(f"null_{name}_sd"),
            n_permutations_requested=stored.get("n_permutations_requested"),
            stopped_by_time_budget=stored.get("stopped_by_time_budget"),
            time_budget_seconds=stored.get("time_budget_seconds"),
            chance=stored.get("chance"),
            statistic=stored.get("statistic"),
            **extra,
        )

    def as_json(self) -> dict:
        name = self.metric
        if self.observed is None:  # the test was off: what permutation_test returns then
            out = {"n_permutations": self.n_permutations, "p_value": self.p_value, f"null_{name}s": self.null_values}
            out["metric"] = name
        else:
            out = {"n_permutations": self.n_permutations}
            if self.n_permutations_requested is not None:  # absent from tests stored before the time budget
                out |= {
                    "n_permutations_requested": self.n_permutations_requested,
                    "stopped_by_time_budget": self.stopped_by_time_budget,
                    "time_budget_seconds": self.time_budget_seconds,
                }
            out["metric"] = name
            if self.statistic is not None:
                out |= {"chance": self.chance, "statistic": self.statistic}
            out |= {
                f"observed_{name}": self.observed,
                "p_value": self.p_value,
                f"null_{name}_mean": self.null_mean,
                f"null_{name}_sd": self.null_sd,
                f"null_{name}s": self.null_values,
            }
        if self.expected_null_sd is not None:
            out["expected_null_sd"] = self.expected_null_sd
        if self.timed:
            out |= {"seconds": self.seconds, "n_jobs": self.n_jobs}
        return out


@dataclass(frozen=True)
class DuplicateGroups:
    """``metrics.json`` ``groups``: the grouping rule, the groups of more than one patient, who was excluded."""

    rule: str
    groups: list[dict]
    """One row per group: ``group``, ``patients``, ``labels``, ``conflicting_labels``, ``links``."""
    excluded: list[str]
    """Patients left out of training because their group holds both labels."""
    notes: list

    def as_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class SelectedFeature:
    """One row of ``metrics.json`` ``selected_features``."""

    feature: str
    selection_frequency: float
    """Share of the outer CV fits whose selection filter chose it (the consensus: its linear member's filter)."""
    selection_score: float | None


@dataclass(frozen=True)
class ValidationReport:
    """Everything the validation report states; :meth:`as_json` is ``reports/metrics.json``."""

    task: str
    """Outcome type: ``binary``, ``multiclass``, ``continuous`` or ``survival``."""
    performance: dict[str, Any]
    """The task's cross-validated figures (``Task.metrics``), top-level keys of ``metrics.json``: ``primary_metric``,
    ``cv_scheme``, ``n_patients`` and the type's own (binary ``auc``, ``brier``, ``decision_curve``, ...)."""
    cohort: dict[str, Any]
    """``Task.cohort_summary`` of the training cohort: ``n_patients`` and per class or events/censored."""
    n_patients: int
    n_events: int | None
    """Survival only (absent from ``metrics.json`` otherwise)."""
    comparison: PredictorComparison | None
    """With ``predictors: compare``: clinical-only, radiomics-only and combined, and the gain."""
    study: dict[str, Any]
    excluded_no_outcome: int
    model: str
    model_id: str
    selection_method: str
    best_params: dict[str, Any]
    chosen_per_outer_fold: list[str]
    n_features_selected: int
    """Predictors the final model's selection filter chose (the consensus: its linear member's filter)."""
    n_features_used: int
    """Predictors the final model reads: the selected ones, or every one for the consensus (its forest)."""
    n_features_available: int
    selected_features: list[SelectedFeature]
    missing_data: dict[str, Any]
    library_versions: dict[str, str]
    model_comparison: dict[str, dict[str, Any]]
    """Candidate -> its outer-fold figures and the paired difference to the procedure (keys named by the metric)."""
    permutation: PermutationTest
    groups: DuplicateGroups
    robustness_icc_threshold: float
    feature_robustness: list[dict] | None
    """Rows ``feature``, ``icc``, ``n_perturbations``; None without perturbation data."""
    reviewer: ReviewerSections
    """Cohort flow, patient table, imaging, extraction, reproducibility, sample size, limitations (issue 26)."""
    external: dict[str, Any] | None
    """The held-out test cohort's figures (``Task.external_metrics``); None without ``cohort=test`` rows."""
    batch_effect: dict[str, Any] | None
    seeded_masks: dict[str, Any] | None
    files: ReportFiles | None = field(default=None, compare=False)
    """Set once written (not part of ``metrics.json``)."""

    @property
    def primary(self) -> PrimaryMetric:
        return PrimaryMetric(**self.performance["primary_metric"])

    @property
    def cv_scheme(self) -> str:
        return self.performance["cv_scheme"]

    @property
    def permutation_p_value(self) -> float | None:
        return self.permutation.p_value

    def as_json(self) -> dict:
        """``reports/metrics.json``: the keys, nesting and order documented in ``docs/reference/data-contract.md``."""
        out: dict[str, Any] = {"task": self.task, **self.performance}
        out["cohort"] = self.cohort
        out["n_patients"] = self.n_patients
        if self.task == "survival":
            out["n_events"] = self.n_events
        if self.comparison is not None:
            out["comparison"] = self.comparison.as_dict()
        out |= {
            "study": self.study,
            "excluded_no_outcome": self.excluded_no_outcome,
            "model": self.model,
            "model_id": self.model_id,
            "selection_method": self.selection_method,
            "best_params": self.best_params,
            "chosen_per_outer_fold": self.chosen_per_outer_fold,
            "n_features_selected": self.n_features_selected,
            "n_features_used": self.n_features_used,
            "n_features_available": self.n_features_available,
            "selected_features": [asdict(f) for f in self.selected_features],
            "missing_data": self.missing_data,
            "library_versions": self.library_versions,
            "model_comparison": self.model_comparison,
            "permutation": self.permutation.as_json(),
            "permutation_p_value": self.permutation_p_value,
            "groups": self.groups.as_json(),
            "robustness_icc_threshold": self.robustness_icc_threshold,
            "feature_robustness": self.feature_robustness,
            **self.reviewer.as_json(),
        }
        if self.external is not None:
            out["external"] = self.external
        out["batch_effect"] = self.batch_effect
        out["seeded_masks"] = self.seeded_masks
        return out


def build_validation_report(root: DataRoot, seed: int = 0) -> ValidationReport:
    """Report of the procedure's outer CV, its permutation test, the candidates, the groups and the test cohort:
    assembled from what training stored, written to ``reports/`` (``metrics.json``, ``checklist.json``,
    ``report.html``) and returned with :attr:`ValidationReport.files` set."""
    warehouse = Warehouse(root.warehouse)
    stored: ValidationResult = load_validation(root)
    cv, groups, settings = stored.cv, stored.groups, stored.settings
    study = getattr(stored, "study", None) or Study()
    saved = load_model(root)
    task = task_of(saved)
    performance = task.metrics(cv, n_bootstrap=1000, seed=seed)
    cohort = task.cohort_summary(cv.y)
    selected = filtered_columns(saved.pipeline, saved.feature_columns)
    scores = selection_scores(saved.pipeline, saved.feature_columns)
    extra: dict[str, Any] = {}
    if task.kind.value == "binary":
        from radiomics_assets.modelling.tasks.binary import expected_null_sd

        extra["expected_null_sd"] = expected_null_sd(cv.y, cv.fold_of)
    card_path = root.models / "model_card.json"
    if card_path.exists():  # the reviewer's question "how long did the test take", answered from the run itself
        seconds = json.loads(card_path.read_text()).get("seconds", {})
        extra |= {"timed": True, "seconds": seconds.get("permutation_test"), "n_jobs": settings.n_jobs}
    duplicate_groups = DuplicateGroups(
        rule="patients share a group when a stored image has the same content hash, when perceptual hashes "
        f"differ by <= {settings.duplicate_max_distance} of 64 bits, or when labels.csv gives the same "
        f"'{settings.group_column}'; groups stay in one CV fold (outer and inner)",
        groups=groups.table,
        excluded=groups.excluded,
        notes=groups.notes,
    )
    robustness = robustness_report(warehouse)
    # The reviewer's items (cohort flow, patients, imaging, extraction, sample size, limitations): issue 26.
    reviewer = report_sections(
        root,
        stored,
        saved,
        task,
        primary=performance.get("primary_metric", {}),
        n_features_available=len(saved.feature_columns),
        groups=duplicate_groups.as_json(),
        cohort=cohort,
    )
    test = cohort_data(warehouse, study, task, "test")
    external, external_figures = None, None
    if len(test.y):
        prediction = score(saved, test.X)
        external_figures = task.external_metrics(test.y, prediction, seed=seed)
        external = (test.y, prediction)
    batch_effect, batch_html = batch_effect_report(warehouse, study, cv, seed, settings)  # issue 27
    seeded_masks, seeded_html = seeded_masks_section(root)  # issue 29; None without seeded masks
    report = ValidationReport(
        task=task.kind.value,
        performance=performance,
        cohort=cohort,
        n_patients=int(len(cv.y)),
        n_events=cohort.get("n_events") if task.kind.value == "survival" else None,
        comparison=getattr(stored, "comparison", None),
        study=study_summary(study),
        excluded_no_outcome=len(getattr(stored, "excluded_outcomes", [])),
        model=saved.model,
        model_id=saved.model_id,
        selection_method=saved.selection,
        best_params=saved.best_params,
        chosen_per_outer_fold=cv.chosen,
        n_features_selected=len(selected),
        n_features_used=len(selected_columns(saved.pipeline, saved.feature_columns)),
        n_features_available=len(saved.feature_columns),
        selected_features=[SelectedFeature(f, cv.selection_frequency.get(f, 0.0), scores.get(f)) for f in selected],
        missing_data=missing_data_summary(warehouse),
        library_versions=library_versions(),
        model_comparison=compare_candidates(cv, n_bootstrap=1000, seed=seed),
        permutation=PermutationTest.from_stored(stored.permutation, task.primary_metric, **extra),
        groups=duplicate_groups,
        robustness_icc_threshold=settings.robustness_icc_threshold,
        feature_robustness=None if robustness is None else robustness.to_dict(orient="records"),
        reviewer=reviewer,
        external=external_figures,
        batch_effect=batch_effect,
        seeded_masks=seeded_masks,
    )
    files = write_report(
        root.reports, report, task, cv, external, gallery=batch_html + gallery_html(root) + seeded_html
    )
    return replace(report, files=files)
