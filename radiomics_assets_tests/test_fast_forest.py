"""``modelling.fast_forest``: the forests of the default models grow scikit-learn's own trees, node for node, and
give its probabilities and predictions to the last bit; every configuration not checked is scikit-learn's fit."""

import pickle

import numpy as np
import pytest
from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
from sklearn.exceptions import NotFittedError
from sklearn.utils._param_validation import InvalidParameterError

from radiomics_assets.modelling import fast_forest
from radiomics_assets.modelling.consensus import ConsensusClassifier
from radiomics_assets.modelling.fast_forest import FastRandomForestClassifier, FastRandomForestRegressor


def _table(n: int, p: int, classes: int, seed: int, dtype=float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A table whose class depends on two columns (so trees have real splits), unbalanced, with tied values."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, p))
    X[:, 2] = np.round(X[:, 2])  # ties: thresholds between equal values
    score = X[:, 0] + 0.5 * X[:, 1] + rng.standard_normal(n)
    y = np.digitize(score, np.quantile(score, np.linspace(0, 0.7, classes)[1:]))
    return X.astype(dtype), y, rng.standard_normal((25, p)).astype(dtype)


def _assert_same_forest(ours, theirs, X_test: np.ndarray) -> None:
    assert type(ours).__mro__[2] is type(theirs)  # FastRandomForestX -> _FastForest -> RandomForestX
    assert len(ours.estimators_) == len(theirs.estimators_)
    for mine, reference in zip(ours.estimators_, theirs.estimators_, strict=True):
        assert type(mine) is type(reference)
        assert fast_forest._same_tree(mine.tree_, reference.tree_)
        assert mine.random_state == reference.random_state
        assert mine.get_params() == reference.get_params()
    if hasattr(theirs, "predict_proba"):
        assert ours.predict_proba(X_test).tobytes() == theirs.predict_proba(X_test).tobytes()
        for name in ("classes_", "n_classes_"):
            assert np.array_equal(getattr(ours, name), getattr(theirs, name))
    assert ours.predict(X_test).tobytes() == theirs.predict(X_test).tobytes()
    assert ours.feature_importances_.tobytes() == theirs.feature_importances_.tobytes()
    for name in ("n_features_in_", "n_outputs_"):
        assert getattr(ours, name) == getattr(theirs, name)
    for mine, reference in zip(ours.estimators_samples_, theirs.estimators_samples_, strict=True):
        assert np.array_equal(mine, reference)


@pytest.mark.parametrize(
    ("n", "p", "classes", "params"),
    [
        (9, 107, 2, {"class_weight": "balanced"}),  # an 11-patient cohort's training fold
        (41, 100, 2, {"class_weight": "balanced"}),
        (41, 100, 2, {}),
        (150, 30, 2, {"class_weight": "balanced"}),
        (60, 50, 3, {"class_weight": "balanced"}),
        (60, 50, 3, {}),
        (60, 40, 2, {"class_weight": "balanced", "min_samples_leaf": 3}),
        (60, 40, 2, {"max_features": 0.5}),
        (60, 40, 2, {"max_features": "log2"}),
        (60, 40, 2, {"max_features": None}),
        (60, 40, 2, {"max_features": 4}),
        (80, 40, 2, {"class_weight": "balanced", "max_depth": 3}),  # the random_forest family's grid
    ],
)
def test_the_same_trees_and_probabilities_as_scikit_learn(n, p, classes, params, monkeypatch):
    X, y, X_test = _table(n, p, classes, n + p)
    assert len(np.unique(y)) == classes
    params = {"n_estimators": 60, "random_state": n, "n_jobs": 1, **params}
    ours, theirs = FastRandomForestClassifier(**params), RandomForestClassifier(**params)
    _assert_same_forest(_fit_counting_scikit_learn_trees(ours, X, y, monkeypatch, [1]), theirs.fit(X, y), X_test)


@pytest.mark.parametrize(
    ("n", "p", "params"),
    [
        (40, 100, {"max_features": "sqrt", "min_samples_leaf": 2}),  # the continuous family's forest
        (350, 20, {"max_features": "sqrt", "min_samples_leaf": 2}),
        (60, 30, {}),  # scikit-learn's default: every feature, leaves of one
        (60, 30, {"max_features": 0.3, "min_samples_leaf": 5}),
        (120, 20, {"max_features": "sqrt", "min_samples_leaf": 2, "max_depth": 3}),  # the family's grid
        (120, 20, {"max_features": "sqrt", "min_samples_leaf": 2, "max_depth": 6}),
    ],
)
def test_the_same_regression_trees_and_predictions_as_scikit_learn(n, p, params, monkeypatch):
    X, _, X_test = _table(n, p, 2, n)
    y = X[:, 0] * 3.0 + np.sin(X[:, 1]) + np.round(X[:, 2])  # ties in the outcome too
    params = {"n_estimators": 50, "random_state": p, **params}
    ours, theirs = FastRandomForestRegressor(**params), RandomForestRegressor(**params)
    _assert_same_forest(_fit_counting_scikit_learn_trees(ours, X, y, monkeypatch, [1]), theirs.fit(X, y), X_test)
    integer_outcome = np.round(y * 10).astype(np.int64)
    ours, theirs = FastRandomForestRegressor(**params), RandomForestRegressor(**params)
    _assert_same_forest(ours.fit(X, integer_outcome), theirs.fit(X, integer_outcome), X_test)


def _fit_counting_scikit_learn_trees(forest, X, y, monkeypatch, expected: list[int]):
    """Fit ``forest``, checking how many trees scikit-learn's own fit grew (the fast path: one, to compare)."""
    sizes = []
    reference_class = type(forest).__mro__[2]
    fit = reference_class.fit

    def counting_fit(self, *args, **kwargs):
        sizes.append(self.n_estimators)
        return fit(self, *args, **kwargs)

    monkeypatch.setattr(reference_class, "fit", counting_fit)
    forest.fit(X, y)
    monkeypatch.setattr(reference_class, "fit", fit)
    assert sizes == expected
    return forest


def test_labels_of_any_kind_and_integer_matrices():
    X, y, X_test = _table(50, 12, 2, 7)
    labels = np.array(["benign", "malignant"])[y]
    X_int, X_test_int = np.round(X * 10).astype(np.int64), np.round(X_test * 10).astype(np.int64)
    ours = FastRandomForestClassifier(n_estimators=40, class_weight="balanced", random_state=3)
    theirs = RandomForestClassifier(n_estimators=40, class_weight="balanced", random_state=3)
    _assert_same_forest(ours.fit(X_int, labels), theirs.fit(X_int, labels), X_test_int)
    assert list(ours.classes_) == ["benign", "malignant"]


@pytest.mark.parametrize(
    "change",
    [
        {"min_samples_leaf": 0.05},  # a fraction, not a count
        {"min_samples_split": 0.05},
        {"max_leaf_nodes": 8},
        {"criterion": "entropy"},
        {"class_weight": "balanced_subsample"},
        {"max_samples": 0.8},
        {"oob_score": True},
    ],
)
def test_configurations_not_checked_are_scikit_learns_fit(change, monkeypatch):
    X, y, X_test = _table(40, 20, 2, 8)
    grown = []
    monkeypatch.setattr(
        FastRandomForestClassifier,
        "_grow_trees",
        lambda self, *args: grown.append(1) or pytest.fail("the fast path ran for an unchecked configuration"),
    )
    params = {"n_estimators": 30, "class_weight": "balanced", "random_state": 1, **change}
    ours, theirs = FastRandomForestClassifier(**params), RandomForestClassifier(**params)
    _assert_same_forest(ours.fit(X, y), theirs.fit(X, y), X_test)
    assert not grown


def test_sample_weights_missing_values_and_other_versions_are_scikit_learns_fit(monkeypatch):
    X, y, X_test = _table(40, 20, 2, 9)
    weights = np.linspace(0.5, 2.0, len(y))
    params = {"n_estimators": 30, "random_state": 4}
    _assert_same_forest(
        FastRandomForestClassifier(**params).fit(X, y, sample_weight=weights),
        RandomForestClassifier(**params).fit(X, y, sample_weight=weights),
        X_test,
    )
    X_missing = X.copy()
    X_missing[3, 4] = np.nan
    _assert_same_forest(
        FastRandomForestClassifier(**params).fit(X_missing, y),
        RandomForestClassifier(**params).fit(X_missing, y),
        X_test,
    )
    assert not FastRandomForestClassifier(**params)._fast_path(X_missing, y, None)
    assert FastRandomForestClassifier(**params)._fast_path(X, y, None)
    assert FastRandomForestRegressor(**params)._fast_path(X, y, None)
    assert not FastRandomForestRegressor(criterion="absolute_error", **params)._fast_path(X, y, None)
    assert not FastRandomForestRegressor(criterion="poisson", **params)._fast_path(X, y, None)
    masked = np.ma.masked_invalid(X_missing)  # NaN hidden under a mask: scikit-learn sees it, so must we
    assert not FastRandomForestClassifier(**params)._fast_path(masked, y, None)
    assert not FastRandomForestClassifier(**params)._fast_path(X * 1e39, y, None)  # infinite as float32
    assert not FastRandomForestClassifier(verbose=1, **params)._fast_path(X, y, None)
    for wrong in (0, -3, 5.0):
        with pytest.raises(InvalidParameterError):
            FastRandomForestClassifier(n_estimators=wrong).fit(X, y)
    monkeypatch.setattr(fast_forest.sklearn, "__version__", "9.9.9")
    assert not FastRandomForestClassifier(**params)._fast_path(X, y, None)


def test_a_first_tree_unlike_scikit_learns_leaves_the_whole_fit_to_scikit_learn(monkeypatch):
    """The guard against a scikit-learn whose internals changed: the fast trees are kept only when the first one
    equals the tree scikit-learn itself grew with the same seed."""
    X, y, X_test = _table(40, 20, 2, 10)
    grow = FastRandomForestClassifier._grow_trees

    def grow_with_another_seed(self, *args):
        self.random_state += 1
        try:
            return grow(self, *args)
        finally:
            self.random_state -= 1

    monkeypatch.setattr(FastRandomForestClassifier, "_grow_trees", grow_with_another_seed)
    ours = _fit_counting_scikit_learn_trees(
        FastRandomForestClassifier(n_estimators=30, class_weight="balanced", random_state=5), X, y, monkeypatch, [1, 30]
    )
    _assert_same_forest(
        ours, RandomForestClassifier(n_estimators=30, class_weight="balanced", random_state=5).fit(X, y), X_test
    )


def test_refits_pickles_and_the_default_model_give_the_same_numbers():
    X, y, X_test = _table(45, 60, 2, 11)
    forest = FastRandomForestClassifier(n_estimators=50, class_weight="balanced", random_state=2)
    first = forest.fit(X, y).predict_proba(X_test)
    assert forest.fit(X, y).predict_proba(X_test).tobytes() == first.tobytes()
    assert pickle.loads(pickle.dumps(forest)).predict_proba(X_test).tobytes() == first.tobytes()

    consensus = ConsensusClassifier(random_state=6).fit(X, y)
    assert isinstance(consensus.forest_, FastRandomForestClassifier)
    reference = RandomForestClassifier(n_estimators=300, class_weight="balanced", random_state=6, n_jobs=1).fit(X, y)
    assert consensus.forest_.predict_proba(X_test).tobytes() == reference.predict_proba(X_test).tobytes()


def test_an_unfitted_forest_raises_scikit_learns_error():
    with pytest.raises(NotFittedError):
        FastRandomForestClassifier(n_estimators=5, random_state=0).predict_proba(np.zeros((2, 3)))
