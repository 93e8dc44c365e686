"""Torch datasets over manifests and cached features."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from geopak.data.augment import build_eval_transform, build_train_transform
from geopak.data.datasets import DatasetError, FeatureDataset, GeoImageDataset, ManifestImageDataset, collate
from geopak.data.images import ImageReadError
from geopak.data.samplers import ProvinceBalancedBatchSampler
from geopak.geocells import CellTable


def cell_table() -> CellTable:
    rows = [
        (0, "Sindh", 24.86, 67.00, 5.0, 100, True),
        (1, "Sindh", 25.40, 68.37, 30.0, 50, False),
        (2, "Punjab", 31.52, 74.36, 6.0, 80, True),
        (3, "Gilgit-Baltistan", 35.92, 74.31, 50.0, 40, False),
    ]
    cols = ["cell_id", "province", "center_lat", "center_lon", "radius_km", "count", "urban"]
    return CellTable(pd.DataFrame(rows, columns=cols))


@pytest.fixture
def manifest(tmp_path) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = [
        ("a", 24.9, 67.1, "Sindh"),
        ("b", 25.3, 68.2, "sindh"),
        ("c", 31.5, 74.3, "Punjab"),
        ("d", 35.9, 74.4, "GB"),
        ("e", 34.0, 71.5, "Khyber Pakhtunkhwa"),  # no cells in KPK
        ("f", 31.6, 74.2, "Punjab"),
    ]
    recs = []
    for i, (id_, lat, lon, prov) in enumerate(rows):
        p = tmp_path / f"{id_}.{'png' if i % 2 else 'jpg'}"
        Image.fromarray(rng.integers(0, 255, (30 + 7 * i, 50, 3), dtype=np.uint8)).save(p)
        recs.append({"id": id_, "path": str(p), "lat": lat, "lon": lon, "province": prov, "source": "test"})
    return pd.DataFrame(recs)


def test_items_without_cells(manifest):
    ds = ManifestImageDataset(manifest, build_eval_transform(32))
    assert len(ds) == 6 and ds.ids == list("abcdef")
    item = ds[2]
    assert set(item) == {"image", "index", "province", "cell_id", "lat", "lon"}
    assert item["image"].shape == (3, 32, 32) and item["image"].dtype == torch.float32
    assert 0.0 <= float(item["image"].min()) and float(item["image"].max()) <= 1.0
    assert item["index"].item() == 2 and item["province"].dtype == torch.long
    assert item["province"].item() == 1 and item["cell_id"].item() == -1
    assert item["lat"].dtype == torch.float32 and item["lat"].item() == pytest.approx(31.5)
    assert ds.province.tolist() == [0, 0, 1, 4, 2, 1]
    assert (ds.cell_id == -1).all()
    assert ds[-1]["index"].item() == 5
    with pytest.raises(IndexError):
        ds[6]


def test_cells_assigned_nearest_in_province(manifest):
    t = cell_table()
    ds = ManifestImageDataset(manifest, build_eval_transform(16), cells=t)
    assert ds.cell_id.tolist() == [0, 1, 2, 3, -1, 2]
    assert ds[3]["cell_id"].item() == 3
    # explicit ids and the manifest column take precedence, validated against the table
    ds2 = ManifestImageDataset(manifest, build_eval_transform(16), cells=t, cell_ids=[1, 0, 2, 3, -1, 2])
    assert ds2.cell_id.tolist() == [1, 0, 2, 3, -1, 2]
    ds3 = ManifestImageDataset(
        manifest.assign(cell_id=[1, 1, 2, 3, -1, 2]), build_eval_transform(16), cells=t
    )
    assert ds3.cell_id.tolist() == [1, 1, 2, 3, -1, 2]
    with pytest.raises(DatasetError, match=r"row 0 \(id 'a'\).*cell 2 lies in province 1"):
        ManifestImageDataset(manifest, build_eval_transform(16), cells=t, cell_ids=[2, 0, 2, 3, -1, 2])
    with pytest.raises(DatasetError, match="has cell_id 9"):
        ManifestImageDataset(manifest.assign(cell_id=[0, 0, 2, 9, -1, 2]), build_eval_transform(16), cells=t)
    with pytest.raises(DatasetError, match="without the cell table"):
        ManifestImageDataset(manifest, build_eval_transform(16), cell_ids=[0] * 6)


def test_bad_manifest_rows_are_named(manifest):
    with pytest.raises(DatasetError, match=r"row 4 \(id 'e'\).*Atlantis"):
        ManifestImageDataset(
            manifest.assign(province=["Sindh"] * 4 + ["Atlantis", "Punjab"]), build_eval_transform(8)
        )
    bad = manifest.copy()
    bad.loc[1, "lat"] = np.nan
    with pytest.raises(DatasetError, match=r"row 1 \(id 'b'\) has lat=nan"):
        ManifestImageDataset(bad, build_eval_transform(8))
    with pytest.raises(DatasetError, match=r"lacks columns \['path'\]"):
        ManifestImageDataset(manifest.drop(columns="path"), build_eval_transform(8))


def test_unreadable_image_names_row_and_id(manifest, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    df = manifest.copy()
    df.loc[3, "path"] = str(broken)
    ds = ManifestImageDataset(df, build_eval_transform(8))
    with pytest.raises(ImageReadError, match=r"row 3, id 'd'"):
        ds[3]


def test_view_seed_fixes_augmentation(manifest):
    t = build_train_transform(24, {"weather_p": 1.0, "noise_p": 1.0})
    v1a = ManifestImageDataset(manifest, t, view_seed=(0, 1))
    v1b = ManifestImageDataset(manifest, t, view_seed=(0, 1))
    v2 = ManifestImageDataset(manifest, t, view_seed=(0, 2))
    assert torch.equal(v1a[1]["image"], v1b[1]["image"])
    assert torch.equal(v1a[1]["image"], v1a[1]["image"])
    assert not torch.equal(v1a[1]["image"], v2[1]["image"])
    # the global RNG is left alone
    torch.manual_seed(0)
    before = torch.rand(3)
    torch.manual_seed(0)
    v1a[0]
    assert torch.equal(torch.rand(3), before)
    free = ManifestImageDataset(manifest, t)
    assert not torch.equal(free[1]["image"], free[1]["image"])


def test_engine_style_construction_and_dataloader(manifest):
    ds = GeoImageDataset(
        paths=manifest["path"].to_numpy(),
        targets={
            "province": np.array([0, 0, 1, 4, 2, 1]),
            "cell_id": np.array([0, 1, 2, 3, -1, 2]),
            "lat": manifest["lat"].to_numpy(),
            "lon": manifest["lon"].to_numpy(),
        },
        image_size=20,
        augment={},
        view_seed=(3, 1),
    )
    assert ds.ids == [str(i) for i in range(6)]
    batch = next(iter(DataLoader(ds, batch_size=4, collate_fn=collate)))
    assert batch["image"].shape == (4, 3, 20, 20)
    assert batch["index"].tolist() == [0, 1, 2, 3] and batch["cell_id"].tolist() == [0, 1, 2, 3]
    eval_ds = GeoImageDataset(
        manifest["path"],
        {"province": manifest["province"], "lat": manifest["lat"], "lon": manifest["lon"]},
        image_size=20,
    )
    from geopak.data.images import to_tensor

    assert torch.equal(eval_ds[0]["image"], to_tensor(manifest["path"][0], 20))
    with pytest.raises(DatasetError, match="targets lack"):
        GeoImageDataset(manifest["path"], {"province": manifest["province"]})
    with pytest.raises(DatasetError, match="has 2 values for 6 rows"):
        GeoImageDataset(
            manifest["path"], {"province": [0] * 6, "lat": [30] * 6, "lon": [70] * 6, "cell_id": [0, 1]}
        )


# ------------------------------------------------------------------ cached features
def feature_targets(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    prov = rng.integers(0, 7, n)
    return {
        "province": prov,
        "cell_id": rng.integers(-1, 5, n),
        "lat": rng.uniform(24, 36, n),
        "lon": rng.uniform(61, 77, n),
    }


def test_feature_dataset_items_and_batches(tmp_path):
    n = 50
    clip = np.lib.format.open_memmap(tmp_path / "clip.npy", mode="w+", dtype=np.float16, shape=(n, 12))
    clip[:] = np.arange(n * 12).reshape(n, 12) % 97
    clip.flush()
    clip = np.load(tmp_path / "clip.npy", mmap_mode="r")
    scene = torch.randn(n, 20)
    tg = feature_targets(n)
    ds = FeatureDataset(clip, scene, tg, ids=[f"img{i}" for i in range(n)])
    assert len(ds) == n and ds.ids[3] == "img3"
    item = ds[7]
    assert set(item) == {"clip_feat", "scene_feat", "index", "province", "cell_id", "lat", "lon"}
    assert item["clip_feat"].dtype == torch.float32 and item["clip_feat"].shape == (12,)
    assert torch.equal(item["clip_feat"], torch.from_numpy(np.asarray(clip[7], np.float32)))
    assert torch.equal(item["scene_feat"], scene[7])
    assert item["province"].item() == tg["province"][7] and item["cell_id"].item() == tg["cell_id"][7]
    b = ds.__getitems__([5, 1, 5, 40])
    assert b["clip_feat"].shape == (4, 12) and b["index"].tolist() == [5, 1, 5, 40]
    assert torch.equal(b["scene_feat"][1], scene[1])
    # through a DataLoader with the balanced sampler: one read per batch, exact quotas
    sampler = ProvinceBalancedBatchSampler(tg["province"], batch_size=14, num_batches=3)
    for batch in DataLoader(ds, batch_sampler=sampler, collate_fn=collate):
        assert batch["clip_feat"].shape == (14, 12)
        assert torch.bincount(batch["province"], minlength=7).tolist() == sampler.quotas.tolist()
        assert torch.equal(batch["lat"], torch.as_tensor(tg["lat"], dtype=torch.float32)[batch["index"]])


def test_feature_dataset_errors():
    tg = feature_targets(10)
    with pytest.raises(DatasetError, match="clip has 10 rows but scene has 9"):
        FeatureDataset(np.zeros((10, 4)), np.zeros((9, 4)), tg)
    with pytest.raises(DatasetError, match="2-D"):
        FeatureDataset(np.zeros((10, 2, 4)), np.zeros((10, 4)), tg)
    with pytest.raises(DatasetError, match="has province id 9"):
        FeatureDataset(np.zeros((10, 4)), np.zeros((10, 4)), {**tg, "province": np.full(10, 9)})
    ds = FeatureDataset(np.zeros((10, 4)), np.zeros((10, 4)), tg)
    with pytest.raises(IndexError):
        ds.__getitems__([3, 10])
