"""Ultrasound lesion segmentation from one seed (masks/ultrasound.py), its seeds.csv form and its configuration."""

import pickle
import shutil

import dagster as dg
import duckdb
import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
from radiomics import featureextractor
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from radiomics_assets.batch import STAGES, run_patients
from radiomics_assets.cli import step_failure_messages
from radiomics_assets.definitions import defs
from radiomics_assets.defs.partitions import patients
from radiomics_assets.defs.resources import RadiomicsConfig
from radiomics_assets.errors import DicomInputError, ExtractionError, SeedFileError
from radiomics_assets.features import PARAMS_DIR, ExtractionTarget
from radiomics_assets.features.candidate_average import (
    CANDIDATE_FEATURES_ENV,
    CANDIDATE_MASKS_DIAGNOSTIC,
    SKIPPED_CANDIDATES_DIAGNOSTIC,
    candidate_averaged_training,
    extract_candidate_average,
)
from radiomics_assets.hashing import file_hash
from radiomics_assets.ingest.file_pairs import labels_from_folders, scan_file_pairs
from radiomics_assets.ingest.manifests import write_manifests
from radiomics_assets.masks.autoseg import (
    AutoSegmentation,
    Seed,
    maskless_images_accepted,
    read_seeds,
    seed_for,
    segment_lesion,
)
from radiomics_assets.masks.ultrasound import (
    AGREEMENT_WEIGHT,
    SEED_KEY,
    Candidate,
    _deepest_point,
    choose_candidate,
    seeded_candidates,
    segment_ultrasound_array,
    ultrasound_candidate_masks,
    ultrasound_candidates,
)
from radiomics_assets.masks.ultrasound_quality import recorded_confidence, seeded_mask_quality, worst_mask_pictures
from radiomics_assets.modelling.seeded_masks_report import seeded_masks_section
from radiomics_assets.modelling.training import SavedModel, series_spacing
from radiomics_assets.paths import DataRoot, patient_key
from radiomics_assets.predict_ultrasound import _recorded_contrast, predict_image
from radiomics_assets.warehouse import Warehouse

# Partition keys of the BUSI-style file names (sanitising changed them, so each carries a hash of the ID).
B1, B2, B3, M3 = (patient_key(name) for name in ("benign (1)", "benign (2)", "benign (3)", "malignant (3)"))


def speckled_lesion(shape=(160, 200), centre=(70, 90), radii=(28, 40), seed=3, lesion_echo=35.0):
    """A B-mode-like image: Rayleigh speckle over bright tissue with a dark (hypoechoic) elliptical lesion.

    Returns the 8-bit grey image (rows, columns) and the true lesion mask.
    """
    rng = np.random.default_rng(seed)
    rows, columns = np.ogrid[: shape[0], : shape[1]]
    lesion = ((rows - centre[0]) / radii[0]) ** 2 + ((columns - centre[1]) / radii[1]) ** 2 <= 1.0
    echo = np.where(lesion, lesion_echo, 130.0)
    image = echo * rng.rayleigh(scale=0.8, size=shape)
    return np.clip(image, 0, 255).astype(np.uint8), lesion


def dice(a, b):
    return 2 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


def test_seeded_watershed_finds_a_speckled_lesion():
    image, truth = speckled_lesion()
    found = segment_ultrasound_array(image.astype(np.float32), (70, 90))
    assert dice(found, truth) > 0.85
    # the mask is one component that holds the seed, without holes
    assert found[70, 90]
    assert not found[5, 5]


def test_seed_on_a_caliper_cross_still_finds_the_lesion():
    """The sonographer's calipers are burnt into many BUSI images: a bright cross at the lesion centre and dotted
    lines across it. A seed on them sits on a gradient peak; the first method (one 7 x 7 px marker, the border as
    background) then lost the lesion to the background and returned the marker alone (Dice 0.03 here, as on 4 of
    the 8 BUSI sample misses). The larger seed discs start past the cross and the contrast criterion keeps them."""
    image, truth = speckled_lesion()
    image = image.astype(np.float32)
    for first_column in (40, 41):  # a dotted line along the seed's row, 2 of every 6 columns
        image[69:72, first_column:141:6] = 255
    image[60:81, 89:92] = image[69:72, 80:101] = 255  # the cross at the seed
    found = segment_ultrasound_array(image, (70, 90))
    assert found.sum() > 20 * 49  # far more than a marker-sized region
    assert np.logical_and(found, truth).sum() > 0.97 * truth.sum()  # the whole lesion...
    assert dice(found, truth) > 0.85  # ...plus the outline margin, 4 px outside this sharp synthetic edge
    candidates = ultrasound_candidates(image, (70, 90))
    stuck = candidates[0]  # the smallest seed disc with the border as background: the first method's setting
    assert stuck.region.sum() < 100  # the old failure, still among the candidates...
    assert stuck.contrast < 0 < max(c.contrast for c in candidates)  # ...but the bright cross in it rules it out


def chosen_contrast(image, seed_row_column):
    """Contrast of the candidate the segmentation chooses for ``image`` from this seed."""
    grown = [c for c in seeded_candidates(image.astype(np.float32), seed_row_column) if c.grew]
    return grown[choose_candidate(grown)[0]].contrast


def shadowed_lesion(seed=7, shadow_echo=55.0, shape=(160, 200), centre=(60, 100), radii=(25, 35)):
    """``speckled_lesion`` with posterior acoustic shadowing: a band below the lesion, darker than the tissue
    (though brighter than the lesion), as strong attenuating (often malignant) lesions cast."""
    rng = np.random.default_rng(seed)
    rows, columns = np.ogrid[: shape[0], : shape[1]]
    lesion = ((rows - centre[0]) / radii[0]) ** 2 + ((columns - centre[1]) / radii[1]) ** 2 <= 1.0
    shadow = (rows > centre[0]) & (np.abs(columns - centre[1]) < 0.8 * radii[1]) & ~lesion
    echo = np.where(lesion, 35.0, np.where(shadow, shadow_echo, 130.0))
    return np.clip(echo * rng.rayleigh(scale=0.8, size=shape), 0, 255).astype(np.float32), lesion


def test_a_click_near_the_edge_above_a_shadow_still_finds_the_lesion():
    """A click 5 px above the lesion's lower edge: the larger seed discs reach into the shadow, and the candidate
    of highest contrast among the click's own (the first version's choice) is lesion plus shadow. Segmenting
    again from the deepest point of the click's choice and of the candidates' majority, and weighing each
    candidate's agreement with the others, finds the lesion."""
    image, truth = shadowed_lesion()
    click = (80, 100)
    own = [c for c in ultrasound_candidates(image, click) if c.grew]
    first_version = max(own, key=lambda c: c.contrast).region
    assert first_version.sum() > 1.5 * truth.sum() and dice(first_version, truth) < 0.6  # the leak
    found = segment_ultrasound_array(image, click)
    assert dice(found, truth) > 0.8
    assert np.logical_and(found, truth).sum() > 0.97 * truth.sum()


def test_the_choice_weighs_contrast_against_agreement_with_the_other_candidates():
    """Three candidates that agree (the lesion) and an outlier of slightly higher contrast (a leak): the outlier
    loses while its contrast lead is smaller than AGREEMENT_WEIGHT times its agreement deficit, and wins beyond."""
    rows, columns = np.ogrid[:60, :60]
    disc = (rows - 30) ** 2 + (columns - 30) ** 2 <= 15**2
    near = [(rows - 30) ** 2 + (columns - 30 - shift) ** 2 <= 15**2 for shift in (1, 2)]
    leak = disc | ((rows > 30) & (np.abs(columns - 30) < 10))
    regions = [disc, *near, leak]

    def median_dice(i):
        return float(np.median([dice(regions[i], r) for j, r in enumerate(regions) if j != i]))

    gap = median_dice(0) - median_dice(3)
    assert gap > 0.05
    lead = 0.9 * AGREEMENT_WEIGHT * gap
    candidates = [
        Candidate(r, contrast, True) for r, contrast in zip(regions, (1.0, 0.9, 0.9, 1.0 + lead), strict=True)
    ]
    best, agreement = choose_candidate(candidates)
    assert best == 0 and agreement == pytest.approx(median_dice(0), rel=1e-12)
    candidates[3] = Candidate(leak, 1.0 + 1.1 * AGREEMENT_WEIGHT * gap, True)
    assert choose_candidate(candidates)[0] == 3
    assert choose_candidate(candidates[:1]) == (0, pytest.approx(float("nan"), nan_ok=True))


def test_a_region_brighter_than_its_surround_is_not_chosen_however_well_the_candidates_agree():
    rows, columns = np.ogrid[:60, :60]
    pocket = [(rows - 30) ** 2 + (columns - 30 - shift) ** 2 <= 6**2 for shift in (0, 1, 2)]
    lesion = (rows - 30) ** 2 + (columns - 30) ** 2 <= 20**2
    candidates = [Candidate(r, -0.2, True) for r in pocket] + [Candidate(lesion, 0.3, True)]
    best, _ = choose_candidate(candidates)
    assert best == 3  # the agreeing pockets would score higher: -0.2 + 2 x ~0.9 against 0.3 + 2 x ~0.3
    all_brighter = [Candidate(c.region, -abs(c.contrast), True) for c in candidates]
    assert choose_candidate(all_brighter)[0] in (0, 1, 2)  # none darker: the score decides among all


def test_an_extreme_block_elsewhere_in_the_image_does_not_flatten_the_edges():
    """A burnt-in block of extreme values (a float or 16-bit image's label) sets the edge map's maximum; rescaled to
    65,536 levels, the lesion's edges would share one or two. Such maps stay in floats."""
    image, truth = speckled_lesion()
    image = image.astype(np.float32)
    plain = segment_ultrasound_array(image, (70, 90))
    image[5:12, 5:12] = 3e7
    assert np.array_equal(segment_ultrasound_array(image, (70, 90)), plain)


def test_the_deepest_point_counts_the_image_border_as_edge():
    region = np.zeros((40, 50), dtype=bool)
    region[:20, :30] = True  # a region cut by the image's corner
    assert _deepest_point(region) == (9, 9)  # 10 px from the top and left borders and from its own edge at row 20


def test_segment_lesion_ultrasound_keeps_the_grid_and_needs_a_seed(tmp_path):
    image, truth = speckled_lesion()
    volume = sitk.GetImageFromArray(image[None].astype(np.float32))
    volume.SetSpacing((0.1, 0.1, 1.0))
    volume.SetOrigin((5.0, -3.0, 0.0))
    seeds_csv = tmp_path / "seeds.csv"
    seeds_csv.write_text("patient_id,x,y,z\nbenign (3),90,70,\n")
    seed = seed_for(read_seeds(seeds_csv)[B3], "US")
    assert seed.pixel == (90, 70) and seed.point_mm is None
    mask = segment_lesion(volume, AutoSegmentation(method="ultrasound"), seed, "patient benign_3 US")
    assert mask.GetSpacing() == volume.GetSpacing() and mask.GetOrigin() == volume.GetOrigin()
    assert dice(sitk.GetArrayFromImage(mask)[0] > 0, truth) > 0.85
    assert AutoSegmentation(method="ultrasound").source_kind == "auto:ultrasound"
    with pytest.raises(DicomInputError, match="needs a seed point"):
        segment_lesion(volume, AutoSegmentation(method="ultrasound"), None, "patient benign_3 US")


def test_2d_seed_outside_the_image_or_on_a_3d_series_fails_naming_the_row(tmp_path):
    seeds_csv = tmp_path / "seeds.csv"
    seeds_csv.write_text("patient_id,x,y,z\nA,500,10,\nB,10,10,\n")
    seeds = read_seeds(seeds_csv)
    flat = sitk.Image(200, 160, 1, sitk.sitkFloat32)
    with pytest.raises(DicomInputError, match=r"seeds.csv:2: seed column 500, row 10 lies outside"):
        segment_lesion(flat, AutoSegmentation(method="ultrasound"), seeds["A"][0], "A")
    volume = sitk.Image(20, 20, 5, sitk.sitkFloat32)
    with pytest.raises(DicomInputError, match=r"seeds.csv:3: a 2D seed .* 5 slices"):
        segment_lesion(volume, AutoSegmentation(method="confidence_connected"), seeds["B"][0], "B")


def test_fractional_2d_seed_is_refused(tmp_path):
    seeds_csv = tmp_path / "seeds.csv"
    seeds_csv.write_text("patient_id,x,y,z\nA,10.5,3,\n")
    with pytest.raises(SeedFileError, match=r"seeds.csv:2: bad seed row .*whole"):
        read_seeds(seeds_csv)


def test_ultrasound_method_from_the_environment():
    config = RadiomicsConfig.from_env({"RADIOMICS_AUTO_SEGMENTATION": "ultrasound"})
    assert config.auto_segmentation == "ultrasound"
    assert config.mask_options().auto.source_kind == "auto:ultrasound"
    assert RadiomicsConfig.from_env({}).auto_segmentation == ""


def _png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(sitk.GetImageFromArray(array.astype(np.uint8), isVector=array.ndim == 3), str(path))


def test_maskless_images_are_patients_only_when_seeded_or_auto_segmentation_is_on(tmp_path):
    inbox = tmp_path / "inbox"
    image, _ = speckled_lesion()
    _png(inbox / "benign" / "benign (1).png", image)  # seeded, no mask file
    _png(inbox / "benign" / "benign (2).png", image)  # neither seed nor mask file
    _png(inbox / "malignant" / "malignant (3).png", np.stack([image] * 3, axis=-1))
    _png(inbox / "malignant" / "malignant (3)_mask.png", np.where(speckled_lesion()[1], 255, 0))  # keeps its mask
    (tmp_path / "seeds.csv").write_text("patient_id,x,y,z\nbenign (1),90,70,\n")

    pairs, incomplete = scan_file_pairs(inbox, accept_maskless=maskless_images_accepted(tmp_path, ""))
    assert sorted(pairs) == [B1, M3] and pairs[B1].masks == []
    assert "no mask file beside it" in incomplete[inbox / "benign" / "benign (2).png"]
    assert len(pairs[M3].masks) == 1
    assert sorted(scan_file_pairs(inbox)[0]) == [M3]  # without the policy: as before
    everything = scan_file_pairs(inbox, accept_maskless=maskless_images_accepted(tmp_path, "ultrasound"))[0]
    assert sorted(everything) == [B1, B2, M3]
    labels, _ = labels_from_folders(inbox, accept_maskless=maskless_images_accepted(tmp_path, ""))
    assert labels.patient_id.tolist() == [B1, M3]


def test_seeded_png_without_mask_file_through_the_real_assets(tmp_path, monkeypatch):
    monkeypatch.setenv("RADIOMICS_DATA_DIR", str(tmp_path))
    root = DataRoot(tmp_path)
    image, truth = speckled_lesion()
    _png(root.inbox / "benign" / "benign (1).png", np.stack([image] * 3, axis=-1))
    _png(root.inbox / "benign" / "benign (2).png", image)
    (tmp_path / "seeds.csv").write_text("patient_id,x,y,z\nbenign (1),90,70,\n")
    snapshot = write_manifests(root, accept_maskless=maskless_images_accepted(tmp_path, "ultrasound"))
    assert sorted(snapshot.patients) == [B1, B2]
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(patients.name, [B1, B2])
        job = defs.resolve_job_def("ingest_patient")

        def run(key, **config):
            return job.execute_in_process(
                partition_key=key,
                instance=instance,
                raise_on_error=False,
                run_config={"resources": {"radiomics": {"config": config}}},
            )

        (off,) = step_failure_messages(run(B1))
        assert "benign (1).png: no mask file beside it and automated segmentation is off" in off
        assert run(B1, auto_segmentation="ultrasound").success
        (unseeded,) = step_failure_messages(run(B2, auto_segmentation="ultrasound"))
        assert "needs a seed" in unseeded and f"'{B2},column,row,'" in unseeded
    with duckdb.connect(str(root.warehouse), read_only=True) as con:
        (mask_row,) = con.execute("SELECT * FROM masks").df().itertuples()
        n_features = con.execute("SELECT count(*) FROM features WHERE roi = 'auto' AND modality = 'US'").fetchone()[0]
    assert (mask_row.patient_id, mask_row.source_kind, mask_row.source_path) == (
        B1,
        "auto:ultrasound",
        "seeds.csv",
    )
    found = sitk.GetArrayFromImage(sitk.ReadImage(mask_row.mask_path))[0] > 0
    assert dice(found, truth) > 0.85 and n_features > 90
    contrast, _ = recorded_confidence(mask_row.mask_path)  # the stored mask keeps the segmentation's confidence
    assert contrast == pytest.approx(chosen_contrast(image, (70, 90)))


def test_resource_decides_which_maskless_images_the_sensor_registers(tmp_path):
    (tmp_path / "seeds.csv").write_text("patient_id,x,y,z\nbenign (1),90,70,\n")
    seeded_only = RadiomicsConfig(data_dir=str(tmp_path)).accept_maskless()
    assert seeded_only(B1) and not seeded_only(B2)
    assert RadiomicsConfig(data_dir=str(tmp_path), auto_segmentation="ultrasound").accept_maskless()(B2)


def test_seeded_mask_records_its_confidence_in_the_stored_file(tmp_path):
    image, _ = speckled_lesion()
    volume = sitk.GetImageFromArray(image[None].astype(np.float32))
    seed = Seed(None, "", "test", (90, 70))
    mask = segment_lesion(volume, AutoSegmentation(method="ultrasound"), seed, "img")
    best = chosen_contrast(image, (70, 90))
    path = tmp_path / "mask.nrrd"
    sitk.WriteImage(mask, str(path), useCompression=True)  # as the masks step stores it
    contrast, agreement = recorded_confidence(str(path))
    assert contrast == pytest.approx(best, rel=1e-12)
    assert 0.0 < agreement <= 1.0
    assert sitk.ReadImage(str(path)).GetMetaData(SEED_KEY) == "90,70"
    # predict reports the same confidence with its score, and none for a mask file
    assert _recorded_contrast(mask) == pytest.approx(best, rel=1e-12)
    assert _recorded_contrast(sitk.GetImageFromArray(np.ones((1, 4, 4), np.uint8))) is None


def test_seeded_mask_quality_orders_by_confidence_and_measures_dice_against_expert_outlines(tmp_path):
    clear, clear_truth = speckled_lesion(seed=3)
    faint, _ = speckled_lesion(seed=4, lesion_echo=90.0)  # a lesion barely darker than the tissue around it
    rows = []
    for key, pixels, kind in (("a", clear, "auto:ultrasound"), ("b", faint, "auto:ultrasound"), ("c", clear, "file")):
        volume = sitk.GetImageFromArray(pixels[None].astype(np.float32))
        volume_path = tmp_path / f"{key}_image.nrrd"
        sitk.WriteImage(volume, str(volume_path))
        if kind == "file":
            mask = sitk.GetImageFromArray(clear_truth.astype(np.uint8)[None])
        else:
            mask = segment_lesion(volume, AutoSegmentation(method="ultrasound"), Seed(None, "", "t", (90, 70)), key)
        mask_path = tmp_path / f"{key}_mask.nrrd"
        sitk.WriteImage(mask, str(mask_path))
        rows.append((key, "auto" if kind != "file" else "mask", kind, str(mask_path), str(volume_path)))
    old = sitk.GetImageFromArray(clear_truth.astype(np.uint8)[None])  # a seeded mask stored before confidence was
    sitk.WriteImage(old, str(tmp_path / "d_mask.nrrd"))
    rows.append(("d", "auto", "auto:ultrasound", str(tmp_path / "d_mask.nrrd"), rows[0][4]))
    masks = pd.DataFrame(rows, columns=["patient_id", "roi", "source_kind", "mask_path", "volume_path"])
    seeds_csv = tmp_path / "seeds.csv"
    seeds_csv.write_text("patient_id,x,y,z\nc,90,70,\n")

    quality = seeded_mask_quality(masks, read_seeds(seeds_csv), worst=1)

    assert quality.confidence.patient_id.tolist() == ["b", "a", "d"]  # lowest contrast first, unrecorded last
    assert quality.confidence.contrast.iloc[0] < quality.confidence.contrast.iloc[1]
    assert quality.not_recorded == 1 and quality.worst.patient_id.tolist() == ["b"]
    (expert,) = quality.expert_dice.itertuples()
    expected = dice(segment_ultrasound_array(clear.astype(np.float32), (70, 90)), clear_truth)
    assert expert.patient_id == "c" and expert.dice == pytest.approx(expected)
    assert quality.dice_quartiles() == pytest.approx((expected,) * 3)
    ((caption, png),) = worst_mask_pictures(quality)
    assert caption.startswith("b, ROI auto: contrast") and png.startswith(b"\x89PNG")
    without_seeds = seeded_mask_quality(masks)
    assert without_seeds.expert_dice.empty and without_seeds.dice_quartiles() is None


def test_candidate_masks_are_the_grown_candidates_on_the_image_grid():
    image, _ = speckled_lesion()
    volume = sitk.GetImageFromArray(image[None].astype(np.float32))
    volume.SetSpacing((0.2, 0.3, 1.0))
    masks = ultrasound_candidate_masks(volume, (90, 70, 0))
    candidates = seeded_candidates(image.astype(np.float32), (70, 90))
    assert len(masks) == sum(c.grew for c in candidates)
    assert all(m.GetSpacing() == volume.GetSpacing() and m.GetSize() == volume.GetSize() for m in masks)
    chosen = segment_ultrasound_array(image.astype(np.float32), (70, 90))
    # the chosen outline is one of them, and each one is its candidate region plus the outline margin
    assert any(np.array_equal(sitk.GetArrayFromImage(m)[0] > 0, chosen) for m in masks)
    grown = [c.region for c in candidates if c.grew]
    assert all(np.all(sitk.GetArrayFromImage(m)[0][r] == 1) for m, r in zip(masks, grown, strict=True))


# --- features averaged over the candidate outlines (issue 29: RADIOMICS_ULTRASOUND_CANDIDATE_FEATURES) ---------

US_PARAMS = PARAMS_DIR / "us.yaml"
CHECKED_FEATURES = (
    "original_shape2D_PixelSurface",
    "original_shape2D_Perimeter",
    "original_firstorder_Mean",
    "original_glcm_Contrast",
    "original_glszm_ZoneEntropy",
)


@pytest.fixture(scope="module")
def candidate_study(tmp_path_factory):
    """A data root run through the batch driver with the option on: two seeded images (a clear and a faint lesion)
    and one with an expert mask file and a click (for the seeded-mask Dice)."""
    root = DataRoot(tmp_path_factory.mktemp("candidates"))
    clear, truth = speckled_lesion()
    faint, _ = speckled_lesion(seed=4, lesion_echo=90.0)
    _png(root.inbox / "benign" / "benign (1).png", clear)
    _png(root.inbox / "benign" / "benign (2).png", faint)
    _png(root.inbox / "malignant" / "malignant (3).png", clear)
    _png(root.inbox / "malignant" / "malignant (3)_mask.png", np.where(truth, 255, 0))
    (root.path / "seeds.csv").write_text(
        "patient_id,x,y,z\nbenign (1),90,70,\nbenign (2),90,70,\nmalignant (3),90,70,\n"
    )
    config = RadiomicsConfig.from_env({"RADIOMICS_AUTO_SEGMENTATION": "ultrasound", CANDIDATE_FEATURES_ENV: "1"})
    config = config.model_copy(update={"data_dir": str(root.path)})
    settings = config.patient_settings()
    assert settings.ultrasound_candidate_features
    write_manifests(root, accept_maskless=config.accept_maskless())
    outcomes = list(run_patients([B1, B2, M3], set(STAGES), settings, workers=1))
    assert [o.error for o in outcomes] == [None] * 3
    return root


def _stored(root, key):
    warehouse = Warehouse(root.warehouse)
    features = warehouse.query("SELECT * FROM features WHERE patient_id = ?", [key])
    features.index = features.image_type + "_" + features.feature_class + "_" + features.feature
    (mask,) = warehouse.query(
        "SELECT m.*, s.volume_path FROM masks m JOIN series s USING (patient_id, series_uid) WHERE patient_id = ?",
        [key],
    ).itertuples()
    diagnostics = warehouse.query("SELECT name, value FROM diagnostics WHERE patient_id = ?", [key])
    return features, mask, dict(zip(diagnostics.name, diagnostics.value, strict=True))


def test_candidate_option_is_off_by_default_and_read_from_the_environment():
    assert not RadiomicsConfig.from_env({}).patient_settings().ultrasound_candidate_features
    assert RadiomicsConfig.from_env({CANDIDATE_FEATURES_ENV: "1"}).patient_settings().ultrasound_candidate_features


def test_stored_features_of_a_seeded_mask_are_the_mean_over_its_candidate_masks(candidate_study):
    extractor = featureextractor.RadiomicsFeatureExtractor(str(US_PARAMS))  # PyRadiomics itself, not our wrapper
    for key in (B1, B2):
        features, mask, diagnostics = _stored(candidate_study, key)
        volume = sitk.ReadImage(mask.volume_path)
        candidates = ultrasound_candidate_masks(volume, (90, 70, 0))
        results = [extractor.execute(volume, candidate) for candidate in candidates]
        own = extractor.execute(volume, sitk.ReadImage(mask.mask_path))
        for name in CHECKED_FEATURES:
            expected = np.mean([float(result[name]) for result in results])
            assert features.value[name] == pytest.approx(expected, rel=1e-9, abs=1e-12), (key, name)
        # the candidates differ, so the mean is not the chosen outline's own value
        assert features.value["original_shape2D_PixelSurface"] != pytest.approx(
            float(own["original_shape2D_PixelSurface"]), rel=1e-6
        )
        assert diagnostics[CANDIDATE_MASKS_DIAGNOSTIC] == str(len(candidates))
        assert diagnostics[SKIPPED_CANDIDATES_DIAGNOSTIC] == "0"
        assert set(features.mask_hash) == {mask.mask_hash}  # the rows still describe the stored mask
    # an expert mask file is extracted as it is, option or not
    features, mask, diagnostics = _stored(candidate_study, M3)
    own = extractor.execute(sitk.ReadImage(mask.volume_path), sitk.ReadImage(mask.mask_path))
    for name in CHECKED_FEATURES:
        assert features.value[name] == pytest.approx(float(own[name]), rel=1e-9, abs=1e-12)
    assert CANDIDATE_MASKS_DIAGNOSTIC not in diagnostics


def test_candidates_below_the_minimum_roi_size_are_skipped_and_none_left_fails(tmp_path):
    image, _ = speckled_lesion()
    volume = sitk.GetImageFromArray(image[None].astype(np.float32))
    mask = segment_lesion(volume, AutoSegmentation(method="ultrasound"), Seed(None, "", "t", (90, 70)), "img")
    candidates = ultrasound_candidate_masks(volume, (90, 70, 0))
    areas = [int(sitk.GetArrayFromImage(c).sum()) for c in candidates]
    minimum = int(sitk.GetArrayFromImage(mask).sum()) - 1  # the chosen outline is among the largest here
    assert min(areas) <= minimum
    params = tmp_path / "us_min.yaml"
    params.write_text(US_PARAMS.read_text().replace("minimumROISize: 20", f"minimumROISize: {minimum}"))
    target = ExtractionTarget("p", "s", "US", "auto", volume, mask, source="img.png")
    rows, diagnostics = extract_candidate_average(target, params)
    kept = [c for c, area in zip(candidates, areas, strict=True) if area > minimum]
    extractor = featureextractor.RadiomicsFeatureExtractor(str(params))
    expected = np.mean([float(extractor.execute(volume, c)["original_firstorder_Mean"]) for c in kept])
    assert rows.set_index("feature").value["Mean"] == pytest.approx(expected, rel=1e-9)
    assert diagnostics[CANDIDATE_MASKS_DIAGNOSTIC] == len(kept)
    assert diagnostics[SKIPPED_CANDIDATES_DIAGNOSTIC] == len(candidates) - len(kept) > 0
    params.write_text(US_PARAMS.read_text().replace("minimumROISize: 20", f"minimumROISize: {max(areas)}"))
    with pytest.raises(ExtractionError, match=r"img.png, ROI auto: none of the \d+ candidate outlines"):
        extract_candidate_average(target, params)


def test_candidate_features_refuse_a_mask_without_seed_or_not_among_the_candidates():
    image, _ = speckled_lesion()
    volume = sitk.GetImageFromArray(image[None].astype(np.float32))
    mask = segment_lesion(volume, AutoSegmentation(method="ultrasound"), Seed(None, "", "t", (90, 70)), "img")
    unseeded = sitk.GetImageFromArray(sitk.GetArrayFromImage(mask))
    with pytest.raises(ExtractionError, match="img.png, ROI auto: the seeded mask does not record its seed"):
        extract_candidate_average(
            ExtractionTarget("p", "s", "US", "auto", volume, unseeded, source="img.png"), US_PARAMS
        )
    eroded = sitk.BinaryErode(mask, [2, 2, 0])
    eroded.SetMetaData(SEED_KEY, "90,70")
    with pytest.raises(ExtractionError, match="none of the candidate outlines recomputed from its seed"):
        extract_candidate_average(ExtractionTarget("p", "s", "US", "auto", volume, eroded, source="img.png"), US_PARAMS)


def test_training_records_the_option_from_the_stored_features_and_refuses_a_mix(candidate_study, tmp_path):
    warehouse = Warehouse(candidate_study.warehouse)
    assert candidate_averaged_training(warehouse, [B1, B2, M3])
    assert not candidate_averaged_training(warehouse, [M3])  # no seeded mask: nothing averaged
    mixed = tmp_path / "mixed.duckdb"
    shutil.copy(candidate_study.warehouse, mixed)
    with duckdb.connect(str(mixed)) as con:
        con.execute("DELETE FROM diagnostics WHERE patient_id = ? AND name = ?", [B2, CANDIDATE_MASKS_DIAGNOSTIC])
    with pytest.raises(ValueError, match=rf"1 are not \(e.g. patients {B2}\)"):
        candidate_averaged_training(Warehouse(mixed), [B1, B2, M3])


def _single_feature_model(root, column: str, value: float, *, candidate_features: bool) -> None:
    """A saved model whose probability is sigmoid(feature / |value| - 1): the feature it was given can be read back
    from the probability. Written where ``predict`` loads the promoted model."""
    model = LogisticRegression().fit(np.array([[0.0], [1.0]]), [0, 1])
    model.coef_, model.intercept_ = np.array([[1.0 / abs(value)]]), np.array([-1.0])
    saved = SavedModel(
        pipeline=Pipeline([("model", model)]),
        feature_columns=[column],
        model_id=f"test-{candidate_features}",
        threshold=0.5,
        trained_at="2026-01-01T00:00:00+00:00",
        params_hashes={"US": file_hash(US_PARAMS)},
        model="logreg",
        selection="none",
        standardise=False,
        pixel_spacing=series_spacing(Warehouse(root.warehouse), [B1, B2]),
        ultrasound_candidate_features=candidate_features,
    )
    root.models.mkdir(parents=True, exist_ok=True)
    (root.models / "model.pkl").write_bytes(pickle.dumps(saved))


def test_predict_computes_a_training_images_features_as_they_were_stored(candidate_study):
    root = candidate_study
    features, mask, _ = _stored(root, B1)
    own = featureextractor.RadiomicsFeatureExtractor(str(US_PARAMS)).execute(
        sitk.ReadImage(mask.volume_path), sitk.ReadImage(mask.mask_path)
    )
    for name in CHECKED_FEATURES:
        column = "US__auto__" + name.replace("_", "__")
        stored = float(features.value[name])
        for candidate_features, expected in ((True, stored), (False, float(own[name]))):
            _single_feature_model(root, column, stored, candidate_features=candidate_features)
            prediction = predict_image(
                root, root.inbox / "benign" / "benign (1).png", params_path=US_PARAMS, seed=(90, 70)
            )
            p = prediction.probability
            given = (np.log(p / (1 - p)) + 1.0) * abs(stored)
            assert given == pytest.approx(expected, rel=1e-7), (name, candidate_features)


def test_report_section_shows_seeded_mask_quality(candidate_study, tmp_path):
    root = candidate_study
    figures, section = seeded_masks_section(root)
    masks = Warehouse(root.warehouse).query(
        "SELECT m.patient_id, m.roi, m.source_kind, m.mask_path, s.volume_path FROM masks m "
        "JOIN series s USING (patient_id, series_uid)"
    )
    quality = seeded_mask_quality(masks, read_seeds(root.path / "seeds.csv"))
    assert figures["n_seeded_masks"] == 2 and figures["confidence_not_recorded"] == quality.not_recorded == 0
    assert figures["contrast_quartiles"] == pytest.approx(list(quality.contrast_quartiles()))
    assert [w["patient_id"] for w in figures["worst_masks"]] == quality.worst.patient_id.tolist() == [B2, B1]
    assert figures["expert_dice_quartiles"] == pytest.approx(list(quality.dice_quartiles()))
    ((expert),) = figures["expert_dice"]
    assert expert["patient_id"] == M3 and expert["dice"] == pytest.approx(quality.expert_dice.dice.iloc[0])
    assert "<h2>Seeded masks</h2>" in section and section.count("<figure") == 2
    median = quality.contrast_quartiles()[1]
    assert f"median {median:.2f}" in section and f"<td>{M3}</td><td>auto</td>" not in section
    assert f"<td>{M3}</td><td>mask</td><td>{quality.expert_dice.dice.iloc[0]:.3f}</td>" in section
    empty = DataRoot(tmp_path)
    Warehouse(empty.warehouse)  # creates the tables, no masks
    assert seeded_masks_section(empty) == (None, "")
