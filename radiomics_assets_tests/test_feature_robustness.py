"""Feature robustness: the perturbations do what they state, are seeded, and the asset stores features and ICCs.

The mask and noise perturbations are checked against independent definitions on small arrays; PyRadiomics runs
on a small synthetic DICOM cohort taken through the real patient pipeline (``run_patients``), then the real
``feature_robustness`` asset in a Dagster run reads its stored volumes and masks.
"""

from pathlib import Path

import dagster as dg
import duckdb
import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from radiomics_assets.batch import run_patients
from radiomics_assets.defs.cohort_assets import feature_robustness
from radiomics_assets.defs.resources import RadiomicsConfig
from radiomics_assets.errors import ParameterFileError
from radiomics_assets.features import PARAMS_DIR, ExtractionTarget, perturbations
from radiomics_assets.modelling.matrix import wide_matrix
from radiomics_assets.synth import SynthConfig, write_cohort


def _blob(shape=(9, 24, 24), seed=0) -> np.ndarray:
    """A lumpy ellipsoid-like ROI (z, y, x) that touches no image border."""
    z, y, x = np.indices(shape)
    centre = np.array(shape) / 2
    radius = ((z - centre[0]) / 3.5) ** 2 + ((y - centre[1]) / 8) ** 2 + ((x - centre[2]) / 7) ** 2
    wobble = 0.25 * np.random.default_rng(seed).standard_normal(shape)
    return radius + wobble < 1.0


def _face_neighbours_outside(mask: np.ndarray, axes) -> np.ndarray:
    """For each voxel: does some face-neighbour along ``axes`` lie outside the mask (or the image)?"""
    padded = np.pad(mask, 1, constant_values=False)
    core = tuple(slice(1, -1) for _ in range(3))
    outside = np.zeros(mask.shape, dtype=bool)
    for axis in axes:
        for step in (-1, 1):
            outside |= ~np.roll(padded, step, axis=axis)[core]
    return outside


def _face_neighbours_inside(mask: np.ndarray, axes) -> np.ndarray:
    padded = np.pad(mask, 1, constant_values=False)
    core = tuple(slice(1, -1) for _ in range(3))
    inside = np.zeros(mask.shape, dtype=bool)
    for axis in axes:
        for step in (-1, 1):
            inside |= np.roll(padded, step, axis=axis)[core]
    return inside


def test_erosion_removes_exactly_the_boundary_voxels_and_dilation_adds_exactly_the_adjacent_ones():
    mask = _blob()
    boundary = mask & _face_neighbours_outside(mask, axes=(0, 1, 2))
    eroded = perturbations.erode_mask(mask, in_plane=False)
    assert boundary.sum() > 0 and (eroded == (mask & ~boundary)).all()
    assert (perturbations.boundary_voxels(mask, in_plane=False) == boundary).all()
    dilated = perturbations.dilate_mask(mask, in_plane=False)
    assert (dilated == (mask | _face_neighbours_inside(mask, axes=(0, 1, 2)))).all()
    # In-plane (2D extraction): only neighbours within the slice count, so no slice grows into the next one.
    boundary_2d = mask & _face_neighbours_outside(mask, axes=(1, 2))
    assert (perturbations.erode_mask(mask, in_plane=True) == (mask & ~boundary_2d)).all()
    dilated_2d = perturbations.dilate_mask(mask, in_plane=True)
    assert (dilated_2d.any(axis=(1, 2)) == mask.any(axis=(1, 2))).all()
    assert (dilated_2d == (mask | _face_neighbours_inside(mask, axes=(1, 2)))).all()
    # A one-slice image (BUSI): a 3D erosion would empty it, the in-plane one removes only the rim.
    single = mask[4:5]
    assert not perturbations.erode_mask(single, in_plane=False).any()
    assert 0 < perturbations.erode_mask(single, in_plane=True).sum() < single.sum()


def test_contour_randomisation_changes_only_a_band_around_the_boundary_and_is_seeded():
    mask = _blob()
    spacing = (2.0, 0.8, 0.8)  # z, y, x mm
    randomised = [
        perturbations.randomise_contour(mask, spacing, np.random.default_rng(seed), in_plane=False)
        for seed in (1, 1, 2)
    ]
    assert (randomised[0] == randomised[1]).all()  # same seed, same mask
    assert (randomised[0] != randomised[2]).any()
    distance = perturbations.signed_distance_mm(mask, spacing, in_plane=False)
    for perturbed in randomised:
        changed = perturbed != mask
        assert (perturbed & ~mask).any() and (mask & ~perturbed).any()  # grows in places and shrinks in others
        assert np.abs(distance[changed]).max() <= 2 * 0.8 + 1e-9  # at most 2 in-plane voxels from the boundary
        assert abs(int(perturbed.sum()) - int(mask.sum())) < 0.35 * mask.sum()
    # In-plane: every slice's change stays within that slice's own band.
    flat = perturbations.randomise_contour(mask, spacing, np.random.default_rng(3), in_plane=True)
    distance_2d = perturbations.signed_distance_mm(mask, spacing, in_plane=True)
    assert np.abs(distance_2d[flat != mask]).max() <= 2 * 0.8 + 1e-9
    assert (flat.any(axis=(1, 2)) <= mask.any(axis=(1, 2))).all()


def test_noise_level_is_estimated_from_the_image_and_added_reproducibly():
    rng = np.random.default_rng(5)
    mask = _blob(shape=(9, 40, 40))
    z, y, x = np.indices(mask.shape)
    structure = 3.0 * x - 2.0 * y + np.where(mask, 60.0, 0.0)  # a ramp and a sharp 60-unit lesion edge
    image = (structure + 7.0 * rng.standard_normal(mask.shape)).astype(np.float32)
    sd = perturbations.estimate_noise_sd(image, mask)
    assert sd == pytest.approx(7.0, rel=0.1)
    noisy = [perturbations.add_noise(image, mask, sd, np.random.default_rng(9)) for _ in range(2)]
    assert noisy[0].dtype == np.float32 and (noisy[0] == noisy[1]).all()
    added = noisy[0].astype(np.float64) - image
    assert added[mask].std() == pytest.approx(sd, rel=0.1)
    # Integer images stay integers (rounded), as a scanner stores them.
    as_int = perturbations.add_noise(image.astype(np.int16), mask, sd, np.random.default_rng(9))
    assert as_int.dtype == np.int16


def test_in_plane_perturbations_follow_how_pyradiomics_extracts(tmp_path):
    volume, one_slice = sitk.Image(8, 8, 4, sitk.sitkFloat32), sitk.Image(8, 8, 1, sitk.sitkFloat32)
    assert not perturbations.extracts_in_plane(volume, PARAMS_DIR / "ct.yaml")
    assert perturbations.extracts_in_plane(one_slice, PARAMS_DIR / "ct.yaml")  # a PNG: one slice, always 2D
    assert perturbations.extracts_in_plane(volume, PARAMS_DIR / "us.yaml")  # force2D
    sagittal = tmp_path / "sagittal.yaml"
    sagittal.write_text("setting:\n  force2D: true\n  force2Ddimension: 2\n")
    with pytest.raises(ParameterFileError, match="force2Ddimension 2"):
        perturbations.extracts_in_plane(volume, sagittal)


# --- PyRadiomics on a synthetic cohort through the real patient pipeline and the real asset -------------

COHORT = SynthConfig(n_patients=5, seed=31, rows=40, columns=40, slices=14, effect_size=0.0, noise=0.0)
KEYS = [f"SYN-{i:04d}" for i in range(1, 6)]
BROKEN = "SYN-0005"


@pytest.fixture(scope="module")
def cohort_root(tmp_path_factory):
    """Five patients ingested, masked and extracted by the patient pipeline (features in the warehouse)."""
    root = tmp_path_factory.mktemp("robust")
    write_cohort(COHORT, root)
    settings = RadiomicsConfig(data_dir=str(root)).patient_settings()
    outcomes = list(run_patients(KEYS, {"studies", "roi_masks", "features"}, settings, workers=1))
    assert all(o.failed_stage is None for o in outcomes), [o.error for o in outcomes]
    return root


def _stored(root, sql):
    with duckdb.connect(str(root / "radiomics.duckdb"), read_only=True) as con:
        return con.sql(sql).df()


def test_perturbed_features_rows_and_original_equal_the_stored_features(cohort_root):
    series = _stored(cohort_root, f"SELECT * FROM series WHERE patient_id = '{KEYS[0]}'").iloc[0]
    mask = _stored(cohort_root, f"SELECT * FROM masks WHERE patient_id = '{KEYS[0]}'").iloc[0]
    target = ExtractionTarget(
        KEYS[0],
        series.series_uid,
        series.modality,
        mask.roi,
        sitk.ReadImage(series.volume_path),
        sitk.ReadImage(mask.mask_path),
    )
    settings = perturbations.PerturbationSettings(repetitions=2, seed=4)
    rows = perturbations.perturbed_features(target, PARAMS_DIR / "ct.yaml", settings)
    assert list(rows.columns) == ["patient_id", "feature", "perturbation", "value"]
    assert list(dict.fromkeys(rows.perturbation)) == settings.names()
    stored = _stored(cohort_root, f"SELECT * FROM features WHERE patient_id = '{KEYS[0]}'")
    original = rows[rows.perturbation == "original"].set_index("feature").value
    expected = wide_matrix(stored).iloc[0]  # the feature matrix's own column names
    assert sorted(original.index) == sorted(expected.index) and len(original) == 107
    assert (original == expected[original.index]).all()  # the same extraction: identical values
    by = rows.pivot(index="feature", columns="perturbation", values="value")
    volume = f"CT__{mask.roi}__original__shape__VoxelVolume"
    assert by.loc[volume, "erode"] < by.loc[volume, "original"] < by.loc[volume, "dilate"]
    mean = f"CT__{mask.roi}__original__firstorder__Mean"
    assert by.loc[mean, "noise_1"] != by.loc[mean, "original"] and by.loc[mean, "contour_1"] != by.loc[mean, "original"]
    shape = by.index.str.contains("__shape__")
    assert (by.loc[shape, "noise_1"] == by.loc[shape, "original"]).all()  # noise leaves the mask as it is
    assert (by.loc[shape, "contour_1"] != by.loc[shape, "original"]).any()
    again = perturbations.perturbed_features(target, PARAMS_DIR / "ct.yaml", settings)
    pd.testing.assert_frame_equal(rows, again)  # seeded: the same perturbations and values


def test_feature_robustness_asset_is_off_unless_configured(cohort_root):
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [feature_robustness], instance=instance, resources={"radiomics": RadiomicsConfig(data_dir=str(cohort_root))}
        )
    assert result.success
    (event,) = result.get_asset_materialization_events()
    assert event.materialization.metadata["status"].value.startswith("off")
    tables = set(_stored(cohort_root, "SELECT table_name FROM information_schema.tables").table_name)
    assert "feature_perturbations" not in tables and "feature_robustness" not in tables


def test_feature_robustness_asset_stores_perturbations_and_iccs(cohort_root):
    pytest.importorskip("radiomics_assets.modelling.feature_icc")
    broken = _stored(cohort_root, f"SELECT mask_path FROM masks WHERE patient_id = '{BROKEN}'").mask_path.iloc[0]
    saved = Path(broken).read_bytes()
    Path(broken).write_bytes(b"not an NRRD file")
    try:
        config = RadiomicsConfig(data_dir=str(cohort_root), robustness_perturbations=2, workers=2)
        with dg.instance_for_test() as instance:
            result = dg.materialize([feature_robustness], instance=instance, resources={"radiomics": config})
    finally:
        Path(broken).write_bytes(saved)
    assert result.success
    metadata = {k: v.value for k, v in result.get_asset_materialization_events()[0].materialization.metadata.items()}
    assert metadata["patients"] == 4 and metadata["failed_patients"] == 1
    assert broken in metadata["failures"]  # the failing patient's file is named; the others carry on
    perturbations = _stored(cohort_root, "SELECT * FROM feature_perturbations")
    assert set(perturbations.patient_id) == set(KEYS) - {BROKEN}
    assert len(perturbations) == 4 * 107 * 7
    table = _stored(cohort_root, "SELECT * FROM feature_robustness").set_index("feature")
    assert list(table.columns) == ["icc", "n_perturbations"] and len(table) == 107
    assert (table.n_perturbations == 7).all()
    assert metadata["features_icc_at_least_0.75"] == int((table.icc >= 0.75).sum())
    # Lesion mean HU differs between patients by construction (25-55 HU) and hardly moves under perturbation.
    mean = table.loc["CT__GTV__original__firstorder__Mean", "icc"]
    assert mean > 0.9
    # The lesions are equally textured (effect size 0): texture contrast between patients is only noise.
    texture = table.loc["CT__GTV__original__glcm__ClusterShade", "icc"]
    assert texture < mean - 0.2
