"""GEOPAK: province-aware hierarchical geolocation of photos taken in Pakistan.

The core (``geopak.geo``, ``geopak.provinces``, ``geopak.model``, ``geopak.inference``) imports without the
training, serving or crawling extras. ``GeopakPredictor`` is loaded lazily on first access.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["GeopakPredictor", "__version__"]


def __getattr__(name: str) -> Any:
    if name == "GeopakPredictor":
        from geopak.inference import GeopakPredictor

        return GeopakPredictor
    raise AttributeError(f"module 'geopak' has no attribute {name!r}")
