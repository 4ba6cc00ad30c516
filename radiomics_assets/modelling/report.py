"""Validation report: ``metrics.json`` and a self-contained ``report.html`` (plots embedded as PNG)."""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from sklearn.calibration import calibration_curve
from sklearn.metrics import precision_recall_curve, roc_curve

from radiomics_assets.modelling.matrix import external_test_set, missing_data_summary, training_set
from radiomics_assets.modelling.selection import selected_columns, selection_scores
from radiomics_assets.modelling.training import THRESHOLD, load_model, load_validation, robustness_report, score
from radiomics_assets.modelling.validation import binary_metrics, compare_candidates, expected_null_sd, metrics
from radiomics_assets.paths import DataRoot
from radiomics_assets.warehouse import Warehouse


def _figure(width: float, height: float):
    """A figure with one axes, not registered with pyplot: headless, nothing global to close or to switch."""
    fig = Figure(figsize=(width, height))
    return fig, fig.subplots()


def _png(fig: Figure) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode()


def roc_png(
    y: np.ndarray, p: np.ndarray, auc: float, ci: tuple[float, float] | None = None, title: str = "ROC (out-of-fold)"
) -> str:
    fpr, tpr, _ = roc_curve(y, p)
    fig, ax = _figure(4, 4)
    ax.plot(fpr, tpr, label=f"AUC {auc:.3f}" + (f" (95% CI {ci[0]:.2f} to {ci[1]:.2f})" if ci else ""))
    ax.plot([0, 1], [0, 1], "--", color="grey", label="chance")
    ax.set(xlabel="1 - specificity", ylabel="sensitivity", title=title)
    ax.legend(loc="lower right")
    return _png(fig)


def pr_png(y: np.ndarray, p: np.ndarray, average_precision: float) -> str:
    precision, recall, _ = precision_recall_curve(y, p)
    fig, ax = _figure(4, 4)
    ax.plot(recall, precision, label=f"average precision {average_precision:.3f}")
    ax.axhline(float(np.mean(y)), ls="--", color="grey", label="prevalence")
    ax.set(xlabel="recall", ylabel="precision", title="Precision-recall", ylim=(0, 1.05))
    ax.legend(loc="lower left")
    return _png(fig)


def calibration_png(y: np.ndarray, p: np.ndarray, brier: float) -> str:
    observed, predicted = calibration_curve(y, p, n_bins=5, strategy="quantile")
    fig, ax = _figure(4, 4)
    ax.plot(predicted, observed, "o-", label=f"Brier score {brier:.3f}")
    ax.plot([0, 1], [0, 1], "--", color="grey", label="perfect calibration")
    ax.set(xlabel="mean predicted probability", ylabel="observed fraction positive", title="Calibration")
    ax.legend(loc="upper left")
    return _png(fig)


def confusion_png(cm: dict, threshold: float) -> str:
    matrix = np.array([[cm["tn"], cm["fp"]], [cm["fn"], cm["tp"]]])
    fig, ax = _figure(3.5, 3.5)
    ax.imshow(matrix, cmap="Blues")
    for (i, j), v in np.ndenumerate(matrix):
        ax.text(j, i, str(v), ha="center", va="center", fontsize=14)
    ax.set(
        xticks=[0, 1],
        yticks=[0, 1],
        xticklabels=["pred 0", "pred 1"],
        yticklabels=["true 0", "true 1"],
        title=f"Confusion matrix (threshold {threshold})",
    )
    return _png(fig)


def _img(alt: str, png: str) -> str:
    return f'<img alt="{alt}" src="data:image/png;base64,{png}">'


def _plots(y: np.ndarray, p: np.ndarray, m: dict, what: str, roc: str | None = None) -> str:
    """The four plots of one set of predictions; ``roc``: the ROC image when it is already drawn."""
    roc = roc or roc_png(y, p, m["auc"], (m["auc_ci_low"], m["auc_ci_high"]), f"ROC ({what})")
    return (
        '<div class="plots">'
        + _img(f"ROC curve ({what})", roc)
        + _img(f"precision-recall curve ({what})", pr_png(y, p, m["average_precision"]))
        + _img(f"calibration curve ({what})", calibration_png(y, p, m["brier"]))
        + _img(f"confusion matrix ({what})", confusion_png(m["confusion_matrix"], m["threshold"]))
        + "</div>"
    )


def _f(value, digits: int = 3) -> str:
    return "n/a" if value is None or (isinstance(value, float) and np.isnan(value)) else f"{value:.{digits}f}"


def _headline_table(m: dict) -> str:
    cm = m["confusion_matrix"]
    rows = [
        ("Patients", f"{m['n_patients']} ({m['n_positive']} positive, {m['n_negative']} negative)"),
        (
            f"AUC (95 % CI, {m.get('n_bootstrap', 'n/a')} bootstrap resamples of patients)",
            f"{_f(m['auc'])} ({_f(m['auc_ci_low'])} to {_f(m['auc_ci_high'])})",
        ),
        ("Average precision (area under the PR curve)", _f(m["average_precision"])),
        ("Brier score (0 is perfect; always 0.5 scores 0.25)", _f(m["brier"])),
        (
            "Calibration slope (1 ideal) / intercept (0 ideal)",
            f"{_f(m.get('calibration_slope'))} / {_f(m.get('calibration_intercept'))}",
        ),
        (f"Accuracy at threshold {m['threshold']}", _f(m["accuracy"])),
        ("Precision (positive predictive value)", _f(m["precision"])),
        ("Recall (sensitivity)", _f(m["recall"])),
        ("Specificity", _f(m["specificity"])),
        ("F1", _f(m["f1"])),
        ("Confusion matrix", f"TN {cm['tn']}, FP {cm['fp']}, FN {cm['fn']}, TP {cm['tp']}"),
    ]
    if m.get("auc_per_repeat"):
        spread = ", ".join(_f(a) for a in m["auc_per_repeat"])
        rows.insert(2, ("AUC of each CV repeat (mean of its folds)", f"{spread}"))
        rows.insert(3, ("SD of the AUC over the outer test folds", _f(m.get("auc_fold_sd"))))
        rows.insert(
            4, ("Pooled out-of-fold AUC (information only: biased below 0.5 under the null)", _f(m.get("auc_pooled")))
        )
    if m.get("permutation_p_value") is not None:
        rows.insert(2, ("Permutation p-value of the AUC (whole procedure)", _f(m["permutation_p_value"])))
    body = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows)
    return f"<table>{body}</table>"


def _comparison_table(metrics: dict) -> str:
    keys = ("auc", "auc_ci_low", "auc_ci_high", "auc_fold_sd", "average_precision", "brier")
    rows = "".join(
        f"<tr><td>{html.escape(m)}</td><td>{c.get('times_chosen', 0)}</td>"
        + "".join(f"<td>{_f(c.get(k))}</td>" for k in keys)
        + f"<td>{_f(c.get('auc_minus_procedure'))} ({_f(c.get('difference_ci_low'))} to "
        f"{_f(c.get('difference_ci_high'))}), p {_f(c.get('difference_p_value'))}</td></tr>"
        for m, c in metrics.get("model_comparison", {}).items()
    )
    return (
        "<table><tr><th>candidate</th><th>chosen in outer folds</th><th>CV AUC</th><th>CI low</th><th>CI high</th>"
        "<th>SD over folds</th><th>average precision</th><th>Brier</th>"
        f"<th>AUC minus the procedure's (95 % CI), paired bootstrap</th></tr>{rows}</table>"
    )


def _features_table(selected: list[dict]) -> str:
    rows = "".join(
        f"<tr><td><code>{html.escape(r['feature'])}</code></td><td>{_f(r['selection_frequency'], 2)}</td>"
        f"<td>{_f(r['selection_score'])}</td></tr>"
        for r in selected
    )
    return (
        "<table><tr><th>feature (<code>modality__roi__image type__class__name</code>)</th>"
        f"<th>share of outer CV fits that selected it</th><th>selection score</th></tr>{rows}</table>"
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


def decision_curve_png(curve: dict) -> str:
    fig, ax = _figure(4.5, 4)
    t = np.asarray(curve["threshold"])
    ax.plot(t, curve["model"], label="model (out-of-fold)")
    ax.plot(t, curve["treat_all"], "--", color="grey", label="treat all")
    ax.plot(t, curve["treat_none"], ":", color="black", label="treat none")
    top = max(max(curve["model"]), max(curve["treat_all"]), 0.01)
    ax.set(xlabel="threshold probability", ylabel="net benefit", title="Decision curve", ylim=(-0.05, top * 1.1))
    ax.legend(loc="upper right")
    return _png(fig)


def null_png(null_aucs: list[float], observed: float) -> str:
    fig, ax = _figure(4.5, 3.5)
    ax.hist(null_aucs, bins=min(20, max(5, len(null_aucs) // 2)), color="lightgrey", edgecolor="grey")
    ax.axvline(observed, color="C3", label=f"observed {observed:.3f}")
    ax.axvline(0.5, ls="--", color="black", label="chance")
    ax.set(xlabel="AUC of the procedure on permuted labels", ylabel="permutations", title="Permutation test")
    ax.legend(loc="upper left")
    return _png(fig)


def _permutation_html(permutation: dict) -> str:
    if not permutation or not permutation.get("n_permutations"):
        return "<p>No permutation test (setting <code>permutations</code> = 0).</p>"
    return (
        f"<p>The whole procedure (candidate choice, tuning, selection, fit, outer CV) was re-run on "
        f"{permutation['n_permutations']} random permutations of the labels. Null AUCs: mean "
        f"{_f(permutation['null_auc_mean'])}, SD {_f(permutation['null_auc_sd'])} (chance predicts SD "
        f"&asymp; {_f(permutation.get('expected_null_sd'))} for one repeat). <b>Permutation p-value "
        f"{_f(permutation['p_value'])}</b> = (1 + #null AUC &ge; observed {_f(permutation['observed_auc'])}) / "
        f"(1 + {permutation['n_permutations']}); the smallest possible is "
        f"{_f(1 / (1 + permutation['n_permutations']))}.</p>"
        + _img("permutation null distribution", null_png(permutation["null_aucs"], permutation["observed_auc"]))
    )


def _groups_html(groups: dict) -> str:
    if not groups:
        return "<p>No record of duplicate groups.</p>"
    text = (
        f"<p>{html.escape(groups['rule'])}. {len(groups['groups'])} group(s) of more than one patient; "
        f"{len(groups['excluded'])} patient(s) excluded from training because their group holds both labels"
        + (f": {html.escape(', '.join(groups['excluded']))}" if groups["excluded"] else "")
        + ".</p>"
    )
    if not groups["groups"]:
        return text
    rows = "".join(
        f"<tr><td>{html.escape(g['group'])}</td><td>{html.escape(', '.join(g['patients']))}</td>"
        f"<td>{html.escape(', '.join(map(str, g['labels'])))}</td>"
        f"<td>{'<b>yes: excluded</b>' if g['conflicting_labels'] else 'no'}</td>"
        f"<td>{html.escape('; '.join(g['links']))}</td></tr>"
        for g in groups["groups"]
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
        f"<tr><td><code>{html.escape(r['feature'])}</code></td><td>{_f(r['icc'])}</td>"
        f"<td>{r['n_perturbations']}</td></tr>"
        for r in rows
    )
    return (
        f"<p>ICC(1,1) of each feature over the perturbed re-extractions (all training patients); {use}.</p>"
        f"<table><tr><th>feature</th><th>ICC</th><th>perturbations</th></tr>{body}</table>"
    )


def _calibration_text(m: dict) -> str:
    return (
        f"Calibration slope {_f(m.get('calibration_slope'))} (1 is ideal; below 1: predictions too extreme), "
        f"calibration intercept {_f(m.get('calibration_intercept'))} (0 is ideal), by logistic recalibration of "
        "the out-of-fold probabilities."
    )


def write_report(
    out_dir: Path,
    metrics: dict,
    y: np.ndarray,
    p: np.ndarray,
    external: tuple[np.ndarray, np.ndarray] | None = None,
    *,
    gallery: str = "",
) -> dict:
    """Write both files; returns their paths and the ROC PNG (base64) for UI metadata.

    ``metrics`` is what ``cohort.validate`` assembles (it is also ``metrics.json``); ``y`` and ``p`` are the
    chosen model's out-of-fold labels and probabilities, ``external`` the test cohort's labels and scores.
    Plots are embedded as base64 PNG, so the page has no external reference and can be mailed as one file.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    roc = roc_png(y, p, metrics["auc"], (metrics["auc_ci_low"], metrics["auc_ci_high"]))
    external_html = "<p>No external test cohort (no <code>cohort=test</code> rows in labels.csv).</p>"
    if external is not None and "external" in metrics:
        ext = metrics["external"]
        external_html = (
            f"<p>The final model, trained on the training cohort only, scored once on the {ext['n_patients']} "
            "patients of the held-out test cohort (never used for selection, tuning or fitting).</p>"
            + _headline_table(ext)
            + (_plots(external[0], external[1], ext, "external test") if len(set(external[0])) == 2 else "")
        )
    params = ", ".join(f"{k} = {v}" for k, v in metrics.get("best_params", {}).items()) or "n/a"
    versions = ", ".join(f"{k} {v}" for k, v in metrics.get("library_versions", {}).items()) or "n/a"
    (out_dir / "report.html").write_text(f"""<!doctype html>
<html><head><meta charset="utf-8"><title>radiomics_assets validation report</title>
<style>body{{font-family:sans-serif;max-width:64em;margin:2em auto;line-height:1.4}}
table{{border-collapse:collapse;margin:0.5em 0}}
td,th{{padding:3px 0.8em;border-bottom:1px solid #ddd;text-align:left;vertical-align:top}}</style></head>
<body><h1>Validation report</h1>
<h2>Summary</h2>
<ul>
<li>Final model (the procedure fitted on all training patients): <b>{html.escape(str(metrics.get("model", "")))}</b>
(model id
<code>{html.escape(str(metrics.get("model_id", "")))}</code>), feature selection
<code>{html.escape(str(metrics.get("selection_method", "")))}</code>, tuned parameters: {html.escape(params)}.</li>
<li>Training cohort: {metrics["n_patients"]} patients, {metrics["n_positive"]} positive and
{metrics["n_negative"]} negative; {metrics["n_features_available"]} features available,
{metrics["n_features_selected"]} used by the final model.</li>
<li>Validation scheme: {html.escape(metrics["cv_scheme"])}. Every internal figure is out-of-fold: the whole
procedure (robustness filter, imputation, near-zero-variance filter, scaling, feature selection, classifier,
hyperparameters and the choice among candidates) was refitted inside each outer training fold, so no patient was
scored by a model, or a choice, that had seen it.</li>
<li>Threshold: a patient is called positive when the predicted probability is &ge; {metrics["threshold"]}, fixed
in advance (not tuned); it sets accuracy, precision, recall, specificity, F1 and the confusion matrix.</li>
</ul>
<h2>Cross-validated performance of the whole procedure</h2>
<p>Estimate: {html.escape(metrics.get("auc_estimator", ""))}. Threshold metrics, calibration and the decision curve
use each patient's out-of-fold probability averaged over the repeats.</p>
{_headline_table(metrics)}
{_plots(y, p, metrics, "out-of-fold", roc)}
<p>{_calibration_text(metrics)}</p>
{_img("decision curve (out-of-fold)", decision_curve_png(metrics["decision_curve"]))}
<h2>Permutation test</h2>
{_permutation_html(metrics.get("permutation", {}))}
<h2>Candidates (information, not an estimate of the chosen model)</h2>
<p>Each candidate's figures come from refitting its inner-CV-best parameters in every outer training set, on the
same splits. Choosing the best of these figures afterwards would be optimistic (the choice would be fitted to the
outer folds); the headline above evaluates the choice itself. The last column compares each candidate with the
procedure by a paired bootstrap of patients on the same out-of-fold predictions.</p>
{_comparison_table(metrics)}
<h2>Duplicate images and groups</h2>
{_groups_html(metrics.get("groups", {}))}
<h2>Feature robustness</h2>
{_robustness_html(metrics.get("feature_robustness"), metrics.get("robustness_icc_threshold", 0.0))}
<h2>External validation</h2>
{external_html}
<h2>Features used by the final model</h2>
{_features_table(metrics.get("selected_features", []))}
<h2>Missing modalities and ROIs</h2>
{_missing_data(metrics.get("missing_data", {}))}
{gallery}
<h2>Library versions</h2>
<p>{html.escape(versions)}</p>
</body></html>
""")
    return {"metrics_path": out_dir / "metrics.json", "report_path": out_dir / "report.html", "roc_png": roc}


def validate(root: DataRoot, seed: int = 0) -> dict:
    """Report of the procedure's outer CV, its permutation test, the candidates, the groups and the test cohort."""
    warehouse = Warehouse(root.warehouse)
    X, _ = training_set(warehouse)
    stored = load_validation(root)
    cv, permutation, groups, settings = stored.cv, stored.permutation, stored.groups, stored.settings
    figures = metrics(cv, threshold=THRESHOLD, seed=seed)
    saved = load_model(root)
    selected = selected_columns(saved.pipeline, saved.feature_columns)
    scores = selection_scores(saved.pipeline, saved.feature_columns)
    card_path = root.models / "model_card.json"
    card = json.loads(card_path.read_text()) if card_path.exists() else {}
    figures["model"] = saved.model
    figures["model_id"] = saved.model_id
    figures["selection_method"] = saved.selection
    figures["best_params"] = saved.best_params
    figures["chosen_per_outer_fold"] = cv.chosen
    figures["n_features_selected"] = len(selected)
    figures["n_features_available"] = int(X.shape[1])
    figures["selected_features"] = [
        {"feature": f, "selection_frequency": cv.selection_frequency.get(f, 0.0), "selection_score": scores[f]}
        for f in selected
    ]
    figures["missing_data"] = missing_data_summary(warehouse)
    figures["library_versions"] = card.get("library_versions", {})
    figures["model_comparison"] = compare_candidates(cv, n_bootstrap=1000, seed=seed)
    figures["permutation"] = {**permutation, "expected_null_sd": expected_null_sd(cv.y, cv.fold_of)}
    figures["permutation_p_value"] = permutation.get("p_value")
    figures["groups"] = {
        "rule": "patients share a group when a stored image has the same content hash, when perceptual hashes "
        f"differ by <= {settings.duplicate_max_distance} of 64 bits, or when labels.csv gives the same "
        f"'{settings.group_column}'; groups stay in one CV fold (outer and inner)",
        "groups": groups.table,
        "excluded": groups.excluded,
        "notes": groups.notes,
    }
    robustness = robustness_report(warehouse)
    figures["robustness_icc_threshold"] = settings.robustness_icc_threshold
    figures["feature_robustness"] = None if robustness is None else robustness.to_dict(orient="records")
    X_test, y_test = external_test_set(warehouse)
    external = None
    if len(y_test):
        p_test = score(saved, X_test)
        figures["external"] = binary_metrics(y_test.to_numpy(), p_test, saved.threshold, seed=seed)
        external = (y_test.to_numpy(), p_test)
    written = write_report(root.reports, figures, cv.y, cv.probabilities, external, gallery=gallery_html(root))
    return {**figures, **written}


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
            WHERE l.cohort = 'train' ORDER BY l.label_name, m.patient_id, m.roi"""
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
