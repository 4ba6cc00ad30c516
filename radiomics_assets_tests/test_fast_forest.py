"""``modelling.fast_forest``: the forest of the default model grows scikit-learn's own trees, node for node, and
gives its probabilities to the last bit; every configuration it was not checked for is scikit-learn's fit."""

import pickle

import numpy as np
import pytest
from sklearn.ensemble import RandomForestClassifier
from sklearn.exceptions import NotFittedError

from radiomics_assets.modelling import fast_forest
from radiomics_assets.modelling.consensus import ConsensusClassifier
from radiomics_assets.modelling.fast_forest import FastRandomForestClassifier


def _table(n: int, p: int, classes: int, seed: int, dtype=float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A table whose class depends on two columns (so trees have real splits), unbalanced, with tied values."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, p))
    X[:, 2] = np.round(X[:, 2])  # ties: thresholds between equal values
    score = X[:, 0] + 0.5 * X[:, 1] + rng.standard_normal(n)
    y = np.digitize(score, np.quantile(score, np.linspace(0, 0.7, classes)[1:]))
    return X.astype(dtype), y, rng.standard_normal((25, p)).astype(dtype)


def _assert_same_forest(ours: RandomForestClassifier, theirs: RandomForestClassifier, X_test: np.ndarray) -> None:
    assert len(ours.estimators_) == len(theirs.estimators_)
    for mine, reference in zip(ours.estimators_, theirs.estimators_, strict=True):
        assert fast_forest._same_tree(mine.tree_, reference.tree_)
        assert mine.random_state == reference.random_state
        assert mine.get_params() == reference.get_params()
    assert ours.predict_proba(X_test).tobytes() == theirs.predict_proba(X_test).tobytes()
    assert np.array_equal(ours.predict(X_test), theirs.predict(X_test))
    assert ours.feature_importances_.tobytes() == theirs.feature_importances_.tobytes()
    for name in ("classes_", "n_classes_", "n_features_in_", "n_outputs_"):
        assert np.array_equal(getattr(ours, name), getattr(theirs, name))
    for mine, reference in zip(ours.estimators_samples_, theirs.estimators_samples_, strict=True):
        assert np.array_equal(mine, reference)


@pytest.mark.parametrize(
    ("n", "p", "classes", "class_weight", "seed"),
    [
        (9, 107, 2, "balanced", 0),  # an 11-patient cohort's training fold
        (41, 100, 2, "balanced", 1),
        (41, 100, 2, None, 2),
        (150, 30, 2, "balanced", 3),
        (60, 50, 3, "balanced", 4),
        (60, 50, 3, None, 5),
    ],
)
def test_the_same_trees_and_probabilities_as_scikit_learn(n, p, classes, class_weight, seed, monkeypatch):
    X, y, X_test = _table(n, p, classes, seed)
    assert len(np.unique(y)) == classes
    ours = FastRandomForestClassifier(n_estimators=60, class_weight=class_weight, random_state=seed, n_jobs=1)
    theirs = RandomForestClassifier(n_estimators=60, class_weight=class_weight, random_state=seed, n_jobs=1)
    _assert_same_forest(
        _fit_counting_scikit_learn_trees(ours, X, y, monkeypatch, expected=[1]), theirs.fit(X, y), X_test
    )


def _fit_counting_scikit_learn_trees(forest, X, y, monkeypatch, expected: list[int]):
    """Fit ``forest``, checking how many trees scikit-learn's own fit grew (the fast path: one, to compare)."""
    sizes = []
    fit = RandomForestClassifier.fit

    def counting_fit(self, *args, **kwargs):
        sizes.append(self.n_estimators)
        return fit(self, *args, **kwargs)

    monkeypatch.setattr(RandomForestClassifier, "fit", counting_fit)
    forest.fit(X, y)
    monkeypatch.setattr(RandomForestClassifier, "fit", fit)
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
        {"min_samples_leaf": 2},
        {"max_features": 0.5},
        {"min_samples_split": 0.05},  # a fraction, not a count
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
