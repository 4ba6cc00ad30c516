"""Duplicate images and labels.csv groups stay in one CV fold; groups with both labels leave training."""

import numpy as np
import pandas as pd
import SimpleITK as sitk

from radiomics_assets import modelling
from radiomics_assets.hashing import image_hash
from radiomics_assets.paths import DataRoot
from radiomics_assets.warehouse import Warehouse


def _texture(seed: int, shape=(96, 128)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    coarse = rng.random((shape[0] // 8, shape[1] // 8))
    return np.kron(coarse, np.ones((8, 8))) * 200 + rng.normal(0, 5, shape)


def _store(root: DataRoot, key: str, pixels: np.ndarray) -> dict:
    image = sitk.GetImageFromArray(pixels.astype(np.float32))
    path = root.path / "volumes" / key / "image.nrrd"
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path), useCompression=True)
    return {
        "patient_id": key,
        "series_uid": f"{key}-1",
        "modality": "US",
        "volume_path": str(path),
        "image_hash": image_hash(image),
    }


def _write(tmp_path, n: int = 24):
    """n patients, labels alternate: P000 and P001 hold the same image resized and brightened (labels differ:
    a conflict), P002 is an exact copy of P004 (same label), P006 and P008 share a labels.csv group."""
    root = DataRoot(tmp_path)
    warehouse = Warehouse(root.warehouse)
    base = _texture(0)
    resized = sitk.GetArrayFromImage(
        sitk.Resample(
            sitk.GetImageFromArray(base), [160, 120], sitk.Transform(), sitk.sitkLinear, (0, 0), (128 / 160, 96 / 120)
        )
    )
    pixels = {f"P{i:03d}": _texture(100 + i) for i in range(n)}
    pixels["P000"], pixels["P001"] = base, 1.3 * resized + 20
    pixels["P002"] = pixels["P004"].copy()
    # P010 and P012: volumes (5 slices) with the same middle slice but other slices different: not duplicates.
    middle = _texture(500)
    pixels["P010"] = np.stack([_texture(600 + k) if k != 2 else middle for k in range(5)])
    pixels["P012"] = np.stack([_texture(700 + k) if k != 2 else middle for k in range(5)])
    rows = pd.DataFrame([_store(root, key, values) for key, values in pixels.items()])
    rows["size_z"] = [v.shape[0] if v.ndim == 3 else 1 for v in pixels.values()]
    with warehouse.connect() as con:
        con.register("incoming", rows)
        con.execute("INSERT INTO series BY NAME SELECT * FROM incoming")
    labels = pd.Series(np.arange(n) % 2, index=list(pixels))
    groups = pd.Series("", index=labels.index)
    groups[["P006", "P008"]] = "person-A"
    return root, warehouse, labels, groups


def test_exact_near_and_declared_duplicates_form_groups(tmp_path):
    root, warehouse, labels, declared = _write(tmp_path)
    base = _texture(0)
    assert modelling.perceptual_hash(base) != modelling.perceptual_hash(_texture(1))
    groups = modelling.patient_groups(warehouse, list(labels.index), labels, declared, max_distance=8)
    by_members = {tuple(g["patients"]): g for g in groups.table}
    assert set(by_members) == {("P000", "P001"), ("P002", "P004"), ("P006", "P008")}
    assert by_members[("P000", "P001")]["conflicting_labels"] and groups.excluded == ["P000", "P001"]
    assert "near-duplicate" in by_members[("P000", "P001")]["links"][0]
    assert "content hash" in by_members[("P002", "P004")]["links"][0]
    assert "labels.csv group 'person-A'" in by_members[("P006", "P008")]["links"][0]
    assert not by_members[("P006", "P008")]["conflicting_labels"]
    # Only exact duplicates when the near-duplicate test is off.
    exact = modelling.patient_groups(warehouse, list(labels.index), labels, declared * 0, max_distance=-1)
    assert [g["patients"] for g in exact.table] == [["P002", "P004"]]
    # The fingerprints are cached: a second call reads no volume.
    for path in (root.path / "volumes").rglob("*.nrrd"):
        path.unlink()
    again = modelling.patient_groups(warehouse, list(labels.index), labels, declared, max_distance=8)
    assert [g["patients"] for g in again.table] == [g["patients"] for g in groups.table]


def test_grouped_cv_keeps_each_group_in_one_fold():
    rng = np.random.default_rng(0)
    n = 36
    X = pd.DataFrame(rng.standard_normal((n, 8)), index=[f"P{i:03d}" for i in range(n)])
    X.columns = [f"f{j}" for j in range(8)]
    y = pd.Series(np.repeat([0, 1], n // 2), index=X.index)
    groups = np.array([f"g{i // 3}" for i in range(n)])  # 12 groups of three patients, one label each
    settings = modelling.ModellingSettings(models=("logreg",), folds=4, repeats=2, inner_folds=2, permutations=0)
    cv = modelling.cross_validate(X, y, settings, groups)
    for folds in cv.fold_of:
        for g in np.unique(groups):
            assert len(set(folds[groups == g])) == 1, g
    permuted = modelling.validation.permuted_labels(y.to_numpy(), groups, np.random.default_rng(1))
    assert all(len(set(permuted[groups == g])) == 1 for g in np.unique(groups))
    assert permuted.sum() == y.sum()


def test_labels_csv_group_column_is_read(tmp_path):
    (tmp_path / "labels.csv").write_text("patient_id,label,group\nA,yes,p1\nB,no,p1\nC,yes,\nD,no,p2\n")
    table = modelling.load_labels(DataRoot(tmp_path))
    assert list(table.group) == ["p1", "p1", "", "p2"]
    assert list(modelling.load_labels(DataRoot(tmp_path), group_column="absent").group) == [""] * 4
