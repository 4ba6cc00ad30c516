"""The batch (scanner, site) effect of a study: how well the batch is predicted from the features before and after
harmonisation, and what harmonisation changes in the outcome estimate (``metrics.json`` ``batch_effect``).

Its own module because it runs the modelling procedure again (``training``, ``validation``) on the matrix
(``matrix``): kept out of ``matrix`` so the matrix module imports nothing above it.
"""

from __future__ import annotations

from radiomics_assets.modelling.estimators import ColumnRoles
from radiomics_assets.modelling.harmonise import BATCH_PREFIX, batch_column_name, batch_effect, report_section
from radiomics_assets.modelling.matrix import cohort_data, patient_batches
from radiomics_assets.modelling.study import CLINICAL_PREFIX, Study
from radiomics_assets.modelling.tasks import task_for
from radiomics_assets.modelling.training import _model_predictors, predictor_columns, training_data
from radiomics_assets.modelling.validation import cross_validate
from radiomics_assets.warehouse import Warehouse


def batch_effect_report(
    warehouse: Warehouse, study: Study, cv=None, seed: int = 0, settings=None
) -> tuple[dict | None, str]:
    """``metrics.json``'s ``batch_effect`` and the report's section (None and "" without ``batch:`` in the study):
    the batch effect of the training cohort's radiomics features before and after the harmonise step (fitted
    inside folds); with ``settings`` and harmonisation on, the outcome estimate with and without it (``outcome``);
    with ``validation: leave_site_out``, the metric of each held-out site."""
    if not study.batch.configured:
        return None, ""

    data = cohort_data(warehouse, study, task_for(study), "train")
    radiomics = [c for c in data.X.columns if not str(c).startswith((CLINICAL_PREFIX, BATCH_PREFIX))]
    names = patient_batches(warehouse, study).reindex(data.X.index).fillna("unknown")
    X = data.X[radiomics]
    effect = batch_effect(X, names.to_numpy(), study.harmonise.value, seed=seed)
    effect["source"] = study.batch.describe()
    if settings is not None and cv is not None and study.harmonise.value != "none":
        effect["outcome"] = _outcome_without_harmonisation(warehouse, study, cv, settings)
    site_scores = getattr(cv, "site_scores", {}) if cv is not None else {}
    if site_scores:
        code_names = dict(enumerate(sorted(patient_batches(warehouse, study).unique())))
        effect["per_site"] = {code_names.get(int(float(k)), k): v for k, v in site_scores.items()}
    return effect, report_section(effect, X, names.to_numpy())


def _outcome_without_harmonisation(warehouse: Warehouse, study: Study, cv, settings) -> dict:
    """The same procedure on the same patients, groups and splitting rule with the harmonise step off: what
    ComBat changes in the outcome estimate (both honest, the step fitted inside the folds)."""

    data = training_data(warehouse, study, cv.task, settings)
    X = data.X[predictor_columns(data.X, _model_predictors(study))]
    X = X.rename(columns={c: batch_column_name("none") for c in X.columns if str(c).startswith(BATCH_PREFIX)})
    roles = ColumnRoles.of(X.columns, study.covariates.categorical)
    without = cross_validate(
        X,
        data.y,
        settings,
        data.groups,
        data.perturbations,
        with_candidates=False,
        task=cv.task,
        roles=roles,
        validation=study.validation.value,
    )
    return {"metric": cv.task.primary_metric, "with_harmonisation": cv.score, "without": without.score}
