"""Multiclass and continuous tasks: scores against scikit-learn, class mapping, every family through the Pipeline,
planted signals and the null, the figures of a cross-validation, the report."""

import json
from types import SimpleNamespace

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import r2_score, roc_auc_score
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import Pipeline
from threadpoolctl import threadpool_limits

from radiomics_assets.modelling.selection import Selector
from radiomics_assets.modelling.study import Outcome, OutcomeType, Study
from radiomics_assets.modelling.tasks import Task, task_for
from radiomics_assets.modelling.tasks.continuous import ContinuousTask, ScaledSVR, value_bins
from radiomics_assets.modelling.tasks.multiclass import MulticlassTask, class_aucs

GRADES = ("G1", "G2", "G3")


@pytest.fixture(autouse=True)
def one_thread():
    """As in ``CandidateSearch``: OpenMP/BLAS threads only slow these small fits (and stall on a busy machine)."""
    with threadpool_limits(limits=1):
        yield


def _multiclass_task(classes=GRADES) -> MulticlassTask:
    task = MulticlassTask()
    task.classes = tuple(classes)
    return task


def _grades(n: int, seed: int = 0, p: int = 20, effect: float = 1.0):
    """Three ordered grades driven by feature 0 (tertiles of effect x0 + noise)."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, p))
    latent = effect * X[:, 0] + rng.standard_normal(n)
    return X, np.digitize(latent, np.quantile(latent, [1 / 3, 2 / 3]))


def _values(n: int, seed: int = 0, p: int = 20, noise: float = 0.7):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, p))
    return X, 50 + 10 * (X[:, 0] + noise * rng.standard_normal(n))


def _pipeline(task: Task, family: str = "logreg", k: int = 5) -> Pipeline:
    return Pipeline(
        [("select", Selector(method="anova", k=k, outcome=task.kind.value)), ("model", task.estimator(family, 0))]
    )


def _held_out(task: Task, X, y, family: str, n_train: int) -> float:
    task.prepare(y)
    fitted = _pipeline(task, family).fit(X[:n_train], y[:n_train])
    return task.score(y[n_train:], task.predict(fitted, X[n_train:]))


def _cross_validation(task: Task, X, y, family: str, repeats: int = 2, folds: int = 3) -> SimpleNamespace:
    """What ``validation.cross_validate`` hands the task, built by fitting one Pipeline per outer fold."""
    task.prepare(y)
    predictions, fold_of, splits = [], np.full((repeats, len(y)), -1), []
    for repeat in range(repeats):
        splitter = StratifiedKFold(folds, shuffle=True, random_state=repeat)
        out = None
        for fold, (train, test) in enumerate(splitter.split(X, task.strata(y))):
            prediction = task.predict(_pipeline(task, family).fit(X[train], y[train]), X[test])
            out = np.zeros((len(y), *prediction.shape[1:])) if out is None else out
            out[test] = prediction
            fold_of[repeat, test] = fold
            splits.append((repeat, fold))
        predictions.append(out)
    return SimpleNamespace(
        y=y,
        repeat_predictions=np.asarray(predictions),
        fold_of=fold_of,
        splits=splits,
        chosen=[family] * len(splits),
        scheme=f"test: {folds}-fold x {repeats}",
        patient_ids=[f"P{i:03d}" for i in range(len(y))],
    )


def _finite_numbers(value) -> list[float]:
    if isinstance(value, dict):
        return [x for v in value.values() for x in _finite_numbers(v)]
    if isinstance(value, list):
        return [x for v in value for x in _finite_numbers(v)]
    return [value] if isinstance(value, int | float) and not isinstance(value, bool) else []


# --- multiclass scores -----------------------------------------------------------------------------------------


def test_task_for_gives_the_new_tasks():
    multiclass = task_for(Study(outcome=Outcome(type=OutcomeType.multiclass, classes=GRADES)))
    assert isinstance(multiclass, MulticlassTask) and multiclass.classes == GRADES
    assert isinstance(task_for(Study(outcome=Outcome(type=OutcomeType.continuous))), ContinuousTask)
    assert MulticlassTask().classes == () and MulticlassTask().class_names(3) == ("class 0", "class 1", "class 2")


def test_macro_auc_equals_sklearn_when_every_class_is_present():
    rng = np.random.default_rng(1)
    for k in (3, 4):
        y = rng.integers(0, k, 90)
        probabilities = rng.dirichlet(np.ones(k), 90)
        probabilities[:, 0] = np.round(probabilities[:, 0], 1)  # ties count 1/2, as in sklearn
        probabilities /= probabilities.sum(axis=1, keepdims=True)
        expected = roc_auc_score(y, probabilities, multi_class="ovr", average="macro")
        assert MulticlassTask().score(y, probabilities) == pytest.approx(expected, abs=1e-12)
        per_class = [roc_auc_score(y == c, probabilities[:, c]) for c in range(k)]
        assert class_aucs(y, probabilities) == pytest.approx(per_class, abs=1e-12)


def test_a_fold_without_a_class_scores_the_classes_it_holds():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 40)  # class 2 absent
    probabilities = rng.dirichlet(np.ones(3), 40)
    expected = np.mean([roc_auc_score(y == c, probabilities[:, c]) for c in (0, 1)])
    assert MulticlassTask().score(y, probabilities) == pytest.approx(expected)
    assert np.isnan(MulticlassTask().score(np.zeros(10, dtype=int), probabilities[:10]))


@pytest.mark.parametrize("family", ["logreg", "random_forest"])
def test_predict_maps_columns_by_classes_when_training_lacks_a_class(family):
    X, y = _grades(120)
    task = _multiclass_task()
    task.prepare(y)
    train = y != 1  # the fold model never sees G2
    fitted = _pipeline(task, family).fit(X[train], y[train])
    assert list(fitted.classes_) == [0, 2]
    prediction = task.predict(fitted, X)
    assert prediction.shape == (120, 3)
    assert np.all(prediction[:, 1] == 0)
    assert prediction[:, [0, 2]] == pytest.approx(fitted.predict_proba(X))
    assert np.isfinite(task.score(y, prediction))


# --- every family through the Pipeline -------------------------------------------------------------------------


@pytest.mark.parametrize("family", MulticlassTask.model_families)
def test_every_multiclass_family_fits_and_predicts(family):
    X, y = _grades(150, seed=3)
    task = _multiclass_task()
    task.prepare(y)
    assert family == "consensus" or set(task.param_grid(family)) >= {"select__k"}  # the consensus selects itself
    assert all(key.startswith(("select__", "model__")) for key in task.param_grid(family))
    fitted = _pipeline(task, family).fit(X[:100], y[:100])
    prediction = task.predict(fitted, X[100:])
    assert prediction.shape == (50, 3)
    assert prediction.sum(axis=1) == pytest.approx(np.ones(50))
    assert task.scorer()(fitted, X[100:], y[100:]) == task.score(y[100:], prediction)


@pytest.mark.parametrize("family", ContinuousTask.model_families)
def test_every_continuous_family_fits_and_predicts(family):
    X, y = _values(150, seed=3)
    task = ContinuousTask()
    task.prepare(y)
    assert all(key.startswith(("select__", "model__")) for key in task.param_grid(family))
    fitted = _pipeline(task, family).fit(X[:100], y[:100])
    prediction = task.predict(fitted, X[100:])
    assert prediction.shape == (50,) and np.isfinite(prediction).all()
    assert task.score(y[100:], prediction) == pytest.approx(r2_score(y[100:], prediction))
    assert task.score(y[100:], prediction) > 0.2


def test_scaled_svr_follows_the_scale_of_the_outcome():
    X, y = _values(80, seed=4)
    small = ScaledSVR(C=1.0).fit(X, (y - 50) / 10).predict(X)
    large = ScaledSVR(C=1.0).fit(X, y * 1000).predict(X)
    assert large == pytest.approx((small * 10 + 50) * 1000, rel=1e-6)


# --- planted signal and the null -------------------------------------------------------------------------------


def test_planted_grade_signal_is_found_and_a_permuted_one_is_not():
    X, y = _grades(400, seed=5, effect=1.5)
    task = _multiclass_task()
    assert _held_out(task, X, y, "logreg", 200) > 0.7
    permuted = np.random.default_rng(0).permutation(y)
    assert abs(_held_out(task, X, permuted, "logreg", 200) - 0.5) < 0.08


def test_planted_value_signal_is_found_and_a_permuted_one_is_not():
    X, y = _values(400, seed=5)
    task = ContinuousTask()
    assert _held_out(task, X, y, "linear", 200) > 0.3
    permuted = np.random.default_rng(0).permutation(y)
    assert -0.1 < _held_out(task, X, permuted, "linear", 200) < 0.05


def test_the_null_q2_of_the_training_mean_sits_slightly_below_zero():
    """The training mean, the best uninformed model: -(1/n_train + 1/(n - 1)), about -(2 - 1/k) / n_train."""
    task = ContinuousTask()
    rng = np.random.default_rng(6)
    n, k = 50, 5
    n_train = n * (k - 1) // k
    values = []
    for _ in range(2000):
        y = rng.standard_normal(n)
        fold_of = rng.permutation(np.arange(n) % k)[None, :]
        prediction = np.array([y[fold_of[0] != f].mean() for f in fold_of[0]])
        values.append(task.cv_estimate(y, prediction[None, :], fold_of))
    expected = -(1 / n_train + 1 / (n - 1))
    assert np.mean(values) == pytest.approx(expected, rel=0.15)
    assert expected == pytest.approx(-(2 - 1 / k) / n_train, rel=0.05)


# --- bootstraps ------------------------------------------------------------------------------------------------


def test_vectorised_bootstraps_equal_the_generic_one():
    """The same seed draws the same patients as ``Task.bootstrap`` and gives the same values."""
    X, y = _grades(60, seed=7)
    task = _multiclass_task()
    cv = _cross_validation(task, X, y, "logreg")
    fast = task.bootstrap(cv.y, cv.repeat_predictions, cv.fold_of, 40, seed=3)
    generic = Task.bootstrap(task, cv.y, cv.repeat_predictions, cv.fold_of, 40, seed=3)
    assert len(fast) == len(generic) == 40 and fast == pytest.approx(generic, abs=1e-12)

    X, y = _values(60, seed=7)
    task = ContinuousTask()
    cv = _cross_validation(task, X, y, "linear")
    fast = task.bootstrap(cv.y, cv.repeat_predictions, cv.fold_of, 40, seed=3)
    generic = Task.bootstrap(task, cv.y, cv.repeat_predictions, cv.fold_of, 40, seed=3)
    assert len(fast) == len(generic) == 40 and fast == pytest.approx(generic, abs=1e-9)


# --- figures of a cross-validation -----------------------------------------------------------------------------


def test_multiclass_metrics_report_and_external_figures():
    X, y = _grades(90, seed=8, effect=1.5)
    task = _multiclass_task()
    cv = _cross_validation(task, X, y, "logreg")
    m = task.metrics(cv, n_bootstrap=200, seed=0)
    json.dumps(m)
    assert m["primary_metric"]["name"] == "macro_auc" and m["primary_metric"]["chance"] == 0.5
    assert (
        m["primary_metric"]["value"]
        == m["macro_auc"]
        == pytest.approx(task.cv_estimate(y, cv.repeat_predictions, cv.fold_of))
    )
    assert m["macro_auc_ci_low"] < m["macro_auc"] < m["macro_auc_ci_high"] and m["macro_auc"] > 0.6
    assert len(m["macro_auc_per_fold"]) == 6 and m["cv_scheme"] == cv.scheme
    assert m["classes"] == list(GRADES) and set(m["auc_per_class"]) == set(GRADES)
    assert sum(m["n_per_class"].values()) == m["n_patients"] == 90
    assert np.sum(m["confusion_matrix"]["matrix"]) == 90 and m["confusion_matrix"]["labels"] == list(GRADES)
    assert m["support"] == m["n_per_class"]
    assert all(np.isfinite(_finite_numbers({k: v for k, v in m.items() if k != "primary_metric"})))
    for key in ("balanced_accuracy", "accuracy", "macro_f1", "precision", "recall", "f1"):
        assert key in m
    assert task.headline(m)["macro_auc"] == m["macro_auc"]
    assert task.cohort_summary(y) == {"n_patients": 90, "n_per_class": m["n_per_class"]}

    page = task.report_html(m, cv)
    assert page.count("<img") == 2
    for text in ("Macro one-vs-rest AUC", "Balanced accuracy", "Macro F1", "G3"):
        assert text in page

    # A held-out cohort without G3: scored over the classes it holds.
    fitted = _pipeline(task, "logreg").fit(X, y)
    X_new, y_new = _grades(60, seed=9, effect=1.5)
    keep = y_new < 2
    prediction = task.predict(fitted, X_new[keep])
    external = task.external_metrics(y_new[keep], prediction, seed=0)
    json.dumps(external)
    assert external["macro_auc"] == pytest.approx(task.score(y_new[keep], prediction))
    assert np.isnan(external["auc_per_class"]["G3"]) and external["n_per_class"]["G3"] == 0
    assert external["primary_metric"]["ci_low"] <= external["macro_auc"] <= external["primary_metric"]["ci_high"]
    assert "<img" in task.external_html(external, y_new[keep], prediction)

    columns = task.prediction_table(prediction, None)
    assert list(columns) == ["predicted_class", "probability_G1", "probability_G2", "probability_G3"]
    assert set(columns["predicted_class"]) <= set(GRADES)
    assert columns["probability_G2"] == pytest.approx(prediction[:, 1])


def test_continuous_metrics_report_and_external_figures():
    X, y = _values(90, seed=8)
    task = ContinuousTask()
    cv = _cross_validation(task, X, y, "linear")
    m = task.metrics(cv, n_bootstrap=200, seed=0)
    json.dumps(m)
    assert m["primary_metric"]["name"] == "r2" and m["primary_metric"]["chance"] == 0.0
    # The pooled out-of-fold R² of each repeat, averaged; the per-fold mean is lower (small folds).
    per_repeat = [r2_score(y, p) for p in cv.repeat_predictions]
    assert m["r2_per_repeat"] == pytest.approx(per_repeat) and m["r2"] == pytest.approx(np.mean(per_repeat))
    assert m["r2_ci_low"] < m["r2"] < m["r2_ci_high"] and m["r2"] > 0.4
    assert m["r2_fold_mean"] <= m["r2"] + 0.05
    assert m["n_patients"] == 90 and m["mean"] == pytest.approx(y.mean()) and m["sd"] == pytest.approx(y.std(ddof=1))
    assert all(np.isfinite(_finite_numbers(m)))
    mean_prediction = cv.repeat_predictions.mean(axis=0)
    slope, intercept = np.polyfit(mean_prediction, y, 1)
    assert m["calibration_slope"] == pytest.approx(slope) and m["calibration_intercept"] == pytest.approx(intercept)
    assert m["rmse"] == pytest.approx(np.sqrt(np.mean((y - mean_prediction) ** 2)))
    assert m["mae_ci_low"] < m["mae"] < m["mae_ci_high"]
    assert m["pearson_r"] > 0.6 and m["spearman_r"] > 0.6
    assert set(task.headline(m)) == {"r2", "r2_ci_low", "r2_ci_high", "mae", "rmse"}

    page = task.report_html(m, cv)
    assert page.count("<img") == 1
    for text in ("R²", "MAE", "RMSE", "Pearson", "Calibration slope"):
        assert text in page

    fitted = _pipeline(task, "linear").fit(X, y)
    X_new, y_new = _values(50, seed=9)
    prediction = task.predict(fitted, X_new)
    external = task.external_metrics(y_new, prediction, seed=0)
    json.dumps(external)
    assert external["r2"] == pytest.approx(r2_score(y_new, prediction))
    assert external["r2_ci_low"] < external["r2"] < external["r2_ci_high"]
    assert "<img" in task.external_html(external, y_new, prediction)
    assert task.prediction_table(prediction, None)["predicted_value"] == pytest.approx(prediction)
    assert task.cohort_summary(y_new)["n_patients"] == 50


# --- sizes and strata ------------------------------------------------------------------------------------------


def test_too_small_cohorts_fail_with_a_clear_message():
    task = _multiclass_task()
    with pytest.raises(ValueError, match="G3: 3"):
        task.check_size(np.array([0] * 10 + [1] * 10 + [2] * 3))
    with pytest.raises(ValueError, match="G3: 0"):  # a named class absent from the cohort
        task.check_size(np.array([0] * 10 + [1] * 10))
    task.check_size(np.array([0, 1, 2] * 4))
    continuous = ContinuousTask()
    with pytest.raises(ValueError, match="19 patients.*at least 20"):
        continuous.check_size(np.arange(19.0))
    with pytest.raises(ValueError, match="same value"):
        continuous.check_size(np.ones(30))
    continuous.check_size(np.arange(20.0))


def test_value_bins_are_quintiles_fixed_by_prepare_and_tied_values_merge():
    y = np.arange(100.0)
    task = ContinuousTask()
    task.prepare(y)
    assert list(np.bincount(task.strata(y))) == [20] * 5
    assert list(task.strata(np.array([-5.0, 50.0, 500.0]))) == [0, 2, 4]  # the cohort's edges, not the subset's
    tied = np.array([0.0] * 60 + [1.0] * 3 + [2.0] * 30 + [3.0] * 7)
    counts = np.bincount(np.searchsorted(value_bins(tied), tied, side="right"))
    assert counts.min() >= 5 and len(counts) >= 2


def test_logistic_regression_is_multinomial_and_class_balanced():
    model = MulticlassTask().estimator("logreg", 0)
    assert isinstance(model, LogisticRegression) and model.class_weight == "balanced"


def test_tasks_pickle_with_their_fixed_state_and_score_empty_cohorts():
    """The saved model pickles its task: K and the class names, the value bins; an empty held-out cohort gives NaN."""
    import pickle

    task = _multiclass_task()
    task.prepare(np.array([0, 1, 2, 2]))
    again = pickle.loads(pickle.dumps(task))
    assert again.classes == GRADES and again.n_classes == 3
    empty = again.external_metrics(np.empty(0, dtype=int), np.empty(0))
    assert np.isnan(empty["macro_auc"]) and empty["n_patients"] == 0
    assert list(again.prediction_table(np.empty(0), None)) == ["predicted_class", *(f"probability_{g}" for g in GRADES)]

    continuous = ContinuousTask()
    continuous.prepare(np.arange(50.0))
    again = pickle.loads(pickle.dumps(continuous))
    assert again.bin_edges == pytest.approx(continuous.bin_edges)
    json.dumps(again.external_metrics(np.empty(0), np.empty(0)))
