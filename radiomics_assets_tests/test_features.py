"""PyRadiomics extraction: parameter files, labelled long rows, and agreement with PyRadiomics run directly."""

import numpy as np
import pytest
import SimpleITK as sitk
from radiomics import featureextractor

from radiomics_assets.errors import ParameterFileError
from radiomics_assets.features import PARAMS_DIR, ExtractionTarget, extract, load_extractor
from radiomics_assets.features.speedups import stock_pyradiomics
from radiomics_assets.synth import make_patient
from radiomics_assets_tests.conftest import assert_extractor_follows


@pytest.fixture
def target(small_config) -> ExtractionTarget:
    patient = make_patient(small_config, 0, 1)
    image = sitk.GetImageFromArray(patient.hu.astype(np.float32))
    image.SetSpacing(patient.spacing_mm)
    image.SetOrigin(patient.origin_mm)
    mask = sitk.GetImageFromArray(patient.lesion.astype(np.uint8))
    mask.CopyInformation(image)
    return ExtractionTarget("SYN-0001", "1.2.3", "CT", "GTV", image, mask)


def test_rows_equal_pyradiomics_run_directly(target, tmp_path):
    rows, diagnostics = extract(target, PARAMS_DIR / "ct.yaml")
    sitk.WriteImage(target.image, str(tmp_path / "image.nrrd"))
    sitk.WriteImage(target.mask, str(tmp_path / "mask.nrrd"))
    with stock_pyradiomics():  # the reference is PyRadiomics as installed, without our speed-ups
        direct = featureextractor.RadiomicsFeatureExtractor(str(PARAMS_DIR / "ct.yaml")).execute(
            str(tmp_path / "image.nrrd"), str(tmp_path / "mask.nrrd")
        )
    expected = {k: float(v) for k, v in direct.items() if not k.startswith("diagnostics_")}
    ours = {f"{r.image_type}_{r.feature_class}_{r.feature}": r.value for r in rows.itertuples()}
    assert len(ours) == 107 and ours.keys() == expected.keys()
    assert all(ours[k] == pytest.approx(expected[k], rel=1e-9, abs=1e-12) for k in expected)
    assert all(k.startswith("diagnostics_") for k in diagnostics) and "diagnostics_Versions_PyRadiomics" in diagnostics
    assert set(rows.feature_class) == {"shape", "firstorder", "glcm", "glrlm", "glszm", "gldm", "ngtdm"}


def test_two_parameter_files_give_distinct_labelled_rows(target, tmp_path):
    custom = tmp_path / "log.yaml"
    custom.write_text(
        "setting:\n  binWidth: 10\n  resampledPixelSpacing: [1, 1, 1]\n  label: 1\n"
        "imageType:\n  Original: {}\n  LoG: {sigma: [1.0, 2.0]}\n"
        "featureClass:\n  firstorder:\n  glcm:\n"
    )
    default, _ = extract(target, PARAMS_DIR / "ct.yaml")
    log, _ = extract(target, custom)
    assert default.params_hash.nunique() == log.params_hash.nunique() == 1
    assert default.params_hash[0] != log.params_hash[0]
    assert set(log.image_type) == {"original", "log-sigma-1-0-mm-3D", "log-sigma-2-0-mm-3D"}

    def pick(rows, cls, name):
        return rows[(rows.image_type == "original") & (rows.feature_class == cls) & (rows.feature == name)].value.item()

    # Bin width changes texture but not the first-order mean.
    assert pick(log, "firstorder", "Mean") == pytest.approx(pick(default, "firstorder", "Mean"))
    assert pick(log, "glcm", "JointEntropy") > pick(default, "glcm", "JointEntropy")


def test_broken_parameter_file_fails_with_pyradiomics_message(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("imageType:\n  Originall: {}\n")
    with pytest.raises(ParameterFileError, match=r"broken\.yaml: invalid PyRadiomics parameter file.*Originall"):
        load_extractor(broken)
    with pytest.raises(ParameterFileError, match="not found"):
        load_extractor(tmp_path / "absent.yaml")


def test_shipped_parameter_files_are_valid():
    for name in ("ct.yaml", "mr.yaml", "pt.yaml", "us.yaml"):
        assert_extractor_follows(PARAMS_DIR / name)
