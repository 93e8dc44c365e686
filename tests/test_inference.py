"""Tests of the mixture of hypotheses (against a slow reference loop) and of GeopakPredictor."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from geopak import geo
from geopak.data.images import ImageReadError
from geopak.geocells import CellTable
from geopak.inference import GeopakPredictor, Prediction, mixture, province_logit_adjustment
from geopak.model.geopak import GeopakConfig, GeopakModel, GeopakOutput
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


def _model(cells: CellTable) -> GeopakModel:
    torch.manual_seed(0)
    return GeopakModel(GeopakConfig.tiny(), cells).eval()


def _output(model: GeopakModel, b: int, seed: int = 0) -> GeopakOutput:
    """A real model output for random features, with the province/cell logits spread out."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        out = model.forward_features(torch.randn(b, model.clip.feature_dim, generator=g),
                                     torch.randn(b, model.scene.feature_dim, generator=g))
    pad = model.padded_index < 0
    out.province_logits = torch.randn(b, NUM_PROVINCES, generator=g) * 2
    out.cell_logits = (torch.randn(out.cell_logits.shape, generator=g) * 2).masked_fill(pad, -1e4)
    return out


class CallCounter:
    """Counts calls of the model's predict_offset_positions."""

    def __init__(self, model: GeopakModel) -> None:
        self.calls = 0
        real = model.predict_offset_positions

        def wrapped(*a: object, **k: object) -> object:
            self.calls += 1
            return real(*a, **k)

        model.predict_offset_positions = wrapped  # type: ignore[method-assign]


@torch.no_grad()
def _reference(model: GeopakModel, out: GeopakOutput, kp: int, kc: int, mode: str, use_offsets: bool) -> list:
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
            c = model.cell_centers[pidx[prov, :n]].double().numpy()
            conf += float((pp[prov] * cp * (geo.haversine_km(flat, flon, c[:, 0], c[:, 1]) <= 25.0)).sum())
        res.append({"lat": float(flat), "lon": float(flon), "w": w, "cells": [h[3] for h in hyps], "radius": radius,
                        "conf": conf, "province": int(np.argmax(pp)), "pp": pp})
    return res


@pytest.mark.parametrize("mode", ["mixture", "argmax"])
@pytest.mark.parametrize("use_offsets", [True, False])
@pytest.mark.parametrize("counts", [{0: 12, 1: 9, 2: 6, 3: 3, 4: 5, 5: 2, 6: 4}, {0: 7, 2: 3, 5: 1}])
def test_mixture_matches_reference_loop(mode: str, use_offsets: bool, counts: dict[int, int]) -> None:
    model = _model(_cells(counts))
    out = _output(model, b=6, seed=len(counts))
    counter = CallCounter(model)
    pred = mixture(model, out, top_provinces=2, top_cells=5, mode=mode, use_offsets=use_offsets)
    assert counter.calls == (1 if use_offsets else 0)  # every hypothesis of every image in ONE batched call
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
    model = _model(cells)
    out = _output(model, b=16)
    out.province_logits[:, 0] = 50.0  # the head strongly prefers Sindh, which has no cells
    pred = mixture(model, out, top_provinces=3, top_cells=5)
    assert set(pred.province.tolist()) <= {1, 4}
    assert float(pred.province_probs[:, [0, 2, 3, 5, 6]].abs().max()) == 0.0
    torch.testing.assert_close(pred.province_probs.sum(1), torch.ones(16))
    cell_prov = torch.tensor(cells.province_ids)
    chosen = pred.hyp_cell[pred.hyp_cell >= 0]
    assert set(cell_prov[chosen].tolist()) <= {1, 4}
    assert pred.hyp_cell.shape == (16, 2 * 4)  # top_provinces capped at 2 provinces with cells, top_cells at K=4
    assert torch.isfinite(pred.lat).all() and torch.isfinite(pred.lon).all()
    torch.testing.assert_close(pred.hyp_prob.sum(1), torch.ones(16))


def test_argmax_is_best_province_best_cell() -> None:
    cells = _cells({0: 6, 1: 6, 2: 6})
    model = _model(cells)
    out = _output(model, b=8, seed=3)
    pred = mixture(model, out, mode="argmax")
    best_p = out.province_logits[:, :3].argmax(1)  # provinces 3-6 have no cells
    best_local = out.cell_logits[torch.arange(8), best_p].argmax(1)
    best_cell = torch.as_tensor(cells.padded_index())[best_p, best_local]
    assert pred.hyp_cell[:, 0].tolist() == best_cell.tolist()
    la, lo = model.predict_offset_positions(out.fused, best_cell[:, None])
    torch.testing.assert_close(pred.lat, la[:, 0].double())
    torch.testing.assert_close(pred.lon, lo[:, 0].double())


def test_confident_model_concentrates() -> None:
    cells = _cells({0: 6, 1: 6})
    model = _model(cells)
    out = _output(model, b=4, seed=5)
    out.province_logits[:] = torch.tensor([30.0, 0, 0, 0, 0, 0, 0])
    out.cell_logits[:, 0, 2] = 60.0
    pred = mixture(model, out, use_offsets=False)
    c = cells.centers[2]
    assert torch.allclose(pred.lat, torch.full((4,), c[0], dtype=torch.float64), atol=1e-6)
    assert float(pred.confidence.min()) > 0.99
    assert float(pred.radius_km.max()) < 0.05  # geo.haversine_km (torch) has a ~13 m epsilon floor


def test_mixture_rejects_bad_arguments() -> None:
    model = _model(_cells({0: 3}))
    out = _output(model, b=2)
    with pytest.raises(ValueError, match="mode"):
        mixture(model, out, mode="mean")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=">= 1"):
        mixture(model, out, top_cells=0)


def test_prediction_cat_and_len() -> None:
    model = _model(_cells({0: 5, 3: 2}))
    a = mixture(model, _output(model, 3, seed=1))
    b = mixture(model, _output(model, 2, seed=2))
    c = Prediction.cat([a, b])
    assert len(c) == 5 and c.hyp_cell.shape[0] == 5


# ------------------------------------------------------------------------------------------ predictor
@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cells = _cells({0: 8, 1: 6, 2: 4, 3: 2, 4: 3, 5: 2, 6: 2}, seed=1)
    path = tmp_path_factory.mktemp("ckpt") / "tiny"
    _model(cells).save_checkpoint(path, phase="phase1")
    return path


@pytest.fixture(scope="module")
def predictor(tiny_checkpoint: Path) -> GeopakPredictor:
    return GeopakPredictor(checkpoint_path=tiny_checkpoint, device="cpu", batch_size=4, bf16=False)


def _asym(w: int = 48, h: int = 32) -> Image.Image:
    """An image whose orientation matters (gradient + a coloured block in one corner)."""
    arr = np.zeros((h, w, 3), np.uint8)
    arr[..., 0] = np.linspace(0, 255, w, dtype=np.uint8)[None]
    arr[..., 1] = np.linspace(0, 255, h, dtype=np.uint8)[:, None]
    arr[: h // 3, : w // 4] = (255, 255, 0)
    return Image.fromarray(arr)


def _check_record(r: dict) -> None:
    assert r["province"] in PROVINCE_NAMES
    assert 20 < r["lat"] < 40 and 58 < r["lon"] < 80
    assert 0.0 <= r["confidence"] <= 1.0 and r["radius_km"] >= 0.0
    assert set(r["province_probs"]) == set(PROVINCE_NAMES)
    assert math.isclose(sum(r["province_probs"].values()), 1.0, rel_tol=1e-5)
    assert r["hypotheses"] and math.isclose(sum(h["p"] for h in r["hypotheses"]), 1.0, rel_tol=1e-5)
    for h in r["hypotheses"]:
        assert set(h) == {"lat", "lon", "p", "cell_id", "province"} and h["province"] in PROVINCE_NAMES
    json.dumps(r, allow_nan=False)


def test_seed_example_runs_as_written(tiny_checkpoint: Path, tmp_path: Path) -> None:
    from geopak import GeopakPredictor as Exported

    img_path = tmp_path / "test_image.jpg"
    _asym().save(img_path)
    predictor = Exported(checkpoint_path=str(tiny_checkpoint / "model.safetensors"))
    result = predictor.predict(str(img_path))
    text = f"Province: {result['province']}\nLocation: {result['lat']}, {result['lon']}\n"
    text += f"Confidence: {result['confidence']:.2f}"
    assert result["province"] in text
    _check_record(result)


def test_from_checkpoint_and_bad_path(tiny_checkpoint: Path, tmp_path: Path) -> None:
    p = GeopakPredictor.from_checkpoint(tiny_checkpoint, device="cpu", bf16=False)
    assert p.image_size == 32  # the tiny encoders' input size
    with pytest.raises(FileNotFoundError, match="no GEOPAK checkpoint at"):
        GeopakPredictor(checkpoint_path=tmp_path / "nothing")


def test_input_kinds_agree(predictor: GeopakPredictor, tmp_path: Path) -> None:
    img = _asym()
    path = tmp_path / "a.png"
    img.save(path)
    by_path = predictor.predict(path)
    by_str = predictor.predict(str(path))
    by_pil = predictor.predict(img)
    by_np = predictor.predict(np.asarray(img))
    by_bytes = predictor.predict(path.read_bytes())
    for r in (by_path, by_str, by_pil, by_np, by_bytes):
        _check_record(r)
        assert r["lat"] == pytest.approx(by_path["lat"], abs=1e-6)
        assert r["lon"] == pytest.approx(by_path["lon"], abs=1e-6)
    many = predictor.predict([path, img, np.asarray(img), str(path), img, img])  # > batch_size: two batches
    assert isinstance(many, list) and len(many) == 6
    assert all(r["lat"] == pytest.approx(by_path["lat"], abs=1e-6) for r in many)
    stacked = predictor.predict(np.stack([np.asarray(img)] * 2))  # a 4-D array is a batch
    assert isinstance(stacked, list) and len(stacked) == 2


def test_batch_equals_single(predictor: GeopakPredictor) -> None:
    rng = np.random.default_rng(0)
    imgs = [rng.integers(0, 255, (40, 50, 3), dtype=np.uint8) for _ in range(5)]
    batch = predictor.predict(imgs)
    for img, r in zip(imgs, batch):
        single = predictor.predict(img)
        assert single["lat"] == pytest.approx(r["lat"], abs=1e-5)
        assert single["confidence"] == pytest.approx(r["confidence"], abs=1e-5)


def test_exif_orientation_is_applied(predictor: GeopakPredictor, tmp_path: Path) -> None:
    upright = _asym()
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # what a camera writes for orientation 6 ...
    exif = Image.Exif()
    exif[0x0112] = 6  # ... "rotate 90 CW to display"
    path = tmp_path / "rotated.png"
    stored.save(path, exif=exif)
    torch.testing.assert_close(predictor.load_images([path]), predictor.load_images([upright]))
    plain = tmp_path / "plain.png"
    stored.save(plain)
    assert not torch.allclose(predictor.load_images([plain]), predictor.load_images([upright]))
    assert predictor.predict(path)["lat"] == pytest.approx(predictor.predict(upright)["lat"], abs=1e-6)


@pytest.mark.parametrize("mode", ["RGBA", "CMYK", "I;16", "L", "P", "LA"])
def test_any_image_mode(predictor: GeopakPredictor, tmp_path: Path, mode: str) -> None:
    base = _asym()
    if mode == "I;16":
        img = Image.fromarray(np.asarray(base.convert("L"), np.uint16) * 257)
        assert img.mode.startswith("I;16")
    else:
        img = base.convert(mode)
    _check_record(predictor.predict(img))
    ext = "tiff" if mode in ("CMYK", "I;16") else "png"
    path = tmp_path / f"img.{ext}"
    img.save(path)
    _check_record(predictor.predict(path))


def test_unreadable_input_is_named(predictor: GeopakPredictor, tmp_path: Path) -> None:
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image at all")
    with pytest.raises(ImageReadError, match="broken.jpg"):
        predictor.predict(bad)
    with pytest.raises(ImageReadError, match="missing.png"):
        predictor.predict([_asym(), tmp_path / "missing.png"])


def test_argmax_and_no_offset_predictors(tiny_checkpoint: Path) -> None:
    img = _asym()
    mix = GeopakPredictor(tiny_checkpoint, device="cpu", bf16=False).predict(img)
    arg = GeopakPredictor(tiny_checkpoint, device="cpu", bf16=False, mode="argmax").predict(img)
    first = arg["hypotheses"][0]
    assert (arg["lat"], arg["lon"]) == pytest.approx((first["lat"], first["lon"]), abs=1e-9)
    assert len(mix["hypotheses"]) == len(arg["hypotheses"])
    bare = GeopakPredictor(tiny_checkpoint, device="cpu", bf16=False, use_offsets=False).predict(img)
    model = GeopakModel.from_checkpoint(tiny_checkpoint)
    for h in bare["hypotheses"]:
        assert (h["lat"], h["lon"]) == pytest.approx(tuple(model.cells.centers[h["cell_id"]]), abs=1e-9)


def test_bf16_autocast_close_to_fp32(tiny_checkpoint: Path) -> None:
    img = _asym()
    fp32 = GeopakPredictor(tiny_checkpoint, device="cpu", bf16=False).predict(img)
    bf16 = GeopakPredictor(tiny_checkpoint, device="cpu", bf16=True).predict(img)
    assert geo.haversine_km(fp32["lat"], fp32["lon"], bf16["lat"], bf16["lon"]) < 50.0
    assert bf16["province_probs"]["Sindh"] == pytest.approx(fp32["province_probs"]["Sindh"], abs=0.05)


def test_province_bias_shifts_the_province_choice() -> None:
    model = _model(_cells({0: 4, 1: 4, 2: 4}))
    out = _output(model, b=6, seed=7)
    bias = torch.tensor([0.0, 40.0, 0, 0, 0, 0, 0])
    pred = mixture(model, out, province_bias=bias)
    assert pred.province.tolist() == [1] * 6
    assert set(torch.as_tensor(model.cell_province)[pred.hyp_cell[:, :4]].flatten().tolist()) == {1}
    zero = mixture(model, out, province_bias=torch.zeros(7))
    torch.testing.assert_close(zero.lat, mixture(model, out).lat)


def test_fit_temperatures_recovers_the_scale_of_miscalibrated_logits():
    from geopak.inference import fit_temperatures

    g = torch.Generator().manual_seed(0)
    b, k = 4000, 6
    z_prov = torch.randn(b, 7, generator=g) * 2.0
    prov = torch.multinomial(torch.softmax(z_prov, 1), 1, generator=g).squeeze(1)
    z_cell = torch.randn(b, 7, k, generator=g) * 2.0
    true_head = z_cell[torch.arange(b), prov]
    local = torch.multinomial(torch.softmax(true_head, 1), 1, generator=g).squeeze(1)
    local[:100] = -1  # rows without a cell are ignored for the cell temperature
    # Over-confident province logits (x3) and under-confident cell logits (x0.5): T ~ 3 and ~ 0.5.
    tp, tc = fit_temperatures(z_prov * 3.0, z_cell * 0.5, prov, local)
    assert tp == pytest.approx(3.0, rel=0.15)
    assert tc == pytest.approx(0.5, rel=0.15)


def test_province_logit_adjustment() -> None:
    counts = np.array([720, 80, 60, 50, 30, 40, 20])
    quotas = np.array([16, 8, 8, 8, 8, 8, 8])
    weights = np.ones(7)
    b = province_logit_adjustment(counts, quotas, weights)
    eff = quotas / quotas.sum()
    np.testing.assert_allclose(b, np.log(counts / counts.sum()) - np.log(eff))
    # a head that learned exactly the effective prior, shifted, gives the data prior
    post = np.exp(np.log(eff) + b)
    np.testing.assert_allclose(post / post.sum(), counts / counts.sum())
    assert province_logit_adjustment(np.array([5, 0, 0, 0, 0, 0, 0]), quotas, weights)[1] == 0.0


def test_predictor_data_prior_applies_the_recorded_shift(tmp_path: Path) -> None:
    """prior="data" adds the checkpoint's recorded province shift to the logits; without a record it refuses."""
    cells = _cells({0: 8, 1: 6, 2: 4, 3: 2, 4: 3, 5: 2, 6: 2}, seed=1)
    model = _model(cells)
    shift = [4.0, -4.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    path = tmp_path / "ckpt"
    model.save_checkpoint(path, phase="phase1", extra={"calibration": {"province_prior_shift": shift}})
    images = torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    kw = {"device": "cpu", "bf16": False, "image_size": 32}
    balanced = GeopakPredictor(path, **kw).predict_tensor(images)
    data = GeopakPredictor(path, prior="data", **kw).predict_tensor(images)
    lb, ld = balanced.province_probs.log(), data.province_probs.log()
    want = torch.log_softmax(lb + torch.tensor(shift), dim=1)
    assert torch.allclose(ld, want, atol=1e-4)
    assert not torch.allclose(lb, ld)
    with pytest.raises(ValueError, match="records no province prior shift"):
        GeopakPredictor(_saved_without_shift(model, tmp_path), prior="data", **kw)
    with pytest.raises(ValueError, match="prior must be"):
        GeopakPredictor(path, prior="uniform", **kw)  # type: ignore[arg-type]


def _saved_without_shift(model: GeopakModel, tmp_path: Path) -> Path:
    path = tmp_path / "plain"
    model.save_checkpoint(path, phase="phase1")
    return path
