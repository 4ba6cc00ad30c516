"""The default classifier (``modelling.consensus``): an equal vote of its two members by default; the optional
weight choice follows the member that fits the data and stays inside the training patients; the Pipeline reports
what the model uses."""

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression

from radiomics_assets import modelling
from radiomics_assets.modelling.checklist import predictors_text
from radiomics_assets.modelling.consensus import WEIGHTS, ConsensusClassifier
from radiomics_assets.modelling.estimators import CandidateSearch, _tunes_itself, make_pipeline
from radiomics_assets.modelling.selection import filtered_columns, selected_columns, selection_scores


def _frame(X: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame(X, columns=[f"f{i:03d}" for i in range(X.shape[1])], index=[f"P{i:03d}" for i in range(len(X))])


def _interaction(n: int, p: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The class is the sign of f000 x f001: no feature is informative alone, so no linear model can see it."""
    X = np.random.default_rng(seed).standard_normal((n, p))
    return X, (X[:, 0] * X[:, 1] > 0).astype(int)


def _additive(n: int, p: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The log-odds are a sum of 20 small effects: a linear model's natural case, a forest's hard one."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, p))
    logit = 0.5 * X[:, :20].sum(axis=1)
    return X, (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)


def test_the_vote_leaves_the_equal_weight_only_when_the_inner_folds_show_a_clear_winner():
    X, y = _interaction(240, 4, seed=0)
    forest_case = ConsensusClassifier(n_estimators=200, linear_weight=None).fit(X, y)
    assert forest_case.weight_ < 0.5, forest_case.inner_scores_
    assert forest_case.inner_scores_[0.0] > forest_case.inner_scores_[1.0] + 0.15  # the forest sees it, LR cannot

    X, y = _additive(240, 60, seed=1)
    linear_case = ConsensusClassifier(n_estimators=200, linear_weight=None).fit(X, y)
    scores = linear_case.inner_scores_
    assert scores[1.0] > scores[0.0] + 0.05, scores  # the linear member is the better one here ...
    # ... but the equal vote is within one standard error of the best weight, so the steadier average is kept.
    assert linear_case.weight_ == 0.5 and scores[0.5] > scores[0.0], scores
    assert set(linear_case.inner_scores_) == set(WEIGHTS)
    assert linear_case.inner_score_ == linear_case.inner_scores_[linear_case.weight_]


def test_a_fixed_weight_averages_the_two_members_fitted_alone():
    X, y = _additive(120, 40, seed=2)
    model = ConsensusClassifier(k=10, n_estimators=50, linear_weight=0.25, random_state=3).fit(X, y)
    assert model.inner_scores_ == {} and np.isnan(model.inner_score_)
    linear = LogisticRegression(class_weight="balanced", max_iter=5000).fit(X[:, model.linear_[0].support_], y)
    forest = RandomForestClassifier(50, class_weight="balanced", random_state=3).fit(X, y)
    expected = 0.25 * linear.predict_proba(X[:, model.linear_[0].support_]) + 0.75 * forest.predict_proba(X)
    np.testing.assert_allclose(model.predict_proba(X), expected, rtol=1e-10)
    assert model.linear_[0].support_.sum() == 10


def test_three_classes_give_probabilities_that_sum_to_one():
    rng = np.random.default_rng(4)
    X = rng.standard_normal((90, 20))
    y = np.repeat([0, 1, 2], 30)
    X[:, 0] += y
    model = ConsensusClassifier(n_estimators=50, linear_weight=None).fit(X, y)
    probabilities = model.predict_proba(X)
    assert probabilities.shape == (90, 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0)
    assert 0.0 <= model.weight_ <= 1.0 and np.isfinite(model.inner_score_)


def test_the_default_is_the_equal_vote_of_both_members_fitted_once_with_every_feature_reported():
    X, y = _additive(80, 30, seed=5)
    X = _frame(X)
    X["f029"] = 1.0  # constant: dropped before the model, so not among the features used
    search = CandidateSearch(modelling.ModellingSettings(inner_folds=3)).fit(X, y)
    assert search.best_ == "consensus" and list(search.candidate_results_) == ["consensus"]
    model = search.best_estimator_.named_steps["model"]
    assert isinstance(model, ConsensusClassifier)
    assert model.weight_ == 0.5 and model.inner_scores_ == {}  # no inner loop: nothing was chosen
    assert model.forest_.n_estimators == 300 and model.forest_.class_weight == "balanced"
    assert search.best_params_ == {"model__linear_weight": 0.5}  # what the model card and folds show
    kept = search.best_estimator_[:-1].transform(X.to_numpy())
    expected = 0.5 * model.linear_.predict_proba(kept) + 0.5 * model.forest_.predict_proba(kept)
    np.testing.assert_allclose(search.predict_proba(X), expected, rtol=1e-12)
    used = selected_columns(search.best_estimator_, list(X.columns))
    assert used == [f"f{i:03d}" for i in range(29)]  # the forest member uses every variable feature
    scores = selection_scores(search.best_estimator_, list(X.columns))
    assert set(scores) == set(used) and max(scores, key=scores.get) in {f"f{i:03d}" for i in range(20)}


def test_the_weight_choice_when_asked_runs_on_the_inner_folds_it_is_given():
    X, y = _additive(80, 30, seed=5)
    template = make_pipeline(0, "consensus", "anova")
    assert not _tunes_itself(template)  # the default: a fixed vote
    template.set_params(model__linear_weight=None)
    assert _tunes_itself(template)
    folds = [(np.arange(80)[np.arange(80) % 3 != i], np.arange(80)[np.arange(80) % 3 == i]) for i in range(3)]
    model = CandidateSearch._refit({"pipeline": template, "params": {}}, folds, X, y).named_steps["model"]
    assert model.cv == folds and set(model.inner_scores_) == set(WEIGHTS)
    assert model.weight_ in WEIGHTS and model.inner_score_ == model.inner_scores_[model.weight_]


def test_the_stability_across_folds_is_counted_on_the_linear_members_filter():
    X, y = _additive(90, 60, seed=3)
    X = _frame(X)
    settings = modelling.ModellingSettings(inner_folds=3, folds=3, repeats=2)
    search = CandidateSearch(settings).fit(X, y)
    model = search.best_estimator_.named_steps["model"]
    used = selected_columns(search.best_estimator_, list(X.columns))
    chosen = filtered_columns(search.best_estimator_, list(X.columns))
    scores = selection_scores(search.best_estimator_, list(X.columns))
    assert len(used) == 60 and model.k == 32  # the forest reads every feature, the linear member 32 of them
    assert set(chosen) == set(sorted(scores, key=scores.get, reverse=True)[:32])
    assert predictors_text(60, len(used), len(chosen)) == (
        "60 candidate predictors; the final model reads 60 (its random forest member every one) and its linear "
        "member the 32 its filter chose inside the fit"
    )
    # Counted on "used", every feature would be chosen in every fold; on the filter the shares vary and sum to 32.
    frequency = modelling.cross_validate(X, y, settings).selection_frequency
    assert sum(frequency.values()) == pytest.approx(32) and min(frequency.values()) < 1
    assert np.mean([frequency.get(f"f{i:03d}", 0) for i in range(20)]) > np.mean(
        [frequency.get(f"f{i:03d}", 0) for i in range(20, 60)]
    )  # the 20 informative features are chosen more often than the 40 noise ones
