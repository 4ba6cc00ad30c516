"""Random forests whose fit, probabilities and predictions are scikit-learn's own, to the last bit, at a fraction
of the cost on radiomics-sized cohorts.

Why: the default classifier (``consensus``) fits a 300-tree forest in every outer fold and in every fold of every
permutation of the permutation test, and the continuous and binary ``random_forest`` families fit one for every
inner candidate. On 10-100 patients a tree is grown in microseconds, yet ``RandomForestClassifier.fit`` spends about
1.3 ms per tree on this machine in scikit-learn's Python layer: cloning the template tree (``get_params`` through
``inspect.signature``), validating the same targets and weights again for every tree, a new ``RandomState`` (about
130 microseconds each, two per tree) and joblib's dispatch. So the permutation test of an 11-patient cohort ran for
its whole 300 s budget.

:class:`FastRandomForestClassifier` and :class:`FastRandomForestRegressor` grow the same trees with the same Cython
builders scikit-learn uses, in the same order from the same seeds: the seed of tree i is the i-th
``randint(2**31 - 1)`` of ``RandomState(random_state)``; its bootstrap is ``choice(n, n, p=weights / sum(weights))``
(with ``class_weight``) or ``randint(0, n, n)`` (without) from ``RandomState(seed)``, given to the tree as counts;
its splitter draws its own state from another ``RandomState(seed)``. Two generators are re-seeded per tree instead
of made anew (the same state: legacy seeding). Everything else -- validation, the class encoding, the class
weights, ``max_features_``, the attributes a fitted forest has -- comes from scikit-learn itself: the forest is
first fitted with one tree, and that tree must equal the first tree grown here, node for node, or the whole fit is
left to scikit-learn. Probabilities and predictions are the trees' leaf values summed in the trees' order and
divided by their number, as scikit-learn's one-job path sums them.

Only what was checked takes this path: scikit-learn 1.9.1; Gini (classifier) or squared error (regressor); any
``max_features``; ``max_depth`` None or a count; ``min_samples_leaf`` a count; the other tree limits at their
defaults; a bootstrap of n samples without out-of-bag scores or warm start; ``class_weight`` None or "balanced"; an
integer ``random_state``; a finite dense matrix (not masked); no sample weights; ``verbose`` 0. Anything else is
scikit-learn's forest unchanged. ``test_fast_forest.py`` compares every tree, probability and prediction with
scikit-learn's on random tables (two and three classes, regression, each parameter above).
"""

from __future__ import annotations

import numbers

import numpy as np
import sklearn
from sklearn.base import is_classifier
from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
from sklearn.tree._criterion import MSE, Gini
from sklearn.tree._splitter import BestSplitter
from sklearn.tree._tree import DepthFirstTreeBuilder, Tree

CHECKED_SKLEARN_VERSIONS = ("1.9.1",)
"""scikit-learn versions whose forest fit this module was checked against, tree by tree."""

_MAX_INT = np.iinfo(np.int32).max
_CHECKED_PARAMS = {
    "min_samples_split": 2,
    "min_weight_fraction_leaf": 0.0,
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


def _is_count(value, minimum: int = 1) -> bool:
    """An integer (not a bool) of at least ``minimum``: a count where scikit-learn also takes fractions."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= minimum


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


class _FastForest:
    """The fit shared by both forests (module docstring); the classes below say which criterion was checked."""

    _checked_criterion: str

    def _fast_path(self, X, y, sample_weight) -> bool:
        if sklearn.__version__ not in CHECKED_SKLEARN_VERSIONS or sample_weight is not None or self.verbose:
            return False
        if not _is_count(self.n_estimators):  # left to scikit-learn's own parameter error
            return False
        if not all(_is_checked(getattr(self, name), checked) for name, checked in _CHECKED_PARAMS.items()):
            return False
        if self.criterion != self._checked_criterion or getattr(self, "class_weight", None) not in (None, "balanced"):
            return False
        if not _is_count(self.min_samples_leaf) or not _is_count(self.random_state, minimum=0):
            return False
        if self.max_depth is not None and not _is_count(self.max_depth):
            return False
        if not isinstance(X, np.ndarray) or isinstance(X, np.ma.MaskedArray):  # a mask may hide NaN
            return False
        if X.ndim != 2 or X.dtype.kind not in "fiu" or np.ndim(y) != 1:
            return False
        with np.errstate(over="ignore"):  # too large for float32: scikit-learn's fit names the problem
            return bool(np.isfinite(np.asarray(X, dtype=np.float32)).all())  # the values the trees are grown on

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

    def _grow_trees(self, X: np.ndarray, y: np.ndarray) -> list:
        n_samples, n_features = X.shape
        first = self.estimators_[0]  # scikit-learn's own tree of the one-tree fit
        classifier = is_classifier(self)
        if classifier:
            y = np.searchsorted(self.classes_, y)
            n_values = np.array([len(self.classes_)], dtype=np.intp)
        else:
            n_values = np.array([1], dtype=np.intp)
        targets = np.ascontiguousarray(np.reshape(y, (-1, 1)), dtype=np.float64)
        draw_weights = None if self._sample_weight is None else self._sample_weight / np.sum(self._sample_weight)
        n_bootstrap = self._n_samples_bootstrap
        leaf = self.min_samples_leaf
        split = max(2, 2 * leaf)  # min_samples_split is 2 (checked); a tree raises it to twice the leaf size
        depth = _MAX_INT if self.max_depth is None else self.max_depth
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
            criterion = Gini(1, n_values) if classifier else MSE(1, n_samples)
            splitter_random.seed(seed)  # the splitter draws its state from it when the build starts
            splitter = BestSplitter(criterion, first.max_features_, leaf, 0.0, splitter_random, None)
            tree = type(first)(**{**tree_params, "random_state": seed})
            tree.tree_ = Tree(n_features, n_values, 1)
            DepthFirstTreeBuilder(splitter, split, leaf, 0.0, depth, 0.0).build(tree.tree_, X, targets, counts, None)
            tree.n_features_in_ = n_features
            tree.n_outputs_ = 1
            tree.max_features_ = first.max_features_
            if classifier:
                tree.classes_ = first.classes_
                tree.n_classes_ = first.n_classes_
            trees.append(tree)
        return trees

    def _sum_of_trees(self, X) -> np.ndarray | None:
        """The trees' outputs summed in their order and divided by their number, as scikit-learn's one-job path
        does; None where that path is not the one scikit-learn takes (or the forest is not fitted)."""
        if self.n_jobs not in (None, 1) or self.verbose or getattr(self, "n_outputs_", None) != 1:
            return None
        X = self._validate_X_predict(X)
        width = self.n_classes_ if is_classifier(self) else 1
        total = np.zeros((X.shape[0], width), dtype=np.float64)
        for tree in self.estimators_:
            total += tree.tree_.predict(X)[:, :width]
        total /= len(self.estimators_)
        return total


class FastRandomForestClassifier(_FastForest, RandomForestClassifier):
    """``RandomForestClassifier`` with the same parameters, trees and probabilities, fitted without scikit-learn's
    per-tree Python overhead where the configuration was checked (module docstring); otherwise scikit-learn's."""

    _checked_criterion = "gini"

    def predict_proba(self, X):
        probabilities = self._sum_of_trees(X)
        return super().predict_proba(X) if probabilities is None else probabilities


class FastRandomForestRegressor(_FastForest, RandomForestRegressor):
    """``RandomForestRegressor`` with the same parameters, trees and predictions, fitted without scikit-learn's
    per-tree Python overhead where the configuration was checked (module docstring); otherwise scikit-learn's."""

    _checked_criterion = "squared_error"

    def predict(self, X):
        predictions = self._sum_of_trees(X)
        return super().predict(X) if predictions is None else predictions[:, 0]
