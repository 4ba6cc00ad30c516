"""Validation report rendering: ``metrics.json`` and a self-contained ``report.html`` (plots embedded as PNG), for
every outcome type, from a :class:`~radiomics_assets.modelling.validation_report.ValidationReport` (built by
``validation_report.build_validation_report``). The frame (summary, predictor comparison, permutation test,
candidates, groups, robustness, external cohort, features, missing data) is written here once; each task writes its
own figures (``tasks.<type>.report_html``)."""

from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from radiomics_assets.modelling.checklist import (
    checklist_html,
    clear_checklist,
    cohort_html,
    extraction_html,
    imaging_html,
    outcome_text,
    predictors_text,
    sample_size_html,
)
from radiomics_assets.modelling.plots import fmt, img, null_png
from radiomics_assets.modelling.report_pdf import print_report_pdf
from radiomics_assets.modelling.tasks import Task
from radiomics_assets.paths import DataRoot
from radiomics_assets.warehouse import Warehouse

if TYPE_CHECKING:
    from radiomics_assets.modelling.validation import PredictorComparison
    from radiomics_assets.modelling.validation_report import (
        DuplicateGroups,
        PermutationTest,
        SelectedFeature,
        ValidationReport,
    )


@dataclass(frozen=True)
class ReportFiles:
    """What :func:`write_report` wrote."""

    metrics_path: Path
    report_path: Path
    plot_png: str
    """The task's main plot (base64 PNG) for the UI: binary the ROC, survival Kaplan-Meier, ..."""
    checklist_path: Path | None = None
    pdf_path: Path | None = None
    """``report.pdf``, printed by a headless browser (``report_pdf``); None without one."""
    pdf_note: str = ""
    """How the PDF was printed, or why there is none."""


def _comparison_table(model_comparison: dict[str, dict], task: Task) -> str:
    name = task.primary_metric
    keys = (name, f"{name}_ci_low", f"{name}_ci_high", f"{name}_fold_sd", "average_precision", "brier")
    shown = [k for k in keys if any(k in c for c in model_comparison.values())]
    rows = "".join(
        f"<tr><td>{html.escape(m)}</td><td>{c.get('times_chosen', 0)}</td>"
        + "".join(f"<td>{fmt(c.get(k))}</td>" for k in shown)
        + f"<td>{fmt(c.get(f'{name}_minus_procedure'))} ({fmt(c.get('difference_ci_low'))} to "
        f"{fmt(c.get('difference_ci_high'))}), p {fmt(c.get('difference_p_value'))}</td></tr>"
        for m, c in model_comparison.items()
    )
    header = "".join(f"<th>{html.escape(k.replace(name, task.metric_label))}</th>" for k in shown)
    return (
        f"<table><tr><th>candidate</th><th>chosen in outer folds</th>{header}"
        f"<th>{html.escape(task.metric_label)} minus the procedure's (95 % CI), paired bootstrap</th></tr>"
        f"{rows}</table>"
    )


def _features_note(report: ValidationReport) -> str:
    if report.n_features_used <= report.n_features_selected:
        return ""
    return (
        f"<p>The final model's random forest member reads all {report.n_features_used} predictors; listed are the "
        f"{report.n_features_selected} its linear member's filter chose in the final fit, with how often that filter "
        "chose each in the outer cross-validation fits (the stability of the choice).</p>"
    )


def _features_table(selected: list[SelectedFeature]) -> str:
    rows = "".join(
        f"<tr><td><code>{html.escape(r.feature)}</code></td><td>{fmt(r.selection_frequency, 2)}</td>"
        f"<td>{fmt(r.selection_score)}</td></tr>"
        for r in selected
    )
    return (
        "<table><tr><th>feature (<code>modality__roi__image type__class__name</code>)</th>"
        f"<th>share of outer CV fits whose selection chose it</th><th>selection score</th></tr>{rows}</table>"
    )


def _missing_data(missing: dict) -> str:
    if not missing:
        return "<p>No record of missing modalities (the feature matrix was written without gap tracking).</p>"
    text = f"<p>Policy: {html.escape(missing['policy'])}.</p>"
    if not missing["gaps"]:
        return text + "<p>Every patient has every modality/ROI block: nothing was imputed or excluded.</p>"
    rows = "".join(
        f"<tr><td><code>{html.escape(g['block'])}</code></td><td>{g['n_patients']}</td>"
        f"<td>{html.escape(g['handling'])}</td><td>{html.escape(', '.join(g['patients']))}</td></tr>"
        for g in missing["gaps"]
    )
    return text + (
        f"<table><tr><th>missing block</th><th>patients</th><th>handling</th><th>patient keys</th></tr>{rows}</table>"
    )


def _permutation_html(permutation: PermutationTest, task: Task) -> str:
    if not permutation.n_permutations or permutation.observed is None:
        return "<p>No permutation test (setting <code>permutations</code> = 0).</p>"
    label, n = task.metric_label, permutation.n_permutations
    expected = permutation.expected_null_sd
    return (
        f"<p>The whole procedure (candidate choice, tuning, selection, fit, outer CV) was re-run on "
        f"{n} random permutations of the outcome (between groups"
        + ("; follow-up time and event permuted together" if task.kind.value == "survival" else "")
        + f"). Null {html.escape(label)}: mean {fmt(permutation.null_mean)}, SD {fmt(permutation.null_sd)}"
        + (f" (chance predicts SD &asymp; {fmt(expected)} for one repeat)" if expected is not None else "")
        + f"; chance level {fmt(task.chance_level)}. <b>Permutation p-value {fmt(permutation.p_value)}</b> = (1 + "
        f"#null &ge; observed {fmt(permutation.observed)}) / (1 + {n}); the smallest possible is {fmt(1 / (1 + n))}"
        + (
            f"; the test took {fmt(permutation.seconds, 1)} s with {permutation.n_jobs} process(es)"
            if permutation.seconds is not None
            else ""
        )
        + ".</p>"
        + (
            f"<p><b>The test stopped at its time budget</b> ({fmt(permutation.time_budget_seconds, 0)} s, "
            f"setting <code>permutation_seconds</code>) after {n} of {permutation.n_permutations_requested} "
            "permutations: the p-value is exact for the permutations done (when to stop depended on the clock, not "
            "on the null values), but cannot fall below the smallest value above; raise the budget for a smaller "
            "one.</p>"
            if permutation.stopped_by_time_budget
            else ""
        )
        + img(
            "permutation null distribution",
            null_png(permutation.null_values, permutation.observed, task.chance_level, label),
        )
    )


def _groups_html(groups: DuplicateGroups) -> str:
    text = (
        f"<p>{html.escape(groups.rule)}. {len(groups.groups)} group(s) of more than one patient; "
        f"{len(groups.excluded)} patient(s) excluded from training because their group holds both labels"
        + (f": {html.escape(', '.join(groups.excluded))}" if groups.excluded else "")
        + ".</p>"
    )
    if not groups.groups:
        return text
    rows = "".join(
        f"<tr><td>{html.escape(g['group'])}</td><td>{html.escape(', '.join(g['patients']))}</td>"
        f"<td>{html.escape(', '.join(map(str, g['labels'])))}</td>"
        f"<td>{'<b>yes: excluded</b>' if g['conflicting_labels'] else 'no'}</td>"
        f"<td>{html.escape('; '.join(g['links']))}</td></tr>"
        for g in groups.groups
    )
    return text + (
        "<table><tr><th>group</th><th>patients</th><th>labels</th><th>conflicting labels</th><th>links</th></tr>"
        f"{rows}</table>"
    )


def _robustness_html(rows: list[dict] | None, threshold: float) -> str:
    if rows is None:
        return "<p>No perturbation data (asset <code>feature_robustness</code> not materialised).</p>"
    use = (
        f"features with ICC &lt; {threshold} were dropped inside every outer training fold and the final fit "
        "(ICC computed on those training patients only)"
        if threshold > 0
        else "the filter is off (robustness_icc_threshold = 0): shown for information"
    )
    body = "".join(
        f"<tr><td><code>{html.escape(r['feature'])}</code></td><td>{fmt(r['icc'])}</td>"
        f"<td>{r['n_perturbations']}</td></tr>"
        for r in rows
    )
    return (
        f"<p>ICC(1,1) of each feature over the perturbed re-extractions (all training patients); {use}.</p>"
        f"<table><tr><th>feature</th><th>ICC</th><th>perturbations</th></tr>{body}</table>"
    )


def _headline_sentence(report: ValidationReport, task: Task) -> str:
    primary = report.primary
    text = (
        f'<p style="font-size:1.2em"><b>{html.escape(task.metric_label)} {fmt(primary.value)} (95 % CI '
        f"{fmt(primary.ci_low)} to {fmt(primary.ci_high)})</b>, cross-validated over the whole procedure; "
        f"chance is {fmt(primary.chance)}"
    )
    if report.permutation_p_value is not None:
        text += f"; permutation p-value {fmt(report.permutation_p_value)}"
        n = report.permutation.n_permutations
        if n and report.permutation_p_value <= 1 / (1 + n) + 1e-12:
            text += f" (the smallest {n} permutations can give"
            text += ", stopped by the time budget)" if report.permutation.stopped_by_time_budget else ")"
    return text + ".</p>"


def _predictors_html(comparison: PredictorComparison | None, task: Task) -> str:
    """The reviewer's first question: does radiomics add to the clinical model? With a number and its CI."""
    if comparison is None:
        return ""
    gain = comparison.gain
    verdict = (
        "adds to the clinical model (the CI of the gain lies above 0)"
        if gain["ci_low"] > 0
        else "does not add measurably to the clinical model (the CI of the gain includes 0)"
        if gain["ci_high"] >= 0
        else "makes the clinical model worse (the CI of the gain lies below 0)"
    )
    rows = "".join(
        f"<tr><td>{label}</td><td>{fmt(figures['value'])}</td><td>{fmt(figures['ci_low'])} to "
        f"{fmt(figures['ci_high'])}</td></tr>"
        for figures, label in (
            (comparison.clinical, "clinical covariates only"),
            (comparison.radiomics, "radiomics features only"),
            (comparison.both, "clinical + radiomics (the kept model)"),
        )
    )
    return (
        f'<div style="border:2px solid #446;padding:0.5em 1em;margin:1em 0"><p style="font-size:1.2em"><b>Does '
        f"radiomics add to the clinical model? Gain in {html.escape(task.metric_label)} of clinical + radiomics over "
        f"clinical only: {fmt(gain['value'])} (95 % CI {fmt(gain['ci_low'])} to {fmt(gain['ci_high'])}, paired "
        f"bootstrap of patients, p {fmt(gain.get('p_value'))})</b>: radiomics {verdict}.</p>"
        f"<table><tr><th>predictors</th><th>{html.escape(task.metric_label)}</th><th>95 % CI</th></tr>{rows}</table>"
        "<p>All three are the whole procedure (choice, tuning, selection inside the folds) on the same outer splits. "
        "In the combined model the covariates are always in (imputed, standardised or one-hot encoded inside the "
        "folds) and the inner CV may choose zero radiomics features, so adding radiomics is never forced on it.</p>"
        "</div>"
    )


def _outcome_text(report: ValidationReport) -> str:
    what = outcome_text(report.task, report.study.get("outcome", {}))
    covariates = report.study.get("covariates", {})
    names = covariates.get("numeric", []) + covariates.get("categorical", [])
    return (
        f"{what}; covariates: {', '.join(names) or 'none'}; predictors: {report.study.get('predictors', 'radiomics')}; "
        f"study from {report.study.get('source', '')}"
    )


def write_report(
    out_dir: Path,
    report: ValidationReport,
    task: Task,
    cv,
    external: tuple[np.ndarray, np.ndarray] | None = None,
    *,
    gallery: str = "",
) -> ReportFiles:
    """Write ``metrics.json`` (:meth:`ValidationReport.as_json`), ``checklist.json`` and ``report.html``.

    ``cv`` is the procedure's cross-validation, ``external`` the test cohort's outcomes and predictions. Plots are
    embedded as base64 PNG, so the page has no external reference and can be mailed as one file. The task's
    figures and the reviewer's sections render from the ``metrics.json`` mapping, so page and file cannot differ.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics = report.as_json()
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, default=_json_default))
    checklist = clear_checklist(metrics) if "cohort_flow" in metrics else None
    if checklist is not None:
        (out_dir / "checklist.json").write_text(json.dumps(checklist, indent=2, default=_json_default))
    body = task.report_html(metrics, cv)
    external_html = "<p>No external test cohort (no <code>cohort=test</code> rows in labels.csv).</p>"
    if external is not None and report.external is not None:
        external_html = (
            f"<p>The final model, trained on the training cohort only, scored once on the "
            f"{report.external['n_patients']} patients of the held-out test cohort (never used for selection, "
            "tuning or fitting).</p>" + task.external_html(report.external, external[0], external[1])
        )
    params = ", ".join(f"{k} = {v}" for k, v in report.best_params.items()) or "n/a"
    versions = ", ".join(f"{k} {v}" for k, v in report.library_versions.items()) or "n/a"
    counts = _counts_text(report.cohort)
    (out_dir / "report.html").write_text(f"""<!doctype html>
<html><head><meta charset="utf-8"><title>radiomics_assets validation report</title>
<style>body{{font-family:sans-serif;max-width:64em;margin:2em auto;line-height:1.4}}
table{{border-collapse:collapse;margin:0.5em 0}}
td,th{{padding:3px 0.8em;border-bottom:1px solid #ddd;text-align:left;vertical-align:top}}
pre{{white-space:pre-wrap;background:#f6f6f6;padding:0.5em;font-size:0.85em}}
@media print{{body{{max-width:none;margin:0;font-size:10pt}}h2{{break-after:avoid}}
table,figure,img,pre{{break-inside:avoid}}img{{max-width:100%}}a{{color:inherit;text-decoration:none}}
@page{{size:A4;margin:15mm}}}}</style></head>
<body><h1>Validation report</h1>
<h2 id="summary">Summary</h2>
{_headline_sentence(report, task)}
{_predictors_html(report.comparison, task)}
<ul>
<li>Outcome: {html.escape(_outcome_text(report))}.</li>
<li>Final model (the procedure fitted on all training patients): <b>{html.escape(report.model)}</b>
(model id <code>{html.escape(report.model_id)}</code>), feature selection
<code>{html.escape(str(report.selection_method))}</code>, parameters of the final fit (chosen by the inner CV only
where a candidate's grid has more than one value): {html.escape(params)}.</li>
<li>Training cohort: {report.n_patients} patients ({html.escape(counts)});
{report.excluded_no_outcome} patient(s) of labels.csv left out for a missing outcome;
{html.escape(predictors_text(report.n_features_available, report.n_features_used, report.n_features_selected))}.</li>
<li>Validation scheme: {html.escape(report.cv_scheme)}. Every internal figure is out-of-fold: the whole
procedure (robustness filter, imputation, near-zero-variance filter, scaling, covariate encoding, feature selection,
model, hyperparameters and the choice among candidates) was refitted inside each outer training fold, so no patient
was scored by a model, or a choice, that had seen it.</li>
</ul>
{cohort_html(metrics)}
{imaging_html(metrics)}
{extraction_html(metrics)}
{sample_size_html(metrics)}
<h2 id="performance">Cross-validated performance of the whole procedure</h2>
{body}
<h2 id="permutation">Permutation test</h2>
{_permutation_html(report.permutation, task)}
<h2 id="candidates">Candidates (information, not an estimate of the chosen model)</h2>
<p>Each candidate's figures come from refitting its inner-CV-best parameters in every outer training set, on the
same splits. Choosing the best of these figures afterwards would be optimistic (the choice would be fitted to the
outer folds); the headline above evaluates the choice itself. The last column compares each candidate with the
procedure by a paired bootstrap of patients on the same out-of-fold predictions.</p>
{_comparison_table(report.model_comparison, task)}
<h2 id="groups">Duplicate images and groups</h2>
{_groups_html(report.groups)}
<h2 id="robustness">Feature robustness</h2>
{_robustness_html(report.feature_robustness, report.robustness_icc_threshold)}
<h2 id="external">External validation</h2>
{external_html}
<h2 id="features">Predictors chosen by the final model's selection</h2>
{_features_note(report)}
{_features_table(report.selected_features)}
<h2 id="missing">Missing modalities and ROIs</h2>
{_missing_data(report.missing_data)}
{gallery}
<h2>Library versions</h2>
<p>{html.escape(versions)}</p>
{checklist_html(checklist) if checklist is not None else ""}
</body></html>
""")
    pdf = print_report_pdf(out_dir / "report.html")
    return ReportFiles(
        metrics_path=out_dir / "metrics.json",
        report_path=out_dir / "report.html",
        plot_png=_first_image(body),
        checklist_path=out_dir / "checklist.json" if checklist is not None else None,
        pdf_path=pdf.path,
        pdf_note=pdf.note,
    )


def _counts_text(cohort: dict) -> str:
    """``15 positive, 15 negative`` / ``120 events, 80 censored`` / ``G1 20, G2 18, G3 22`` / ``mean 1.2, SD 0.4``."""
    parts = []
    for key, value in cohort.items():
        if key == "n_patients":
            continue
        if isinstance(value, dict):
            parts += [f"{name} {n}" for name, n in value.items()]
        elif isinstance(value, float):
            parts.append(f"{key.replace('n_', '')} {value:.3g}")
        else:
            parts.append(f"{value} {key.replace('n_', '')}")
    return ", ".join(parts)


def _first_image(body: str) -> str:
    marker = "data:image/png;base64,"
    start = body.find(marker)
    return body[start + len(marker) : body.index('"', start)] if start >= 0 else ""


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


GALLERY_PER_CLASS = 3


def gallery_html(root: DataRoot, per_class: int = GALLERY_PER_CLASS) -> str:
    """A section of mask outlines over their images for the first ``per_class`` labelled patients of each class.

    Each picture names the patient key, the ROI and where the mask came from (``file``, ``rtstruct``,
    ``auto:ultrasound``, ...), so a reader sees what was measured. A picture whose files are gone is left out.
    """
    import SimpleITK as sitk

    from radiomics_assets.pictures import mask_outline_png

    with Warehouse(root.warehouse).connect() as con:
        rows = con.execute(
            """SELECT l.label_name, m.patient_id, m.roi, m.source_kind, m.mask_path, s.volume_path
            FROM masks m JOIN series s USING (patient_id, series_uid) JOIN labels l USING (patient_id)
            WHERE l.cohort = 'train' AND l.label_name IS NOT NULL ORDER BY l.label_name, m.patient_id, m.roi"""
        ).fetchall()
    figures, shown, per_label = [], set(), {}
    for label_name, key, roi, kind, mask_path, volume_path in rows:
        if per_label.get(label_name, 0) >= per_class or key in shown:
            continue
        try:
            png = mask_outline_png(sitk.ReadImage(volume_path), sitk.ReadImage(mask_path), size_px=160)
        except (RuntimeError, ValueError):
            continue
        shown.add(key)
        per_label[label_name] = per_label.get(label_name, 0) + 1
        caption = html.escape(f"{label_name}: {key}, ROI {roi} ({kind})")
        figures.append(
            f'<figure style="display:inline-block;margin:0.3em"><img alt="{caption}" '
            f'src="data:image/png;base64,{base64.b64encode(png).decode()}"><figcaption>{caption}</figcaption></figure>'
        )
    if not figures:
        return ""
    return (
        "<h2>Masks</h2><p>The lesion masks features were extracted from, outlined in red over their images (the "
        f"largest lesion slice of a volume), for up to {per_class} training patients per class.</p>" + "".join(figures)
    )
