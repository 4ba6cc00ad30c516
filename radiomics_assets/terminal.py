"""What a headless run shows a person: live progress while it runs, then a short summary.

In a terminal: one progress bar per stage of the run (the patient assets, then the cohort assets) with done /
failed / remaining, elapsed and estimated time left (``rich``). Elsewhere (CI, a pipe, a file): no bar and no
control characters, one plain line per finished patient and per cohort asset. The events come from the real run
(the CLI follows its event log); this module knows nothing about Dagster.
"""

from __future__ import annotations

import json
import math
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

__all__ = ["PatientFailure", "RunDisplay", "headline_metrics"]


@dataclass(frozen=True)
class PatientFailure:
    patient: str
    stage: str
    message: str


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}"


def _number(value, signed: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:+.3f}" if signed else f"{value:.3f}"


def headline_metrics(metrics_path: Path) -> str | None:
    """``AUC 0.812 (95% CI 0.702 to 0.913), ...`` from ``metrics.json``; None when there is no report yet."""
    try:
        metrics = json.loads(Path(metrics_path).read_text())
    except (OSError, ValueError):
        return None

    def figure(name: str) -> str:
        value = metrics.get(name)
        return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"

    # The scheme's first clause ("nested CV: outer repeated stratified 5-fold x 2"); the report has the rest.
    scheme = str(metrics.get("cv_scheme", "cross-validation")).split(" (")[0].split(", ")[0].split("; ")[0]
    task = metrics.get("task", "binary")
    if task == "binary":
        text = (
            f"AUC {figure('auc')} (95% CI {figure('auc_ci_low')} to {figure('auc_ci_high')}), "
            f"accuracy {figure('accuracy')}, F1 {figure('f1')}; {metrics.get('n_patients', '?')} patients, {scheme}"
        )
    else:
        primary = metrics.get("primary_metric", {})
        text = (
            f"{task}: {primary.get('name', '?')} {_number(primary.get('value'))} (95% CI "
            f"{_number(primary.get('ci_low'))} to {_number(primary.get('ci_high'))}); "
            f"{metrics.get('n_patients', '?')} patients"
            + (f", {metrics['n_events']} events" if metrics.get("n_events") is not None else "")
            + f", {scheme}"
        )
    comparison = metrics.get("comparison")
    if isinstance(comparison, dict):
        gain = comparison["gain"]
        text += (
            f"; radiomics adds {_number(gain['value'], signed=True)} (95% CI {_number(gain['ci_low'], signed=True)} "
            f"to {_number(gain['ci_high'], signed=True)}) over clinical-only {_number(comparison['clinical']['value'])}"
        )
    if metrics.get("model"):
        text += f", model {metrics['model']}"
    external = metrics.get("external")
    if isinstance(external, dict) and "auc" in external:
        text += (
            f"; external test AUC {external['auc']:.3f} (95% CI {external.get('auc_ci_low', float('nan')):.3f} to "
            f"{external.get('auc_ci_high', float('nan')):.3f}), {external.get('n_patients', '?')} patients"
        )
    return text


@dataclass
class _Stage:
    name: str
    total: int
    started: float = field(default_factory=time.monotonic)
    done: int = 0
    failed: int = 0
    task: object = None

    @property
    def finished(self) -> int:
        return self.done + self.failed

    def eta(self) -> float | None:
        if not self.finished:
            return None
        return (time.monotonic() - self.started) / self.finished * (self.total - self.finished)


class RunDisplay:
    """Progress and summary of one ``run``; ``live`` (a terminal) draws bars, otherwise plain lines."""

    def __init__(self, stream: TextIO | None = None, *, live: bool | None = None):
        self.stream = stream or sys.stdout
        self.live = self.stream.isatty() if live is None else live
        self.features_per_patient: dict[str, int] = {}
        self.failures: list[PatientFailure] = []
        self.failed_assets: dict[str, str] = {}
        self.stage: _Stage | None = None
        self._progress = None
        if self.live:
            from rich.console import Console

            self.console = Console(file=self.stream, highlight=False)

    # --- plain output ---------------------------------------------------------------------------------------

    def say(self, text: str) -> None:
        """A line for people (above the bars while they are drawn)."""
        if self._progress is not None:
            self._progress.console.print(text, markup=False, highlight=False)
        else:
            print(text, file=self.stream, flush=True)

    def _line(self, what: str) -> None:
        stage = self.stage
        eta = stage.eta()
        left = f", ~{_duration(eta)} left" if eta is not None and stage.finished < stage.total else ""
        self.say(
            f"[{stage.finished}/{stage.total}] {what} ({_duration(time.monotonic() - stage.started)} elapsed{left})"
        )

    # --- stages ---------------------------------------------------------------------------------------------

    def start_stage(self, name: str, total: int) -> None:
        """A stage of ``total`` items (patients, or cohort assets) begins."""
        self.finish_stage()
        self.stage = _Stage(name, total)
        if not self.live:
            self.say(f"{name}: {total} to materialise")
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._progress = Progress(
            TextColumn("{task.description:<16}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("[red]{task.fields[failed]} failed[/red], {task.fields[remaining]} remaining"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=self.console,
        )
        self._progress.start()
        self.stage.task = self._progress.add_task(name, total=total, failed=0, remaining=total)

    def _advance(self) -> None:
        if self._progress is not None:
            stage = self.stage
            self._progress.update(
                stage.task, completed=stage.finished, failed=stage.failed, remaining=stage.total - stage.finished
            )

    def finish_stage(self) -> None:
        """Stop the stage's bar and print its timing line (``patient assets: 29 done, 1 failed of 30 in 84.2 s``)."""
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
        stage, self.stage = self.stage, None
        if stage is not None:
            elapsed = time.monotonic() - stage.started
            self.say(f"{stage.name}: {stage.done} done, {stage.failed} failed of {stage.total} in {elapsed:.1f} s")

    def patient_done(self, patient: str, features: int) -> None:
        self.stage.done += 1
        self.features_per_patient[patient] = features
        if not self.live:
            self._line(f"{patient} ok: {features} features")
        self._advance()

    def patient_failed(self, failure: PatientFailure) -> None:
        self.stage.failed += 1
        self.failures.append(failure)
        if self.live:
            self.say(f"FAILED {failure.patient} {failure.stage}: {failure.message}")
        else:
            self._line(f"{failure.patient} FAILED at {failure.stage}: {failure.message}")
        self._advance()

    def asset_done(self, asset: str) -> None:
        self.stage.done += 1
        if not self.live:
            self._line(f"{asset} ok")
        self._advance()

    def asset_failed(self, asset: str, message: str, *, counted: bool = True) -> None:
        """A cohort asset failed (``counted``), or a step that is not one item of the stage (the batch step)."""
        self.stage.failed += int(counted)
        self.failed_assets[asset] = message
        if self.live:
            self.say(f"FAILED {asset}: {message}")
        else:
            self._line(f"{asset} FAILED: {message}")
        self._advance()

    # --- summary --------------------------------------------------------------------------------------------

    def summary(
        self, *, n_patients: int, locations: dict[str, str], metrics: str | None, notes: dict[str, str] | None = None
    ) -> None:
        """Patients materialised and failed, features per patient, ``notes`` (e.g. series without an ROI), where
        the results are, the headline metrics."""
        self.finish_stage()
        materialised = len(self.features_per_patient)
        rows = [("patients materialised", f"{materialised} of {n_patients}")]
        unfinished = n_patients - materialised - len(self.failures)
        counts = sorted(self.features_per_patient.values())
        if counts:
            low, high = counts[0], counts[-1]
            spread = f" (min {low}, max {high})" if low != high else ""
            rows.append(("features per patient", f"{statistics.median(counts):g}{spread}"))
        rows.append(("patients failed", str(len(self.failures))))
        rows += list((notes or {}).items())
        if unfinished > 0:
            rows.append(("patients not finished", f"{unfinished} (the run stopped; see the Dagster event log)"))
        for asset, message in self.failed_assets.items():
            rows.append((f"step {asset}", f"FAILED: {message}"))
        if metrics:
            rows.append(("validation", metrics))
        rows += list(locations.items())
        if self.live:
            self._rich_summary(rows)
            return
        self.say("summary:")
        for name, value in rows:
            self.say(f"  {name}: {value}")
        for failure in self.failures:
            self.say(f"  FAILED {failure.patient} {failure.stage}: {failure.message}")

    def _rich_summary(self, rows: list[tuple[str, str]]) -> None:
        from rich import box
        from rich.table import Table
        from rich.text import Text

        table = Table(title="Summary", box=box.SIMPLE, show_header=False, title_justify="left")
        table.add_column(style="bold")
        table.add_column(overflow="fold")
        for name, value in rows:
            table.add_row(name, Text(value))  # Text: brackets in a message are not rich markup
        self.console.print(table)
        if self.failures:
            failed = Table(title="Failed patients", box=box.SIMPLE, title_justify="left", title_style="bold red")
            for column in ("patient", "stage", "problem (and fix)"):
                failed.add_column(column, overflow="fold")
            for failure in self.failures:
                failed.add_row(failure.patient, failure.stage, Text(failure.message))
            self.console.print(failed)
