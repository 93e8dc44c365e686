"""Feature cache: build, get (rows, ids, mixed views), fingerprint reuse/rebuild, atomic builds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from geopak.model.geopak import GeopakConfig, GeopakModel, synthetic_cell_table
from geopak.train.cache import (
    CachedFeatureDataset,
    CacheError,
    FeatureCache,
    collate_batch,
    encoder_fingerprint,
    view_for,
)


class Images(Dataset):
    """Seeded random images; ``shift`` makes a different (augmented-like) view of the same rows."""

    def __init__(self, n: int, shift: float = 0.0, fail_at: int | None = None) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.rand(n, 3, 32, 32, generator=g)
        self.shift = shift
        self.fail_at = fail_at

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        if self.fail_at is not None and i == self.fail_at:
            raise RuntimeError("disk on fire")
        return {"image": (self.x[i] + self.shift).clamp(0, 1)}


@pytest.fixture(scope="module")
def model() -> GeopakModel:
    torch.manual_seed(0)
    m = GeopakModel(GeopakConfig.tiny(), synthetic_cell_table(20))
    m.freeze_encoders()
    return m.eval()


def _build(root: Path, model: GeopakModel, n: int = 10, views: int = 3, **kw) -> FeatureCache:
    ids = [f"img{i}" for i in range(n)]
    return FeatureCache(root).build(
        model, Images(n), ids, views=views, view_dataset=lambda v: Images(n, shift=0.1 * v),
        batch_size=4, progress=False, **kw,
    )


def test_build_and_get_match_encode(tmp_path: Path, model: GeopakModel) -> None:
    cache = _build(tmp_path / "c", model)
    assert len(cache) == 10 and cache.views == 3 and cache.ids[3] == "img3"
    imgs = Images(10).x
    with torch.no_grad():
        c0, s0 = model.encode(imgs)
        c2, s2 = model.encode((imgs + 0.2).clamp(0, 1))
    clip, scene = cache.get([0, 5, 9])
    assert clip.shape == (3, 32) and scene.shape == (3, 64) and clip.dtype == torch.float32
    torch.testing.assert_close(clip, c0[[0, 5, 9]], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(scene, s0[[0, 5, 9]], atol=1e-5, rtol=1e-5)
    # by ids, one view for all
    clip_v2, _ = cache.get(np.array(["img9", "img1"]), view=2)
    torch.testing.assert_close(clip_v2, c2[[9, 1]], atol=1e-5, rtol=1e-5)
    # a view per sample: one gather per distinct view
    clip_mix, scene_mix = cache.get([1, 1, 4], view=np.array([0, 2, 2]))
    torch.testing.assert_close(clip_mix, torch.stack([c0[1], c2[1], c2[4]]), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(scene_mix[1], s2[1], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(clip_mix[0], clip_mix[1])  # views differ
    # files are memory-mapped .npy per (encoder, view)
    assert (tmp_path / "c" / "test_vit" / "view2.npy").exists()
    assert (tmp_path / "c" / "test_resnet" / "view0.npy").exists()
    assert isinstance(cache.array("clip", 1), np.memmap)
    with pytest.raises(CacheError, match="'nope' is not in the feature cache"):
        cache.get(["nope"])
    with pytest.raises(CacheError, match="out of range"):
        cache.get([10])
    with pytest.raises(CacheError, match="view 3 out of range"):
        cache.get([0], view=3)


def test_fingerprint_decides_reuse(tmp_path: Path, model: GeopakModel) -> None:
    fp = {"encoders": encoder_fingerprint(model), "views": 2, "image_size": 32}
    cache = _build(tmp_path / "c", model, views=2, fingerprint=fp)
    assert cache.matches(fp)
    assert FeatureCache(tmp_path / "c").matches(fp)  # a fresh handle on the same folder
    assert not cache.matches({**fp, "image_size": 64})
    assert not FeatureCache(tmp_path / "other").matches(fp)
    # changing encoder weights changes the fingerprint
    other = GeopakModel(GeopakConfig.tiny(), synthetic_cell_table(20))
    with torch.no_grad():
        other.load_state_dict(model.state_dict())
        assert encoder_fingerprint(other) == encoder_fingerprint(model)
        next(other.scene.parameters()).add_(0.01)
    fp2 = {**fp, "encoders": encoder_fingerprint(other)}
    assert fp2["encoders"]["scene"]["weights"] != fp["encoders"]["scene"]["weights"]
    assert fp2["encoders"]["clip"] == fp["encoders"]["clip"]
    assert not cache.matches(fp2)
    rebuilt = _build(tmp_path / "c", other, views=2, fingerprint=fp2)
    assert rebuilt.matches(fp2) and not rebuilt.matches(fp)


def test_killed_build_leaves_the_old_cache(tmp_path: Path, model: GeopakModel) -> None:
    fp = {"v": 1}
    _build(tmp_path / "c", model, views=1, fingerprint=fp)
    with pytest.raises(RuntimeError, match="disk on fire"):
        FeatureCache(tmp_path / "c").build(
            model, Images(10, fail_at=7), [f"img{i}" for i in range(10)], batch_size=4, progress=False,
            fingerprint={"v": 2},
        )
    assert FeatureCache(tmp_path / "c").matches(fp)
    assert [p.name for p in tmp_path.iterdir()] == ["c"]  # no temporary folder left behind
    with pytest.raises(CacheError, match="meta.json missing"):
        _ = FeatureCache(tmp_path / "none").meta


def test_build_argument_errors(tmp_path: Path, model: GeopakModel) -> None:
    with pytest.raises(CacheError, match="4 rows but 3 ids"):
        FeatureCache(tmp_path / "c").build(model, Images(4), ["a", "b", "c"], progress=False)
    with pytest.raises(CacheError, match="needs view_dataset"):
        FeatureCache(tmp_path / "c").build(model, Images(4), list("abcd"), views=2, progress=False)


def test_float16_storage(tmp_path: Path, model: GeopakModel) -> None:
    c16 = _build(tmp_path / "h", model, views=1, dtype="float16")
    c32 = _build(tmp_path / "f", model, views=1)
    assert c16.array("clip").dtype == np.float16
    a, b = c16.get(np.arange(10)), c32.get(np.arange(10))
    torch.testing.assert_close(a[0], b[0], atol=2e-2, rtol=2e-3)


def test_view_choice_is_seeded_and_uses_every_view() -> None:
    rows = np.arange(4000)
    v = view_for(rows, epoch=3, seed=7, views=4)
    assert np.array_equal(v, view_for(rows, epoch=3, seed=7, views=4))
    assert not np.array_equal(v, view_for(rows, epoch=4, seed=7, views=4))
    counts = np.bincount(v, minlength=4)
    assert counts.min() > 800  # about uniform
    assert (view_for(rows, 0, 0, 1) == 0).all()


def test_cached_dataset_batches(tmp_path: Path, model: GeopakModel) -> None:
    cache = _build(tmp_path / "c", model, views=3)
    n = len(cache)
    targets = {
        "province": np.arange(n) % 7, "cell_id": np.arange(n), "lat": np.linspace(25, 35, n),
        "lon": np.linspace(62, 75, n),
    }
    ds = CachedFeatureDataset(cache, targets, seed=1)
    batches = [[0, 3, 4], [9, 1]]
    loader = DataLoader(ds, batch_sampler=batches, collate_fn=collate_batch)
    got = list(loader)
    assert got[0]["clip_feat"].shape == (3, 32) and got[1]["scene_feat"].shape == (2, 64)
    assert got[0]["index"].tolist() == [0, 3, 4] and got[0]["province"].tolist() == [0, 3, 4]
    assert got[1]["lat"].dtype == torch.float32
    # the views drawn follow (seed, epoch, row); another epoch draws others
    views = view_for(np.array([0, 3, 4]), 0, 1, 3)
    expect, _ = cache.get([0, 3, 4], views)
    torch.testing.assert_close(got[0]["clip_feat"], expect)
    ds.set_epoch(5)
    e5 = ds.__getitems__(list(range(n)))["clip_feat"]
    ds.set_epoch(0)
    e0 = ds.__getitems__(list(range(n)))["clip_feat"]
    assert not torch.allclose(e0, e5)
    val = CachedFeatureDataset(cache, targets, random_views=False)
    torch.testing.assert_close(val[2]["clip_feat"], cache.get([2])[0][0])
    with pytest.raises(CacheError, match="one value per cached row"):
        CachedFeatureDataset(cache, {**targets, "lat": targets["lat"][:3]})
