"""End-to-end geolocation metrics: distance errors, accuracy at thresholds, GeoScore, province accuracy.

Every figure here is computed from *predicted* positions against the true positions; nothing is ever
given the true cell. Two GeoScores are reported:

- ``geoscore``: ``5000 * exp(-d / 1492.7)``, the convention of GeoGuessr and of the geolocation literature
  (PIGEON and others), whose scale suits a world map. Over Pakistan every plausible guess scores 4000+.
- ``geoscore_pk``: the same formula with a country scale of :data:`GEOSCORE_PK_SCALE_KM` = 150 km, ten times
  shorter: roughly the world scale times the ratio of Pakistan's extent (~1,500 km) to the Earth's
  half-circumference (~20,000 km), rounded up. A prediction 10 km off scores 4,678; 100 km off, 2,567;
  500 km off, 178. It separates city-level from province-level models where the world score cannot.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from geopak import geo
from geopak.provinces import NUM_PROVINCES, PROVINCE_NAMES, normalize_province

__all__ = [
    "ACC_THRESHOLDS_KM",
    "GEOSCORE_PK_SCALE_KM",
    "GEOSCORE_SCALE_KM",
    "METRIC_KEYS",
    "breakdown",
    "calibration_table",
    "compute_metrics",
    "confusion_matrix",
    "error_km",
    "error_metrics",
    "geoscore",
    "province_ids",
]

ACC_THRESHOLDS_KM: tuple[int, ...] = (1, 5, 25, 100, 200)
"""Thresholds of the ``acc_<t>km`` keys: street, neighbourhood, city, region, province."""

GEOSCORE_SCALE_KM = 1492.7
"""The field's GeoScore scale (world map)."""

GEOSCORE_PK_SCALE_KM = 150.0
"""The country-scaled GeoScore's scale; see the module docstring."""

METRIC_KEYS: tuple[str, ...] = (
    "n",
    "median_km",
    "mean_km",
    "p90_km",
    *(f"acc_{t}km" for t in ACC_THRESHOLDS_KM),
    "geoscore",
    "geoscore_pk",
    "province_accuracy",
    "macro_median_km",
)
"""The scalar keys of :func:`compute_metrics` (it adds ``by_province``)."""


def _np(x: Any, dtype: Any = np.float64) -> np.ndarray:
    if type(x).__module__.startswith("torch"):
        x = x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=dtype).reshape(-1)


def geoscore(distance_km: Any, scale_km: float = GEOSCORE_SCALE_KM) -> np.ndarray:
    """``5000 * exp(-d / scale_km)`` per prediction (numpy, same shape as ``distance_km``)."""
    if type(distance_km).__module__.startswith("torch"):
        distance_km = distance_km.detach().double().cpu().numpy()
    return 5000.0 * np.exp(-np.asarray(distance_km, dtype=np.float64) / scale_km)


def province_ids(values: Any) -> np.ndarray:
    """Canonical province ids (int64) from ids or names/aliases (numpy, torch or a list).

    Raises:
        ValueError: for an id outside 0-6 or an unknown name (naming the value and its position).
    """
    if type(values).__module__.startswith("torch"):
        values = values.detach().cpu().numpy()
    arr = np.asarray(values).reshape(-1)
    if arr.dtype.kind in "OUS":
        out = np.empty(len(arr), dtype=np.int64)
        for i, v in enumerate(arr):
            if isinstance(v, (int, np.integer)):
                out[i] = int(v)
            else:
                try:
                    out[i] = normalize_province(str(v)).id
                except ValueError as e:
                    raise ValueError(f"province at position {i}: {e}") from None
    else:
        if arr.dtype.kind == "f" and not np.all(arr == np.round(arr)):
            raise ValueError("province ids must be whole numbers 0-6 or province names")
        out = arr.astype(np.int64)
    bad = np.flatnonzero((out < 0) | (out >= NUM_PROVINCES))
    if len(bad):
        raise ValueError(f"province id {out[bad[0]]} at position {bad[0]} is outside 0..{NUM_PROVINCES - 1}")
    return out


def error_km(pred_lat: Any, pred_lon: Any, true_lat: Any, true_lon: Any) -> np.ndarray:
    """Great-circle errors (km) of predictions, validated: equal lengths, finite values.

    Raises:
        ValueError: naming the first position with a non-finite coordinate, or the mismatching lengths.
    """
    arrays = [_np(a) for a in (pred_lat, pred_lon, true_lat, true_lon)]
    lengths = {len(a) for a in arrays}
    if len(lengths) != 1:
        raise ValueError(f"pred_lat, pred_lon, true_lat, true_lon lengths differ: {[len(a) for a in arrays]}")
    for name, a in zip(("pred_lat", "pred_lon", "true_lat", "true_lon"), arrays):
        bad = np.flatnonzero(~np.isfinite(a))
        if len(bad):
            raise ValueError(f"{name} has a non-finite value {a[bad[0]]} at position {bad[0]}")
    return np.asarray(geo.haversine_km(*arrays), dtype=np.float64)


def _f(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def error_metrics(d_km: Any) -> dict[str, Any]:
    """Distance-only metrics of an error vector: ``n``, median/mean/p90, ``acc_*``, both GeoScores.

    With no errors every figure is ``None`` (and ``n`` is 0).
    """
    d = _np(d_km)
    out: dict[str, Any] = {"n": len(d)}
    if len(d) == 0:
        out.update({k: None for k in METRIC_KEYS if k not in ("n", "province_accuracy", "macro_median_km")})
        return out
    out["median_km"] = _f(np.median(d))
    out["mean_km"] = _f(d.mean())
    out["p90_km"] = _f(np.quantile(d, 0.9))
    for t in ACC_THRESHOLDS_KM:
        out[f"acc_{t}km"] = float(np.mean(d <= t))
    out["geoscore"] = float(geoscore(d).mean())
    out["geoscore_pk"] = float(geoscore(d, GEOSCORE_PK_SCALE_KM).mean())
    return out


def compute_metrics(
    pred_lat: Any,
    pred_lon: Any,
    true_lat: Any,
    true_lon: Any,
    true_province: Any,
    pred_province: Any = None,
) -> dict[str, Any]:
    """All end-to-end metrics of a set of predictions.

    Args:
        pred_lat, pred_lon: predicted positions (degrees), numpy/torch/list.
        true_lat, true_lon: true positions (degrees).
        true_province: the true province of each sample (canonical ids 0-6 or names/aliases).
        pred_province: the predicted province (ids or names); ``province_accuracy`` is ``None`` without it.

    Returns:
        A JSON-ready dict with the keys of :data:`METRIC_KEYS` and ``by_province``: canonical province name
        -> the same keys for that province's samples (only provinces present in ``true_province``; within
        one province ``macro_median_km`` equals its ``median_km`` and ``province_accuracy`` is its recall).
        ``macro_median_km`` = the mean over the provinces present of each province's median error, so a
        dataset that is 72% Sindh cannot hide a poor model elsewhere behind Karachi's median;
        ``balanced_province_accuracy`` = the mean over those provinces of their recall.
    """
    d = error_km(pred_lat, pred_lon, true_lat, true_lon)
    tp = province_ids(true_province)
    if len(tp) != len(d):
        raise ValueError(f"true_province has {len(tp)} values for {len(d)} predictions")
    pp = None
    if pred_province is not None:
        pp = province_ids(pred_province)
        if len(pp) != len(d):
            raise ValueError(f"pred_province has {len(pp)} values for {len(d)} predictions")

    def block(mask: np.ndarray) -> dict[str, Any]:
        m = error_metrics(d[mask])
        m["province_accuracy"] = float(np.mean(pp[mask] == tp[mask])) if pp is not None and mask.any() else None
        return m

    out = block(np.ones(len(d), dtype=bool))
    by: dict[str, dict[str, Any]] = {}
    for p in range(NUM_PROVINCES):
        mask = tp == p
        if mask.any():
            m = block(mask)
            m["macro_median_km"] = m["median_km"]
            by[PROVINCE_NAMES[p]] = m
    medians = [m["median_km"] for m in by.values()]
    out["macro_median_km"] = float(np.mean(medians)) if medians else None
    recalls = [m["province_accuracy"] for m in by.values() if m["province_accuracy"] is not None]
    # Mean per-province recall: the accuracy a province-balanced objective optimises (1/7 for a constant guess).
    out["balanced_province_accuracy"] = float(np.mean(recalls)) if recalls and pp is not None else None
    out["by_province"] = by
    return {k: out[k] for k in (*METRIC_KEYS, "balanced_province_accuracy", "by_province")}


def confusion_matrix(true_province: Any, pred_province: Any) -> np.ndarray:
    """(7, 7) int64 counts, rows = true province, columns = predicted, canonical order."""
    t, p = province_ids(true_province), province_ids(pred_province)
    if len(t) != len(p):
        raise ValueError(f"true_province ({len(t)}) and pred_province ({len(p)}) lengths differ")
    return np.bincount(t * NUM_PROVINCES + p, minlength=NUM_PROVINCES**2).reshape(NUM_PROVINCES, NUM_PROVINCES)


def calibration_table(confidence: Any, d_km: Any, bins: int = 5, within_km: float = 25.0) -> list[dict[str, Any]]:
    """Confidence vs error, in equal-count bins of confidence.

    GEOPAK's confidence is the predicted probability that the photo lies within ``within_km`` of the
    prediction (see :func:`geopak.inference.mixture`), so a calibrated model has ``mean_confidence`` close
    to ``frac_within`` in every bin, and the median error falls as confidence rises.

    Returns:
        One dict per non-empty bin: ``lo``, ``hi`` (confidence range), ``n``, ``mean_confidence``,
        ``median_km``, ``frac_within`` (fraction with error <= ``within_km``).
    """
    c, d = _np(confidence), _np(d_km)
    if len(c) != len(d):
        raise ValueError(f"confidence ({len(c)}) and errors ({len(d)}) lengths differ")
    if len(c) == 0:
        return []
    order = np.argsort(c, kind="stable")
    rows = []
    for idx in np.array_split(order, min(bins, len(c))):
        if len(idx) == 0:
            continue
        rows.append(
            {
                "lo": float(c[idx].min()),
                "hi": float(c[idx].max()),
                "n": len(idx),
                "mean_confidence": float(c[idx].mean()),
                "median_km": float(np.median(d[idx])),
                "frac_within": float(np.mean(d[idx] <= within_km)),
            }
        )
    return rows


def breakdown(d_km: Any, groups: Any) -> dict[str, dict[str, Any]]:
    """:func:`error_metrics` per group label (e.g. ``urban`` / ``rural``), groups in sorted order."""
    d = _np(d_km)
    g = np.asarray([str(x) for x in np.asarray(groups, dtype=object).reshape(-1)], dtype=object)
    if len(g) != len(d):
        raise ValueError(f"groups ({len(g)}) and errors ({len(d)}) lengths differ")
    return {k: error_metrics(d[g == k]) for k in sorted(set(g.tolist()))}
