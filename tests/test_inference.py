"""Tests of the mixture of hypotheses (against a slow reference loop) and of GeopakPredictor."""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from geopak import geo
from geopak.geocells import CellTable
from geopak.inference import Prediction, mixture
from geopak.provinces import NUM_PROVINCES, PROVINCE_NAMES


def _cells(counts: dict[int, int], seed: int = 0) -> CellTable:
    rng = np.random.default_rng(seed)
    rows = []
    base = {0: (25.0, 68.0), 1: (31.0, 73.0), 2: (34.0, 71.5), 3: (33.7, 73.05), 4: (35.9, 74.5),
            5: (29.0, 66.0), 6: (34.2, 73.6)}
    for p in range(NUM_PROVINCES):
        for _ in range(counts.get(p, 0)):
            la, lo = base[p]
            rows.append(
                {
                    "cell_id": len(rows),
                    "province": PROVINCE_NAMES[p],
                    "center_lat": la + rng.uniform(-0.8, 0.8),
                    "center_lon": lo + rng.uniform(-0.8, 0.8),
                    "radius_km": float(rng.uniform(3, 40)),
                    "count": 50,
                    "urban": bool(rng.integers(0, 2)),
                }
            )
    return CellTable(pd.DataFrame(rows))


class StandIn:
    """The attributes of GeopakModel that the mixture uses, with a deterministic offset rule."""

    def __init__(self, cells: CellTable) -> None:
        self.padded_index = torch.as_tensor(cells.padded_index())
        self.cell_centers = torch.tensor(cells.centers, dtype=torch.float32)
        self.clamp_km = torch.as_tensor(cells.clamp_km, dtype=torch.float32)
        self.calls = 0

    def offsets(self, fused: torch.Tensor, cell_ids: torch.Tensor) -> torch.Tensor:
        c = cell_ids.float()
        north = torch.tanh(fused[:, None, 0] + 0.1 * c) * self.clamp_km[cell_ids]
        east = torch.tanh(fused[:, None, 1] - 0.07 * c) * self.clamp_km[cell_ids]
        return torch.stack([north, east], -1)

    def predict_offset_positions(self, fused: torch.Tensor, cell_ids: torch.Tensor) -> tuple[torch.Tensor, ...]:
        self.calls += 1
        off = self.offsets(fused, cell_ids)
        c = self.cell_centers[cell_ids]
        return geo.apply_offset_km(c[..., 0], c[..., 1], off[..., 0], off[..., 1])


def _output(cells: CellTable, b: int, seed: int = 0) -> SimpleNamespace:
    g = torch.Generator().manual_seed(seed)
    k = cells.max_cells
    cl = torch.randn(b, NUM_PROVINCES, k, generator=g) * 2
    cl[:, torch.as_tensor(cells.padded_index()) < 0] = -1e4  # the model's padding value
    return SimpleNamespace(
        province_logits=torch.randn(b, NUM_PROVINCES, generator=g) * 2,
        cell_logits=cl,
        fused=torch.randn(b, 8, generator=g),
    )


def _reference(model: StandIn, out: SimpleNamespace, kp: int, kc: int, mode: str, use_offsets: bool) -> list:
    """Slow, obvious per-image loop."""
    res = []
    pidx = model.padded_index.numpy()
    has = (pidx >= 0).any(1)
    for i in range(out.province_logits.shape[0]):
        logits = out.province_logits[i].double().numpy().copy()
        logits[~has] = -np.inf
        pp = np.exp(logits - logits.max())
        pp /= pp.sum()
        provs = [int(j) for j in np.argsort(-pp, kind="stable")[: min(kp, has.sum())]]
        hyps = []
        for prov in provs:
            n = int((pidx[prov] >= 0).sum())
            cl = out.cell_logits[i, prov, :n].double().numpy()
            cp = np.exp(cl - cl.max())
            cp /= cp.sum()
            for loc in np.argsort(-cp, kind="stable")[: min(kc, n)]:
                cid = int(pidx[prov, loc])
                if use_offsets:
                    la, lo = model.predict_offset_positions(out.fused[i : i + 1], torch.tensor([[cid]]))
                    la, lo = float(la), float(lo)
                else:
                    la, lo = map(float, model.cell_centers[cid])
                hyps.append((pp[prov] * cp[loc], la, lo, cid, prov))
        w = np.array([h[0] for h in hyps])
        w /= w.sum()
        lats, lons = np.array([h[1] for h in hyps]), np.array([h[2] for h in hyps])
        if mode == "mixture":
            flat, flon = geo.weighted_mean_position(lats, lons, w)
        else:
            flat, flon = lats[0], lons[0]
        radius = float((w * geo.haversine_km(lats, lons, flat, flon)).sum())
        # confidence over all cells
        conf = 0.0
        for prov in np.flatnonzero(has):
            n = int((pidx[prov] >= 0).sum())
            cl = out.cell_logits[i, prov, :n].double().numpy()
            cp = np.exp(cl - cl.max())
            cp /= cp.sum()
            for loc in range(n):
                c = model.cell_centers[pidx[prov, loc]].double().numpy()
                if geo.haversine_km(flat, flon, c[0], c[1]) <= 25.0:
                    conf += pp[prov] * cp[loc]
        res.append(dict(lat=float(flat), lon=float(flon), w=w, cells=[h[3] for h in hyps], radius=radius,
                        conf=conf, province=int(np.argmax(pp)), pp=pp))
    return res


@pytest.mark.parametrize("mode", ["mixture", "argmax"])
@pytest.mark.parametrize("use_offsets", [True, False])
@pytest.mark.parametrize("counts", [{0: 12, 1: 9, 2: 6, 3: 3, 4: 5, 5: 2, 6: 4}, {0: 7, 2: 3, 5: 1}])
def test_mixture_matches_reference_loop(mode: str, use_offsets: bool, counts: dict[int, int]) -> None:
    cells = _cells(counts)
    model = StandIn(cells)
    out = _output(cells, b=6, seed=len(counts))
    pred = mixture(model, out, top_provinces=2, top_cells=5, mode=mode, use_offsets=use_offsets)
    if use_offsets:
        assert model.calls == 1  # every hypothesis of every image in ONE batched call
    ref = _reference(model, out, 2, 5, mode, use_offsets)
    for i, r in enumerate(ref):
        valid = pred.hyp_cell[i] >= 0
        assert pred.hyp_cell[i][valid].tolist() == r["cells"]
        np.testing.assert_allclose(pred.hyp_prob[i][valid].numpy(), r["w"], rtol=1e-4, atol=1e-6)
        assert float(pred.hyp_prob[i][~valid].sum()) == 0.0
        assert torch.isnan(pred.hyp_lat[i][~valid]).all()
        assert geo.haversine_km(float(pred.lat[i]), float(pred.lon[i]), r["lat"], r["lon"]) < 0.01
        assert float(pred.radius_km[i]) == pytest.approx(r["radius"], rel=1e-3, abs=1e-2)
        assert float(pred.confidence[i]) == pytest.approx(r["conf"], abs=1e-4)
        assert int(pred.province[i]) == r["province"]
        np.testing.assert_allclose(pred.province_probs[i].numpy(), r["pp"], atol=1e-5)


def test_masked_provinces_are_never_chosen() -> None:
    cells = _cells({1: 4, 4: 3})  # only Punjab and Gilgit-Baltistan have cells
    model = StandIn(cells)
    out = _output(cells, b=16)
    out.province_logits[:, 0] = 50.0  # the head strongly prefers Sindh, which has no cells
    pred = mixture(model, out, top_provinces=3, top_cells=5)
    assert set(pred.province.tolist()) <= {1, 4}
    assert float(pred.province_probs[:, [0, 2, 3, 5, 6]].abs().max()) == 0.0
    torch.testing.assert_close(pred.province_probs.sum(1), torch.ones(16))
    cell_prov = torch.as_tensor(cells.province_ids)
    chosen = pred.hyp_cell[pred.hyp_cell >= 0]
    assert set(cell_prov[chosen].tolist()) <= {1, 4}
    assert pred.hyp_cell.shape == (16, 2 * 4)  # top_provinces capped at 2 provinces with cells, top_cells at K=4
    assert torch.isfinite(pred.lat).all() and torch.isfinite(pred.lon).all()
    torch.testing.assert_close(pred.hyp_prob.sum(1), torch.ones(16))


def test_argmax_is_best_province_best_cell() -> None:
    cells = _cells({0: 6, 1: 6, 2: 6})
    model = StandIn(cells)
    out = _output(cells, b=8, seed=3)
    pred = mixture(model, out, mode="argmax")
    best_p = out.province_logits[:, :3].argmax(1)  # provinces 3-6 have no cells
    best_local = out.cell_logits[torch.arange(8), best_p].argmax(1)
    best_cell = torch.as_tensor(cells.padded_index())[best_p, best_local]
    assert pred.hyp_cell[:, 0].tolist() == best_cell.tolist()
    la, lo = model.predict_offset_positions(out.fused, best_cell[:, None])
    torch.testing.assert_close(pred.lat, la[:, 0])
    torch.testing.assert_close(pred.lon, lo[:, 0])


def test_confident_model_concentrates() -> None:
    cells = _cells({0: 6, 1: 6})
    model = StandIn(cells)
    out = _output(cells, b=4, seed=5)
    out.province_logits[:] = torch.tensor([30.0, 0, 0, 0, 0, 0, 0])
    out.cell_logits[:, 0, 2] = 60.0
    pred = mixture(model, out, use_offsets=False)
    c = cells.centers[2]
    assert torch.allclose(pred.lat, torch.full((4,), c[0], dtype=torch.float32), atol=1e-4)
    assert float(pred.confidence.min()) > 0.99
    assert float(pred.radius_km.max()) < 0.05  # geo.haversine_km (torch) has a ~13 m epsilon floor


def test_mixture_rejects_bad_arguments() -> None:
    cells = _cells({0: 3})
    out = _output(cells, b=2)
    with pytest.raises(ValueError, match="mode"):
        mixture(StandIn(cells), out, mode="mean")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=">= 1"):
        mixture(StandIn(cells), out, top_cells=0)


def test_prediction_cat_and_len() -> None:
    cells = _cells({0: 5, 3: 2})
    model = StandIn(cells)
    a = mixture(model, _output(cells, 3, seed=1))
    b = mixture(model, _output(cells, 2, seed=2))
    c = Prediction.cat([a, b])
    assert len(c) == 5 and c.hyp_cell.shape[0] == 5
