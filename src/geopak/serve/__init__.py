"""HTTP server and web map page for GEOPAK predictions (the ``serve`` extra: FastAPI, uvicorn).

``from geopak.serve import create_app`` imports FastAPI only when ``create_app`` is first used, so
``import geopak.serve`` works without the extra installed.
"""

from __future__ import annotations

from typing import Any

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from geopak.serve.app import create_app

        return create_app
    raise AttributeError(f"module 'geopak.serve' has no attribute {name!r}")
