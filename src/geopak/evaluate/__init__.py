"""Honest evaluation: end-to-end metrics, baselines and ablations on cached features, and the report.

``compute_metrics`` (light: numpy only) is what training's validation uses. The end-to-end runner
(:func:`geopak.evaluate.runner.evaluate_checkpoint`), the baselines and the report import torch and
matplotlib lazily.
"""

from __future__ import annotations

from geopak.evaluate import metrics as _metrics
from geopak.evaluate.metrics import *  # noqa: F403  (the public metrics API, re-exported)

__all__ = list(_metrics.__all__)
