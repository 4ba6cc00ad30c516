"""Asset checks: data quality of every patient's features, and the model-regression gate."""

import dagster as dg

from radiomics_assets.defs.display import rounded
from radiomics_assets.features import feature_count_mismatches, non_finite_features, small_rois
from radiomics_assets.modelling.registry import Decision

FEATURE_CHECKS = [
    dg.AssetCheckSpec("all_values_finite", asset="features", description="No NaN or infinite feature value"),
    dg.AssetCheckSpec(
        "feature_count_matches_parameter_set",
        asset="features",
        description="Each (series, ROI) has as many features as other patients extracted with the same parameters",
    ),
    dg.AssetCheckSpec(
        "roi_large_enough",
        asset="features",
        description="Every ROI has at least `min_roi_voxels` voxels, enough for texture features",
    ),
]

PRIMARY_METRIC_NOT_REGRESSED = dg.AssetCheckSpec(
    "primary_metric_not_regressed",
    asset="model",
    description="The new model's cross-validated primary metric (AUC, macro AUC, R² or c-index) is not more than "
    "`auc_regression_margin` below the current model's",
)


def _evaluation(key: str, name: str, problems: list[str], severity=dg.AssetCheckSeverity.ERROR):
    return dg.AssetCheckEvaluation(
        asset_key=dg.AssetKey("features"),
        check_name=name,
        partition=key,
        passed=not problems,
        severity=severity,
        metadata={
            "problems": len(problems),
            "details": dg.MetadataValue.md("\n".join(f"- {problem}" for problem in problems[:50]) or "none"),
        },
    )


def feature_check_evaluations(key: str, features, masks, usual_counts: dict[str, int], min_roi_voxels: int):
    """The three feature checks of one patient partition (AssetCheckResult has no partition: evaluations)."""
    yield _evaluation(key, "all_values_finite", non_finite_features(features))
    yield _evaluation(key, "feature_count_matches_parameter_set", feature_count_mismatches(features, usual_counts))
    yield _evaluation(key, "roi_large_enough", small_rois(masks, min_roi_voxels), dg.AssetCheckSeverity.WARN)


def primary_metric_not_regressed(decision: Decision) -> dg.AssetCheckResult:
    """Check result of the registry's promotion decision; ERROR severity when the policy blocks promotion."""
    blocking = decision.policy == "block"
    return dg.AssetCheckResult(
        check_name="primary_metric_not_regressed",
        passed=not decision.regressed,
        severity=dg.AssetCheckSeverity.ERROR if blocking else dg.AssetCheckSeverity.WARN,
        description=decision.summary(),
        metadata={
            "metric": decision.metric,
            "new_value": rounded(decision.cv_value),
            "previous_value": rounded(decision.previous_value),
            "previous_version": decision.previous_version or "",
            "margin": decision.margin,
            "policy": decision.policy,
            "promoted": decision.promoted,
            "current_version": decision.current_version,
        },
    )
