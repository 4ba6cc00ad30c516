"""``radiomics-assets predict``: one new image scored by the promoted model of a real (small) ultrasound cohort.

The cohort is synthetic B-mode PNGs with mask files (benign: smooth ellipses; malignant: lobulated, brighter
heterogeneous lesions), run through the real patient and cohort jobs in one Dagster instance.
"""

import copy
import dataclasses
import json
import pickle

import dagster as dg
import duckdb
import numpy as np
import pytest
import SimpleITK as sitk

from radiomics_assets import modelling
from radiomics_assets.cli import main as cli_main
from radiomics_assets.cli import step_failure_messages
from radiomics_assets.definitions import defs
from radiomics_assets.defs.partitions import PARTITION_RANGE_END, PARTITION_RANGE_START, patients
from radiomics_assets.errors import PredictionError
from radiomics_assets.features import PARAMS_DIR
from radiomics_assets.ingest.manifests import write_manifests
from radiomics_assets.modelling.spacing import (
    PHYSICAL_MM,
    TrainingSpacing,
    resamples_to_fixed_spacing,
    spacing_mismatch,
)
from radiomics_assets.paths import DataRoot, patient_key
from radiomics_assets.pictures import OUTLINE_COLOURS, mask_outline_png
from radiomics_assets.predict_ultrasound import predict_image
from radiomics_assets_tests.conftest import write_us

US_PARAMS = PARAMS_DIR / "us.yaml"
SMALL_COHORT = {"candidate_models": ["logreg"], "cv_folds": 3, "cv_repeats": 1, "permutations": 2}


def busi_like(index: int, malignant: bool, shape=(120, 150)):
    """(8-bit B-mode image, lesion mask): Rayleigh speckle, a dark lesion, lobulated and textured if malignant."""
    rng = np.random.default_rng(100 + index)
    rows, columns = np.mgrid[: shape[0], : shape[1]]
    centre = (60 + rng.integers(-8, 8), 75 + rng.integers(-10, 10))
    angle = np.arctan2(rows - centre[0], columns - centre[1])
    radius = 22 + rng.uniform(0, 6) + (6 * np.sin(5 * angle + rng.uniform(0, 6)) if malignant else 0)
    lesion = np.hypot(rows - centre[0], (columns - centre[1]) * 0.8) <= radius
    echo = np.where(lesion, 60.0 if malignant else 30.0, 130.0)
    image = echo * rng.rayleigh(scale=1.1 if malignant else 0.6, size=shape) + (lesion & malignant) * 15
    return np.clip(image, 0, 255).astype(np.uint8), lesion


def _png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(sitk.GetImageFromArray(array.astype(np.uint8), isVector=array.ndim == 3), str(path))


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """A data root with a trained US model (12 patients with mask files) and two images it never saw."""
    base = tmp_path_factory.mktemp("us_cohort")
    root = DataRoot(base)
    labels = ["patient_id,label"]
    for index in range(12):
        cls = "malignant" if index % 2 else "benign"
        image, lesion = busi_like(index, malignant=index % 2 == 1)
        _png(root.inbox / cls / f"{cls} ({index}).png", np.stack([image] * 3, axis=-1))
        _png(root.inbox / cls / f"{cls} ({index})_mask.png", lesion * 255)
        labels.append(f"{cls} ({index}),{cls}")  # the ID; its key is patient_key of it
    root.labels_csv.write_text("\n".join(labels) + "\n")
    new_image, new_lesion = busi_like(99, malignant=True)
    _png(base / "new" / "new case.png", new_image)
    _png(base / "new" / "new case_mask.png", new_lesion * 255)
    keys = sorted(write_manifests(root).patients)
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(patients.name, keys)
        config = {"resources": {"radiomics": {"config": {"data_dir": str(base), **SMALL_COHORT}}}}
        ingest = defs.resolve_job_def("ingest_patient").execute_in_process(
            instance=instance,
            raise_on_error=False,
            run_config=config,
            tags={PARTITION_RANGE_START: keys[0], PARTITION_RANGE_END: keys[-1]},
        )
        assert ingest.success, step_failure_messages(ingest)
        trained = defs.resolve_job_def("retrain_cohort").execute_in_process(
            instance=instance, raise_on_error=False, run_config=config
        )
        assert trained.success, step_failure_messages(trained)
    return root


def test_no_trained_model_is_a_clear_error(tmp_path):
    _png(tmp_path / "x.png", busi_like(0, False)[0])
    with pytest.raises(PredictionError, match="no trained model under .*models: train one first"):
        predict_image(DataRoot(tmp_path), tmp_path / "x.png", params_path=US_PARAMS, seed=(75, 60))


def test_predict_with_the_mask_file_scores_as_training_did(cohort):
    """A training image scored from its file gives the same features, so the same probability, as the pipeline."""
    image = cohort.inbox / "malignant" / "malignant (3).png"
    mask = image.with_name("malignant (3)_mask.png")
    result = predict_image(cohort, image, params_path=US_PARAMS, mask_path=mask, picture_dir=cohort.path / "pics")
    saved = modelling.load_model(cohort)
    with duckdb.connect(str(cohort.warehouse), read_only=True) as con:
        row = con.execute("SELECT * FROM feature_matrix WHERE patient_id = ?", [patient_key("malignant (3)")]).df()
    expected = saved.pipeline.predict_proba(row[saved.feature_columns].to_numpy(float))[:, 1][0]
    assert result.probability == pytest.approx(expected, abs=1e-9)
    assert result.predicted_label == int(result.probability >= 0.5) and result.threshold == 0.5
    assert result.model_version == (cohort.models / "current").read_text().strip()
    assert result.mask_source == f"file:{mask}" and result.roi == "mask"
    assert result.picture == cohort.path / "pics" / "malignant (3)_mask.png"
    picture = sitk.GetArrayFromImage(sitk.ReadImage(str(result.picture)))
    outline = np.all(picture[..., :3] == OUTLINE_COLOURS[0], axis=-1)
    assert max(picture.shape[:2]) <= 160 and 20 < outline.sum() < 2000  # an outline, not a filled lesion


def test_predict_cli_json_on_an_unseen_image_from_a_seed(cohort, capsys):
    image = cohort.path / "new" / "new case.png"
    code = cli_main(["--data-dir", str(cohort.path), "predict", str(image), "--seed", "75,60", "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) >= {"probability", "predicted_label", "model_version", "mask_source"}
    assert 0.0 <= out["probability"] <= 1.0 and out["predicted_label"] == int(out["probability"] >= 0.5)
    assert out["mask_source"].startswith("auto:ultrasound (seed column 75, row 60)")
    assert (cohort.reports / "predictions" / "new case_mask.png").stat().st_size < 20_000
    from_mask = predict_image(
        cohort, image, params_path=US_PARAMS, mask_path=image.with_name("new case_mask.png"), picture_dir=None
    )
    assert from_mask.probability == pytest.approx(out["probability"], abs=0.25)  # seeded mask ~ true mask


def test_other_parameter_file_or_modality_is_refused(cohort, tmp_path):
    image = cohort.path / "new" / "new case.png"
    other = tmp_path / "us.yaml"
    other.write_text(US_PARAMS.read_text().replace("binWidth: 5", "binWidth: 10"))
    with pytest.raises(PredictionError, match=r"us.yaml: parameter file \(hash .*\) differs from the one"):
        predict_image(cohort, image, params_path=other, seed=(75, 60))
    saved = pickle.loads((cohort.models / "model.pkl").read_bytes())
    ct_root = DataRoot(tmp_path / "ct")
    ct_root.models.mkdir(parents=True)
    ct_model = dataclasses.replace(
        saved, feature_columns=[c.replace("US__mask__", "CT__GTV__") for c in saved.feature_columns]
    )
    (ct_root.models / "model.pkl").write_bytes(pickle.dumps(ct_model))
    with pytest.raises(PredictionError, match="trained on CT features; predict scores 2D ultrasound"):
        predict_image(ct_root, image, params_path=US_PARAMS, seed=(75, 60))
    assert cli_main(["--data-dir", str(ct_root.path), "predict", str(image), "--seed", "75,60"]) == 1


def test_dicom_us_image_against_a_png_trained_model_is_refused(cohort, tmp_path):
    """PNG pixels are stored as 1 mm; a DICOM US image has its spacing in mm (here 0.1 mm): shape and texture
    features would silently be on another scale, so predict fails naming the file."""
    saved = modelling.load_model(cohort)
    assert saved.pixel_spacing["US"] == TrainingSpacing(kinds=("pixel",), smallest=(1.0, 1.0), largest=(1.0, 1.0))
    card = json.loads((cohort.models / "model_card.json").read_text())
    assert card["pixel_spacing"]["US"]["kinds"] == ["pixel"]
    image, _ = busi_like(99, malignant=True)
    scan = write_us(tmp_path / "scan.dcm", np.stack([image] * 3, axis=-1), delta_cm=(0.01, 0.01))
    with pytest.raises(
        PredictionError,
        match=r"scan.dcm: its spacing is in physical mm, the model was trained on images with unitless PNG pixels "
        r"of 1 x 1; its shape and texture features would be on another scale",
    ):
        predict_image(cohort, scan, params_path=US_PARAMS, seed=(75, 60))
    assert cli_main(["--data-dir", str(cohort.path), "predict", str(scan), "--seed", "75,60"]) == 1


def test_model_saved_without_pixel_spacing_scores_with_a_warning(cohort, tmp_path):
    old = copy.copy(modelling.load_model(cohort))
    del old.__dict__["pixel_spacing"]  # as unpickled from a model saved before the field existed
    old_root = DataRoot(tmp_path / "old")
    old_root.models.mkdir(parents=True)
    (old_root.models / "model.pkl").write_bytes(pickle.dumps(old))
    image = cohort.path / "new" / "new case.png"
    with pytest.warns(UserWarning, match=r"does not record its training images' pixel spacing .*new case.png"):
        result = predict_image(old_root, image, params_path=US_PARAMS, seed=(75, 60))
    assert 0.0 <= result.probability <= 1.0


def test_spacing_outside_the_training_range_fails_unless_the_parameter_file_resamples(tmp_path):
    trained = TrainingSpacing(kinds=(PHYSICAL_MM,), smallest=(0.08, 0.08), largest=(0.1, 0.1))
    assert spacing_mismatch(trained, PHYSICAL_MM, (0.104, 0.09), resampled=False) is None  # within 5 %
    assert "outside the training images' physical mm of 0.08 x 0.08 to 0.1 x 0.1 (tolerance 5%)" in (
        spacing_mismatch(trained, PHYSICAL_MM, (0.2, 0.2), resampled=False)
    )
    assert spacing_mismatch(trained, PHYSICAL_MM, (0.2, 0.2), resampled=True) is None
    assert "unitless PNG pixels" in spacing_mismatch(trained, "pixel", (1.0, 1.0), resampled=True)
    assert not resamples_to_fixed_spacing(US_PARAMS)
    resampling = tmp_path / "us_resampled.yaml"
    resampling.write_text(
        US_PARAMS.read_text().replace("  binWidth: 5", "  binWidth: 5\n  resampledPixelSpacing: [0.1, 0.1, 0]")
    )
    assert resamples_to_fixed_spacing(resampling)
    resampling.write_text(
        US_PARAMS.read_text().replace("  binWidth: 5", "  binWidth: 5\n  resampledPixelSpacing: [0, 0, 1]")
    )
    assert not resamples_to_fixed_spacing(resampling)  # 0 keeps an axis's own spacing


def test_mask_outline_png_is_small_and_follows_the_lesion():
    image, lesion = busi_like(1, True, shape=(600, 500))
    png = mask_outline_png(sitk.GetImageFromArray(image[None]), sitk.GetImageFromArray(lesion[None].astype(np.uint8)))
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) < 60_000


def test_report_shows_a_gallery_of_masks_per_class(cohort):
    report = (cohort.reports / "report.html").read_text()
    gallery = report[report.index("<h2>Masks</h2>") :]
    assert gallery.count("<figure") == 6
    assert gallery.count("<figcaption>benign: benign_") == 3 and gallery.count("<figcaption>malignant: malignant_") == 3
    assert "ROI mask (file)" in gallery and gallery.count("data:image/png;base64,") == 6
