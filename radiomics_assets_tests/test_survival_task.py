"""The survival task against scikit-survival itself (real fits, no mocks): c-indices, the univariate statistics of
feature selection, the three model families, the figures and the GBSG2 reference."""

from __future__ import annotations

import json
import pickle
import warnings
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sksurv.datasets import load_gbsg2
from sksurv.linear_model import CoxPHSurvivalAnalysis
from sksurv.metrics import concordance_index_censored, concordance_index_ipcw
from sksurv.util import Surv

from radiomics_assets.modelling.selection import Selector, rank_features
from radiomics_assets.modelling.study import Outcome, OutcomeType, Study
from radiomics_assets.modelling.tasks import task_for
from radiomics_assets.modelling.tasks.base import Task
from radiomics_assets.modelling.tasks.survival import (
    SurvivalTask,
    cox_score_statistics,
    evaluation_times,
    feature_concordance,
    harrell_c,
    survival_array,
    uno_c,
    weighted_concordance,
)

HORIZONS = (0.5, 1.0, 2.0)


def make_task(horizons=HORIZONS) -> SurvivalTask:
    task = task_for(Study(outcome=Outcome(type=OutcomeType.survival, unit="years", horizons=horizons)))
    assert isinstance(task, SurvivalTask)
    return task


def synthetic(n: int, p: int, seed: int = 0, effect: float = 1.0):
    """Exponential event times with hazard exp(effect * x0), exponential censoring (about 36 % censored)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, p))
    event_time = rng.exponential(1 / np.exp(effect * X[:, 0]))
    censor_time = rng.exponential(1 / 0.5, n)
    y = Surv.from_arrays(event=event_time <= censor_time, time=np.minimum(event_time, censor_time))
    return X, y


def tied_cohort(n: int = 120, seed: int = 3):
    """Integer times (many ties, events and censored at the same times) and risks rounded to one decimal."""
    rng = np.random.default_rng(seed)
    time = rng.integers(1, 15, n).astype(float)
    event = rng.random(n) < 0.6
    return event, time, np.round(rng.normal(size=n), 1)


# --- c-indices and univariate statistics --------------------------------------------------------------------


def test_harrell_and_uno_equal_scikit_survival_with_ties():
    event, time, risk = tied_cohort()
    y = survival_array(event, time)
    assert harrell_c(y, risk) == pytest.approx(concordance_index_censored(event, time, risk)[0], abs=1e-12)
    assert harrell_c(y, np.zeros(len(y))) == 0.5
    assert np.isnan(harrell_c(survival_array(np.zeros(5, bool), np.arange(1.0, 6)), np.arange(5.0)))
    # Uno's c: censoring distribution from a training cohort, truncated at tau.
    train = survival_array(*tied_cohort(200, seed=4)[:2])
    for tau in (8.0, 12.0):
        expected = concordance_index_ipcw(train, y, risk, tau=tau)[0]
        assert uno_c(train, y, risk, tau) == pytest.approx(expected, abs=1e-12)


def test_feature_concordance_equals_scikit_survival_per_column():
    event, time, risk = tied_cohort()
    rng = np.random.default_rng(5)
    X = np.column_stack(
        [risk, rng.integers(0, 4, len(time)), rng.normal(size=len(time)) * 1e-9, np.full(len(time), 7.0)]
    )
    got = feature_concordance(X, survival_array(event, time))
    expected = [concordance_index_censored(event, time, X[:, j], tied_tol=0)[0] for j in range(X.shape[1])]
    np.testing.assert_allclose(got, expected, atol=1e-12)
    assert got[3] == 0.5  # constant column
    assert got[2] != 0.5  # exact ties: a feature's unit (here 1e-9) does not matter


def _breslow_loglik(x: np.ndarray, event: np.ndarray, time: np.ndarray, beta: float) -> float:
    total = 0.0
    for t in np.unique(time[event]):
        dying = event & (time == t)
        at_risk = time >= t
        total += beta * x[dying].sum() - dying.sum() * np.log(np.exp(beta * x[at_risk]).sum())
    return total


def _score_test_by_loop(x: np.ndarray, event: np.ndarray, time: np.ndarray) -> float:
    """U^2 / I at beta = 0, one event time at a time (Breslow ties)."""
    u = information = 0.0
    for t in np.unique(time[event]):
        dying = event & (time == t)
        at_risk = time >= t
        d = dying.sum()
        mean = x[at_risk].mean()
        u += x[dying].sum() - d * mean
        information += d * (np.mean(x[at_risk] ** 2) - mean**2)
    return u**2 / information if information > 0 else 0.0


def test_cox_score_statistics_equal_the_explicit_score_test():
    event, time, _ = tied_cohort(80, seed=7)
    rng = np.random.default_rng(8)
    X = np.column_stack(
        [
            time * (1 + 0.3 * rng.normal(size=80)),  # related to the outcome
            rng.normal(size=80) * 1e4 + 5e6,  # noise on a large offset and scale
            rng.integers(0, 3, 80),  # ties in the feature too
            np.full(80, 2.5),  # constant
        ]
    )
    y = survival_array(event, time)
    got = cox_score_statistics(X, y)
    expected = [_score_test_by_loop(X[:, j], event, time) for j in range(X.shape[1])]
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12)
    assert got[3] == 0.0 and got[0] > 10
    # ... and U, I are the derivatives of Breslow's partial likelihood at beta = 0 (finite differences).
    x = (X[:, 2] - X[:, 2].mean()) / X[:, 2].std()
    h = 1e-4
    lm, l0, lp = (_breslow_loglik(x, event, time, b) for b in (-h, 0.0, h))
    u, information = (lp - lm) / (2 * h), -(lp - 2 * l0 + lm) / h**2
    assert got[2] == pytest.approx(u**2 / information, rel=1e-4)


def test_selector_and_ranking_use_the_survival_statistics():
    X, y = synthetic(200, 12, seed=1)
    for method in ("cox", "concordance"):
        selector = Selector(method=method, k=3, outcome="survival").fit(X, y)
        assert selector.support_[0] and selector.support_.sum() == 3
    ranked = rank_features(pd.DataFrame(X, columns=[f"f{j}" for j in range(12)]), y, outcome="survival")
    assert ranked.feature[0] == "f0" and ranked.auc[0] > 0.65


def test_fast_bootstrap_equals_the_generic_one():
    event, time, _ = tied_cohort(90, seed=11)
    y = survival_array(event, time)
    rng = np.random.default_rng(12)
    predictions = rng.normal(size=(2, 90, 4))
    fold_of = np.stack([rng.permutation(np.arange(90) % 3) for _ in range(2)])
    task = make_task()
    np.testing.assert_allclose(
        task.bootstrap(y, predictions, fold_of, 40, seed=5),
        Task.bootstrap(task, y, predictions, fold_of, 40, seed=5),
        atol=1e-12,
    )
    np.testing.assert_allclose(
        task.fold_scores(y, predictions, fold_of), Task.fold_scores(task, y, predictions, fold_of), atol=1e-12
    )
    weights = np.ones((1, 90))
    assert weighted_concordance(event, time, predictions[0, :, 0], weights)[0] == pytest.approx(
        harrell_c(y, predictions[0, :, 0])
    )


# --- models --------------------------------------------------------------------------------------------------


def _pipeline(task: SurvivalTask, family: str, **params) -> Pipeline:
    pipeline = Pipeline(
        [("select", Selector(method="cox", k=5, outcome="survival")), ("model", task.estimator(family, 0))]
    )
    return pipeline.set_params(**params)


@pytest.mark.parametrize("family", SurvivalTask.model_families)
def test_every_family_fits_and_predicts_survival(family):
    X, y = synthetic(200, 20, seed=2)
    task = make_task()
    task.prepare(y)
    assert set(HORIZONS) <= set(task.times) and np.all(np.diff(task.times) > 0)
    assert task.times.min() >= y["time"].min() and task.times.max() < y["time"].max()
    pipeline = _pipeline(task, family).fit(X[:150], y[:150])
    prediction = task.predict(pipeline, X[150:])
    assert prediction.shape == (50, 1 + len(task.times))
    survival = prediction[:, 1:]
    assert np.all((survival >= 0) & (survival <= 1))
    assert np.all(np.diff(survival, axis=1) <= 1e-12)
    np.testing.assert_allclose(prediction[:, 0], pipeline.predict(X[150:]))
    assert task.score(y[150:], prediction) > 0.6
    assert set(task.param_grid(family)) <= {"select__k"} | {f"model__{k}" for k in pipeline[-1].get_params()}
    # A time beyond the training follow-up reads the last value of each step function.
    task.times = np.array([y["time"].max() * 10])
    last = [fn.y[-1] * fn.a + fn.b for fn in pipeline.predict_survival_function(X[150:])]
    np.testing.assert_allclose(task.predict(pipeline, X[150:])[:, 1], last)


def test_coxnet_finds_the_signal_and_not_a_permuted_one():
    X, y = synthetic(500, 30, seed=4)
    task = make_task()
    task.prepare(y)
    train, test = np.arange(300), np.arange(300, 500)
    fitted = _pipeline(task, "coxnet", model__alphas=[0.02]).fit(X[train], y[train])
    assert task.score(y[test], task.predict(fitted, X[test])) > 0.65
    shuffled = y[np.random.default_rng(0).permutation(len(y))]
    null = _pipeline(task, "coxnet", model__alphas=[0.02]).fit(X[train], shuffled[train])
    assert abs(task.score(shuffled[test], task.predict(null, X[test])) - 0.5) < 0.08


def test_coxnet_survives_a_penalty_too_small_for_heavy_tailed_features():
    """scikit-survival raises ArithmeticError (or fits an infinite baseline) when exp(linear predictor) overflows;
    the family's Coxnet retries with a larger penalty instead of stopping the procedure."""
    rng = np.random.default_rng(21)
    n = 165
    X = np.exp(2.0 * rng.normal(size=(n, 50)))  # log-normal: standardised values beyond 20
    X[:, 1] = 1.01 * X[:, 0] + 1e-3 * rng.normal(size=n)
    event_time = rng.exponential(1 / np.exp(np.clip(np.log(X[:, 0]), -3, 3)))
    censor_time = rng.exponential(2.0, n)
    y = Surv.from_arrays(event=event_time <= censor_time, time=np.minimum(event_time, censor_time))
    task = make_task()
    task.prepare(y)
    pipeline = Pipeline(
        [
            ("scale", StandardScaler()),
            ("select", Selector(method="cox", k=20, outcome="survival")),
            ("model", task.estimator("coxnet", 0)),
        ]
    ).set_params(model__alphas=[0.01])
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # the discarded attempt's overflow stays quiet
        pipeline.fit(X, y)
    model = pipeline[-1]
    assert model.penalty_factor_ > 1 and model.get_params()["alphas"] == [0.01]
    assert model.alphas_[0] == pytest.approx(0.01 * model.penalty_factor_)
    survival = task.predict(pipeline, X)[:, 1:]
    assert np.all(np.isfinite(survival)) and survival.max() > 0.5


# --- figures ---------------------------------------------------------------------------------------------------


def _only_plain_types(value) -> bool:
    if isinstance(value, dict):
        return all(isinstance(k, str) and _only_plain_types(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_only_plain_types(v) for v in value)
    return type(value) in (float, int, str, bool, type(None))


def _hand_built_cv(task: SurvivalTask, X: np.ndarray, y: np.ndarray, repeats: int = 2, folds: int = 3):
    task.prepare(y)
    n = len(y)
    predictions = np.full((repeats, n, 1 + len(task.times)), np.nan)
    fold_of = np.full((repeats, n), -1)
    splits, extras = [], []
    for repeat in range(repeats):
        splitter = StratifiedKFold(folds, shuffle=True, random_state=repeat)
        for fold, (train, test) in enumerate(splitter.split(X, task.strata(y))):
            fitted = _pipeline(task, "coxnet", model__alphas=[0.05]).fit(X[train], y[train])
            predictions[repeat, test] = task.predict(fitted, X[test])
            fold_of[repeat, test] = fold
            splits.append((repeat, fold))
            extras.append(task.fold_extras(fitted, X[train], y[train]))
    return SimpleNamespace(
        y=y,
        repeat_predictions=predictions,
        fold_of=fold_of,
        splits=splits,
        fold_extras=extras,
        chosen=["coxnet"] * len(splits),
        scheme=f"hand-built {folds}-fold x {repeats}",
        patient_ids=[f"P{i}" for i in range(n)],
    )


def test_metrics_of_a_cross_validation_are_finite_and_plain_json():
    X, y = synthetic(240, 15, seed=6)
    task = make_task()
    cv = _hand_built_cv(task, X, y)
    m = task.metrics(cv, n_bootstrap=200, seed=0)
    json.dumps(m, allow_nan=True)
    assert _only_plain_types(m)
    primary = m["primary_metric"]
    assert primary["name"] == "harrell_c" and primary["chance"] == 0.5
    assert primary["ci_low"] < primary["value"] == m["harrell_c"] < primary["ci_high"]
    assert m["harrell_c"] == pytest.approx(np.mean(task.fold_scores(cv.y, cv.repeat_predictions, cv.fold_of)))
    assert m["harrell_c"] > 0.65 and len(m["harrell_c_per_fold"]) == 6 and m["harrell_c_fold_sd"] > 0
    assert m["uno_c_ci_low"] < m["uno_c"] < m["uno_c_ci_high"] and m["uno_c_tau"] == 2.0
    inside = [h for h in HORIZONS if y["time"].min() < h < y["time"].max()]
    assert [q["time"] for q in m["time_dependent_auc"]] == inside
    assert all(0.6 < q["auc"] <= 1 for q in m["time_dependent_auc"])
    assert 0 < m["integrated_brier_score"] < m["integrated_brier_score_km"] < 0.3
    groups = m["risk_groups"]
    assert groups["n_high"] + groups["n_low"] == len(y) and groups["logrank_p"] < 0.01
    at_one = {k: np.interp(1.0, c["time"], c["survival"]) for k, c in groups["km"].items()}
    assert at_one["high"] < at_one["low"]
    assert (m["n_patients"], m["n_events"] + m["n_censored"]) == (240, 240)
    assert m["median_follow_up"] > 0 and m["cv_scheme"] == cv.scheme and m["estimator_note"]
    assert set(task.headline(m)) >= {"harrell_c", "harrell_c_ci_low", "uno_c", "integrated_brier_score", "n_events"}
    html = task.report_html(m, cv)
    assert html.count("<img") == 2 and "Uno" in html and "Kaplan-Meier" in html


def test_external_cohort_predictions_table_and_pickle():
    X, y = synthetic(400, 15, seed=9)
    task = make_task(horizons=(0.5, 1.0, 50.0))  # 50 lies beyond any follow-up
    task.prepare(y[:250])
    fitted = _pipeline(task, "coxnet", model__alphas=[0.05]).fit(X[:250], y[:250])
    task = pickle.loads(pickle.dumps(task))  # the task travels with the saved model
    prediction = task.predict(fitted, X[250:])
    m = task.external_metrics(y[250:], prediction, seed=0)
    json.dumps(m, allow_nan=True)
    assert _only_plain_types(m)
    assert m["primary_metric"]["value"] == m["harrell_c"] > 0.65
    assert m["harrell_c_ci_low"] < m["harrell_c"] < m["harrell_c_ci_high"] and np.isfinite(m["uno_c"])
    assert "external patients themselves" in m["risk_groups"]["rule"]
    assert m["risk_groups"]["n_high"] == 75 and np.isfinite(m["integrated_brier_score"])
    assert task.external_html(m, y[250:], prediction).count("<img") == 2
    columns = task.prediction_table(prediction, saved=None)
    assert list(columns) == ["risk", "survival_at_0.5", "survival_at_1", "survival_at_50"]
    assert np.all(columns["survival_at_1"] <= columns["survival_at_0.5"])
    assert np.isnan(columns["survival_at_50"]).all()


def test_outcome_table_strata_and_cohort_size():
    table = pd.DataFrame({"time": [3.0, 5.0, 2.5, 8.0], "event": [1.0, 0.0, 1.0, 0.0], "label": [1, 0, 1, 0]})
    task = make_task()
    y = task.target(table)
    assert y.dtype.names == ("event", "time") and list(y["event"]) == [True, False, True, False]
    assert list(task.strata(y)) == [1, 0, 1, 0]
    assert task.cohort_summary(y) == {"n_patients": 4, "n_events": 2, "n_censored": 2}
    assert len(task.target(table.iloc[:0])) == 0
    with pytest.raises(ValueError, match="events: 2"):
        task.check_size(y)
    assert evaluation_times(np.array([1.0, 2.0, 3.0]), (2.0, 3.0, 9.0)).max() < 3.0


# --- a public reference ----------------------------------------------------------------------------------------


def test_gbsg2_coxnet_family_matches_a_plain_cox_model():
    """GBSG2 (686 patients, 299 events; bundled with scikit-survival): the coxnet family, tuned by its own inner
    CV, against an unpenalised Cox model on the same 5 folds. Measured: coxnet family 0.656, plain Cox 0.669."""
    X_raw, y = load_gbsg2()
    X = pd.get_dummies(X_raw, drop_first=True, dtype=float).to_numpy()
    task = make_task(horizons=(365.0, 1095.0, 1825.0))
    event, time = y[y.dtype.names[0]], y[y.dtype.names[1]]
    outer = StratifiedKFold(5, shuffle=True, random_state=0).split(X, event)
    family, plain = [], []
    for train, test in outer:
        inner = list(StratifiedKFold(3, shuffle=True, random_state=1).split(X[train], event[train]))
        pipeline = Pipeline(
            [
                ("scale", StandardScaler()),
                ("select", Selector(method="cox", k=5, outcome="survival")),
                ("model", task.estimator("coxnet", 0)),
            ]
        )
        search = GridSearchCV(pipeline, task.param_grid("coxnet"), scoring=task.scorer(), cv=inner).fit(
            X[train], y[train]
        )
        family.append(harrell_c(y[test], search.best_estimator_.predict(X[test])))
        cox = Pipeline([("scale", StandardScaler()), ("model", CoxPHSurvivalAnalysis())]).fit(X[train], y[train])
        plain.append(concordance_index_censored(event[test], time[test], cox.predict(X[test]))[0])
    family_c, plain_c = float(np.mean(family)), float(np.mean(plain))
    print(f"GBSG2 5-fold Harrell's C: coxnet family {family_c:.3f}, plain Cox {plain_c:.3f}")
    assert 0.64 < family_c < 0.72 and 0.64 < plain_c < 0.72
    assert abs(family_c - plain_c) < 0.05
