"""Honest validation of the whole model-building procedure: outer repeated grouped CV, permutation test, comparisons.

The procedure (:class:`~radiomics_assets.modelling.estimators.CandidateSearch`: robustness filter, every
candidate's grid search, the choice among candidates, the refit) is fitted anew in every outer training set, so
the outer test folds evaluate the choice too. Duplicate images and patients of one group stay in one fold
(``StratifiedGroupKFold``, outer and inner), stratified by the task's strata (class, event, value quantile).

Estimator: the task's ``cv_estimate`` of the out-of-fold predictions (binary: the AUC of each outer test fold,
averaged over folds and repeats; survival: Harrell's c-index the same way; continuous: the out-of-fold R² of each
repeat, averaged). Pooling the out-of-fold probabilities of different fold models into one ROC is biased below 0.5
under the null in small samples (each fold model's training labels are anti-correlated with its test labels, and
the fold models' offsets differ), so the pooled AUC is kept only as ``auc_pooled`` for information.

Everything here is written once for every outcome type; what differs per type is the task (``modelling/tasks``).
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd
from joblib import Parallel, delayed
from sklearn.model_selection import StratifiedGroupKFold

from radiomics_assets.modelling.estimators import CandidateSearch, ColumnRoles, group_folds
from radiomics_assets.modelling.selection import filtered_columns
from radiomics_assets.modelling.settings import DEFAULT_SETTINGS, ModellingSettings
from radiomics_assets.modelling.tasks import Task, interval, task_for


@dataclass
class CrossValidation:
    """Out-of-fold results of the whole procedure (and, for information, of every candidate) on the same splits."""

    scheme: str
    y: np.ndarray
    patient_ids: list[str]
    fold_of: np.ndarray
    """repeats x patients: the outer test fold of each patient in each repeat."""
    repeat_predictions: np.ndarray
    """repeats x patients [x columns]: out-of-fold prediction of the procedure's model (see ``tasks.base``)."""
    chosen: list[str]
    """The candidate the procedure chose in each outer training set (repeat-major)."""
    fold_params: list[dict] = field(default_factory=list)
    selection_frequency: dict[str, float] = field(default_factory=dict)
    candidate_predictions: dict[str, np.ndarray] = field(default_factory=dict)
    """Per candidate: repeats x patients out-of-fold predictions of its best inner parameters."""
    task: Task = field(default_factory=task_for)
    splits: list[tuple[int, int]] = field(default_factory=list)
    """(repeat, fold) of every outer split, in the order of ``chosen``, ``fold_params`` and ``fold_extras``."""
    fold_extras: list[dict] = field(default_factory=list)
    validation: str = "cv"
    """``cv`` (repeated grouped stratified k-fold) or ``leave_site_out`` (fold k holds out batch ``sites[k]``)."""
    sites: list[str] = field(default_factory=list)

    @property
    def site_scores(self) -> dict[str, float]:
        """Leave-site-out: the primary metric on each held-out site (NaN where it is undefined, e.g. one class)."""
        if self.validation != LEAVE_SITE_OUT:
            return {}
        scores = self.task.fold_scores(self.y, self.repeat_predictions, self.fold_of)
        return {site: float(score) for site, score in zip(self.sites, np.ravel(scores), strict=True)}

    @property
    def repeat_probabilities(self) -> np.ndarray:
        """Binary: repeats x patients out-of-fold P(class 1) (the name of earlier releases)."""
        return self.repeat_predictions

    @property
    def probabilities(self) -> np.ndarray:
        """A patient's out-of-fold prediction averaged over the repeats (threshold metrics, calibration, DCA)."""
        return self.repeat_predictions.mean(axis=0)

    @property
    def fold_scores(self) -> np.ndarray:
        return self.task.fold_scores(self.y, self.repeat_predictions, self.fold_of)

    @property
    def fold_aucs(self) -> np.ndarray:
        return self.fold_scores

    @property
    def score(self) -> float:
        """The task's estimate of the primary metric (binary: mean AUC over the outer test folds of all repeats)."""
        return self.task.cv_estimate(self.y, self.repeat_predictions, self.fold_of)

    @property
    def auc(self) -> float:
        return self.score


def _checked_target(task: Task, y) -> np.ndarray:
    """``y`` as an array (binary: int codes), checked large enough, with the task's evaluation points fixed."""
    y_arr = np.asarray(y)
    if task.kind.value == "binary":
        y_arr = y_arr.astype(int)
    task.check_size(y_arr)
    task.prepare(y_arr)
    return y_arr


def split_seed(seed: int, repeat: int, y: np.ndarray, task: Task | None = None) -> int:
    """The shuffle seed of one outer repeat: the configured seed, the repeat and the outcomes themselves.

    A stratified splitter assigns the k-th patient of a stratum (in its shuffled order) to a fixed fold. With one
    shuffle order for every labelling, any chance alignment of that order with the features favours the same
    patients in every relabelling, and the CV AUC of permuted labels centres off 0.5 (measured: 0.46 for the
    four-candidate procedure on the 30-patient synthetic cohort). Seeding with the outcomes gives every labelling
    (each permutation of the permutation test, a reviewer's shuffled labels.csv) its own pseudo-random order, so
    the test outcomes of a fold are exchangeable given its training set and the fold score centres on chance; the
    same cohort and seed still give the same splits.
    """
    digest = hashlib.sha256((task or task_for()).digest(np.asarray(y))).digest()
    sequence = np.random.SeedSequence([seed, repeat, int.from_bytes(digest[:8], "little")])
    return int(sequence.generate_state(1)[0])


def outer_splits(
    y: np.ndarray, groups: np.ndarray, settings: ModellingSettings, task: Task | None = None
) -> tuple[int, list]:
    """Grouped stratified splits of every repeat: (folds, [(repeat, fold, train, test), ...])."""
    task = task or task_for()
    strata = task.strata(np.asarray(y))
    folds = group_folds(strata, groups, settings.folds)
    splits = []
    for repeat in range(settings.repeats):
        seed = split_seed(settings.seed, repeat, y, task)
        splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
        for fold, (train, test) in enumerate(splitter.split(np.zeros(len(strata)), strata, groups)):
            splits.append((repeat, fold, train, test))
    return folds, splits


LEAVE_SITE_OUT = "leave_site_out"


def site_splits(sites: np.ndarray) -> tuple[list[str], list]:
    """Leave-one-site-out: one outer split per batch, that batch's patients the test fold ([(0, fold, train,
    test), ...]). Deterministic, so there are no repeats. Unknown batches (code -1) form a site of their own."""
    sites = np.asarray(sites, dtype=float)
    levels = np.unique(sites)
    if len(levels) < 2:
        raise ValueError(f"validation: leave_site_out needs at least 2 batches, got {len(levels)}")
    index = np.arange(len(sites))
    splits = [(0, fold, index[sites != level], index[sites == level]) for fold, level in enumerate(levels)]
    return [f"{level:g}" for level in levels], splits


def _fit_fold(X, y, groups, train, test, settings, perturbations, with_candidates, task, roles):
    search = CandidateSearch(settings, perturbations, refit_candidates=with_candidates, task=task, roles=roles)
    search.fit(X.iloc[train], y[train], groups[train])
    X_test = X.iloc[test].to_numpy(dtype=float)
    candidates = {name: task.predict(estimator, X_test) for name, estimator in search.candidate_estimators_.items()}
    return {
        "prediction": search.predict_outcome(X_test),
        "chosen": search.best_,
        "params": search.best_params_,
        "selected": filtered_columns(search.best_estimator_, list(X.columns)),
        "candidates": candidates if with_candidates else {},
        "extras": task.fold_extras(search.best_estimator_, X.iloc[train].to_numpy(dtype=float), y[train]),
    }


def _scheme(task: Task, settings: ModellingSettings, folds: int, n: int, n_groups: int, predictors: str) -> str:
    candidates = ", ".join(f"{m}/{s}" for m, s in settings.candidates_for(task))
    return (
        f"outer repeated grouped stratified {folds}-fold x {settings.repeats} over the whole procedure "
        f"({n} patients in {n_groups} groups; {task.kind} outcome, predictors: {predictors}); in each outer training "
        f"set an inner grouped stratified {settings.inner_folds}-fold CV chooses among candidates {candidates} and "
        f"their hyperparameters by {task.metric_label}, and the winner is refitted; {task.metric_label} = "
        f"{task.estimate_description()}; {'standardised' if settings.standardise else 'unscaled'} features"
        + (
            f"; robustness filter ICC(1,1) >= {settings.robustness_icc_threshold} on the training patients"
            if settings.robustness_icc_threshold > 0
            else ""
        )
    )


def cross_validate(
    X: pd.DataFrame,
    y,
    settings: ModellingSettings = DEFAULT_SETTINGS,
    groups: np.ndarray | None = None,
    perturbations: pd.DataFrame | None = None,
    with_candidates: bool = True,
    *,
    task: Task | None = None,
    roles: ColumnRoles | None = None,
    predictors: str = "radiomics",
    validation: str = "cv",
) -> CrossValidation:
    """Outer repeated grouped stratified k-fold over the whole procedure (candidate choice included).

    ``with_candidates`` also records every candidate's out-of-fold predictions (the permutation test skips it).
    ``task`` (binary when None) gives models, strata and metrics; ``roles`` marks the covariate columns.
    ``validation="leave_site_out"`` holds out one batch (the ``roles.batch`` column) per outer fold instead.
    """
    task = task or task_for()
    y_arr = _checked_target(task, y)
    groups = np.asarray(X.index if groups is None else groups)
    sites: list[str] = []
    if validation == LEAVE_SITE_OUT:
        if roles is None or roles.batch is None:
            raise ValueError("validation: leave_site_out needs a batch column (batch: in study.yaml)")
        settings = replace(settings, repeats=1)  # one deterministic split per site: nothing to repeat
        sites, splits = site_splits(X.iloc[:, roles.batch].to_numpy())
        folds = len(sites)
    else:
        folds, splits = outer_splits(y_arr, groups, settings, task)
    results = Parallel(n_jobs=settings.n_jobs)(
        delayed(_fit_fold)(X, y_arr, groups, train, test, settings, perturbations, with_candidates, task, roles)
        for _, _, train, test in splits
    )
    n = len(y_arr)
    shape = np.asarray(results[0]["prediction"]).shape[1:]
    repeat_predictions = np.full((settings.repeats, n, *shape), np.nan)
    fold_of = np.full((settings.repeats, n), -1)
    names = list(results[0]["candidates"])
    candidate_predictions = {name: np.full((settings.repeats, n, *shape), np.nan) for name in names}
    counts = pd.Series(0.0, index=X.columns)
    for (repeat, fold, _, test), result in zip(splits, results, strict=True):
        repeat_predictions[repeat, test] = result["prediction"]
        fold_of[repeat, test] = fold
        counts[result["selected"]] += 1
        for name in names:
            candidate_predictions[name][repeat, test] = result["candidates"][name]
    frequency = (counts / len(splits)).sort_values(ascending=False)
    scheme = _scheme(task, settings, folds, n, len(np.unique(groups)), predictors)
    if validation == LEAVE_SITE_OUT:
        scheme = (
            f"leave-one-site-out: {folds} outer folds, each holding out one batch, "
            + scheme.split(" over the whole procedure ", 1)[1]
        )
    return CrossValidation(
        scheme=scheme,
        y=y_arr,
        patient_ids=[str(k) for k in X.index],
        fold_of=fold_of,
        repeat_predictions=repeat_predictions,
        chosen=[r["chosen"] for r in results],
        fold_params=[r["params"] for r in results],
        selection_frequency={k: float(v) for k, v in frequency[frequency > 0].items()},
        candidate_predictions=candidate_predictions,
        task=task,
        splits=[(repeat, fold) for repeat, fold, _, _ in splits],
        fold_extras=[r["extras"] for r in results],
        validation=validation,
        sites=sites,
    )


def permuted_labels(y: np.ndarray, groups: np.ndarray, rng: np.random.Generator, task: Task | None = None):
    """Outcomes permuted between groups (a group keeps one outcome), so duplicates stay alike under the null."""
    return (task or task_for()).permute(np.asarray(y), np.asarray(groups), rng)


def _null_score(X, y, groups, settings, perturbations, seed, task, roles, validation="cv") -> float:
    shuffled = permuted_labels(y, groups, np.random.default_rng(seed), task)
    one_repeat = replace(settings, repeats=1, n_jobs=1)
    cv = cross_validate(
        X, shuffled, one_repeat, groups, perturbations, False, task=task, roles=roles, validation=validation
    )
    return cv.score


def permutation_test(
    cv: CrossValidation,
    X: pd.DataFrame,
    settings: ModellingSettings = DEFAULT_SETTINGS,
    groups: np.ndarray | None = None,
    perturbations: pd.DataFrame | None = None,
    roles: ColumnRoles | None = None,
) -> dict:
    """The whole procedure re-run on ``settings.permutations`` outcome permutations (between groups; survival
    permutes (time, event) pairs together).

    Statistic: the task's estimate from the first outer repeat (the observed value comes from ``cv``; every
    labelling, observed or permuted, is split by the same rule, :func:`split_seed`), so each permutation costs
    one repeat, not all: the repeats only average splits of the same patients. p = (1 + #null >= observed) /
    (1 + N), the permutation p-value that counts the observed labelling. Keys are named for the metric
    (binary: ``observed_auc``, ``null_aucs``, ...).

    What is and is not made cheaper (issue 26): the permutations run in ``settings.n_jobs`` processes, one
    permutation per task (each then fits its folds in one process, so no worker waits on another's folds); each
    costs one outer repeat; the default consensus has no inner loop (one forest and one linear fit per fold). Nothing
    else is shared between labellings, on purpose: the outer splits are seeded by the outcomes
    (:func:`split_seed`), and every fitted step that costs anything (the feature filter, the forest) depends on the
    labels, so reusing it would leak the observed labels into the null. A cheaper model under permutation only
    (e.g. fewer trees) would test another procedure than the one whose figure is reported, so the refits are the
    procedure itself.

    Time budget: after ``settings.permutation_seconds`` (0 = none) the test stops at the end of the current batch of
    permutations and reports the ones done (``n_permutations``; ``n_permutations_requested`` is the setting). The
    p-value stays exact for the count done: when to stop depends on the clock, never on how the null values
    compare with the observed one, so the permutations done are still exchangeable with the observed labelling.
    """
    task = cv.task
    name = task.primary_metric
    n = settings.permutations
    if n == 0:
        return {"n_permutations": 0, "p_value": None, f"null_{name}s": [], "metric": name}
    observed = task.cv_estimate(cv.y, cv.repeat_predictions[:1], cv.fold_of[:1])
    groups = np.asarray(X.index if groups is None else groups)
    seeds = [int(s) for s in np.random.SeedSequence(settings.seed).generate_state(n)]
    batch = 2 * settings.n_jobs  # the budget is checked between batches; two per process keep both busy
    started = time.perf_counter()
    null: list[float] = []
    with Parallel(n_jobs=settings.n_jobs) as parallel:
        for first in range(0, n, batch):
            null += parallel(
                delayed(_null_score)(X, cv.y, groups, settings, perturbations, s, task, roles, cv.validation)
                for s in seeds[first : first + batch]
            )
            if settings.permutation_seconds and time.perf_counter() - started > settings.permutation_seconds:
                break
    null = np.asarray(null, dtype=float)
    done = len(null)
    return {
        "n_permutations": done,
        "n_permutations_requested": n,
        "stopped_by_time_budget": done < n,
        "time_budget_seconds": settings.permutation_seconds,
        "metric": name,
        "chance": task.chance_level,
        "statistic": f"{task.metric_label} of the first outer repeat",
        f"observed_{name}": float(observed),
        "p_value": float((1 + np.sum(null >= observed)) / (1 + done)),
        f"null_{name}_mean": float(null.mean()),
        f"null_{name}_sd": float(null.std(ddof=1)) if done > 1 else float("nan"),
        f"null_{name}s": [float(a) for a in null],
    }


def compare_candidates(cv: CrossValidation, n_bootstrap: int = 1000, seed: int = 0) -> dict[str, dict]:
    """Each candidate's outer-fold figures (information, not an estimate of the chosen model) and a paired
    bootstrap of its estimate minus the procedure's, on the same patient resamples. Keys are named for the
    task's primary metric (binary: ``auc``, ``auc_ci_low``, ... ``auc_minus_procedure``)."""
    task, name = cv.task, cv.task.primary_metric
    procedure = task.bootstrap(cv.y, cv.repeat_predictions, cv.fold_of, n_bootstrap, seed)
    out = {}
    for candidate, predictions in cv.candidate_predictions.items():
        per_fold = task.fold_scores(cv.y, predictions, cv.fold_of)
        value = task.cv_estimate(cv.y, predictions, cv.fold_of)
        boot = task.bootstrap(cv.y, predictions, cv.fold_of, n_bootstrap, seed)
        paired = len(boot) == len(procedure)
        difference = boot - procedure if paired else np.empty(0)
        low, high = interval(boot)
        d_low, d_high = interval(difference)
        out[candidate] = {
            name: float(value),
            f"{name}_ci_low": low,
            f"{name}_ci_high": high,
            f"{name}_fold_sd": float(np.nanstd(per_fold, ddof=1)) if len(per_fold) > 1 else float("nan"),
            "times_chosen": int(sum(c == candidate for c in cv.chosen)),
            f"{name}_minus_procedure": float(value - cv.score),
            "difference_ci_low": d_low,
            "difference_ci_high": d_high,
            "difference_p_value": float(min(1.0, 2 * min(np.mean(difference <= 0), np.mean(difference >= 0))))
            if len(difference)
            else float("nan"),
            **task.candidate_extras(cv.y, predictions),
        }
    return out


@dataclass(frozen=True)
class PredictorComparison:
    """With ``predictors: compare``: clinical-only, radiomics-only and combined procedures on the same outer
    splits, and the gain of combined over clinical with a paired bootstrap CI (the reviewer's first question)."""

    metric: str
    clinical: dict
    radiomics: dict
    both: dict
    gain: dict
    """``{value, ci_low, ci_high, p_value}``: combined minus clinical-only, paired over the same patient resamples."""

    def as_dict(self) -> dict:
        return {
            "metric": self.metric,
            "clinical": self.clinical,
            "radiomics": self.radiomics,
            "both": self.both,
            "gain": self.gain,
        }


def compare_predictors(cvs: dict[str, CrossValidation], n_bootstrap: int = 1000, seed: int = 0) -> PredictorComparison:
    """Figures of the clinical, radiomics and combined cross-validations and the paired gain of combined over
    clinical (each resample draws the same patients for all three)."""
    task = cvs["both"].task
    boots, figures = {}, {}
    for key, cv in cvs.items():
        boots[key] = task.bootstrap(cv.y, cv.repeat_predictions, cv.fold_of, n_bootstrap, seed)
        low, high = interval(boots[key])
        figures[key] = {"value": float(cv.score), "ci_low": low, "ci_high": high, "chosen_per_outer_fold": cv.chosen}
    gain = cvs["both"].score - cvs["clinical"].score
    paired = len(boots["both"]) == len(boots["clinical"])
    difference = boots["both"] - boots["clinical"] if paired else np.empty(0)
    low, high = interval(difference)
    p = float(min(1.0, 2 * min(np.mean(difference <= 0), np.mean(difference >= 0)))) if len(difference) else np.nan
    return PredictorComparison(
        metric=task.primary_metric,
        clinical=figures["clinical"],
        radiomics=figures["radiomics"],
        both=figures["both"],
        gain={"value": float(gain), "ci_low": low, "ci_high": high, "p_value": p},
    )


def fit_final(
    X: pd.DataFrame,
    y,
    settings: ModellingSettings = DEFAULT_SETTINGS,
    groups: np.ndarray | None = None,
    perturbations: pd.DataFrame | None = None,
    *,
    task: Task | None = None,
    roles: ColumnRoles | None = None,
) -> CandidateSearch:
    """The same procedure on all training patients: the model that is saved and serves."""
    task = task or task_for()
    y_arr = _checked_target(task, y)
    return CandidateSearch(settings, perturbations, task=task, roles=roles).fit(X, y_arr, groups)
