"""The Dagster UI as an operator sees it, in a real headless Chromium driven by Playwright, on a real `dagster dev`.

A small synthetic cohort (nine tiny CT patients, one with a truncated slice) is run headless first (the CLI for the
patient assets, the cohort job with a quick model search), then one `dagster dev` serves the same instance. The
screenshots go to ``$RADIOMICS_SCREENSHOT_DIR`` (default: a temporary folder); ``docs/screenshots/`` holds two of
them for the README. Needs Debian's ``chromium`` (``/usr/bin/chromium``; `.ci/run` installs it) and never
downloads a browser. Slow: about two minutes, most of it `dagster dev` starting and the UI loading.
"""

import base64
import csv
import json
import os
import re
from dataclasses import replace
from pathlib import Path

import pytest

from radiomics_assets.dagster_dev import SHIPPED_INSTANCE_YAML, DagsterDevError, running_dagster_dev
from radiomics_assets.synth import SynthConfig, write_cohort

sync_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = Path("/usr/bin/chromium")
pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed (see .ci/run)")

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
COHORT = replace(SynthConfig(), n_patients=9, seed=5, rows=48, columns=48, slices=10)
QUICK_MODEL = {"candidate_models": ["logreg"], "cv_folds": 2, "cv_repeats": 1, "permutations": 2}
UI_TIMEOUT_MS = 90_000  # two cores shared with other work: the first page can take a while to lay out


def _prepare(root: Path, home: Path) -> str:
    """The cohort, run headless into the instance at ``home``; returns the key of the patient that fails."""
    import dagster as dg

    from radiomics_assets.cli import main

    write_cohort(COHORT, root)
    labels = {row["patient_id"]: row["label"] for row in csv.DictReader(open(root / "labels.csv"))}
    broken_key = next(key for key, label in labels.items() if label == "0")  # 5 of class 0: 4 + 4 remain
    broken = sorted((root / "inbox" / broken_key / "CT").glob("*.dcm"))[3]
    broken.write_bytes(broken.read_bytes()[:200])
    home.mkdir(parents=True)
    (home / "dagster.yaml").write_text(SHIPPED_INSTANCE_YAML.read_text())
    with pytest.MonkeyPatch.context() as env:
        env.setenv("RADIOMICS_DATA_DIR", str(root))
        env.setenv("DAGSTER_HOME", str(home))
        assert main(["--data-dir", str(root), "run", "--no-cohort"]) == 1  # the broken patient fails
        # A patient that was materialised, then fails on a re-run (a slice replaced by a truncated copy).
        refailed = sorted((root / "inbox" / _refailed_key(root) / "CT").glob("*.dcm"))[3]
        refailed.write_bytes(refailed.read_bytes()[:200])
        assert main(["--data-dir", str(root), "run", "--no-cohort"]) == 1
        from radiomics_assets.definitions import defs

        with dg.DagsterInstance.from_config(str(home)) as instance:
            cohort = defs.resolve_job_def("retrain_cohort").execute_in_process(
                instance=instance, run_config={"resources": {"radiomics": {"config": QUICK_MODEL}}}
            )
            assert cohort.success
    return broken_key


def _refailed_key(root: Path) -> str:
    """A patient of class 1 (not SYN-0001, whose pictures are looked at) that fails only on the second run."""
    labels = {row["patient_id"]: row["label"] for row in csv.DictReader(open(root / "labels.csv"))}
    return next(key for key, label in sorted(labels.items()) if label == "1" and key != "SYN-0001")


@pytest.fixture(scope="module")
def ui(tmp_path_factory):
    """(page, base URL, data root, failed patient key, screenshot folder) with `dagster dev` and Chromium running."""
    work = tmp_path_factory.mktemp("ui")
    root, home = work / "data", work / "dagster_home"
    broken_key = _prepare(root, home)
    shots = Path(os.environ.get("RADIOMICS_SCREENSHOT_DIR") or tmp_path_factory.mktemp("screenshots"))
    shots.mkdir(parents=True, exist_ok=True)
    try:
        with running_dagster_dev(root, home, work / "dagster_dev.log") as dev, sync_api.sync_playwright() as play:
            browser = play.chromium.launch_persistent_context(
                str(work / "chromium_profile"),  # a fresh user-data dir
                executable_path=str(CHROMIUM),
                args=CHROMIUM_ARGS,
                headless=True,
                viewport={"width": 1400, "height": 900},
            )
            page = browser.new_page()
            page.set_default_timeout(UI_TIMEOUT_MS)
            # No handler for Dagster's "Join the Dagster community" dialog: the shipped instance turns it off
            # (nux), and test_no_pop_up_and_no_false_unsynced_badge checks that it never shows.
            yield page, dev.url.removesuffix("/graphql"), root, broken_key, shots
            browser.close()
    except DagsterDevError as error:
        pytest.fail(str(error))


def _markdown_dialog(page, entry_label: str):
    """Open the ``[Show Markdown]`` of the metadata row ``entry_label``; returns the dialog."""
    row = page.locator("tr", has=page.get_by_text(entry_label, exact=True))
    row.get_by_text("[Show Markdown]").click()
    dialog = page.get_by_role("dialog")
    dialog.locator("img").first.wait_for()
    return dialog


def _image_size(dialog) -> tuple[int, int]:
    image = dialog.locator("img").first
    image.page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=image.element_handle())
    return tuple(image.evaluate("img => [img.naturalWidth, img.naturalHeight]"))


def test_asset_graph_shows_the_groups_and_assets(ui):
    page, base, *_, shots = ui
    page.goto(f"{base}/asset-groups")
    page.get_by_text("modelling", exact=True).first.wait_for()
    page.keyboard.press("Alt+KeyE")  # the graph's "expand all groups" shortcut
    graph_assets = ["studies", "roi_masks", "features", "labels", "feature_matrix", "model", "validation_report"]
    for asset in [*graph_assets, "selected_features", "predictions", "dicom_exports"]:
        page.get_by_text(asset, exact=True).first.wait_for()
    for group in ("ingest", "features", "modelling", "exports"):
        assert page.get_by_text(group, exact=True).count() >= 2, group  # in the graph and in the sidebar
    page.wait_for_timeout(1500)  # edges drawn
    page.screenshot(path=shots / "asset_graph.png")


def test_patient_partition_page_shows_the_mask_picture(ui):
    page, base, root, _, shots = ui
    page.goto(f"{base}/assets/roi_masks?view=partitions&partition=SYN-0001")
    volume_row = page.locator("tr", has=page.get_by_text("volume_ml", exact=True))
    assert re.fullmatch(r"volume_ml\s+\d+\.\d", volume_row.inner_text().strip()), volume_row.inner_text()
    dialog = _markdown_dialog(page, "mask_outlines")
    assert "CT GTV" in dialog.inner_text() and " ml (series " in dialog.inner_text()
    source = dialog.locator("img").first.get_attribute("src")
    png = base64.b64decode(source.removeprefix("data:image/png;base64,"))
    assert png.startswith(b"\x89PNG") and len(png) < 8_000
    assert max(_image_size(dialog)) == 160
    dialog.screenshot(path=shots / "patient_masks.png")
    page.get_by_role("button", name="Close").click()


def test_validation_report_shows_rounded_metrics_and_the_roc_plot(ui):
    page, base, root, _, shots = ui
    metrics = json.loads((root / "reports" / "metrics.json").read_text())
    page.goto(f"{base}/assets/validation_report")
    # The row labelled "auc" (the "primary_metric" row holds the text "auc" as its value).
    label_auc = page.locator("td:first-child").get_by_text("auc", exact=True)
    auc_row = page.locator("tr", has=label_auc).first
    assert auc_row.inner_text().split()[-1] == f"{round(metrics['auc'], 3):g}", auc_row.inner_text()
    dialog = _markdown_dialog(page, "roc")
    width, height = _image_size(dialog)
    assert width > 200 and height > 200
    page.screenshot(path=shots / "validation_report_roc.png")
    page.get_by_role("button", name="Close").click()


def test_automation_page_lists_the_sensors_and_the_schedule(ui):
    page, base, *_, shots = ui
    page.goto(f"{base}/automation")
    for name in ("inbox_sensor", "run_failure_log", "weekly_retrain"):
        page.get_by_text(name, exact=True).first.wait_for()
    page.get_by_text("only on Monday").first.wait_for()  # the weekly schedule's cron, in words
    page.screenshot(path=shots / "automation.png")


def test_failed_partition_shows_its_message_and_fix(ui):
    page, base, _, broken_key, shots = ui
    page.goto(f"{base}/assets/studies?view=partitions&partition={broken_key}")
    page.get_by_text("did not materialize this asset").first.wait_for()
    # The partition's events (no click on "View logs"): the failure's observation names the problem and the fix.
    page.goto(f"{base}/assets/studies?view=events&partition={broken_key}")
    page.get_by_text(f"Partition {broken_key} observed in run").first.wait_for()
    fix_row = page.locator("tr", has=page.locator("td:first-child").get_by_text("fix", exact=True)).first
    assert fix_row.inner_text().split(None, 1)[1].strip() == (
        "copy the file again from its source (it is truncated or corrupt), or remove it from the inbox"
    ), fix_row.inner_text()
    failed_row = page.locator("tr", has=page.locator("td:first-child").get_by_text("failed", exact=True)).first
    assert "studies:" in failed_row.inner_text() and "incomplete DICOM header" in failed_row.inner_text()
    assert "View logs" not in page.inner_text("body")
    page.screenshot(path=shots / "failed_partition.png")
    # The run page shows each failed patient's line with its fix in the run's own log.
    page.goto(f"{base}/assets/studies?view=partitions&partition={broken_key}")
    page.get_by_text("did not materialize this asset").first.wait_for()
    page.locator("a[href^='/runs/']").first.click()
    line = page.get_by_text(f"{broken_key} studies:").first
    line.wait_for()
    assert "fix: copy the file again from its source" in line.inner_text(), line.inner_text()


def test_partition_failed_after_a_materialisation_shows_problem_and_fix_on_its_page(ui):
    page, base, root, *_ = ui
    key = _refailed_key(root)
    page.goto(f"{base}/assets/studies?view=partitions&partition={key}")
    page.get_by_text("did not materialize this asset").first.wait_for()  # the re-run failed
    fix_row = page.locator("tr", has=page.locator("td:first-child").get_by_text("fix", exact=True)).first
    fix_row.wait_for()
    assert "copy the file again from its source" in fix_row.inner_text(), fix_row.inner_text()
    failed_row = page.locator("tr", has=page.locator("td:first-child").get_by_text("failed", exact=True)).first
    assert "incomplete DICOM header" in failed_row.inner_text()
    assert page.locator("tr", has=page.get_by_text("series", exact=True)).count() >= 1  # the earlier metadata too


def test_no_pop_up_and_no_false_unsynced_badge(ui):
    page, base, *_ = ui
    page.goto(f"{base}/assets/features?view=partitions&partition=SYN-0001")
    page.get_by_text("Latest materialization").first.wait_for()
    page.locator("tr", has=page.get_by_text("params_version", exact=True)).first.wait_for()
    page.wait_for_timeout(3000)  # the staleness query and any first-visit dialog have had their time
    body = page.inner_text("body")
    assert "Materialized" in body and "Unsynced" not in body, body[:2000]
    page.goto(f"{base}/asset-groups")
    page.get_by_text("features", exact=True).first.wait_for()
    page.wait_for_timeout(3000)
    body = page.inner_text("body")
    assert "Unsynced" not in body and "Join the Dagster community" not in body
    assert page.get_by_role("dialog").count() == 0
