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
from sklearn.metrics import roc_curve  # noqa: E402


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


def confusion_png(cm: dict, threshold: float) -> str:
    matrix = np.array([[cm["tn"], cm["fp"]], [cm["fn"], cm["tp"]]])
    fig, ax = plt.subplots(figsize=(3.5, 3.5))
    ax.imshow(matrix, cmap="Blues")
    for (i, j), v in np.ndenumerate(matrix):
        ax.text(j, i, str(v), ha="center", va="center", fontsize=14)
    ax.set(xticks=[0, 1], yticks=[0, 1], xticklabels=["pred 0", "pred 1"], yticklabels=["true 0", "true 1"],
           title=f"Confusion matrix (threshold {threshold})")  # fmt: skip
    return _png(fig)


def write_report(out_dir: Path, metrics: dict, y: np.ndarray, p: np.ndarray, selected: list[str]) -> dict:
    """Write both files; returns their paths and the ROC PNG (base64) for UI metadata."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    roc = roc_png(y, p, metrics["auc"])
    cm = confusion_png(metrics["confusion_matrix"], metrics["threshold"])
    table = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{v:.3f}</td></tr>" if isinstance(v, float)
        else f"<tr><td>{html.escape(k)}</td><td>{html.escape(str(v))}</td></tr>"
        for k, v in metrics.items() if k != "confusion_matrix"
    )  # fmt: skip
    features = "".join(f"<li><code>{html.escape(f)}</code></li>" for f in selected)
    (out_dir / "report.html").write_text(f"""<!doctype html>
<html><head><meta charset="utf-8"><title>radiomics_assets validation report</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:2em auto}}td{{padding:2px 1em}}</style></head>
<body><h1>Validation report</h1>
<p>All figures are cross-validated: out-of-fold predictions of a pipeline refitted in every fold.</p>
<table>{table}</table>
<h2>ROC curve</h2><img alt="ROC curve" src="data:image/png;base64,{roc}">
<h2>Confusion matrix</h2><img alt="confusion matrix" src="data:image/png;base64,{cm}">
<h2>Features chosen by the final model</h2><ul>{features}</ul>
</body></html>
""")
    return {"metrics_path": out_dir / "metrics.json", "report_path": out_dir / "report.html", "roc_png": roc}
