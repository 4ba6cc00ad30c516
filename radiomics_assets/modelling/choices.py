"""The lists of choices of the modelling procedure, defined once: model families and feature-selection methods.

String enums, so a value read from ``study.yaml``, an environment variable or the launchpad compares equal to its
member and JSON/metrics keep plain strings. Which outcome type fits which family or method is the task's business
(``tasks.<type>.model_families``, ``selection.SELECTION_METHODS_BY_OUTCOME``); this module only names them.
"""

from __future__ import annotations

from enum import StrEnum


class ModelFamily(StrEnum):
    """A model family; ``consensus`` (binary, multiclass) is ``modelling.consensus``, ``linear`` (continuous) a
    ridge regression, ``coxnet`` (survival) an elastic-net Cox model."""

    consensus = "consensus"
    logreg = "logreg"
    random_forest = "random_forest"
    svm = "svm"
    gradient_boosting = "gradient_boosting"
    linear = "linear"
    coxnet = "coxnet"


class SelectionMethod(StrEnum):
    """A feature-selection method inside the Pipeline (``modelling.selection.Selector``)."""

    anova = "anova"
    mannwhitney = "mannwhitney"
    mutual_info = "mutual_info"
    rfe = "rfe"
    l1 = "l1"
    tree = "tree"
    cox = "cox"
    concordance = "concordance"
