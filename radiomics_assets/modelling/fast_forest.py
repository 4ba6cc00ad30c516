"""A random forest classifier whose fit and probabilities are scikit-learn's own, to the last bit, at a third of
the cost on radiomics-sized cohorts.

Why: the default model (``consensus``) fits a 300-tree forest in every outer fold and in every fold of every
permutation of the permutation test. On 10-100 patients a tree is grown in microseconds, yet
``RandomForestClassifier.fit`` spends about 1.3 ms per tree on this machine in scikit-learn's Python layer:
cloning the template tree (``get_params`` through ``inspect.signature``), validating the same targets and weights
again for every tree, a new ``RandomState`` (about 130 microseconds each, two per tree) and joblib's dispatch. So
the permutation test of an 11-patient cohort ran for its whole 300 s budget.

:class:`FastRandomForestClassifier` grows the same trees with the same Cython builders scikit-learn uses, in the
same order from the same seeds: the seed of tree i is the i-th ``randint(2**31 - 1)`` of ``RandomState(
random_state)``; its bootstrap is ``choice(n, n, p=weights / sum(weights))`` (with ``class_weight``) or ``randint(0,
n, n)`` (without) from ``RandomState(seed)``, given to the tree as counts; its splitter draws its own state from
another ``RandomState(seed)``. Two generators are re-seeded per tree instead of made anew (the same state: legacy
seeding). Everything else -- validation, the class encoding, the class weights, the attributes a fitted forest
has -- comes from scikit-learn itself: the forest is first fitted with one tree, and that tree must equal the
first tree grown here, node for node, or the whole fit is left to scikit-learn. Probabilities are the trees'
leaf values summed in the trees' order and divided by their number, as scikit-learn's one-job path sums them.

Only the configuration that was checked takes this path (scikit-learn 1.9.1, Gini, no depth or leaf limits,
``max_features="sqrt"``, bootstrap of n samples, ``class_weight`` None or "balanced", an integer
``random_state``, a finite dense matrix, no sample weights); anything else is ``RandomForestClassifier`` unchanged.
``test_fast_forest.py`` compares every tree and every probability with scikit-learn's on random tables, two and
three classes, with and without class weights.
"""

from __future__ import annotations

import numbers

import numpy as np
import sklearn
from sklearn.ensemble import RandomForestClassifier
from sklearn.tree import DecisionTreeClassifier
from sklearn.tree._criterion import Gini
from sklearn.tree._splitter import BestSplitter
from sklearn.tree._tree import DepthFirstTreeBuilder, Tree

CHECKED_SKLEARN_VERSIONS = ("1.9.1",)
"""scikit-learn versions whose forest fit this module was checked against, tree by tree."""

_MAX_INT = np.iinfo(np.int32).max
_CHECKED_PARAMS = {
    "criterion": "gini",
    "max_depth": None,
    "min_samples_split": 2,
    "min_samples_leaf": 1,
    "min_weight_fraction_leaf": 0.0,
    "max_features": "sqrt",
    "max_leaf_nodes": None,
    "min_impurity_decrease": 0.0,
    "bootstrap": True,
    "oob_score": False,
    "warm_start": False,
    "ccp_alpha": 0.0,
    "max_samples": None,
    "monotonic_cst": None,
}


def _is_checked(value, checked) -> bool:
    """Whether a parameter has the checked value, of the checked type (2.0 is a fraction where 2 is a count)."""
    if checked is None:
        return value is None
    return type(value) is type(checked) and value == checked


def _same_tree(a: Tree, b: Tree) -> bool:
    """Whether two fitted trees have the same nodes and leaf values, field by field (bitwise for floats)."""
    state_a, state_b = a.__getstate__(), b.__getstate__()
    if state_a["max_depth"] != state_b["max_depth"] or state_a["node_count"] != state_b["node_count"]:
        return False
    nodes_a, nodes_b = state_a["nodes"], state_b["nodes"]
    if nodes_a.dtype != nodes_b.dtype or nodes_a.shape != nodes_b.shape:
        return False
    same_nodes = all(np.array_equal(nodes_a[name], nodes_b[name]) for name in nodes_a.dtype.names)
    return same_nodes and state_a["values"].tobytes() == state_b["values"].tobytes()


class FastRandomForestClassifier(RandomForestClassifier):
    """``RandomForestClassifier`` with the same parameters, trees and probabilities, fitted without scikit-learn's
    per-tree Python overhead where the configuration was checked (module docstring); otherwise scikit-learn's."""

    def _fast_path(self, X, y, sample_weight) -> bool:
        if sklearn.__version__ not in CHECKED_SKLEARN_VERSIONS or sample_weight is not None:
            return False
        if not all(_is_checked(getattr(self, name), checked) for name, checked in _CHECKED_PARAMS.items()):
            return False
        if self.class_weight not in (None, "balanced"):
            return False
        if not isinstance(self.random_state, numbers.Integral) or isinstance(self.random_state, bool):
            return False
        if not isinstance(X, np.ndarray) or X.ndim != 2 or X.dtype.kind not in "fiu" or np.ndim(y) != 1:
            return False
        return bool(np.isfinite(X).all())

    def fit(self, X, y, sample_weight=None):
        if not self._fast_path(X, y, sample_weight):
            return super().fit(X, y, sample_weight=sample_weight)
        n_estimators = self.n_estimators
        # scikit-learn validates, encodes the classes, weights them and sets every attribute, with one tree
        self.n_estimators = 1
        try:
            super().fit(X, y)
        finally:
            self.n_estimators = n_estimators
        trees = self._grow_trees(np.asarray(X, dtype=np.float32), np.asarray(y))
        if not _same_tree(trees[0].tree_, self.estimators_[0].tree_):
            return super().fit(X, y)
        self.estimators_ = trees
        return self

    def _grow_trees(self, X: np.ndarray, y: np.ndarray) -> list[DecisionTreeClassifier]:
        n_samples, n_features = X.shape
        y_encoded = np.ascontiguousarray(np.searchsorted(self.classes_, y).reshape(-1, 1), dtype=np.float64)
        class_counts = np.array([len(self.classes_)], dtype=np.intp)
        tree_classes = np.arange(len(self.classes_), dtype=np.float64)
        draw_weights = None if self._sample_weight is None else self._sample_weight / np.sum(self._sample_weight)
        n_bootstrap = self._n_samples_bootstrap
        max_features = self.estimators_[0].max_features_  # scikit-learn's own tree says how many
        tree_params = {name: getattr(self, name) for name in self.estimator_params}
        seeds = np.random.RandomState(self.random_state)
        bootstrap_random = np.random.RandomState(0)
        splitter_random = np.random.RandomState(0)
        trees = []
        for _ in range(self.n_estimators):
            seed = seeds.randint(_MAX_INT)
            bootstrap_random.seed(seed)
            if draw_weights is None:
                drawn = bootstrap_random.randint(0, n_samples, n_bootstrap)
            else:
                drawn = bootstrap_random.choice(n_samples, n_bootstrap, replace=True, p=draw_weights)
            counts = np.bincount(drawn.astype(np.int32), minlength=n_samples).astype(np.float64)
            splitter_random.seed(seed)  # the splitter draws its state from it when the build starts
            splitter = BestSplitter(Gini(1, class_counts), max_features, 1, 0.0, splitter_random, None)
            tree = DecisionTreeClassifier(**{**tree_params, "random_state": seed})
            tree.tree_ = Tree(n_features, class_counts, 1)
            DepthFirstTreeBuilder(splitter, 2, 1, 0.0, _MAX_INT, 0.0).build(tree.tree_, X, y_encoded, counts, None)
            tree.n_features_in_ = n_features
            tree.n_outputs_ = 1
            tree.classes_ = tree_classes
            tree.n_classes_ = class_counts[0]
            tree.max_features_ = max_features
            trees.append(tree)
        return trees

    def predict_proba(self, X):
        if self.n_jobs not in (None, 1) or getattr(self, "n_outputs_", None) != 1:  # unfitted: scikit-learn's error
            return super().predict_proba(X)
        X = self._validate_X_predict(X)
        probabilities = np.zeros((X.shape[0], self.n_classes_), dtype=np.float64)
        for tree in self.estimators_:  # scikit-learn's one-job order of summation
            probabilities += tree.tree_.predict(X)[:, : self.n_classes_]
        probabilities /= len(self.estimators_)
        return probabilities
