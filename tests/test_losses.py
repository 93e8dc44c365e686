"""Losses against slow, explicit-loop reference computations on random data."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
import torch

from geopak.geocells import CellTable
from geopak.losses import (
    DEFAULT_TAU_KM,
    GeopakLoss,
    LossWeights,
    cell_kl_loss,
    haversine_loss,
    province_ce,
    province_class_weights,
    smoothed_cell_targets,
    true_cell_offset_positions,
)
from geopak.provinces import PROVINCES

R = 6371.0088


def ref_haversine(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    a = (
        math.sin((p2 - p1) / 2) ** 2
        + math.cos(p1) * math.cos(p2) * math.sin(math.radians(lon2 - lon1) / 2) ** 2
    )
    return 2 * R * math.asin(math.sqrt(a))


def random_table(seed: int = 0, counts: tuple[int, ...] = (9, 4, 0, 2, 5, 1, 3)) -> CellTable:
    rng = np.random.default_rng(seed)
    rows = []
    boxes = [
        (24, 28, 66, 71),
        (28, 33, 70, 75),
        (32, 36, 70, 73),
        (33.5, 33.8, 72.8, 73.2),
        (35, 37, 72, 77),
        (25, 31, 61, 70),
        (33, 35.5, 73, 75),
    ]
    cid = 0
    for p, n in enumerate(counts):
        la0, la1, lo0, lo1 = boxes[p]
        for _ in range(n):
            rows.append(
                (
                    cid,
                    PROVINCES[p].name,
                    rng.uniform(la0, la1),
                    rng.uniform(lo0, lo1),
                    float(rng.uniform(2, 40)),
                    50,
                    bool(rng.random() < 0.3),
                )
            )
            cid += 1
    df = pd.DataFrame(
        rows, columns=["cell_id", "province", "center_lat", "center_lon", "radius_km", "count", "urban"]
    )
    return CellTable(df)


def random_batch(table: CellTable, b: int, seed: int = 0) -> dict[str, torch.Tensor]:
    rng = np.random.default_rng(seed)
    cell = rng.integers(0, table.n_cells, size=b)
    prov = table.province_ids[cell]
    lat = table.centers[cell, 0] + rng.normal(0, 0.1, b)
    lon = table.centers[cell, 1] + rng.normal(0, 0.1, b)
    return {
        "province": torch.as_tensor(prov),
        "cell_id": torch.as_tensor(cell),
        "lat": torch.as_tensor(lat, dtype=torch.float32),
        "lon": torch.as_tensor(lon, dtype=torch.float32),
    }


@dataclass
class FakeOut:
    province_logits: torch.Tensor
    cell_logits: torch.Tensor
    aux_latlon: torch.Tensor
    fused: torch.Tensor


def random_out(table: CellTable, b: int, seed: int = 0) -> FakeOut:
    g = torch.Generator().manual_seed(seed)
    k = table.max_cells
    cl = torch.randn(b, 7, k, generator=g) * 2
    cl[:, torch.from_numpy(table.padded_index() < 0)] = -1e4
    return FakeOut(
        province_logits=torch.randn(b, 7, generator=g) * 2,
        cell_logits=cl,
        aux_latlon=torch.stack(
            [torch.rand(b, generator=g) * 12 + 24, torch.rand(b, generator=g) * 16 + 61], 1
        ),
        fused=torch.randn(b, 8, generator=g),
    )


# ------------------------------------------------------------------ province weights and CE
def test_class_weights_match_reference():
    counts = [65221, 8459, 5344, 4410, 2379, 3627, 1075]
    beta = 0.9995
    ref = [(1 - beta) / (1 - beta**n) for n in counts]
    mean = sum(ref) / len(ref)
    got = province_class_weights(counts, beta)
    assert got.dtype == torch.float32 and got.shape == (7,)
    for g, r in zip(got.tolist(), ref):
        assert g == pytest.approx(r / mean, rel=1e-5)
    assert got.mean().item() == pytest.approx(1.0, rel=1e-6)
    # rarer provinces weigh more
    assert got[6] > got[1] > got[0]


def test_class_weights_absent_province_excluded():
    counts = [100, 50, 0, 10, 0, 5, 1]
    beta = 0.99
    ref = {p: (1 - beta) / (1 - beta**n) for p, n in enumerate(counts) if n > 0}
    mean = sum(ref.values()) / len(ref)
    got = province_class_weights(counts, beta).tolist()
    for p in range(7):
        expected = ref[p] / mean if p in ref else 0.0
        assert got[p] == pytest.approx(expected, rel=1e-5)
    assert province_class_weights(counts, 0.0).tolist() == [1, 1, 0, 1, 0, 1, 1]


@pytest.mark.parametrize("bad", [[1, 2, 3], [-1, 0, 0, 0, 0, 0, 1], [0] * 7])
def test_class_weights_bad_counts(bad):
    with pytest.raises(ValueError):
        province_class_weights(bad)


def test_class_weights_bad_beta():
    with pytest.raises(ValueError, match="beta"):
        province_class_weights([1] * 7, beta=1.0)


@pytest.mark.parametrize("reduction", ["weighted_mean", "mean"])
def test_province_ce_matches_reference(reduction):
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(33, 7, generator=g) * 3
    target = torch.randint(0, 7, (33,), generator=g)
    w = torch.rand(7, generator=g) + 0.1
    num = den = 0.0
    for i in range(33):
        z = logits[i].tolist()
        lse = math.log(sum(math.exp(v) for v in z))
        y = int(target[i])
        # the seed's formula: -sum_c w_c y_c log softmax_c
        num += -sum(w[c].item() * (1.0 if c == y else 0.0) * (z[c] - lse) for c in range(7))
        den += w[y].item() if reduction == "weighted_mean" else 1.0
    got = province_ce(logits, target, w, reduction)
    assert got.item() == pytest.approx(num / den, rel=1e-5)
    if reduction == "weighted_mean":
        torch.testing.assert_close(got, torch.nn.functional.cross_entropy(logits, target, weight=w))


# ------------------------------------------------------------------ smoothed targets and KL
def ref_targets(table: CellTable, cell: int, tau: float) -> list[float]:
    p = int(table.province_ids[cell])
    members = [c for c in range(table.n_cells) if table.province_ids[c] == p]
    lat0, lon0 = table.centers[cell]
    e = [math.exp(-ref_haversine(lat0, lon0, *table.centers[c]) / tau) for c in members]
    s = sum(e)
    out = [0.0] * table.max_cells
    for j, c in enumerate(members):
        out[j] = e[j] / s
    return out


def test_smoothed_targets_match_reference():
    t = random_table(2)
    batch = random_batch(t, 40, seed=3)
    local = torch.from_numpy(t.local_index)[batch["cell_id"]]
    q = smoothed_cell_targets(
        local, batch["province"], torch.from_numpy(t.padded_distances()), DEFAULT_TAU_KM
    )
    assert q.shape == (40, t.max_cells)
    for i in range(40):
        cell = int(batch["cell_id"][i])
        ref = ref_targets(t, cell, DEFAULT_TAU_KM[int(t.province_ids[cell])])
        np.testing.assert_allclose(q[i].numpy(), ref, rtol=1e-4, atol=1e-7)
        # the true cell is the mode; padding is exactly zero
        assert int(q[i].argmax()) == int(t.local_index[cell])
    torch.testing.assert_close(q.sum(1), torch.ones(40))


def test_smoothed_targets_one_hot_when_off():
    t = random_table(2)
    batch = random_batch(t, 10, seed=4)
    local = torch.from_numpy(t.local_index)[batch["cell_id"]]
    q = smoothed_cell_targets(
        local, batch["province"], torch.from_numpy(t.padded_distances()), None, smoothing=False
    )
    assert (q.sum(1) == 1).all() and (q.max(1).values == 1).all()
    assert q.argmax(1).tolist() == local.tolist()


def test_smaller_tau_is_sharper():
    t = random_table(2)
    batch = random_batch(t, 20, seed=5)
    local = torch.from_numpy(t.local_index)[batch["cell_id"]]
    d = torch.from_numpy(t.padded_distances())
    sharp = smoothed_cell_targets(local, batch["province"], d, [1.0] * 7)
    wide = smoothed_cell_targets(local, batch["province"], d, [500.0] * 7)
    true_sharp = sharp.gather(1, local[:, None])
    true_wide = wide.gather(1, local[:, None])
    assert (true_sharp >= true_wide - 1e-6).all() and (true_sharp > true_wide).any()


def test_cell_kl_matches_reference():
    t = random_table(5)
    b = 24
    batch = random_batch(t, b, seed=6)
    out = random_out(t, b, seed=7)
    local = torch.from_numpy(t.local_index)[batch["cell_id"]]
    q = smoothed_cell_targets(
        local, batch["province"], torch.from_numpy(t.padded_distances()), DEFAULT_TAU_KM
    )
    mask = torch.rand(b, generator=torch.Generator().manual_seed(0)) > 0.25
    got = cell_kl_loss(out.cell_logits, batch["province"], q, torch.from_numpy(t.padded_index() >= 0), mask)
    total, n = 0.0, 0
    for i in range(b):
        if not mask[i]:
            continue
        p = int(batch["province"][i])
        n_p = int(t.counts_per_province[p])
        z = out.cell_logits[i, p, :n_p].double().tolist()  # the true province's head only, no padding
        lse = math.log(sum(math.exp(v) for v in z))
        kl = 0.0
        for k in range(n_p):
            qk = float(q[i, k])
            if qk > 0:
                kl += qk * (math.log(qk) - (z[k] - lse))
        total += kl
        n += 1
    assert got.item() == pytest.approx(total / n, rel=1e-4)
    # matches torch's KLDivLoss(batchmean) on the selected head
    sel = out.cell_logits[torch.arange(b), batch["province"]][mask]
    ref = torch.nn.functional.kl_div(torch.log_softmax(sel, -1), q[mask], reduction="batchmean")
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-5)


def test_cell_kl_zero_at_target_and_ignores_other_heads():
    t = random_table(5)
    batch = random_batch(t, 16, seed=8)
    local = torch.from_numpy(t.local_index)[batch["cell_id"]]
    q = smoothed_cell_targets(
        local, batch["province"], torch.from_numpy(t.padded_distances()), DEFAULT_TAU_KM
    )
    logits = torch.randn(16, 7, t.max_cells)
    logits[torch.arange(16), batch["province"]] = torch.log(q.clamp(min=1e-30))
    valid = torch.from_numpy(t.padded_index() >= 0)
    assert cell_kl_loss(logits, batch["province"], q, valid).item() == pytest.approx(0.0, abs=1e-5)
    # changing another province's head changes nothing
    other = logits.clone()
    other[torch.arange(16), (batch["province"] + 1) % 7] += 5.0
    assert cell_kl_loss(other, batch["province"], q, valid).item() == pytest.approx(0.0, abs=1e-5)


# ------------------------------------------------------------------ km losses
def test_haversine_loss_matches_reference_and_scale():
    g = torch.Generator().manual_seed(9)
    a = torch.rand(20, 2, generator=g) * 10 + torch.tensor([24.0, 62.0])
    b = torch.rand(20, 2, generator=g) * 10 + torch.tensor([24.0, 62.0])
    mask = torch.arange(20) % 3 != 0
    loss, km = haversine_loss(a[:, 0], a[:, 1], b[:, 0], b[:, 1], scale_km=100.0, mask=mask)
    ref = [ref_haversine(*a[i].tolist(), *b[i].tolist()) for i in range(20) if mask[i]]
    assert km.item() == pytest.approx(sum(ref) / len(ref), rel=1e-4)
    assert loss.item() == pytest.approx(sum(ref) / len(ref) / 100.0, rel=1e-4)
    assert not km.requires_grad


# ------------------------------------------------------------------ the combined module
class FakeModel:
    """Offsets = a fixed (north, east) km per sample, like the model's predict_offset_positions."""

    def __init__(self, table: CellTable, north: torch.Tensor, east: torch.Tensor):
        self.centers = torch.tensor(table.centers, dtype=torch.float32)
        self.north, self.east = north, east

    def predict_offset_positions(self, fused, cell_ids):
        from geopak import geo

        c = self.centers[cell_ids]  # (B, H, 2)
        return geo.apply_offset_km(c[..., 0], c[..., 1], self.north[:, None], self.east[:, None])


def test_geopak_loss_matches_reference():
    t = random_table(11)
    b = 32
    batch = random_batch(t, b, seed=12)
    batch["cell_id"][[3, 17]] = -1  # samples without a cell
    out = random_out(t, b, seed=13)
    for f in ("province_logits", "cell_logits", "aux_latlon"):
        getattr(out, f).requires_grad_(True)
    north = (torch.randn(b) * 5).requires_grad_(True)
    east = (torch.randn(b) * 5).requires_grad_(True)
    model = FakeModel(t, north, east)
    counts = np.bincount(batch["province"].numpy(), minlength=7) * 10
    pw = province_class_weights(counts)
    loss_fn = GeopakLoss(t, province_weights=pw, offset_scale_km=10.0, aux_scale_km=100.0)
    pos = true_cell_offset_positions(model, out.fused, batch["cell_id"])
    res = loss_fn(out, batch, pos)

    # reference, sample by sample
    ce_num = ce_den = 0.0
    kl_sum = off_sum = aux_sum = 0.0
    n_cell = 0
    for i in range(b):
        y = int(batch["province"][i])
        z = out.province_logits[i].tolist()
        lse = math.log(sum(math.exp(v) for v in z))
        ce_num += -pw[y].item() * (z[y] - lse)
        ce_den += pw[y].item()
        lat, lon = float(batch["lat"][i]), float(batch["lon"][i])
        aux_sum += ref_haversine(*out.aux_latlon[i].tolist(), lat, lon)
        cell = int(batch["cell_id"][i])
        if cell < 0:
            continue
        n_cell += 1
        q = ref_targets(t, cell, DEFAULT_TAU_KM[y])
        n_p = int(t.counts_per_province[y])
        zc = out.cell_logits[i, y, :n_p].tolist()
        lse_c = math.log(sum(math.exp(v) for v in zc))
        kl_sum += sum(q[k] * (math.log(q[k]) - (zc[k] - lse_c)) for k in range(n_p) if q[k] > 0)
        clat, clon = t.centers[cell]
        plat = clat + float(north[i].detach()) / (math.pi * R / 180)
        plon = clon + float(east[i].detach()) / (math.pi * R / 180 * math.cos(math.radians(clat)))
        off_sum += ref_haversine(plat, plon, lat, lon)
    ref = {
        "province": ce_num / ce_den,
        "cell": kl_sum / n_cell,
        "offset": off_sum / n_cell / 10.0,
        "aux": aux_sum / b / 100.0,
    }
    for k, v in ref.items():
        assert res[k].item() == pytest.approx(v, rel=2e-4), k
        assert not res[k].requires_grad
    total = 0.5 * ref["province"] + ref["cell"] + ref["offset"] + 0.1 * ref["aux"]
    assert res["total"].item() == pytest.approx(total, rel=2e-4)
    assert res["offset_km"].item() == pytest.approx(off_sum / n_cell, rel=2e-4)

    res["total"].backward()
    for tns in (out.province_logits, out.cell_logits, out.aux_latlon, north, east):
        assert tns.grad is not None and torch.isfinite(tns.grad).all()
    # no gradient reaches samples without a cell through the offset head
    assert north.grad[3] == 0 and east.grad[17] == 0
    assert north.grad.abs().sum() > 0


def test_weight_zero_terms_skipped_and_province_only_mode():
    t = random_table(11)
    batch = random_batch(t, 8, seed=1)
    out = random_out(t, 8, seed=2)
    out.cell_logits = None  # phase 0 never reads the cell heads
    loss_fn = GeopakLoss(None, weights=LossWeights.province_only())
    res = loss_fn(out, {k: v for k, v in batch.items() if k != "cell_id"})
    assert set(res) == {"total", "province", "aux", "aux_km"}
    assert res["total"].item() == pytest.approx(
        0.5 * res["province"].item() + 0.1 * res["aux"].item(), rel=1e-6
    )
    res = GeopakLoss(t, weights={"province": 1.0, "cell": 0.0, "offset": 0.0, "aux": 0.0})(out, batch)
    assert set(res) == {"total", "province"}


def test_loss_errors_are_clear():
    t = random_table(11)
    with pytest.raises(ValueError, match="CellTable is required"):
        GeopakLoss(None)
    with pytest.raises(ValueError, match="unknown loss weights"):
        GeopakLoss(t, weights={"provnice": 1.0})
    with pytest.raises(ValueError, match="must be a finite number"):
        LossWeights(cell=-1.0)
    batch = random_batch(t, 8, seed=1)
    out = random_out(t, 8, seed=2)
    with pytest.raises(ValueError, match="offset_positions"):
        GeopakLoss(t)(out, batch)
    bad = dict(batch, province=(batch["province"] + 1) % 7)
    with pytest.raises(ValueError, match="belongs to province"):
        GeopakLoss(t, weights={"offset": 0.0})(out, bad)
    with pytest.raises(ValueError, match="out of range"):
        GeopakLoss(t, weights={"offset": 0.0})(out, dict(batch, cell_id=batch["cell_id"] + 100))


def test_loss_under_bf16_autocast_is_float32():
    t = random_table(11)
    batch = random_batch(t, 8, seed=1)
    out = random_out(t, 8, seed=2)
    out.province_logits = out.province_logits.bfloat16()
    out.cell_logits = out.cell_logits.bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        res = GeopakLoss(t, weights={"offset": 0.0})(out, batch)
    assert res["total"].dtype == torch.float32 and torch.isfinite(res["total"])
