"""Honest evaluation: end-to-end metrics, baselines and ablations on cached features, and the report.

``compute_metrics`` (light: numpy only) is what training's validation uses. The end-to-end runner
(:func:`geopak.evaluate.runner.evaluate_checkpoint`), the baselines and the report import torch and
matplotlib lazily.
"""

from __future__ import annotations

from geopak.evaluate.metrics import (
    ACC_THRESHOLDS_KM,
    GEOSCORE_PK_SCALE_KM,
    GEOSCORE_SCALE_KM,
    METRIC_KEYS,
    breakdown,
    calibration_table,
    compute_metrics,
    confusion_matrix,
    error_km,
    error_metrics,
    geoscore,
    province_ids,
)

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
