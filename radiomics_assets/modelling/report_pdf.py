"""The validation report printed to PDF by a headless Chromium, where one is installed (issue 26: a reviewer, an
ethics board or a hospital archive wants a file that prints as it reads).

The page is self-contained (plots embedded as PNG) and has a print stylesheet (A4, 15 mm margins, no table or figure
split over pages), so the browser's own print engine gives the PDF; nothing is drawn twice. Which browser: the
setting ``RADIOMICS_REPORT_PDF`` (``environment.REPORT_PDF``): ``auto`` (default) uses the first of
:data:`BROWSERS` found on ``PATH`` and writes no PDF without one; ``off`` (or ``0``, ``false``, ``no``) never
prints; anything else is the browser's executable. A failed print is reported, never fatal: the HTML report and
``metrics.json`` are complete without it, and a PDF of an earlier report is removed first so that it can never be
stale.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from radiomics_assets import environment

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
PRINT_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class PdfOutcome:
    """``path`` of the PDF written, or None with ``note`` saying why not (no browser, off, or what failed)."""

    path: Path | None
    note: str


OFF_VALUES = ("off", "0", "false", "no", "none")


def find_browser() -> str | None:
    """The browser executable the setting asks for, or None (setting off, or ``auto`` and none installed)."""
    setting = environment.read(environment.REPORT_PDF)
    if setting.lower() in OFF_VALUES:
        return None
    if setting.lower() != "auto":
        return shutil.which(setting) or setting
    return next((path for path in map(shutil.which, BROWSERS) if path), None)


def print_report_pdf(html_path: Path, pdf_path: Path | None = None) -> PdfOutcome:
    """Print ``html_path`` to ``pdf_path`` (default: beside it, ``.pdf``). Never raises: what went wrong is the
    outcome's note, because the report is complete without its PDF."""
    pdf_path = pdf_path or html_path.with_suffix(".pdf")
    try:
        pdf_path.unlink(missing_ok=True)
        browser = find_browser()
        if browser is None:
            setting = environment.read(environment.REPORT_PDF)
            return PdfOutcome(
                None, f"no PDF ({environment.REPORT_PDF.name}={setting}; looked for {', '.join(BROWSERS)})"
            )
        problem = _print(browser, html_path, pdf_path)
    except Exception as exc:  # noqa: BLE001 - a failed print must not fail the report
        problem = f"{type(exc).__name__}: {exc}"
        browser = "the browser"
    if problem is None and pdf_path.exists() and pdf_path.read_bytes()[:5] == b"%PDF-":
        return PdfOutcome(pdf_path, f"printed by {Path(browser).name}")
    pdf_path.unlink(missing_ok=True)
    return PdfOutcome(None, f"no PDF: {browser} failed ({problem or 'it wrote no PDF'})")


def _print(browser: str, html_path: Path, pdf_path: Path) -> str | None:
    """Run the browser once; None when it exited in time, else the problem."""
    # ignore_cleanup_errors: a helper process of the browser may still be closing files in its profile.
    with tempfile.TemporaryDirectory(prefix="report-pdf-", ignore_cleanup_errors=True) as profile:
        command = [
            browser,
            "--headless",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            f"--user-data-dir={profile}",  # a fresh profile: no lock shared with a browser the user has open
            "--no-pdf-header-footer",  # no date, file URL or page numbers of the browser's own
            f"--print-to-pdf={pdf_path}",
            html_path.resolve().as_uri(),
        ]
        if os.geteuid() == 0:  # Chromium refuses to start as root with its sandbox (CI runs as root)
            command.insert(1, "--no-sandbox")
        # Its own process group, so a hung print is stopped with every helper process it started.
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        try:
            _, stderr = process.communicate(timeout=PRINT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            return f"no PDF within {PRINT_TIMEOUT_S:.0f} s"
    if process.returncode != 0:
        last = stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
        return f"exit code {process.returncode}: {last[0]}"
    return None
