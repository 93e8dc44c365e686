"""Tests of the end-to-end metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from geopak import geo
from geopak.evaluate import (
    METRIC_KEYS,
    breakdown,
    calibration_table,
    compute_metrics,
    confusion_matrix,
    geoscore,
)


def _points_at(dist_km: np.ndarray, lat0: float = 30.0, lon0: float = 70.0) -> tuple[np.ndarray, np.ndarray]:
    """Points due north of (lat0, lon0) at the given great-circle distances."""
    la, lo = geo.destination_point(np.full(len(dist_km), lat0), np.full(len(dist_km), lon0), 0.0, dist_km)
    return np.asarray(la), np.asarray(lo)


def test_known_errors() -> None:
    d = np.array([0.5, 3.0, 10.0, 50.0, 150.0, 400.0, 400.0, 20.0, 2.0, 1000.0])
    pla, plo = _points_at(d)
    tla, tlo = np.full(10, 30.0), np.full(10, 70.0)
    m = compute_metrics(pla, plo, tla, tlo, ["Sindh"] * 10, pred_province=["Sindh"] * 9 + ["Punjab"])
    assert list(m) == [*METRIC_KEYS, "balanced_province_accuracy", "by_province"]
    assert m["n"] == 10
    assert m["median_km"] == pytest.approx(np.median(d), rel=1e-6)
    assert m["mean_km"] == pytest.approx(d.mean(), rel=1e-6)
    assert m["p90_km"] == pytest.approx(np.quantile(d, 0.9), rel=1e-6)
    assert m["acc_1km"] == pytest.approx(0.1)
    assert m["acc_5km"] == pytest.approx(0.3)
    assert m["acc_25km"] == pytest.approx(0.5)
    assert m["acc_100km"] == pytest.approx(0.6)
    assert m["acc_200km"] == pytest.approx(0.7)
    assert m["geoscore"] == pytest.approx(np.mean(5000 * np.exp(-d / 1492.7)), rel=1e-6)
    assert m["geoscore_pk"] == pytest.approx(np.mean(5000 * np.exp(-d / 150.0)), rel=1e-6)
    assert m["province_accuracy"] == pytest.approx(0.9)
    assert list(m["by_province"]) == ["Sindh"]


def test_macro_median_is_mean_of_province_medians() -> None:
    d = np.array([1.0, 2.0, 3.0, 4.0, 100.0, 300.0, 50.0])
    prov = np.array([0, 0, 0, 0, 4, 4, 5])  # Sindh, Gilgit-Baltistan, Balochistan (ids)
    pla, plo = _points_at(d)
    m = compute_metrics(torch.tensor(pla), torch.tensor(plo), np.full(7, 30.0), np.full(7, 70.0), prov)
    assert m["median_km"] == pytest.approx(4.0, rel=1e-4)
    assert m["macro_median_km"] == pytest.approx((2.5 + 200.0 + 50.0) / 3, rel=1e-4)
    assert m["province_accuracy"] is None
    assert set(m["by_province"]) == {"Sindh", "Gilgit-Baltistan", "Balochistan"}
    gb = m["by_province"]["Gilgit-Baltistan"]
    assert gb["n"] == 2 and gb["median_km"] == pytest.approx(200.0, rel=1e-4)
    assert gb["macro_median_km"] == gb["median_km"]
    assert set(gb) == set(METRIC_KEYS)


def test_names_and_ids_agree() -> None:
    rng = np.random.default_rng(0)
    pla, plo = 30 + rng.normal(size=20), 70 + rng.normal(size=20)
    t = rng.integers(0, 7, 20)
    names = np.array(["Sindh", "Punjab", "KPK", "Islamabad", "GB", "Baluchistan", "AJK"])[t]
    a = compute_metrics(pla, plo, np.full(20, 30.0), np.full(20, 70.0), t, pred_province=t[::-1])
    b = compute_metrics(pla, plo, np.full(20, 30.0), np.full(20, 70.0), names, pred_province=names[::-1].tolist())
    assert a == b


def test_bad_input_is_named() -> None:
    with pytest.raises(ValueError, match="pred_lat has a non-finite value nan at position 1"):
        compute_metrics([30, np.nan], [70, 70], [30, 30], [70, 70], [0, 0])
    with pytest.raises(ValueError, match="lengths differ"):
        compute_metrics([30], [70, 70], [30, 30], [70, 70], [0, 0])
    with pytest.raises(ValueError, match="position 1"):
        compute_metrics([30, 30], [70, 70], [30, 30], [70, 70], ["Sindh", "Atlantis"])
    with pytest.raises(ValueError, match="outside 0..6"):
        compute_metrics([30], [70], [30], [70], [9])


def test_empty_input() -> None:
    m = compute_metrics([], [], [], [], np.array([], dtype=np.int64))
    assert m["n"] == 0 and m["median_km"] is None and m["by_province"] == {} and m["macro_median_km"] is None


def test_geoscore_scales() -> None:
    assert float(geoscore(0.0)) == 5000.0
    assert float(geoscore(1492.7)) == pytest.approx(5000 / math.e)
    assert float(geoscore(150.0, 150.0)) == pytest.approx(5000 / math.e)


def test_confusion_calibration_breakdown() -> None:
    cm = confusion_matrix(["Sindh", "Sindh", "Punjab"], [0, 1, 1])
    assert cm.shape == (7, 7) and cm[0, 0] == 1 and cm[0, 1] == 1 and cm[1, 1] == 1 and cm.sum() == 3
    conf = np.linspace(0, 1, 100)
    err = np.where(conf > 0.5, 5.0, 80.0)
    rows = calibration_table(conf, err, bins=4)
    assert [r["n"] for r in rows] == [25, 25, 25, 25]
    assert rows[0]["frac_within"] == 0.0 and rows[-1]["frac_within"] == 1.0
    assert rows[0]["median_km"] == 80.0 and rows[-1]["median_km"] == 5.0
    b = breakdown([1.0, 2.0, 30.0], [True, True, False])
    assert set(b) == {"True", "False"} and b["True"]["n"] == 2 and b["False"]["median_km"] == 30.0


def test_balanced_province_accuracy_is_the_mean_recall():
    import numpy as np

    from geopak.evaluate import compute_metrics

    true = np.array([0] * 8 + [1, 1])  # 80% Sindh
    pred = np.array([0] * 8 + [0, 1])  # Sindh all right, Punjab half
    lat = np.full(10, 30.0)
    lon = np.full(10, 70.0)
    m = compute_metrics(lat, lon, lat, lon, true, pred)
    assert m["province_accuracy"] == 0.9
    assert m["balanced_province_accuracy"] == 0.75
    assert compute_metrics(lat, lon, lat, lon, true)["balanced_province_accuracy"] is None
