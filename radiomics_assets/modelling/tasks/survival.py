"""Survival outcome (time to event, right-censored): Cox, random survival forest and boosting, Harrell's and Uno's
c-index, time-dependent AUC, the integrated Brier score and Kaplan-Meier risk groups.

``y`` is scikit-survival's structured array (``Surv.from_arrays``): the first field is the event indicator, the
second the follow-up time (read by position, never by name). A prediction is a matrix: column 0 the risk score
(higher = earlier event), then the survival probability at each of :attr:`SurvivalTask.times`, the evaluation grid
fixed once by :meth:`SurvivalTask.prepare` from the whole analysed cohort (the study's horizons inside follow-up
and 20 points between the 10th and 80th percentile times).

Primary metric: Harrell's c-index of every outer test fold (each scored against the model fitted without it),
averaged over the folds of all repeats, with a percentile bootstrap CI of patients (fold models held fixed), the
same estimator as the binary AUC. The c-indices here are written in numpy (pairwise, O(n^2) per fold) and equal
``sksurv.metrics.concordance_index_censored`` / ``concordance_index_ipcw`` exactly; the bootstrap weights every
pair by how often its two patients were drawn, so 1000 resamples cost one matrix product per fold.
"""

from __future__ import annotations

import html
import warnings

import numpy as np
from sklearn.base import BaseEstimator
from sksurv.compare import compare_survival
from sksurv.ensemble import GradientBoostingSurvivalAnalysis, RandomSurvivalForest
from sksurv.linear_model import CoxnetSurvivalAnalysis
from sksurv.metrics import brier_score, cumulative_dynamic_auc, integrated_brier_score
from sksurv.nonparametric import CensoringDistributionEstimator, kaplan_meier_estimator

from radiomics_assets.modelling.choices import ModelFamily
from radiomics_assets.modelling.plots import figure, fmt, img, png, table
from radiomics_assets.modelling.study import OutcomeType
from radiomics_assets.modelling.tasks.base import PrimaryMetric, Task, bootstrap_weights, interval, jsonable

MODEL_FAMILIES = (ModelFamily.coxnet, ModelFamily.random_forest, ModelFamily.gradient_boosting)

TIED_TOL = 1e-8
"""Two risk scores closer than this are a tie (counts 0.5), as in scikit-survival's c-indices."""

GRID_POINTS = 20
"""Evaluation times between the 10th and 80th percentile of the observed times (plus the horizons inside)."""

_PAIR_BUDGET = 2_000_000
"""Largest pair block (rows x patients) held in memory at once."""

PARAM_GRIDS: dict[str, dict[str, list]] = {
    "coxnet": {"select__k": [5, 10, 20], "model__alphas": [[0.01], [0.05], [0.2]]},
    "random_forest": {"select__k": [10], "model__min_samples_leaf": [0.05, 0.12]},
    "gradient_boosting": {"select__k": [5, 20]},
}
"""Small on purpose: the outer CV, the permutation test and the final fit refit the whole search. Measured on 480
patients x 100 features, one inner search (3 folds) costs about 0.5 s for coxnet, 2.5 s for the forest and 1.5 s
for boosting, so the default procedure on 600 patients (5 x 2 outer folds, 9 permutations) takes about 3 minutes on
2 cores.

Coxnet costs milliseconds per fit, so it gets 3 x 3 points: ``model__alphas`` is one elastic-net penalty per fit
(l1_ratio 0.5, standardised features; 0.2 zeroes every coefficient of a weak signal: the null model, a legitimate
choice). The forest (100 trees, the procedure's main cost) tunes its leaf size, a fraction of the training patients
(5 % and 12 %: 16 and 39 of 320), so the grid suits small and large cohorts alike; tuning its number of features
as well doubled its cost for the same held-out c-index on synthetic data. Boosting costs about 2.5 ms per stage
whatever the depth, so only the number of features is tuned (depth-2 trees, 100 stages, learning rate 0.1,
subsample 0.8)."""


# --- y ---------------------------------------------------------------------------------------------------------


def event_time(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(event: bool, time: float) of a structured survival array, by field position (event first, time second)."""
    names = y.dtype.names
    return np.asarray(y[names[0]], dtype=bool), np.asarray(y[names[1]], dtype=float)


def survival_array(event, time) -> np.ndarray:
    """``Surv.from_arrays(event=..., time=...)`` without its checks (an empty cohort is allowed)."""
    event, time = np.asarray(event, dtype=bool).ravel(), np.asarray(time, dtype=float).ravel()
    y = np.empty(len(time), dtype=[("event", bool), ("time", float)])
    y["event"], y["time"] = event, time
    return y


def evaluation_times(time: np.ndarray, horizons=()) -> np.ndarray:
    """The grid at which survival probabilities are predicted and scored: the horizons strictly inside the observed
    follow-up and ``GRID_POINTS`` points from the 10th to the 80th percentile time, sorted and unique; every point
    lies in [min time, max time), where scikit-survival's time-dependent metrics are defined."""
    time = np.asarray(time, dtype=float)
    if not len(time):
        return np.empty(0)
    lo, hi = float(time.min()), float(time.max())
    inside = [float(h) for h in horizons if lo < h < hi]
    grid = np.linspace(*np.percentile(time, [10, 80]), GRID_POINTS)
    points = np.unique(np.concatenate([grid, inside]))
    return points[(points >= lo) & (points < hi)]


# --- concordance -----------------------------------------------------------------------------------------------


def _pair_blocks(event: np.ndarray, time: np.ndarray, risk: np.ndarray, rows: np.ndarray):
    """For the event rows ``rows``: which patients each is comparable with and the credit of each pair.

    Comparable (as scikit-survival): i had the event and j was followed longer, or censored at the same time.
    Credit: 1 when i's risk is higher (concordant), 0.5 when the risks tie within ``TIED_TOL``, else 0.
    """
    ti = time[rows, None]
    comparable = (time[None, :] > ti) | ((time[None, :] == ti) & ~event[None, :])
    diff = risk[rows, None] - risk[None, :]
    credit = np.where(np.abs(diff) <= TIED_TOL, 0.5, (diff > 0).astype(float))
    return comparable, credit


def _chunks(rows: np.ndarray, n: int):
    size = max(1, _PAIR_BUDGET // max(n, 1))
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


def concordance(event, time, risk, row_weight: np.ndarray | None = None) -> float:
    """Harrell's c-index of ``risk`` (``row_weight`` None), or Uno's with ``row_weight`` = the squared inverse
    probability of censoring weights of the events (0 beyond tau); NaN without a comparable pair."""
    event, time, risk = np.asarray(event, dtype=bool), np.asarray(time, dtype=float), np.asarray(risk, dtype=float)
    rows = np.flatnonzero(event if row_weight is None else event & (row_weight > 0))
    numerator = denominator = 0.0
    for chunk in _chunks(rows, len(time)):
        comparable, credit = _pair_blocks(event, time, risk, chunk)
        w = 1.0 if row_weight is None else row_weight[chunk]
        numerator += float(np.sum(w * (comparable * credit).sum(axis=1)))
        denominator += float(np.sum(w * comparable.sum(axis=1)))
    return numerator / denominator if denominator > 0 else float("nan")


def harrell_c(y: np.ndarray, risk: np.ndarray) -> float:
    """Harrell's c-index (``concordance_index_censored``'s value; NaN when no pair is comparable)."""
    event, time = event_time(y)
    return concordance(event, time, risk)


def weighted_concordance(event, time, risk, weights: np.ndarray, row_weight: np.ndarray | None = None) -> np.ndarray:
    """The c-index of every row of ``weights`` (resamples x patients: how often each patient was drawn).

    A resample repeats patients; a patient's copies are never comparable with each other (same time; both events
    or both censored), so the c-index of the resample is the pair sum weighted by w_i w_j, exactly.
    """
    event, time, risk = np.asarray(event, dtype=bool), np.asarray(time, dtype=float), np.asarray(risk, dtype=float)
    weights = np.asarray(weights, dtype=float)
    rows = np.flatnonzero(event if row_weight is None else event & (row_weight > 0))
    numerator = np.zeros(len(weights))
    denominator = np.zeros(len(weights))
    for chunk in _chunks(rows, len(time)):
        comparable, credit = _pair_blocks(event, time, risk, chunk)
        left = weights[:, chunk] * (1.0 if row_weight is None else row_weight[chunk])
        numerator += np.einsum("bc,bc->b", left, weights @ (comparable * credit).T)
        denominator += np.einsum("bc,bc->b", left, weights @ comparable.T)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, numerator / np.where(denominator > 0, denominator, 1.0), np.nan)


def ipcw_weights(y_train: np.ndarray, y: np.ndarray, tau: float) -> np.ndarray | None:
    """Uno's pair weights of the patients of ``y``: 1 / G(t)^2 for an event before ``tau`` (G: the Kaplan-Meier
    estimate of the censoring distribution of ``y_train``), else 0. None when G reaches 0 before an event."""
    event, time = event_time(y)
    weights = np.zeros(len(y))
    before = time < tau
    if not (event & before).any():
        return weights
    censoring = CensoringDistributionEstimator().fit(y_train)
    try:
        weights[before] = np.square(censoring.predict_ipcw(y[before]))
    except ValueError:  # censoring survival 0 at an event time
        return None
    return weights


def uno_c(y_train: np.ndarray, y: np.ndarray, risk: np.ndarray, tau: float) -> float:
    """Uno's c-index (``concordance_index_ipcw(y_train, y, risk, tau)``'s value)."""
    weights = ipcw_weights(y_train, y, tau)
    if weights is None:
        return float("nan")
    event, time = event_time(y)
    return concordance(event, time, risk, weights)


def fold_concordance(
    y: np.ndarray,
    risks: np.ndarray,
    fold_of: np.ndarray,
    weights: np.ndarray | None = None,
    row_weight: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """C-index of every outer test fold (repeat-major) and, with ``weights``, of every resample (resamples x
    folds; NaN where a resample leaves a fold without a comparable pair)."""
    event, time = event_time(y)
    values, boots = [], []
    for risk, folds in zip(risks, fold_of, strict=True):
        for f in np.unique(folds):
            m = folds == f
            rw = None if row_weight is None else row_weight[m]
            values.append(concordance(event[m], time[m], risk[m], rw))
            if weights is not None:
                boots.append(weighted_concordance(event[m], time[m], risk[m], weights[:, m], rw))
    return np.asarray(values, dtype=float), (np.column_stack(boots) if weights is not None else None)


def _fold_mean(per_resample_fold: np.ndarray) -> np.ndarray:
    """Fold-mean of every resample (rows), NaN folds left out; resamples without any finite fold dropped."""
    finite = np.isfinite(per_resample_fold)
    counts = finite.sum(axis=1)
    sums = np.where(finite, per_resample_fold, 0.0).sum(axis=1)
    return sums[counts > 0] / counts[counts > 0]


# --- univariate feature statistics (selection) ---------------------------------------------------------------


def cox_score_statistics(X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Univariate Cox score test statistic U^2 / I at beta = 0 of every column (Breslow ties), chi-square(1).

    U = sum over event times of (sum of x over the d events - d x mean of x over the risk set), I = sum over event
    times of d x variance of x over the risk set; the risk-set sums are suffix cumulative sums over the
    time-sorted patients, so all columns cost O(n log n + n p). Constant columns (and columns that never vary
    within a risk set) score 0. Scale and shift do not change it, so columns are standardised first (stable sums).
    """
    X = np.asarray(X, dtype=float)
    event, time = event_time(y)
    n, p = X.shape
    out = np.zeros(p)
    varying = np.ptp(X, axis=0) > 0 if n else np.zeros(p, dtype=bool)
    if n < 2 or not event.any() or not varying.any():
        return out
    Z = X[:, varying]
    Z = (Z - Z.mean(axis=0)) / Z.std(axis=0)
    order = np.argsort(time, kind="stable")
    t, e, Z = time[order], event[order], Z[order]
    first = np.flatnonzero(np.r_[True, t[1:] != t[:-1]])  # first patient of each distinct time
    deaths = np.add.reduceat(e.astype(float), first)
    first, deaths = first[deaths > 0], deaths[deaths > 0]
    at_risk = (n - first).astype(float)[:, None]
    s1 = np.cumsum(Z[::-1], axis=0)[::-1][first]
    s2 = np.cumsum(np.square(Z)[::-1], axis=0)[::-1][first]
    mean = s1 / at_risk
    variance = np.clip(s2 / at_risk - np.square(mean), 0.0, None)
    u = Z[e].sum(axis=0) - (deaths[:, None] * mean).sum(axis=0)
    information = (deaths[:, None] * variance).sum(axis=0)
    ok = information > 1e-10 * deaths.sum()
    out[np.flatnonzero(varying)[ok]] = np.square(u[ok]) / information[ok]
    return out


def feature_concordance(X: np.ndarray, y: np.ndarray, tied_tol: float = 0.0) -> np.ndarray:
    """Harrell's c-index of every column of ``X`` used alone as a risk score (0.5: no information; below 0.5: the
    feature predicts longer survival). Ties within ``tied_tol`` (default exact, so the value does not depend on a
    feature's unit) count 0.5; a constant column gives 0.5, a cohort without a comparable pair NaN.

    The comparable pairs are listed once, then the columns are compared in chunks (memory stays bounded:
    O(n^2 p) time, which is fine for n up to a few thousand)."""
    X = np.asarray(X, dtype=float)
    event, time = event_time(y)
    n, p = X.shape
    left, right = [], []
    for chunk in _chunks(np.flatnonzero(event), n):
        comparable, _ = _pair_blocks(event, time, np.zeros(n), chunk)
        i, j = np.nonzero(comparable)
        left.append(chunk[i])
        right.append(j)
    left = np.concatenate(left) if left else np.empty(0, dtype=int)
    right = np.concatenate(right) if right else np.empty(0, dtype=int)
    if not len(left):
        return np.full(p, np.nan)
    out = np.empty(p)
    step = max(1, _PAIR_BUDGET // len(left))
    for start in range(0, p, step):
        columns = X[:, start : start + step]
        diff = columns[left] - columns[right]
        credit = (diff > tied_tol) + 0.5 * (np.abs(diff) <= tied_tol)
        out[start : start + step] = credit.mean(axis=0)
    return out


# --- models ----------------------------------------------------------------------------------------------------


class Coxnet(CoxnetSurvivalAnalysis):
    """scikit-survival's elastic-net Cox model, made safe for a grid search on radiomics features.

    * A penalty too small for the data (heavy-tailed features: standardised values of 20 or more make exp(linear
      predictor) overflow) raises ``ArithmeticError`` in scikit-survival, which would stop the whole procedure, or
      fits a Breslow baseline hazard that is infinite (every survival probability 0). Either way the fit retries
      with the penalty 4, 16 and 64 times larger; ``penalty_factor_`` says which one fitted (1: the requested one)
      and ``alphas_`` holds the penalty used. The rule depends on the training data only.
    * A penalty that zeroes every coefficient is the null model (every risk 0, c-index 0.5), a legitimate grid
      point, so its warning is not repeated in every fold of every permutation.
    """

    PENALTY_FACTORS = (1, 4, 16, 64)

    def fit(self, X, y):
        requested = self.alphas
        try:
            for factor in self.PENALTY_FACTORS:
                self.alphas = None if requested is None else [a * factor for a in requested]
                last = requested is None or factor == self.PENALTY_FACTORS[-1]
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    try:
                        super().fit(X, y)
                        kept = last or self._finite_baseline(X)
                    except ArithmeticError:
                        if last:
                            raise
                        kept = False
                if kept:  # only the kept attempt's warnings are worth showing
                    for w in caught:
                        if "all coefficients are zero" not in str(w.message):
                            warnings.warn(w.message, stacklevel=2)
                    self.penalty_factor_ = factor
                    return self
        finally:
            self.alphas = requested  # the parameter stays what was asked (get_params, clone)
        return self

    def _finite_baseline(self, X) -> bool:
        if not self.fit_baseline_model:
            return True
        with np.errstate(all="ignore"):
            hazard = self.predict_cumulative_hazard_function(np.asarray(X)[:1])[0]
            return bool(np.isfinite(hazard.a) and np.isfinite(hazard.y).all())


def survival_model(family: str, seed: int) -> BaseEstimator:
    """An unfitted model of ``family``; every one gives ``predict`` (risk) and ``predict_survival_function``."""
    if family == "coxnet":
        return Coxnet(l1_ratio=0.5, alphas=[0.1], fit_baseline_model=True, max_iter=100000)
    if family == "random_forest":
        return RandomSurvivalForest(
            n_estimators=100, min_samples_leaf=0.05, max_features="sqrt", n_jobs=1, random_state=seed
        )
    if family == "gradient_boosting":
        return GradientBoostingSurvivalAnalysis(
            loss="coxph", n_estimators=100, learning_rate=0.1, max_depth=2, subsample=0.8, random_state=seed
        )
    raise ValueError(f"unknown survival model family {family!r}; choose from {list(MODEL_FAMILIES)}")


def survival_probabilities(estimator, X: np.ndarray, times: np.ndarray) -> np.ndarray:
    """S(t) of every row of ``X`` at ``times`` (rows x times). Each step function is evaluated at t clipped to its
    domain: before the first training time it gives its first value, beyond the last training time its last."""
    times = np.asarray(times, dtype=float)
    if not len(times):
        return np.empty((len(X), 0))
    functions = estimator.predict_survival_function(X)
    out = np.empty((len(functions), len(times)))
    for i, fn in enumerate(functions):
        lo, hi = fn.domain
        out[i] = fn(np.clip(times, lo, hi))
    return out


class ConcordanceScorer:
    """The inner CV's score: Harrell's c-index of the risk score (no survival functions needed)."""

    def __call__(self, estimator, X, y) -> float:
        return harrell_c(y, np.asarray(estimator.predict(X), dtype=float))


# --- figures ---------------------------------------------------------------------------------------------------


def kaplan_meier(y: np.ndarray) -> dict:
    """{time, survival} of the Kaplan-Meier estimate (lists; empty for no patients)."""
    event, time = event_time(y)
    if not len(time):
        return {"time": [], "survival": []}
    t, s = kaplan_meier_estimator(event, time)
    return {"time": [float(v) for v in t], "survival": [float(v) for v in s]}


def km_at(y: np.ndarray, times: np.ndarray) -> np.ndarray:
    """The Kaplan-Meier survival of ``y`` at ``times`` (1 before the first time, the last value after the last)."""
    event, time = event_time(y)
    t, s = kaplan_meier_estimator(event, time)
    index = np.searchsorted(t, np.asarray(times, dtype=float), side="right") - 1
    return np.where(index >= 0, s[np.clip(index, 0, None)], 1.0)


def median_follow_up(y: np.ndarray) -> float:
    """Median follow-up by the reverse Kaplan-Meier method (censoring as the event); NaN when not reached."""
    event, time = event_time(y)
    if not len(time) or event.all():
        return float("nan")
    t, s = kaplan_meier_estimator(~event, time)
    reached = np.flatnonzero(s <= 0.5)
    return float(t[reached[0]]) if len(reached) else float("nan")


def risk_groups(y: np.ndarray, high: np.ndarray, rule: str) -> dict:
    """Kaplan-Meier curves of the high- and low-risk patients and the log-rank test between them."""
    high = np.asarray(high, dtype=bool)
    chi2 = p = float("nan")
    if high.any() and (~high).any() and event_time(y)[0].any():
        chi2, p = (float(v) for v in compare_survival(y, high.astype(int)))
    return {
        "rule": rule,
        "n_high": int(high.sum()),
        "n_low": int((~high).sum()),
        "logrank_chi2": chi2,
        "logrank_p": p,
        "km": {"high": kaplan_meier(y[high]), "low": kaplan_meier(y[~high])},
    }


def time_dependent_auc(y: np.ndarray, risk: np.ndarray, times) -> list[dict]:
    """Cumulative/dynamic AUC (``cumulative_dynamic_auc``, censoring weights from ``y`` itself) at ``times``."""
    times = [float(t) for t in times]
    if not times:
        return []
    try:
        auc, _ = cumulative_dynamic_auc(y, y, np.asarray(risk, dtype=float), times)
    except ValueError:  # no case or no control at a time, or censoring survival 0
        return [{"time": t, "auc": float("nan")} for t in times]
    return [{"time": t, "auc": float(a)} for t, a in zip(times, np.atleast_1d(auc), strict=True)]


def brier(y: np.ndarray, survival: np.ndarray, times: np.ndarray) -> float:
    """Integrated Brier score (``integrated_brier_score``) over ``times``; NaN with fewer than two times."""
    if len(times) < 2:
        return float("nan")
    try:
        return float(integrated_brier_score(y, y, np.asarray(survival, dtype=float), np.asarray(times, dtype=float)))
    except ValueError:
        return float("nan")


def brier_at(y: np.ndarray, survival: np.ndarray, reference: np.ndarray, times: np.ndarray, horizons) -> list[dict]:
    """Brier score (``brier_score``) of the model and of the Kaplan-Meier reference at each horizon in ``times``."""
    out = []
    for h in horizons:
        at = np.flatnonzero(np.isclose(times, h, rtol=1e-12, atol=0))
        if not len(at):
            continue
        try:
            _, model = brier_score(y, y, survival[:, at[0]], float(h))
            _, km = brier_score(y, y, np.full(len(y), reference[at[0]]), float(h))
        except ValueError:
            continue
        out.append({"time": float(h), "brier": float(model[0]), "brier_km": float(km[0])})
    return out


def _tau(time: np.ndarray, horizons) -> float:
    lo, hi = float(np.min(time)), float(np.max(time))
    inside = [float(h) for h in horizons if lo < h < hi]
    return max(inside) if inside else float(np.percentile(time, 80))


def _km_png(groups: dict, unit: str, title: str) -> str:
    fig, ax = figure(4.5, 3.8)
    p = groups.get("logrank_p")
    for key, colour in (("high", "C3"), ("low", "C0")):
        curve = groups["km"][key]
        if not curve["time"]:
            continue
        n = groups[f"n_{key}"]
        ax.step([0.0, *curve["time"]], [1.0, *curve["survival"]], where="post", color=colour, label=f"{key} risk ({n})")
    ax.plot([], [], " ", label=f"log-rank p {_p_text(p)}")
    ax.set(xlabel=f"time ({unit})" if unit else "time", ylabel="survival probability", ylim=(0, 1.02), title=title)
    ax.legend(loc="upper right")
    return png(fig)


def _p_text(p) -> str:
    if p is None or not np.isfinite(p):
        return "n/a"
    return "< 0.001" if p < 0.001 else fmt(p)


def _td_auc_png(points: list[dict], curve: dict | None, unit: str, title: str) -> str:
    fig, ax = figure(4.5, 3.8)
    if curve and curve.get("time"):
        ax.plot(curve["time"], curve["auc"], "-", color="C0", label="evaluation grid")
    if points:
        ax.plot([q["time"] for q in points], [q["auc"] for q in points], "o", color="C3", label="horizons")
    ax.axhline(0.5, ls="--", color="grey", label="chance")
    ax.set(xlabel=f"time ({unit})" if unit else "time", ylabel="cumulative/dynamic AUC", ylim=(0, 1), title=title)
    ax.legend(loc="lower right")
    return png(fig)


def _figures_table(m: dict, *, external: bool = False) -> str:
    unit = m.get("unit") or ""
    n_boot = m.get("n_bootstrap", "n/a")
    rows = [
        ("Patients", f"{m['n_patients']} ({m['n_events']} events, {m['n_censored']} censored)"),
        (
            f"Harrell's c-index (95 % CI, {n_boot} bootstrap resamples of patients)",
            f"{fmt(m['harrell_c'])} ({fmt(m['harrell_c_ci_low'])} to {fmt(m['harrell_c_ci_high'])})",
        ),
    ]
    if not external:
        rows.append(("SD of Harrell's c-index over the outer test folds", fmt(m.get("harrell_c_fold_sd"))))
    rows += [
        (
            f"Uno's c-index, truncated at tau = {fmt(m.get('uno_c_tau'), 1)} {unit} (95 % CI)",
            f"{fmt(m['uno_c'])} ({fmt(m['uno_c_ci_low'])} to {fmt(m['uno_c_ci_high'])})",
        ),
    ]
    for point in m.get("time_dependent_auc", []):
        rows.append((f"Time-dependent AUC at {fmt(point['time'], 1)} {unit}", fmt(point["auc"])))
    rows += [
        (
            "Integrated Brier score, model / Kaplan-Meier reference (lower is better)",
            f"{fmt(m['integrated_brier_score'])} / {fmt(m['integrated_brier_score_km'])}",
        ),
        ("Brier skill (1 - model / reference; above 0: the model beats no model)", fmt(m.get("brier_skill"))),
        (f"Median follow-up (reverse Kaplan-Meier), {unit or 'time units'}", fmt(m.get("median_follow_up"), 1)),
    ]
    groups = m.get("risk_groups") or {}
    if groups:
        rows.append(
            (
                "Risk groups (high / low), log-rank chi-square and p",
                f"{groups['n_high']} / {groups['n_low']}, {fmt(groups['logrank_chi2'], 2)}, "
                f"p {_p_text(groups['logrank_p'])}",
            )
        )
    if m.get("permutation_p_value") is not None:
        rows.insert(2, ("Permutation p-value of Harrell's c-index (whole procedure)", fmt(m["permutation_p_value"])))
    return table(rows)


# --- the task --------------------------------------------------------------------------------------------------


class SurvivalTask(Task):
    kind = OutcomeType.survival
    primary_metric = "harrell_c"
    metric_label = "Harrell's c-index"
    chance_level = 0.5
    model_families = MODEL_FAMILIES
    selection_methods = ("cox", "concordance")
    min_per_stratum = 4

    def __init__(self, study=None):
        super().__init__(study)
        self.times = np.empty(0)
        """Evaluation grid of the survival probabilities (columns 1.. of a prediction), set by :meth:`prepare`."""
        self.follow_up = (float("nan"), float("nan"))
        self.reference_survival = np.empty(0)
        """The analysed cohort's Kaplan-Meier survival at :attr:`times` (the no-model reference of new cohorts)."""

    @property
    def horizons(self) -> tuple[float, ...]:
        return tuple(float(h) for h in self.study.outcome.horizons)

    @property
    def unit(self) -> str:
        return self.study.outcome.unit

    # --- models ----------------------------------------------------------------------------------------------
    def estimator(self, family: str, seed: int) -> BaseEstimator:
        return survival_model(family, seed)

    def param_grid(self, family: str) -> dict[str, list]:
        if family not in PARAM_GRIDS:
            raise ValueError(f"unknown survival model family {family!r}; choose from {list(MODEL_FAMILIES)}")
        return {k: list(v) for k, v in PARAM_GRIDS[family].items()}

    # --- data ------------------------------------------------------------------------------------------------
    def target(self, table) -> np.ndarray:
        return survival_array(np.asarray(table["event"], dtype=float) == 1, np.asarray(table["time"], dtype=float))

    def strata(self, y: np.ndarray) -> np.ndarray:
        return event_time(y)[0].astype(int)

    def stratum_name(self, stratum: int) -> str:
        return "events" if int(stratum) == 1 else "censored"

    def prepare(self, y: np.ndarray) -> None:
        """Fix the evaluation grid (:func:`evaluation_times`) and the cohort's Kaplan-Meier curve on it; neither
        reaches a model (they are only the times at which predictions are read and scored)."""
        _, time = event_time(y)
        self.times = evaluation_times(time, self.horizons)
        self.follow_up = (float(time.min()), float(time.max())) if len(time) else (float("nan"),) * 2
        self.reference_survival = km_at(y, self.times) if len(time) else np.empty(0)

    def fold_extras(self, estimator, X_train: np.ndarray, y_train: np.ndarray) -> dict:
        return {"median_risk": float(np.median(np.asarray(estimator.predict(X_train), dtype=float)))}

    # --- predictions and scores ------------------------------------------------------------------------------
    def predict(self, estimator, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=float)
        risk = np.asarray(estimator.predict(X), dtype=float)
        return np.column_stack([risk, survival_probabilities(estimator, X, self.times)])

    def score(self, y: np.ndarray, prediction: np.ndarray) -> float:
        prediction = np.asarray(prediction, dtype=float)
        return harrell_c(y, prediction[:, 0] if prediction.ndim == 2 else prediction)

    def scorer(self):
        return ConcordanceScorer()

    def estimate_description(self) -> str:
        return "mean Harrell's c-index over the outer test folds of all repeats"

    def fold_scores(self, y, repeat_predictions, fold_of) -> np.ndarray:
        return fold_concordance(y, _risks(repeat_predictions), fold_of)[0]

    def bootstrap(self, y, repeat_predictions, fold_of, n_bootstrap: int, seed: int = 0) -> np.ndarray:
        """The fold-mean Harrell's c-index of patient resamples (the same draws as ``Task.bootstrap``), by pair
        weights: one pass per fold instead of a c-index per fold per resample."""
        if n_bootstrap <= 0:
            return np.empty(0)
        weights = bootstrap_weights(len(y), n_bootstrap, seed)
        return _fold_mean(fold_concordance(y, _risks(repeat_predictions), fold_of, weights)[1])

    def candidate_extras(self, y: np.ndarray, repeat_predictions: np.ndarray) -> dict:
        predictions = np.asarray(repeat_predictions, dtype=float)
        times = self._grid(y, predictions)
        if times is None:
            return {}
        return {"integrated_brier_score": brier(y, predictions[:, :, 1:].mean(axis=0), times)}

    def _grid(self, y: np.ndarray, predictions: np.ndarray) -> np.ndarray | None:
        """The times of columns 1.. of ``predictions`` of cohort ``y``: the grid :meth:`prepare` fixes for ``y``
        (recomputed, so a later ``prepare`` on another labelling cannot shift it); None when they disagree."""
        times = evaluation_times(event_time(y)[1], self.horizons)
        if predictions.shape[-1] == 1 + len(times):
            return times
        if predictions.shape[-1] == 1 + len(self.times):
            return self.times
        return None

    # --- figures ---------------------------------------------------------------------------------------------
    def _common(self, y: np.ndarray) -> dict:
        event, time = event_time(y)
        return {
            "n_patients": int(len(y)),
            "n_events": int(event.sum()),
            "n_censored": int((~event).sum()),
            "unit": self.unit,
            "horizons": list(self.horizons),
            "median_follow_up": median_follow_up(y),
        }

    def metrics(self, cv, n_bootstrap: int = 1000, seed: int = 0) -> dict:
        y = cv.y
        event, time = event_time(y)
        predictions = np.asarray(cv.repeat_predictions, dtype=float)
        if predictions.ndim == 2:
            predictions = predictions[..., None]
        risks = predictions[:, :, 0]
        fold_of = np.asarray(cv.fold_of)
        weights = bootstrap_weights(len(y), n_bootstrap, seed) if n_bootstrap > 0 else None

        harrell, harrell_boot = fold_concordance(y, risks, fold_of, weights)
        harrell_boot = _fold_mean(harrell_boot) if weights is not None else np.empty(0)
        tau = _tau(time, self.horizons)
        ipcw = ipcw_weights(y, y, tau)
        if ipcw is None:
            uno, uno_boot = np.full(len(harrell), np.nan), np.empty(0)
        else:
            uno, uno_boot = fold_concordance(y, risks, fold_of, weights, ipcw)
            uno_boot = _fold_mean(uno_boot) if weights is not None else np.empty(0)
        value = float(np.nanmean(harrell)) if np.isfinite(harrell).any() else float("nan")
        low, high = interval(harrell_boot)
        primary = PrimaryMetric(self.primary_metric, value, low, high, self.chance_level)
        per_repeat = harrell.reshape(len(risks), -1)

        mean_risk = risks.mean(axis=0)
        lo, hi = float(time.min()), float(time.max())
        inside = [h for h in self.horizons if lo < h < hi]
        times = self._grid(y, predictions)
        survival = predictions[:, :, 1:].mean(axis=0)
        ibs = ibs_km = float("nan")
        brier_points: list[dict] = []
        if times is not None:
            reference = km_at(y, times)
            ibs = brier(y, survival, times)
            ibs_km = brier(y, np.tile(reference, (len(y), 1)), times)
            brier_points = brier_at(y, survival, reference, times, inside)

        high_risk, rule = _out_of_fold_risk_groups(risks, fold_of, cv)

        figures = {
            "primary_metric": primary.as_dict(),
            "harrell_c": value,
            "harrell_c_ci_low": low,
            "harrell_c_ci_high": high,
            "n_bootstrap": int(len(harrell_boot)),
            "harrell_c_per_fold": [float(v) for v in harrell],
            "harrell_c_fold_sd": float(np.nanstd(harrell, ddof=1)) if len(harrell) > 1 else float("nan"),
            "harrell_c_per_repeat": [float(np.nanmean(row)) for row in per_repeat],
            "uno_c": float(np.nanmean(uno)) if np.isfinite(uno).any() else float("nan"),
            "uno_c_ci_low": interval(uno_boot)[0],
            "uno_c_ci_high": interval(uno_boot)[1],
            "uno_c_tau": tau,
            "uno_c_per_fold": [float(v) for v in uno],
            "time_dependent_auc": time_dependent_auc(y, mean_risk, inside),
            "time_dependent_auc_curve": _auc_curve(y, mean_risk, times),
            "integrated_brier_score": ibs,
            "integrated_brier_score_km": ibs_km,
            "brier_skill": float(1 - ibs / ibs_km) if np.isfinite(ibs) and ibs_km > 0 else float("nan"),
            "brier_times": [float(t) for t in times] if times is not None else [],
            "brier_at_horizons": brier_points,
            "risk_groups": risk_groups(y, high_risk, rule),
            **self._common(y),
            "cv_scheme": cv.scheme,
            "estimator_note": (
                "Harrell's c-index of each outer test fold against the model fitted without it, averaged over the "
                "folds of all repeats; 95 % CI: percentile bootstrap of patients with the fold models held fixed. "
                "Uno's c the same way (censoring weights from the whole cohort, held fixed in the bootstrap); the "
                "time-dependent AUC and the integrated Brier score pool each patient's out-of-fold predictions "
                "averaged over the repeats (across fold models: information)."
            ),
        }
        return jsonable(figures)

    def external_metrics(self, y: np.ndarray, prediction: np.ndarray, seed: int = 0, n_bootstrap: int = 1000) -> dict:
        event, time = event_time(y)
        prediction = np.asarray(prediction, dtype=float)
        if prediction.ndim == 1:
            prediction = prediction[:, None]
        risk = prediction[:, 0]
        weights = bootstrap_weights(len(y), n_bootstrap, seed) if n_bootstrap > 0 and len(y) else None
        value = concordance(event, time, risk)
        boot = weighted_concordance(event, time, risk, weights) if weights is not None else np.empty(0)
        low, high = interval(boot)
        tau = _tau(time, self.horizons) if len(y) else float("nan")
        ipcw = ipcw_weights(y, y, tau) if len(y) else None
        uno, uno_boot = float("nan"), np.empty(0)
        if ipcw is not None:
            uno = concordance(event, time, risk, ipcw)
            if weights is not None:
                uno_boot = weighted_concordance(event, time, risk, weights, ipcw)
        lo, hi = (float(time.min()), float(time.max())) if len(y) else (np.nan, np.nan)
        inside = [h for h in self.horizons if lo < h < hi]
        columns = (
            np.flatnonzero((self.times >= lo) & (self.times < hi))
            if prediction.shape[1] == 1 + len(self.times)
            else np.empty(0, dtype=int)
        )
        times = self.times[columns]
        survival = prediction[:, 1 + columns]
        reference = self.reference_survival[columns] if len(self.reference_survival) == len(self.times) else None
        if reference is None and len(times):
            reference = km_at(y, times)
        ibs = brier(y, survival, times)
        ibs_km = brier(y, np.tile(reference, (len(y), 1)), times) if len(times) else float("nan")
        brier_points = brier_at(y, survival, reference, times, inside) if len(times) else []
        median = float(np.median(risk)) if len(y) else float("nan")
        primary = PrimaryMetric(self.primary_metric, value, low, high, self.chance_level)
        figures = {
            "primary_metric": primary.as_dict(),
            "harrell_c": value,
            "harrell_c_ci_low": low,
            "harrell_c_ci_high": high,
            "n_bootstrap": int(np.isfinite(boot).sum()),
            "uno_c": uno,
            "uno_c_ci_low": interval(uno_boot)[0],
            "uno_c_ci_high": interval(uno_boot)[1],
            "uno_c_tau": tau,
            "time_dependent_auc": time_dependent_auc(y, risk, inside),
            "time_dependent_auc_curve": _auc_curve(y, risk, times),
            "integrated_brier_score": ibs,
            "integrated_brier_score_km": ibs_km,
            "brier_skill": float(1 - ibs / ibs_km) if np.isfinite(ibs) and ibs_km > 0 else float("nan"),
            "brier_times": [float(t) for t in times],
            "brier_at_horizons": brier_points,
            "risk_groups": risk_groups(
                y,
                risk > median,
                "high risk: the final model's risk exceeds the median risk of the external patients themselves "
                "(a split of this cohort, not a threshold fixed in training)",
            ),
            **self._common(y),
            "estimator_note": (
                "Harrell's and Uno's c-index of the final model's risk on the held-out cohort, scored once; 95 % CI: "
                "percentile bootstrap of its patients; Uno's censoring weights and the time-dependent AUC's come "
                "from this cohort; the Kaplan-Meier reference of the integrated Brier score is the training cohort's."
            ),
        }
        return jsonable(figures)

    def report_html(self, metrics: dict, cv) -> str:
        unit = metrics.get("unit") or ""
        return (
            f"<p>{html.escape(metrics.get('estimator_note', ''))}</p>"
            + _figures_table(metrics)
            + '<div class="plots">'
            + img(
                "Kaplan-Meier curves of the out-of-fold risk groups",
                _km_png(metrics["risk_groups"], unit, "Out-of-fold risk groups"),
            )
            + img(
                "time-dependent AUC (out-of-fold)",
                _td_auc_png(
                    metrics.get("time_dependent_auc", []),
                    metrics.get("time_dependent_auc_curve"),
                    unit,
                    "Time-dependent AUC (out-of-fold)",
                ),
            )
            + "</div>"
            + f"<p>{html.escape(metrics['risk_groups']['rule'])}.</p>"
        )

    def external_html(self, metrics: dict, y: np.ndarray, prediction: np.ndarray) -> str:
        unit = metrics.get("unit") or ""
        return (
            _figures_table(metrics, external=True)
            + '<div class="plots">'
            + img(
                "Kaplan-Meier curves of the external risk groups",
                _km_png(metrics["risk_groups"], unit, "External risk groups"),
            )
            + img(
                "time-dependent AUC (external)",
                _td_auc_png(
                    metrics.get("time_dependent_auc", []),
                    metrics.get("time_dependent_auc_curve"),
                    unit,
                    "Time-dependent AUC (external)",
                ),
            )
            + "</div>"
            + f"<p>{html.escape(metrics['risk_groups']['rule'])}.</p>"
        )

    def cohort_summary(self, y: np.ndarray) -> dict:
        event, _ = event_time(y)
        return {"n_patients": int(len(y)), "n_events": int(event.sum()), "n_censored": int((~event).sum())}

    def headline(self, metrics: dict) -> dict[str, float]:
        keys = ("harrell_c", "harrell_c_ci_low", "harrell_c_ci_high", "uno_c", "integrated_brier_score", "n_events")
        return {k: metrics.get(k) for k in keys}

    def prediction_table(self, prediction: np.ndarray, saved) -> dict[str, np.ndarray]:
        """``risk`` and ``survival_at_<horizon>`` for every study horizon (NaN for a horizon outside the training
        follow-up, where the model cannot say)."""
        prediction = np.asarray(prediction, dtype=float)
        if prediction.ndim == 1:
            prediction = prediction[:, None]
        columns = {"risk": prediction[:, 0]}
        for h in self.horizons:
            at = np.flatnonzero(np.isclose(self.times, h, rtol=1e-12, atol=0))
            inside = len(at) and prediction.shape[1] == 1 + len(self.times)
            columns[f"survival_at_{h:.10g}"] = prediction[:, 1 + at[0]] if inside else np.full(len(prediction), np.nan)
        return columns


def _out_of_fold_risk_groups(risks: np.ndarray, fold_of: np.ndarray, cv) -> tuple[np.ndarray, str]:
    """High risk: the out-of-fold risk exceeds its fold model's median risk on its own training patients
    (``fold_extras``), in at least half of the repeats. Without the training medians (a cross-validation stored
    without ``fold_extras``) each fold splits at the median of its own test patients' risks instead."""
    splits = list(getattr(cv, "splits", []) or [])
    extras = list(getattr(cv, "fold_extras", []) or [])
    trained = len(extras) == len(splits) > 0 and all("median_risk" in e for e in extras)
    if not trained:
        splits = [(r, int(f)) for r in range(len(risks)) for f in np.unique(fold_of[r])]
    votes = np.zeros(risks.shape[1])
    for i, (repeat, fold) in enumerate(splits):
        members = fold_of[repeat] == fold
        threshold = extras[i]["median_risk"] if trained else float(np.median(risks[repeat, members]))
        votes[members] += risks[repeat, members] > threshold
    where = (
        "the median risk its fold model gave its own training patients"
        if trained
        else "the median risk of its outer test fold (the training medians were not stored)"
    )
    return votes >= len(risks) / 2, f"high risk: the out-of-fold risk exceeds {where}, in at least half of the repeats"


def _risks(repeat_predictions: np.ndarray) -> np.ndarray:
    predictions = np.asarray(repeat_predictions, dtype=float)
    return predictions[..., 0] if predictions.ndim == 3 else predictions


def _auc_curve(y: np.ndarray, risk: np.ndarray, times) -> dict:
    """Time-dependent AUC over the evaluation grid (for the plot)."""
    if times is None or not len(times):
        return {"time": [], "auc": []}
    points = time_dependent_auc(y, risk, times)
    return {"time": [q["time"] for q in points], "auc": [q["auc"] for q in points]}
