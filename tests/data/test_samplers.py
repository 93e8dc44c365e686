"""Province-balanced batch sampler: exact quotas, determinism, passes, oversampling, DDP sharding."""

from __future__ import annotations

import numpy as np
import pytest

from geopak.data.samplers import DEFAULT_QUOTAS, ProvinceBalancedBatchSampler, scale_quotas
from geopak.provinces import PROVINCE_NAMES


def make_provinces(counts, seed=0) -> np.ndarray:
    ids = np.concatenate([np.full(n, p) for p, n in enumerate(counts)]).astype(np.int64)
    return np.random.default_rng(seed).permutation(ids)


COUNTS = (640, 130, 90, 70, 40, 50, 12)  # Sindh-heavy like the seed data, AJK rare


def per_batch_counts(provinces, batches) -> np.ndarray:
    return np.stack([np.bincount(provinces[b], minlength=7) for b in batches])


def test_default_quotas_exact_per_batch():
    prov = make_provinces(COUNTS)
    s = ProvinceBalancedBatchSampler(prov, seed=1)
    batches = list(s)
    assert len(batches) == len(s) == int(np.ceil(len(prov) / 64))
    assert all(len(b) == 64 for b in batches)
    c = per_batch_counts(prov, batches)
    assert (c == np.array(DEFAULT_QUOTAS)).all()
    assert DEFAULT_QUOTAS == (16, 8, 8, 8, 8, 8, 8)


def test_quotas_scale_with_batch_size_and_names():
    prov = make_provinces(COUNTS)
    s = ProvinceBalancedBatchSampler(prov, batch_size=32, num_batches=5)
    assert s.quotas.tolist() == [8, 4, 4, 4, 4, 4, 4]
    assert (per_batch_counts(prov, list(s)) == s.quotas).all()
    s = ProvinceBalancedBatchSampler(
        prov, quotas={"Sindh": 2, "KPK": 1, "AJK": 1}, batch_size=8, num_batches=3
    )
    assert s.quotas.tolist() == [4, 0, 2, 0, 0, 0, 2]
    # names work as province labels too
    names = np.array(PROVINCE_NAMES)[prov]
    s2 = ProvinceBalancedBatchSampler(
        names, batch_size=8, num_batches=3, quotas={"Sindh": 2, "KPK": 1, "AJK": 1}
    )
    assert [b for b in s2] == [b for b in s]


def test_absent_province_quota_redistributed():
    counts = (300, 100, 0, 60, 0, 40, 20)  # no KPK, no GB
    prov = make_provinces(counts)
    s = ProvinceBalancedBatchSampler(prov, num_batches=4)
    q = s.quotas
    assert q.sum() == 64 and q[2] == 0 and q[4] == 0
    # the remaining 16:8:8:8:8 shares scaled to 64: 21.33 -> 21, 10.67 -> 11 for the three first (largest
    # remainders, ties in province order), 10 for the last
    assert q.tolist() == [21, 11, 0, 11, 0, 11, 10]
    assert (per_batch_counts(prov, list(s)) == q).all()
    assert scale_quotas([16, 8, 8, 8, 8, 8, 8], 64).tolist() == [16, 8, 8, 8, 8, 8, 8]
    with pytest.raises(ValueError, match="positive quota"):
        scale_quotas([0, 1, 0, 0, 0, 0, 0], 8, present=np.array([True] + [False] * 6))


def test_deterministic_per_seed_and_epoch():
    prov = make_provinces(COUNTS)
    a = ProvinceBalancedBatchSampler(prov, seed=7)
    b = ProvinceBalancedBatchSampler(prov, seed=7)
    assert list(a) == list(b)
    a.set_epoch(3)
    b.set_epoch(3)
    e3 = list(a)
    assert e3 == list(b)
    a.set_epoch(0)
    assert list(a) != e3
    assert list(ProvinceBalancedBatchSampler(prov, seed=8)) != list(b)
    # resuming from the state dict reproduces the epoch
    c = ProvinceBalancedBatchSampler(prov, seed=0)
    c.load_state_dict(b.state_dict())
    assert list(c) == e3


def test_abundant_province_seen_once_per_pass_across_epochs():
    prov = make_provinces(COUNTS)
    s = ProvinceBalancedBatchSampler(prov, num_batches=15, seed=3)
    sindh = np.flatnonzero(prov == 0)
    drawn = []
    for e in range(8):  # 8 x 15 x 16 = 1920 draws = exactly 3 passes over 640 Sindh samples
        s.set_epoch(e)
        drawn.extend(i for b in s for i in b if prov[i] == 0)
    drawn = np.array(drawn)
    assert len(drawn) == 3 * len(sindh)
    for k in range(3):
        chunk = np.sort(drawn[k * 640 : (k + 1) * 640])
        assert (chunk == sindh).all(), f"pass {k} does not see every Sindh sample exactly once"
    # and within one epoch an abundant province never repeats
    s.set_epoch(0)
    one = [i for b in s for i in b if prov[i] == 0]
    assert len(one) == len(set(one))
    assert not s.rare[0] and s.rare[6]


def test_cover_mode_sees_every_sample():
    prov = make_provinces(COUNTS)
    s = ProvinceBalancedBatchSampler(prov, num_batches="cover", seed=2)
    assert len(s) == 40  # Sindh: 640 / 16
    seen = {i for b in s for i in b}
    assert seen == set(range(len(prov)))


def test_rare_province_oversampled_with_and_without_replacement():
    prov = make_provinces(COUNTS)
    ajk = np.flatnonzero(prov == 6)
    s = ProvinceBalancedBatchSampler(prov, num_batches=12, seed=4, replacement=True)
    draws = np.array([i for b in s for i in b if prov[i] == 6])
    assert len(draws) == 96 and set(draws) <= set(ajk)
    counts = np.bincount(draws, minlength=len(prov))[ajk]
    assert counts.min() >= 1  # one full pass per epoch
    assert counts.max() > 96 // 12  # surplus with replacement: some sample drawn more than an even share
    s = ProvinceBalancedBatchSampler(prov, num_batches=12, seed=4, replacement=False)
    draws = np.array([i for b in s for i in b if prov[i] == 6])
    counts = np.bincount(draws, minlength=len(prov))[ajk]
    assert counts.min() == counts.max() == 8  # cycling passes: 96 = 8 x 12, every sample 8 times


def test_distributed_ranks_disjoint_and_union_is_single_process_epoch():
    prov = make_provinces(COUNTS)
    world = 2
    ranks = [
        ProvinceBalancedBatchSampler(prov, seed=5, rank=r, world_size=world, num_batches=6)
        for r in range(world)
    ]
    single = ProvinceBalancedBatchSampler(prov, seed=5, num_batches=12)
    for e in (0, 1):
        for r in ranks:
            r.set_epoch(e)
        single.set_epoch(e)
        b0, b1 = list(ranks[0]), list(ranks[1])
        assert len(b0) == len(b1) == 6
        sindh0 = {i for b in b0 for i in b if prov[i] == 0}
        sindh1 = {i for b in b1 for i in b if prov[i] == 0}
        assert not sindh0 & sindh1
        interleaved = [x for pair in zip(b0, b1) for x in pair]
        assert interleaved == list(single)
    # default length divides the dataset over the ranks
    assert len(ProvinceBalancedBatchSampler(prov, rank=1, world_size=4)) == int(np.ceil(len(prov) / (64 * 4)))


def test_bad_arguments():
    prov = make_provinces(COUNTS)
    with pytest.raises(ValueError, match="rank"):
        ProvinceBalancedBatchSampler(prov, rank=2, world_size=2)
    with pytest.raises(ValueError, match="outside 0..6"):
        ProvinceBalancedBatchSampler(np.array([0, 9]))
    with pytest.raises(ValueError, match="7 entries"):
        ProvinceBalancedBatchSampler(prov, quotas=[1, 2, 3])
    with pytest.raises(ValueError, match="num_batches"):
        ProvinceBalancedBatchSampler(prov, num_batches=0)
    with pytest.raises(ValueError, match="empty"):
        ProvinceBalancedBatchSampler(np.array([], dtype=np.int64))
    from geopak.provinces import UnknownProvinceError

    with pytest.raises(UnknownProvinceError):
        ProvinceBalancedBatchSampler(np.array(["Sindh", "Atlantis"]))


def test_works_as_dataloader_batch_sampler():
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    prov = make_provinces(COUNTS)
    ds = TensorDataset(torch.from_numpy(prov))
    s = ProvinceBalancedBatchSampler(prov, batch_size=16, num_batches=3)
    for (batch,) in DataLoader(ds, batch_sampler=s):
        assert torch.bincount(batch, minlength=7).tolist() == s.quotas.tolist()
