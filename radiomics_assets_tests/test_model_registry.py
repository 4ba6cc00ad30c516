"""Model history and promotion with real trained models: a regressed model warns or is blocked per setting,
every model is kept, the current one serves predictions, and a kept version can be promoted back."""

import json
import shutil

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from radiomics_assets import modelling
from radiomics_assets.modelling import registry as model_registry
from radiomics_assets.paths import DataRoot
from radiomics_assets.warehouse import Warehouse, write_derived_table

TRAIN = {"seed": 0, "models": ("logreg",), "folds": 3, "repeats": 1, "inner_folds": 2, "permutations": 2}


def _write_cohort(root: DataRoot, effect: float, n: int = 40, unlabelled: int = 4, p: int = 20) -> None:
    """Feature matrix + labels in the warehouse: ``effect`` shifts three features with the label (0 = noise)."""
    rng = np.random.default_rng(17)
    X = pd.DataFrame(
        rng.standard_normal((n + unlabelled, p)),
        columns=[f"f{i:02d}" for i in range(p)],
        index=[f"P{i:03d}" for i in range(n + unlabelled)],
    )
    y = pd.Series(np.arange(n + unlabelled) % 2, index=X.index, dtype=float)
    for name in ("f01", "f05", "f09"):
        X[name] += effect * y
    y.iloc[n:] = np.nan
    warehouse = Warehouse(root.warehouse)
    write_derived_table(warehouse, "feature_matrix", X.assign(label=y).rename_axis("patient_id").reset_index())
    labels = pd.DataFrame(
        {
            "patient_id": X.index[:n],
            "label": y.iloc[:n].astype(int).to_numpy(),
            "label_name": y.iloc[:n].astype(int).astype(str).to_numpy(),
            "cohort": "train",
        }
    )
    modelling.store_labels(warehouse, labels)


def _train(root: DataRoot, effect: float) -> dict:
    _write_cohort(root, effect)
    _, card = modelling.train_model(root, modelling.ModellingSettings(**TRAIN))
    return card.as_json()  # the registry keeps cards as stored JSON


@pytest.fixture(scope="module")
def trained_twice(tmp_path_factory):
    """Trained once per module (training dominates the time); each test gets its own copy below."""
    root = DataRoot(tmp_path_factory.mktemp("trained"))
    good = _train(root, effect=2.0)
    first = model_registry.register(root.models, good, margin=0.05, policy="block")
    assert first.promoted and first.previous_version is None
    worse = _train(root, effect=0.0)
    assert model_registry.card_auc(good) > 0.9 and model_registry.card_auc(worse) < 0.75, (good, worse)
    return root, good, worse, first


@pytest.fixture
def good_then_worse(trained_twice, tmp_path):
    """A data root whose first model (strong signal) is current, and whose models/ now holds a freshly trained,
    clearly worse model (labels unrelated to the features) that has not been registered yet."""
    template, good, worse, first = trained_twice
    shutil.copytree(template.path, tmp_path, dirs_exist_ok=True)
    return DataRoot(tmp_path), good, worse, first


def test_block_keeps_the_previous_model_serving(good_then_worse):
    root, good, worse, first = good_then_worse
    decision = model_registry.register(root.models, worse, margin=0.05, policy="block")

    assert decision.regressed and not decision.promoted
    assert decision.previous_version == first.version == decision.current_version
    assert decision.previous_auc == model_registry.card_auc(good) and decision.cv_auc == model_registry.card_auc(worse)
    assert model_registry.current_version(root.models) == first.version
    # Both kept, each with its own card and pickled model; the top level is the current model again.
    assert model_registry.versions(root.models) == sorted([first.version, decision.version])
    assert model_registry.load_card(root.models, decision.version)["model_id"] == worse["model_id"]
    assert modelling.load_model(root).model_id == good["model_id"]
    assert json.loads((root.models / "model_card.json").read_text())["model_id"] == good["model_id"]
    # predictions use the promoted model, not the blocked candidate.
    _write_cohort(root, effect=0.0)
    assert set(modelling.predict_unlabelled(root).model_id) == {good["model_id"]}

    trained = model_registry.history(root.models)
    assert [(h["version"], h["promoted"], h["regressed"]) for h in trained] == [
        (first.version, True, False),
        (decision.version, False, True),
    ]

    # Accepting the candidate by hand (or rolling back later) switches the top-level files and the pointer.
    model_registry.promote(root.models, decision.version)
    assert model_registry.current_version(root.models) == decision.version
    assert modelling.load_model(root).model_id == worse["model_id"]
    model_registry.promote(root.models, first.version)
    assert modelling.load_model(root).model_id == good["model_id"]
    assert [h["event"] for h in model_registry.history(root.models)] == ["trained", "trained", "promoted", "promoted"]
    with pytest.raises(ValueError, match="no kept model version 'nope'"):
        model_registry.promote(root.models, "nope")


def test_warn_promotes_the_regressed_model_and_keeps_the_previous(good_then_worse):
    root, good, worse, first = good_then_worse
    decision = model_registry.register(root.models, worse, margin=0.05, policy="warn")
    assert decision.regressed and decision.promoted and decision.current_version == decision.version
    assert modelling.load_model(root).model_id == worse["model_id"]
    assert model_registry.load_card(root.models, first.version)["model_id"] == good["model_id"]
    assert (root.models / first.version / "model.pkl").exists()
    # Within the margin it is no regression at all.
    lenient = model_registry.register(root.models, good, margin=1.0, policy="block")
    assert not lenient.regressed and lenient.promoted


def test_model_asset_reports_the_check_and_cv_auc(tmp_path, monkeypatch):
    """The Dagster layer: `primary_metric_not_regressed` on the `model` asset carries both AUCs and the margin."""
    from radiomics_assets.defs.cohort_assets import model
    from radiomics_assets.defs.resources import RadiomicsConfig

    root = DataRoot(tmp_path)
    config = RadiomicsConfig(
        data_dir=str(tmp_path),
        candidate_models=["logreg"],
        cv_folds=3,
        cv_repeats=1,
        cv_inner_folds=2,
        permutations=2,
        modelling_jobs=1,
        on_auc_regression="block",
        auc_regression_margin=0.05,
    )
    evaluations = []
    for effect in (2.0, 0.0):
        _write_cohort(root, effect)
        result = dg.materialize([model], resources={"radiomics": config}, raise_on_error=False)
        assert result.success
        (evaluation,) = result.get_asset_check_evaluations()
        evaluations.append(evaluation)
        materialization = result.asset_materializations_for_node("model")[0]
        assert materialization.metadata["cv_auc"].value == round(evaluation.metadata["new_value"].value, 3)

    first, second = evaluations
    assert first.passed and second.check_name == "primary_metric_not_regressed" and not second.passed
    assert second.severity == dg.AssetCheckSeverity.ERROR  # policy block
    meta = {k: v.value for k, v in second.metadata.items()}
    assert meta["previous_value"] == first.metadata["new_value"].value > meta["new_value"] + meta["margin"]
    assert meta["promoted"] is False and meta["current_version"] == meta["previous_version"]
    assert model_registry.current_version(root.models) == meta["previous_version"]
