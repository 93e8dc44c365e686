"""Training engine: typed configs with phases as data, the feature cache, Lightning module and orchestration.

``from geopak.train import load_config, train``; ``train(config, manifest, cells, out_dir, phases=None)``
returns the final phase's checkpoint directory. Lightning is imported only when training starts, so the
config and the feature cache are usable without it.
"""

from __future__ import annotations

from typing import Any

from geopak.train.cache import CachedFeatureDataset, FeatureCache
from geopak.train.config import (
    ConfigError,
    PhaseConfig,
    TrainConfig,
    apply_overrides,
    load_config,
    named_configs,
)

__all__ = [
    "CachedFeatureDataset",
    "ConfigError",
    "FeatureCache",
    "PhaseConfig",
    "TrainConfig",
    "apply_overrides",
    "load_config",
    "named_configs",
    "train",
]


def train(*args: Any, **kwargs: Any) -> Any:
    """See :func:`geopak.train.run.train` (imported lazily: it needs Lightning)."""
    from geopak.train.run import train as _train

    return _train(*args, **kwargs)
