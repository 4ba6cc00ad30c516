"""One file per outcome type; :func:`task_for` gives the study's task (``study.yaml`` ``outcome.type``)."""

from __future__ import annotations

import importlib

from radiomics_assets.modelling.study import OutcomeType, Study
from radiomics_assets.modelling.tasks.base import PrimaryMetric, Task, interval

_TASK_CLASSES = {
    OutcomeType.binary: ("binary", "BinaryTask"),
    OutcomeType.multiclass: ("multiclass", "MulticlassTask"),
    OutcomeType.continuous: ("continuous", "ContinuousTask"),
    OutcomeType.survival: ("survival", "SurvivalTask"),
}

__all__ = ["PrimaryMetric", "Task", "interval", "task_for"]


def task_for(study: Study | None = None) -> Task:
    """The :class:`Task` of ``study`` (binary without one). Survival imports scikit-survival only when used."""
    study = study or Study()
    module, name = _TASK_CLASSES[study.task]
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)(study)
