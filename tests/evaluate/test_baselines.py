"""Baselines on cached features: prior, k-NN (mode-seeking), flat cells, regression, retrieval refinement."""

from __future__ import annotations

import numpy as np
import pytest

from geopak import geo
from geopak.evaluate import baselines as bl


def _clusters(n_per: int = 40, seed: int = 0) -> tuple[bl.FeatureSet, np.ndarray]:
    """Four well-separated feature clusters, each at its own place (and cell)."""
    rng = np.random.default_rng(seed)
    places = np.array([[24.9, 67.1], [31.5, 74.3], [33.7, 73.1], [35.9, 74.3]])
    k = np.repeat(np.arange(4), n_per)
    means = rng.normal(0, 3, (4, 12))
    clip = (means[k] + rng.normal(0, 0.3, (len(k), 12))).astype(np.float32)
    scene = (means[k][:, :6] + rng.normal(0, 0.3, (len(k), 6))).astype(np.float32)
    lat = places[k, 0] + rng.normal(0, 0.02, len(k))
    lon = places[k, 1] + rng.normal(0, 0.02, len(k))
    return bl.FeatureSet(clip, scene, lat, lon, np.array([0, 1, 3, 4])[k], k), places


def test_prior_is_geometric_median() -> None:
    fs, _ = _clusters()
    la, lo = bl.prior_predict(fs.lat, fs.lon, 3)
    assert la.shape == (3,) and (la[0], lo[0]) == pytest.approx(geo.geometric_median(fs.lat, fs.lon))


def test_knn_follows_the_densest_mode_instead_of_averaging() -> None:
    a, b = (25.0, 67.0), (34.0, 73.0)
    sims = np.array([0.99] * 4 + [0.98] * 6)  # 4 slightly closer neighbours at B, 6 at A
    q = np.zeros((1, 11), np.float32)
    q[0, 0] = 1.0
    emb = np.zeros((10, 11), np.float32)
    emb[:, 0] = sims
    emb[np.arange(10), 1 + np.arange(10)] = np.sqrt(1 - sims**2)
    lat = np.array([b[0]] * 4 + [a[0]] * 6)
    lon = np.array([b[1]] * 4 + [a[1]] * 6)
    prov = np.array([4] * 4 + [0] * 6)
    la, lo, pv = bl.knn_predict(emb, lat, lon, q, k=10, temperature=0.05, train_province=prov)
    assert geo.haversine_km(la[0], lo[0], *a) < 1.0 and pv[0] == 0
    la1, lo1, _ = bl.knn_predict(emb, lat, lon, q, k=4)  # only the B neighbours
    assert geo.haversine_km(la1[0], lo1[0], *b) < 1.0


def test_flat_cells_and_regression_learn_separable_features() -> None:
    train, places = _clusters(seed=0)
    test, _ = _clusters(n_per=10, seed=1)
    test.clip, test.scene = train.clip[::4][:40], train.scene[::4][:40]  # same clusters, same feature means
    test.lat, test.lon, test.province = train.lat[::4][:40], train.lon[::4][:40], train.province[::4][:40]
    flat = bl.train_flat_cells(train, n_cells=4, epochs=15, seed=0)
    la, lo, pv = bl.predict_flat_cells(flat, test, places, np.array([0, 1, 3, 4]))
    assert np.median(geo.haversine_km(la, lo, test.lat, test.lon)) < 10.0
    assert np.mean(pv == test.province) == 1.0
    reg = bl.train_regression(train, epochs=40, seed=0)
    rla, rlo = bl.predict_regression(reg, test)
    prior = bl.prior_predict(train.lat, train.lon, len(test))
    assert np.median(geo.haversine_km(rla, rlo, test.lat, test.lon)) < 0.5 * np.median(
        geo.haversine_km(*prior, test.lat, test.lon))
    # seeded: the same again
    again = bl.train_flat_cells(train, n_cells=4, epochs=15, seed=0)
    assert np.array_equal(bl.predict_flat_cells(again, test, places, np.arange(4))[0], la)


def test_flat_cells_needs_cells() -> None:
    fs, _ = _clusters()
    fs.cell_id = np.full(len(fs), -1)
    with pytest.raises(ValueError, match="no training row has a geocell"):
        bl.train_flat_cells(fs, 4, epochs=1)


def _refine_reference(hl, ho, hc, hp, q, x, tl, to, tc, k, alpha, temperature):  # type: ignore[no-untyped-def]
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    rl, ro = hl.copy(), ho.copy()
    for b in range(hc.shape[0]):
        for h in range(hc.shape[1]):
            if hc[b, h] < 0:
                continue
            idx = np.flatnonzero(tc == hc[b, h])
            if len(idx) == 0:
                continue
            s = xn[idx] @ qn[b]
            top = idx[np.argsort(-s, kind="stable")[:k]]
            st = xn[top] @ qn[b]
            w = np.exp((st - st.max()) / temperature)
            ml, mo = geo.weighted_mean_position(tl[top], to[top], w)
            rl[b, h], ro[b, h] = geo.weighted_mean_position(np.array([hl[b, h], ml]), np.array([ho[b, h], mo]),
                                                            np.array([1 - alpha, alpha]))
    return rl, ro


def test_retrieval_refinement_matches_reference_loop() -> None:
    rng = np.random.default_rng(3)
    n, b, h = 60, 5, 4
    x = rng.normal(size=(n, 8)).astype(np.float32)
    q = rng.normal(size=(b, 8)).astype(np.float32)
    tc = rng.integers(0, 5, n)
    tc[tc == 4] = 3  # cell 4 has no training image
    tl, to = 30 + rng.normal(0, 0.3, n), 70 + rng.normal(0, 0.3, n)
    hc = rng.integers(0, 5, (b, h))
    hc[0, -1] = -1  # an empty slot
    hl, ho = 30 + rng.normal(0, 0.3, (b, h)), 70 + rng.normal(0, 0.3, (b, h))
    hl[0, -1] = ho[0, -1] = np.nan
    hp = rng.random((b, h))
    hp[0, -1] = 0
    hp /= hp.sum(1, keepdims=True)
    lat, lon, rl, ro = bl.refine_with_retrieval(hl, ho, hc, hp, q, x, tl, to, tc, k=3, alpha=0.5,
                                                temperature=0.1, chunk_elems=50)  # tiny chunks: several passes
    el, eo = _refine_reference(hl, ho, hc, hp, q, x, tl, to, tc, 3, 0.5, 0.1)
    np.testing.assert_allclose(rl, el, atol=1e-6)
    np.testing.assert_allclose(ro, eo, atol=1e-6)
    assert np.all(rl[hc == 4] == hl[hc == 4])  # no training image in the cell: unchanged
    fl, _ = geo.weighted_mean_position(np.nan_to_num(el), np.nan_to_num(eo), hp)
    np.testing.assert_allclose(lat, fl, atol=1e-6)
    assert np.all(np.isfinite(lat)) and np.all(np.isfinite(lon))


def test_nearest_cell_province() -> None:
    centers = np.array([[25.0, 67.0], [31.5, 74.3], [35.9, 74.3]])
    got = bl.nearest_cell_province(np.array([25.1, 35.0, 31.0]), np.array([67.2, 74.0, 74.0]), centers,
                                   np.array([0, 1, 4]), chunk=2)
    assert got.tolist() == [0, 4, 1]
