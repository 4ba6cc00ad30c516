"""Validation report: ``metrics.json`` and a self-contained ``report.html`` (plots embedded as PNG)."""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: reports are rendered on servers without a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.calibration import calibration_curve  # noqa: E402
from sklearn.metrics import precision_recall_curve, roc_curve  # noqa: E402


def _png(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode()


def roc_png(y: np.ndarray, p: np.ndarray, auc: float) -> str:
    fpr, tpr, _ = roc_curve(y, p)
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.plot(fpr, tpr, label=f"cross-validated AUC {auc:.3f}")
    ax.plot([0, 1], [0, 1], "--", color="grey", label="chance")
    ax.set(xlabel="1 - specificity", ylabel="sensitivity", title="ROC (out-of-fold)")
    ax.legend(loc="lower right")
    return _png(fig)


def pr_png(y: np.ndarray, p: np.ndarray, average_precision: float) -> str:
    precision, recall, _ = precision_recall_curve(y, p)
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.plot(recall, precision, label=f"average precision {average_precision:.3f}")
    ax.axhline(float(np.mean(y)), ls="--", color="grey", label="prevalence")
    ax.set(xlabel="recall", ylabel="precision", title="Precision-recall", ylim=(0, 1.05))
    ax.legend(loc="lower left")
    return _png(fig)


def calibration_png(y: np.ndarray, p: np.ndarray, brier: float) -> str:
    observed, predicted = calibration_curve(y, p, n_bins=5, strategy="quantile")
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.plot(predicted, observed, "o-", label=f"Brier score {brier:.3f}")
    ax.plot([0, 1], [0, 1], "--", color="grey", label="perfect calibration")
    ax.set(xlabel="mean predicted probability", ylabel="observed fraction positive", title="Calibration")
    ax.legend(loc="upper left")
    return _png(fig)


def _table(metrics: dict) -> str:
    return "".join(
        f"<tr><td>{html.escape(k)}</td><td>{v:.3f}</td></tr>" if isinstance(v, float)
        else f"<tr><td>{html.escape(k)}</td><td>{html.escape(str(v))}</td></tr>"
        for k, v in metrics.items() if k not in ("confusion_matrix", "external", "model_comparison")
    )  # fmt: skip


def _plots(y: np.ndarray, p: np.ndarray, m: dict, what: str) -> str:
    return (
        f'<h3>ROC ({what})</h3><img alt="ROC curve" src="data:image/png;base64,{roc_png(y, p, m["auc"])}">'
        f'<h3>Precision-recall</h3><img alt="PR curve" src="data:image/png;base64,'
        f'{pr_png(y, p, m["average_precision"])}">'
        f'<h3>Calibration</h3><img alt="calibration" src="data:image/png;base64,{calibration_png(y, p, m["brier"])}">'
        f'<h3>Confusion matrix</h3><img alt="confusion matrix" src="data:image/png;base64,'
        f'{confusion_png(m["confusion_matrix"], m["threshold"])}">'
    )


def confusion_png(cm: dict, threshold: float) -> str:
    matrix = np.array([[cm["tn"], cm["fp"]], [cm["fn"], cm["tp"]]])
    fig, ax = plt.subplots(figsize=(3.5, 3.5))
    ax.imshow(matrix, cmap="Blues")
    for (i, j), v in np.ndenumerate(matrix):
        ax.text(j, i, str(v), ha="center", va="center", fontsize=14)
    ax.set(xticks=[0, 1], yticks=[0, 1], xticklabels=["pred 0", "pred 1"], yticklabels=["true 0", "true 1"],
           title=f"Confusion matrix (threshold {threshold})")  # fmt: skip
    return _png(fig)


def write_report(out_dir: Path, metrics: dict, y: np.ndarray, p: np.ndarray, selected: list[str],
                 external: tuple[np.ndarray, np.ndarray] | None = None) -> dict:  # fmt: skip
    """Write both files; returns their paths and the ROC PNG (base64) for UI metadata."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    roc = roc_png(y, p, metrics["auc"])
    comparison = "".join(
        f"<tr><td>{html.escape(m)}{' (chosen)' if m == metrics.get('model') else ''}</td>"
        + "".join(f"<td>{c.get(k, float('nan')):.3f}</td>" for k in ("auc", "auc_ci_low", "auc_ci_high",
                                                                   "auc_repeat_sd", "average_precision", "brier"))
        + "</tr>"
        for m, c in metrics.get("model_comparison", {}).items()
    )  # fmt: skip
    external_html = "<p>No external test cohort (no <code>cohort=test</code> rows in labels.csv).</p>"
    if external is not None and "external" in metrics:
        ext = metrics["external"]
        external_html = (
            "<p>The final model, trained on the training cohort only, scored once on the held-out test cohort.</p>"
            f"<table>{_table(ext)}</table>"
            + (_plots(external[0], external[1], ext, "external test") if len(set(external[0])) == 2 else "")
        )
    features = "".join(f"<li><code>{html.escape(f)}</code></li>" for f in selected)
    (out_dir / "report.html").write_text(f"""<!doctype html>
<html><head><meta charset="utf-8"><title>radiomics_assets validation report</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:2em auto}}td,th{{padding:2px 1em}}</style></head>
<body><h1>Validation report</h1>
<p>All internal figures are cross-validated: out-of-fold predictions of a pipeline (imputation, scaling,
feature selection, classifier) refitted and tuned in every outer fold, averaged over the CV repeats.
Threshold metrics use probability &ge; {metrics["threshold"]}.</p>
<table>{_table(metrics)}</table>
<h2>Model comparison (nested CV, same splits)</h2>
<table><tr><th>model</th><th>AUC</th><th>CI low</th><th>CI high</th><th>SD over repeats</th><th>AP</th>
<th>Brier</th></tr>{comparison}</table>
<h2>Chosen model: cross-validated curves</h2>{_plots(y, p, metrics, "out-of-fold")}
<h2>External validation</h2>{external_html}
<h2>Features chosen by the final model</h2><ul>{features}</ul>
</body></html>
""")
    return {"metrics_path": out_dir / "metrics.json", "report_path": out_dir / "report.html", "roc_png": roc}
