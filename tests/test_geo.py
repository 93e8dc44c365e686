import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from geopak import geo

lat_s = st.floats(-89.9, 89.9)
lon_s = st.floats(-180.0, 180.0)

CITIES = {
    "Karachi": (24.8607, 67.0011),
    "Lahore": (31.5204, 74.3587),
    "Islamabad": (33.6844, 73.0479),
    "Peshawar": (34.0151, 71.5249),
    "Quetta": (30.1798, 66.9750),
    "Gilgit": (35.9208, 74.3144),
    "Muzaffarabad": (34.3700, 73.4711),
    "Gwadar": (25.1216, 62.3254),
    "Skardu": (35.2971, 75.6333),
}


@settings(max_examples=200, deadline=None)
@given(lat_s, lon_s, lat_s, lon_s)
def test_haversine_symmetric_and_bounded(a, b, c, d):
    d1 = geo.haversine_km(a, b, c, d)
    d2 = geo.haversine_km(c, d, a, b)
    assert d1 == pytest.approx(d2, abs=1e-6)
    assert 0.0 <= d1 <= geo.MAX_DISTANCE_KM + 1e-6


@settings(max_examples=100, deadline=None)
@given(lat_s, lon_s)
def test_haversine_zero_on_identity(a, b):
    assert geo.haversine_km(a, b, a, b) == pytest.approx(0.0, abs=1e-6)


@settings(max_examples=200, deadline=None)
@given(lat_s, lon_s, lat_s, lon_s, lat_s, lon_s)
def test_triangle_inequality(a, b, c, d, e, f):
    ab = geo.haversine_km(a, b, c, d)
    bc = geo.haversine_km(c, d, e, f)
    ac = geo.haversine_km(a, b, e, f)
    assert ac <= ab + bc + 1e-6


def test_agrees_with_geographiclib_for_pakistani_cities():
    from geographiclib.geodesic import Geodesic

    names = list(CITIES)
    for i, x in enumerate(names):
        for y in names[i + 1 :]:
            (la1, lo1), (la2, lo2) = CITIES[x], CITIES[y]
            ref = Geodesic.WGS84.Inverse(la1, lo1, la2, lo2)["s12"] / 1000.0
            got = geo.haversine_km(la1, lo1, la2, lo2)
            assert abs(got - ref) / ref < 0.005, (x, y, got, ref)


def test_numpy_and_torch_agree_and_vectorise():
    rng = np.random.default_rng(0)
    a = rng.uniform([23, 61], [37, 77], size=(1000, 2))
    b = rng.uniform([23, 61], [37, 77], size=(1000, 2))
    d_np = geo.haversine_km(a[:, 0], a[:, 1], b[:, 0], b[:, 1])
    t = torch.as_tensor
    d_t = geo.haversine_km(t(a[:, 0]), t(a[:, 1]), t(b[:, 0]), t(b[:, 1]))
    assert isinstance(d_np, np.ndarray) and d_np.shape == (1000,)
    assert isinstance(d_t, torch.Tensor)
    np.testing.assert_allclose(d_t.numpy(), d_np, rtol=1e-5, atol=1e-3)


def test_torch_haversine_has_finite_gradient_at_zero():
    lat = torch.tensor([30.0], requires_grad=True)
    d = geo.haversine_km(lat, torch.tensor([70.0]), torch.tensor([30.0]), torch.tensor([70.0]))
    d.sum().backward()
    assert torch.isfinite(lat.grad).all()


def test_bearing_and_destination_round_trip():
    la1, lo1 = CITIES["Karachi"]
    la2, lo2 = CITIES["Lahore"]
    brg = geo.initial_bearing_deg(la1, lo1, la2, lo2)
    dist = geo.haversine_km(la1, lo1, la2, lo2)
    la3, lo3 = geo.destination_point(la1, lo1, brg, dist)
    assert geo.haversine_km(la3, lo3, la2, lo2) < 1e-3
    assert geo.initial_bearing_deg(0, 0, 1, 0) == pytest.approx(0.0)
    assert geo.initial_bearing_deg(0, 0, 0, 1) == pytest.approx(90.0)


def test_weighted_mean_is_on_the_sphere_not_degree_average():
    # Across the antimeridian, averaging degrees gives 0 deg longitude; the spherical mean gives 180.
    lat, lon = geo.weighted_mean_position(np.array([0.0, 0.0]), np.array([179.0, -179.0]))
    assert abs(abs(float(lon)) - 180.0) < 1e-6 and abs(float(lat)) < 1e-9
    # Weights pull toward the heavier point; batched over a leading axis.
    la = np.array([[30.0, 32.0], [24.0, 24.0]])
    lo = np.array([[70.0, 70.0], [66.0, 68.0]])
    w = np.array([[0.9, 0.1], [0.5, 0.5]])
    mlat, mlon = geo.weighted_mean_position(la, lo, w)
    assert mlat.shape == (2,)
    assert 30.0 < mlat[0] < 30.5 and mlon[1] == pytest.approx(67.0, abs=1e-3)
    tl, tn = geo.weighted_mean_position(torch.tensor(la), torch.tensor(lo), torch.tensor(w))
    np.testing.assert_allclose(tl.numpy(), mlat, atol=1e-6)


def test_offset_round_trip_and_km_deg():
    lat0, lon0 = 30.0, 70.0
    n, e = geo.offset_km_between(lat0, lon0, 30.2, 70.3)
    la, lo = geo.apply_offset_km(lat0, lon0, n, e)
    assert la == pytest.approx(30.2) and lo == pytest.approx(70.3)
    dlat, dlon = geo.km_to_deg(111.195, 0.0, 0.0)
    assert dlat == pytest.approx(1.0, rel=1e-3)
    _, dlon = geo.km_to_deg(0.0, 10.0, 60.0)
    assert dlon == pytest.approx(10.0 / (111.195 * 0.5), rel=1e-3)
    # The local-offset move agrees with the great-circle destination within 1% for 50 km.
    la, lo = geo.apply_offset_km(lat0, lon0, 30.0, 40.0)
    assert geo.haversine_km(lat0, lon0, la, lo) == pytest.approx(50.0, rel=0.01)


@pytest.mark.parametrize("method", ["aeqd", "utm"])
def test_metric_projection_preserves_distances(method):
    lat = np.array([24.86, 25.40, 25.0])
    lon = np.array([67.00, 68.37, 67.5])
    proj = geo.metric_projection(lat, lon, method=method)
    x, y = proj.forward(lat, lon)
    d_proj = math.hypot(x[0] - x[1], y[0] - y[1]) / 1000
    assert d_proj == pytest.approx(geo.haversine_km(lat[0], lon[0], lat[1], lon[1]), rel=0.01)
    la, lo = proj.inverse(x, y)
    np.testing.assert_allclose(la, lat, atol=1e-6)
    np.testing.assert_allclose(lo, lon, atol=1e-6)


def test_utm_zone_for_pakistan():
    assert geo.utm_epsg(24.86, 67.0) == 32642
    assert geo.utm_epsg(35.9, 74.3) == 32643


def test_geometric_median_beats_mean_for_skewed_points():
    rng = np.random.default_rng(1)
    lat = np.r_[rng.normal(24.9, 0.05, 90), rng.normal(35.0, 0.05, 10)]
    lon = np.r_[rng.normal(67.0, 0.05, 90), rng.normal(74.0, 0.05, 10)]
    mlat, mlon = geo.geometric_median(lat, lon)
    clat, clon = geo.weighted_mean_position(lat, lon)
    cost = lambda a, b: geo.haversine_km(lat, lon, a, b).sum()  # noqa: E731
    assert cost(mlat, mlon) < cost(float(clat), float(clon))
    assert geo.haversine_km(mlat, mlon, 24.9, 67.0) < 20


def test_batched_geometric_median_stays_on_the_heavier_mode():
    # 60% of the mass near Karachi, 40% near Gilgit: the mean falls in between, the median stays at Karachi.
    lat = np.array([[24.86, 24.90, 35.92, 35.90], [31.5, 31.6, 31.55, 31.5]])
    lon = np.array([[67.00, 67.05, 74.31, 74.30], [74.3, 74.4, 74.35, 74.3]])
    w = np.array([[0.3, 0.3, 0.2, 0.2], [0.25, 0.25, 0.25, 0.25]])
    mlat, mlon = geo.weighted_geometric_median(lat, lon, w)
    assert geo.haversine_km(mlat[0], mlon[0], 24.88, 67.02) < 5
    alat, alon = geo.weighted_mean_position(lat, lon, w)
    assert geo.haversine_km(alat[0], alon[0], 24.88, 67.02) > 300
    tl, tn = geo.weighted_geometric_median(torch.tensor(lat), torch.tensor(lon), torch.tensor(w))
    np.testing.assert_allclose(tl.numpy(), mlat, atol=1e-4)  # torch's haversine has a tiny epsilon
    # Optimality: no nearby point has a smaller weighted distance sum.
    cost = lambda a, b: (w[1] * geo.haversine_km(lat[1], lon[1], a, b)).sum()  # noqa: E731
    best = cost(mlat[1], mlon[1])
    for da, db in [(0.01, 0), (-0.01, 0), (0, 0.01), (0, -0.01)]:
        assert cost(mlat[1] + da, mlon[1] + db) >= best - 1e-6
