"""Modelling is honest: no leakage with shuffled labels, and a planted signal is found."""

import numpy as np
import pandas as pd

from radiomics_assets import modelling


def _cohort(seed: int, n: int = 60, p: int = 150, planted=("f007", "f042", "f099")):
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(rng.standard_normal((n, p)), columns=[f"f{i:03d}" for i in range(p)],
                     index=[f"P{i:03d}" for i in range(n)])  # fmt: skip
    y = pd.Series(np.arange(n) % 2, index=X.index)
    for name in planted:
        X[name] += 1.5 * y
    return X, y


def test_shuffled_labels_give_chance_auc():
    aucs = []
    for repeat in range(5):
        X, y = _cohort(seed=repeat)
        shuffled = pd.Series(np.random.default_rng(100 + repeat).permutation(y.to_numpy()), index=y.index)
        cv = modelling.cross_validate(X, shuffled, seed=repeat)
        aucs.append(modelling.metrics(cv, n_bootstrap=50)["auc"])
    # Selection inside the folds: with 150 noise features, selecting on the whole cohort would give ~0.8+.
    assert abs(np.mean(aucs) - 0.5) < 0.1, aucs


def test_planted_signal_is_recovered():
    X, y = _cohort(seed=1)
    ranked = modelling.rank_features(X, y)
    assert set(ranked.feature.head(3)) == {"f007", "f042", "f099"}
    cv = modelling.cross_validate(X, y, seed=1)
    figures = modelling.metrics(cv, n_bootstrap=200)
    assert figures["auc"] > 0.85 and figures["auc_ci_low"] < figures["auc"] < figures["auc_ci_high"]
    search = modelling.fit_final(X, y, seed=1)
    kept = X.columns[search.best_estimator_.named_steps["drop_constant"].get_support()]
    chosen = set(kept[search.best_estimator_.named_steps["select"].get_support()])
    assert {"f007", "f042", "f099"} <= chosen
