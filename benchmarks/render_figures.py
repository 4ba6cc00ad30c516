"""The measured figures of the documentation, rendered from the result files the runs and benchmarks write.

A figure in a page under docs/ is a block between ``<!-- figure: NAME -->`` and ``<!-- /figure -->``; its content
is rendered from ``docs/results/NAME.json`` (written by the benchmark's ``--json PATH`` option, or, for the demo,
imported from a run's metrics.json), so a published number always comes from a stored result.

    .venv/bin/python benchmarks/render_figures.py            # rewrite every figure block from its result file
    .venv/bin/python benchmarks/render_figures.py --check    # exit 1 naming each page whose figures are stale
    .venv/bin/python benchmarks/render_figures.py --import-demo data/reports/metrics.json   # after ./dev demo
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
DOCS = PROJECT / "docs"
RESULTS = DOCS / "results"
BLOCK = re.compile(r"(<!-- figure: ([\w-]+) -->\n)(.*?)(<!-- /figure -->)", re.DOTALL)
DEMO_KEYS = (
    "task",
    "n_patients",
    "primary_metric",
    "auc_fold_sd",
    "auc_pooled",
    "permutation_p_value",
    "calibration_slope",
    "calibration_intercept",
    "chosen_per_outer_fold",
)
"""The keys of a binary run's metrics.json that the demo figure shows (``permutation`` is kept without its lists)."""


class FigureError(Exception):
    """A figure block whose result file is missing or unreadable; the message names the page or the file."""


def _sig(value: float, digits: int = 3) -> str:
    """A measured value with ``digits`` significant digits, trailing zeros kept (62.0, 129, 0.50)."""
    text = f"{value:#.{digits}g}"
    return text.rstrip(".") if "e" not in text else f"{value:g}"


def _span(values, digits: int = 3) -> str:
    """``lo-hi`` for a range measured over several runs, one value when they agree."""
    low, high = values if isinstance(values, list) else (values, values)
    return _sig(low, digits) if low == high else f"{_sig(low, digits)}-{_sig(high, digits)}"


def _bold(text: str, on: bool) -> str:
    return f"**{text}**" if on else text


def _table(header: list[str], rows: list[list[str]], align: str = "---") -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def radmlbench(result: dict) -> str:
    columns = ("procedure", "logreg_anova32", "random_forest_500")
    rows = []
    for row in result["rows"]:
        best = max(row[c] for c in columns)
        rows.append(
            [row["table"], str(row["patients"]), str(row["features"])]
            + [_bold(f"{row[c]:.3f}", row[c] == best) for c in columns]
        )
    means = result["mean"]
    best_mean = max(means[c] for c in columns)
    rows.append(["**mean**", "", ""] + [_bold(f"{means[c]:.3f}", means[c] == best_mean) for c in columns])
    header = ["table", "patients", "features", "default (consensus)", "logistic ANOVA-32", "random forest 500"]
    return _table(header, rows)


def null_auc(result: dict) -> str:
    rows = []
    for row in result["rows"]:
        permutations = str(row["permutations"]) + (f" (`{row['command']}`)" if row.get("command") else "")
        mean = _bold(f"{row['mean']:.3f}", row.get("headline", False))
        rows.append([row["label"], permutations, mean, f"{row['sd']:.3f}", f"{row['se']:.3f}"])
        blocks = row.get("block_means") or []
        if len(blocks) > 1:
            size = row["block_size"]
            rows.append(
                [
                    f"the same {row['permutations']} in blocks of {size}",
                    f"{len(blocks)} x {size}",
                    ", ".join(f"{b:.3f}" for b in blocks),
                    "",
                    f"{row['block_se']:.3f} each",
                ]
            )
    return _table(["splits", "permutations", "fold-mean AUC: mean", "SD", "standard error"], rows)


def vs_pyradiomics(result: dict) -> str:
    rows = []
    for row in result["rows"]:
        rows.append(
            [
                f"{row['parameter_file']}, {row['runs']} runs",
                f"{row['features_per_series']:,}",
                f"{_span(row['cli_wall_s'])} s (CPU {_span(row['cli_cpu_s'])} s)",
                f"{_span(row['ours_wall_s'])} s (CPU {_span(row['ours_cpu_s'])} s)",
                f"{_span(row['ratio'], 2)}x",
                f"{_span(row['overhead_s_per_partition'], 2)} s per partition",
            ]
        )
    header = [
        "parameter file",
        "features per series",
        "PyRadiomics CLI `--jobs 2`",
        "ours, from DICOM",
        "ours / CLI",
        "orchestration overhead",
    ]
    return _table(header, rows)


def ultrasound_segmentation(result: dict) -> str:
    rows = []
    for row in result["rows"]:
        current = row.get("current", False)
        low, high = row["dice_quartiles"]
        misses = _bold(f"{row['dice_below_half']} of {row['n']}", current)
        if row.get("dice_min") is not None:
            misses += f" (min {row['dice_min']:.2f})"
        h_low, h_high = row["hausdorff_px_quartiles"]
        rows.append(
            [
                row["method"],
                _bold(f"{row['dice_median']:.3f} ({low:.3f}-{high:.3f})", current),
                misses,
                f"{row['hausdorff_px_median']:.0f} px ({h_low:.0f}-{h_high:.0f})",
            ]
        )
    return _table(["", "median Dice (quartiles)", "Dice < 0.5", "Hausdorff median (quartiles)"], rows, " --- ")


def ultrasound_classifier(result: dict) -> str:
    rows = []
    for row in result["rows"]:
        low, high = row["ci"]
        rows.append(
            [
                row["masks"],
                _bold(f"{row['auc']:.3f}", row.get("current", False)) + f" ({low:.3f}-{high:.3f})",
                " / ".join(f"{a:.3f}" for a in row["per_repeat"]),
                row["model"],
            ]
        )
    return _table(["masks", "nested-CV AUC (95 % CI)", "per repeat", "chosen model"], rows, " --- ")


def _fixed(value, digits: int) -> str:
    """A metric that a run may leave empty (no permutation test, a calibration fit that did not converge)."""
    return "n/a" if value is None or value != value else f"{value:.{digits}f}"


def demo_metrics(result: dict) -> str:
    m = result["metrics"]
    primary = m["primary_metric"]
    permutation = m.get("permutation") or {}
    name = primary["name"]
    chosen = Counter(m.get("chosen_per_outer_fold") or [])
    rows = [
        ["patients", str(m["n_patients"])],
        [
            f"nested-CV {name.upper()} (fold mean, 95 % CI)",
            f"**{primary['value']:.3f}** ({_fixed(primary['ci_low'], 2)}-{_fixed(primary['ci_high'], 2)})",
        ],
        ["fold SD / pooled AUC (information)", f"{_fixed(m.get('auc_fold_sd'), 2)} / {_fixed(m.get('auc_pooled'), 3)}"],
    ]
    if m.get("permutation_p_value") is None:
        rows.append(["permutation test", "off"])
    else:
        rows.append(
            [
                f"permutation p ({permutation.get('n_permutations', 0)} permutations)",
                f"{m['permutation_p_value']:.2g} (null mean {_fixed(permutation.get(f'null_{name}_mean'), 3)}, "
                f"SD {_fixed(permutation.get(f'null_{name}_sd'), 3)})",
            ]
        )
    rows.append(
        [
            "calibration slope / intercept",
            f"{_fixed(m.get('calibration_slope'), 2)} / {_fixed(m.get('calibration_intercept'), 2)}",
        ]
    )
    if chosen:
        rows.append(["chosen per outer fold", ", ".join(f"{model} {n}" for model, n in chosen.most_common())])
    return _table(["figure", "value"], rows)


RENDERERS: dict[str, Callable[[dict], str]] = {
    "radmlbench": radmlbench,
    "null_auc": null_auc,
    "vs_pyradiomics": vs_pyradiomics,
    "ultrasound_segmentation": ultrasound_segmentation,
    "ultrasound_classifier": ultrasound_classifier,
    "demo_metrics": demo_metrics,
}


def render(name: str, results: Path = RESULTS) -> str:
    """A figure block's content: the table, then where its numbers come from."""
    if name not in RENDERERS:
        raise FigureError(f"unknown figure {name!r}; known: {sorted(RENDERERS)}")
    path = results / f"{name}.json"
    try:
        result = json.loads(path.read_text())
        table = RENDERERS[name](result)
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise FigureError(f"{path}: cannot render figure {name!r}: {error!r}") from error
    caption = f"*Figures from `docs/results/{name}.json`, written by `{result['source']}`"
    caption += f"; {result['note']}.*" if result.get("note") else ".*"
    return f"{table}\n\n{caption}\n"


def rendered_page(text: str, results: Path = RESULTS) -> str:
    return BLOCK.sub(lambda m: m.group(1) + render(m.group(2), results) + m.group(4), text)


def stale_pages(docs: Path = DOCS, results: Path = RESULTS, write: bool = False) -> list[Path]:
    """Pages whose figure blocks differ from what their result files render (rewritten when ``write``)."""
    stale = []
    for page in sorted(docs.rglob("*.md")):
        text = page.read_text()
        try:
            new = rendered_page(text, results)
        except FigureError as error:
            raise FigureError(f"{page}: {error}") from error
        if new != text:
            stale.append(page)
            if write:
                page.write_text(new)
    return stale


def import_demo(metrics_json: Path, results: Path = RESULTS) -> Path:
    """Keep the demo figure's keys of a run's metrics.json (the permutation test without its null values)."""
    metrics = json.loads(metrics_json.read_text())
    if metrics.get("task") != "binary":
        raise FigureError(f"{metrics_json}: the demo figure needs a binary study, got task {metrics.get('task')!r}")
    kept = {key: metrics[key] for key in DEMO_KEYS if key in metrics}
    kept["permutation"] = {k: v for k, v in metrics.get("permutation", {}).items() if not isinstance(v, list)}
    target = results / "demo_metrics.json"
    previous = json.loads(target.read_text()) if target.exists() else {}
    document = {
        "source": previous.get("source", "./dev demo"),
        "note": f"imported from {metrics_json.name} of a `./dev demo` run",
        "metrics": kept,
    }
    target.write_text(json.dumps(document, indent=2) + "\n")
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 when a page is stale")
    parser.add_argument("--import-demo", type=Path, metavar="METRICS_JSON", help="a demo run's reports/metrics.json")
    args = parser.parse_args(argv)
    try:
        if args.import_demo:
            print(f"wrote {import_demo(args.import_demo)}")
        stale = stale_pages(write=not args.check)
    except FigureError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for page in stale:
        relative = page.relative_to(PROJECT)
        print(f"{relative}: figures differ from docs/results/ ({'stale' if args.check else 'rewritten'})")
    if args.check and stale:
        print("fix: .venv/bin/python benchmarks/render_figures.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
