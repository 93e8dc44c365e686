"""The HTTP API and the web page: ``create_app(predictor, boundaries=None, cells=None) -> FastAPI``.

Routes:

- ``GET /``: the map page (static files under ``/static``; no CDN, works offline).
- ``GET /health``: liveness.
- ``GET /api/info``: package version, checkpoint and model description, provinces, cell counts, upload limits.
- ``GET /api/provinces.geojson``: simplified province outlines (404 with a clear message when none were given).
- ``GET /api/cells``: geocell centres and radii (404 when the model has no cell table).
- ``POST /api/predict``: multipart upload, field ``files`` (one or several images); returns the predictor's
  dicts, one per file, in upload order. A non-image gets a 400 naming the file; a request or file over the
  size limit a 413.

FastAPI is the ``serve`` extra; importing this module without it raises an ``ImportError`` that says how to
install it. The rest of ``geopak`` never imports this module.
"""

from __future__ import annotations

import importlib.util
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from pathlib import Path
from typing import Any, Protocol

try:
    from fastapi import FastAPI, HTTPException, Request
    from fastapi.concurrency import run_in_threadpool
    from fastapi.responses import FileResponse, JSONResponse
    from fastapi.staticfiles import StaticFiles
except ImportError as _e:  # pragma: no cover - depends on the environment
    raise ImportError(
        "the GEOPAK server needs the 'serve' extra (FastAPI, uvicorn, python-multipart): "
        "pip install 'geopak[serve]'"
    ) from _e

if importlib.util.find_spec("python_multipart") is None and importlib.util.find_spec("multipart") is None:
    raise ImportError(  # pragma: no cover - depends on the environment
        "the GEOPAK server needs python-multipart to read uploads: pip install 'geopak[serve]'"
    )

import numpy as np
from PIL import Image
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from geopak import __version__
from geopak.data.images import ImageReadError, open_image
from geopak.jsonable import to_jsonable as _jsonable
from geopak.provinces import PROVINCE_NAMES, PROVINCES, normalize_province

__all__ = ["DEFAULT_MAX_FILES", "DEFAULT_MAX_FILE_BYTES", "STATIC_DIR", "cells_json", "create_app", "provinces_geojson"]

logger = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"
"""The page's files (index.html, app.js, style.css), shipped as package data."""

DEFAULT_MAX_FILE_BYTES = 20 * 1024 * 1024
"""Largest accepted upload per image (20 MiB: a full-resolution phone JPEG is 3-12 MiB)."""

DEFAULT_MAX_FILES = 16
"""Most images accepted in one request."""

_MULTIPART_SLACK = 64 * 1024
"""Room for multipart headers and boundaries on top of the files themselves."""

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)
"""The page may load nothing from anywhere but this server (and blob: previews of the user's own photos)."""


class Predictor(Protocol):
    """What the server needs from a predictor (``geopak.inference.GeopakPredictor`` satisfies it)."""

    def predict(self, x: Any) -> Any:
        """Predict for one image or a list; a list gives a list of dicts."""


Geometry = Any
"""A shapely (multi)polygon."""


# ------------------------------------------------------------------------------------------ static layers
def provinces_geojson(
    polygons: Mapping[str, Geometry], tolerance_deg: float = 0.01, precision: int = 4
) -> dict[str, Any]:
    """Simplified province outlines as a GeoJSON FeatureCollection, in canonical province order.

    Args:
        polygons: canonical (or alias) province name -> shapely (multi)polygon in lon/lat degrees.
        tolerance_deg: Douglas-Peucker tolerance in degrees (0.01 deg ~ 1 km), topology preserved.
        precision: decimals kept in the coordinates (4 ~ 10 m).

    Returns:
        A FeatureCollection whose features carry ``name``, ``id`` (canonical province id), ``iso``, ``short``
        and a ``label`` point ``[lon, lat]`` inside the polygon.

    Raises:
        ValueError: a name is not a province, or a geometry is empty or not polygonal.
    """
    import shapely
    from shapely.geometry import mapping

    features: list[dict[str, Any]] = []
    for name, geom in polygons.items():
        prov = normalize_province(name)
        if geom is None or geom.is_empty:
            raise ValueError(f"province outline for {name!r} is empty")
        if geom.geom_type not in ("Polygon", "MultiPolygon"):
            raise ValueError(f"province outline for {name!r} is a {geom.geom_type}, expected a (Multi)Polygon")
        simple = shapely.set_precision(geom.simplify(tolerance_deg, preserve_topology=True), 10.0**-precision)
        if simple.is_empty:  # a sliver smaller than the grid: keep the unsimplified shape
            simple = geom
        label = geom.representative_point()
        features.append(
            {
                "type": "Feature",
                "properties": {
                    "name": prov.name,
                    "id": prov.id,
                    "iso": prov.iso,
                    "short": prov.short,
                    "label": [round(label.x, precision), round(label.y, precision)],
                },
                "geometry": mapping(simple),
            }
        )
    features.sort(key=lambda f: f["properties"]["id"])
    return {"type": "FeatureCollection", "features": _jsonable(features)}


def cells_json(cells: Any) -> dict[str, Any]:
    """Cell centres and radii as column arrays (compact for thousands of cells).

    Args:
        cells: a :class:`geopak.geocells.CellTable`.

    Returns:
        ``{"n_cells", "cell_id", "province_id", "province", "lat", "lon", "radius_km"}`` (+ ``count`` and
        ``urban`` when the table has them).
    """
    df = cells.cells
    out: dict[str, Any] = {
        "n_cells": int(cells.n_cells),
        "cell_id": df["cell_id"].to_numpy(np.int64),
        "province_id": df["province_id"].to_numpy(np.int64),
        "province": df["province"].astype(str).tolist(),
        "lat": np.round(df["center_lat"].to_numpy(np.float64), 5),
        "lon": np.round(df["center_lon"].to_numpy(np.float64), 5),
        "radius_km": np.round(df["radius_km"].to_numpy(np.float64), 3),
    }
    for col in ("count", "urban"):
        if col in df.columns:
            out[col] = df[col].to_numpy()
    return _jsonable(out)


def _find_cells(predictor: Any) -> Any:
    """The predictor's cell table, if it exposes one (``predictor.cells`` or ``predictor.model.cells``)."""
    for owner in (predictor, getattr(predictor, "model", None)):
        cells = getattr(owner, "cells", None) if owner is not None else None
        if cells is not None and hasattr(cells, "cells") and hasattr(cells, "n_cells"):
            return cells
    return None


def _model_info(predictor: Any) -> dict[str, Any]:
    """A JSON description of the predictor's checkpoint and model, from whatever it exposes."""
    info: dict[str, Any] = {"predictor": type(predictor).__name__}
    for attr in (
        "checkpoint_path", "checkpoint", "device", "bf16", "batch_size", "image_size", "mode", "top_provinces",
        "top_cells", "use_offsets", "confidence_km",
    ):
        value = getattr(predictor, attr, None)
        if value is not None and not callable(value):
            info[attr] = value if isinstance(value, (int, float, str, bool)) else str(value)
    model = getattr(predictor, "model", None)
    config = getattr(model, "config", None) if model is not None else None
    if config is not None:
        info["config"] = _jsonable(config)
    meta = getattr(predictor, "metadata", None) or getattr(predictor, "meta", None)
    if isinstance(meta, Mapping):
        info["metadata"] = _jsonable({k: v for k, v in meta.items() if k not in ("cells", "cell_table")})
    return info


# ----------------------------------------------------------------------------------------- upload limits
class _BodyTooLarge(Exception):
    """The request body grew past the limit while being read."""


class _UploadLimitMiddleware:
    """Pure ASGI middleware: 413 for a prediction request whose body exceeds ``limit`` bytes.

    Checks ``Content-Length`` first, and counts bytes as they arrive (chunked uploads have no length),
    so an oversized upload is refused before it is spooled to disk.
    """

    def __init__(self, app: Any, path: str, limit: int) -> None:
        self.app = app
        self.path = path
        self.limit = limit

    async def __call__(
        self,
        scope: MutableMapping[str, Any],
        receive: Callable[[], Awaitable[MutableMapping[str, Any]]],
        send: Callable[[MutableMapping[str, Any]], Awaitable[None]],
    ) -> None:
        if scope["type"] != "http" or scope.get("path") != self.path or scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return
        message = (
            f"upload too large: the request exceeds {self.limit:,} bytes "
            f"(at most {self.limit // (1024 * 1024)} MiB per request); send fewer or smaller images"
        )
        for key, value in scope.get("headers", []):
            if key == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    length = -1
                if length > self.limit:
                    await JSONResponse({"detail": message}, status_code=413)(scope, receive, send)
                    return
        received = 0
        started = False

        async def counting_receive() -> MutableMapping[str, Any]:
            nonlocal received
            msg = await receive()
            if msg["type"] == "http.request":
                received += len(msg.get("body", b""))
                if received > self.limit:
                    raise _BodyTooLarge
            return msg

        async def tracking_send(msg: MutableMapping[str, Any]) -> None:
            nonlocal started
            if msg["type"] == "http.response.start":
                started = True
            await send(msg)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except _BodyTooLarge:
            if started:  # pragma: no cover - the body is read before any response
                raise
            await JSONResponse({"detail": message}, status_code=413)(scope, receive, send)


class _SecurityHeadersMiddleware:
    """Adds the content security policy (nothing loads from outside this server) to every response."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(msg: MutableMapping[str, Any]) -> None:
            if msg["type"] == "http.response.start":
                headers = list(msg.get("headers", []))
                headers.append((b"content-security-policy", CONTENT_SECURITY_POLICY.encode()))
                headers.append((b"x-content-type-options", b"nosniff"))
                msg["headers"] = headers
            await send(msg)

        await self.app(scope, receive, send_with_headers)


# ------------------------------------------------------------------------------------------------ the app
def _load_boundaries(boundaries: Mapping[str, Geometry] | str | Path | None) -> Mapping[str, Geometry] | None:
    if boundaries is None or isinstance(boundaries, Mapping):
        return boundaries
    from geopak.boundaries import load_polygons

    path = Path(boundaries)
    if not path.exists():
        raise FileNotFoundError(f"boundaries file {path} does not exist; give a GeoJSON or shapefile of provinces")
    polygons = load_polygons(path)
    if not polygons:
        raise ValueError(f"no province polygons could be read from {path}")
    return polygons


def create_app(
    predictor: Predictor,
    boundaries: Mapping[str, Geometry] | str | Path | None = None,
    cells: Any = None,
    *,
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
    max_files: int = DEFAULT_MAX_FILES,
    simplify_deg: float = 0.01,
) -> FastAPI:
    """Build the GEOPAK web app around a predictor.

    Args:
        predictor: anything with ``predict(list_of_PIL_images) -> list[dict]`` returning the
            ``GeopakPredictor`` fields (``province``, ``lat``, ``lon``, ``confidence``, ``province_probs``,
            ``radius_km``, ``hypotheses``).
        boundaries: province polygons (canonical name -> shapely geometry, as from
            ``geopak.boundaries.load_polygons``) or a GeoJSON/shapefile path; None serves no outlines.
        cells: the model's :class:`~geopak.geocells.CellTable`; by default taken from the predictor
            (``predictor.cells`` or ``predictor.model.cells``) when it has one.
        max_file_bytes: largest accepted image, in bytes (larger: 413).
        max_files: most images per request (more: 413).
        simplify_deg: outline simplification tolerance in degrees.

    Returns:
        The FastAPI application (serve it with uvicorn).
    """
    if max_file_bytes <= 0 or max_files <= 0:
        raise ValueError(f"max_file_bytes and max_files must be positive, got {max_file_bytes}, {max_files}")
    polygons = _load_boundaries(boundaries)
    outlines = provinces_geojson(polygons, tolerance_deg=simplify_deg) if polygons else None
    table = cells if cells is not None else _find_cells(predictor)
    cells_payload = cells_json(table) if table is not None else None
    model_info = _model_info(predictor)
    lock = threading.Lock()  # one batch at a time: torch already uses every core for one forward

    app = FastAPI(
        title="GEOPAK",
        version=__version__,
        description="Where in Pakistan was this photo taken? Province-aware hierarchical geolocation.",
    )
    app.add_middleware(_UploadLimitMiddleware, path="/api/predict", limit=max_files * max_file_bytes + _MULTIPART_SLACK)
    app.add_middleware(_SecurityHeadersMiddleware)
    app.state.predictor = predictor
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    @app.get("/health")
    def health() -> dict[str, str]:
        """Liveness probe."""
        return {"status": "ok", "version": __version__}

    @app.get("/api/info")
    def info() -> dict[str, Any]:
        """Version, checkpoint/model description, provinces, cell counts and upload limits."""
        counts = (
            np.bincount(table.province_ids, minlength=len(PROVINCES)).tolist() if table is not None else None
        )
        return {
            "version": __version__,
            "model": model_info,
            "provinces": [{"id": p.id, "name": p.name, "short": p.short, "iso": p.iso} for p in PROVINCES],
            "n_cells": int(table.n_cells) if table is not None else None,
            "cells_per_province": dict(zip(PROVINCE_NAMES, counts)) if counts is not None else None,
            "has_boundaries": outlines is not None,
            "max_file_bytes": max_file_bytes,
            "max_files": max_files,
        }

    @app.get("/api/provinces.geojson")
    def provinces() -> JSONResponse:
        """Simplified province outlines (GeoJSON)."""
        if outlines is None:
            raise HTTPException(
                404,
                "no province boundaries loaded: start the server with `geopak serve CHECKPOINT --boundaries "
                "FILE` (a geoBoundaries ADM1 GeoJSON or shapefile of Pakistan's provinces)",
            )
        return JSONResponse(outlines, media_type="application/geo+json")

    @app.get("/api/cells")
    def cells_route() -> dict[str, Any]:
        """Geocell centres and radii of the model's cell table."""
        if cells_payload is None:
            raise HTTPException(404, "this model has no cell table to show")
        return cells_payload

    @app.post(
        "/api/predict",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "multipart/form-data": {
                        "schema": {
                            "type": "object",
                            "required": ["files"],
                            "properties": {
                                "files": {"type": "array", "items": {"type": "string", "format": "binary"}}
                            },
                        }
                    }
                },
            }
        },
    )
    async def predict(request: Request) -> dict[str, Any]:
        """Predict where each uploaded image (multipart field ``files``, or ``file``) was taken."""
        ctype = request.headers.get("content-type", "")
        if not ctype.startswith("multipart/form-data"):
            raise HTTPException(
                400, f"send the images as multipart/form-data in a field named 'files' (got content-type {ctype!r})"
            )
        try:
            form = await request.form(max_files=max_files, max_fields=100)
        except StarletteHTTPException as e:  # starlette's, raised for malformed or oversized multipart bodies
            if "Too many files" in str(e.detail):
                raise HTTPException(413, f"too many files: at most {max_files} images per request") from e
            raise HTTPException(400, f"malformed multipart upload: {e.detail}") from e
        try:
            uploads = [v for k, v in form.multi_items() if k in ("files", "file")]
            if not uploads:
                raise HTTPException(400, "no image in the request: send one or more files in the field 'files'")
            images: list[Image.Image] = []
            names: list[str] = []
            for i, up in enumerate(uploads):
                if not isinstance(up, UploadFile):
                    raise HTTPException(400, f"field 'files' item {i + 1} is text, not a file upload")
                name = up.filename or f"file {i + 1}"
                data = await up.read(max_file_bytes + 1)
                if len(data) > max_file_bytes:
                    raise HTTPException(
                        413,
                        f"{name}: larger than the limit of {max_file_bytes // (1024 * 1024)} MiB; "
                        "resize or recompress it",
                    )
                try:
                    images.append(open_image(data))
                except ImageReadError as e:
                    status = 413 if e.code == "too_large" else 400
                    raise HTTPException(
                        status, f"{name} is not a readable image ({e.reason}); upload a JPEG, PNG or WebP photo"
                    ) from e
                names.append(name)
        finally:
            await form.close()

        def run() -> Any:
            with lock:
                return predictor.predict(images)

        t0 = time.perf_counter()
        try:
            results = await run_in_threadpool(run)
        except Exception as e:  # a model failure is a server error; say so clearly and log the traceback
            logger.exception("prediction failed for %s", names)
            raise HTTPException(500, f"the model failed on this request: {type(e).__name__}: {e}") from e
        elapsed = time.perf_counter() - t0
        if isinstance(results, Mapping):
            results = [results]
        results = list(results)
        if len(results) != len(images):
            raise HTTPException(500, f"the predictor returned {len(results)} results for {len(images)} images")
        logger.info("predicted %d image(s) in %.0f ms", len(images), 1000 * elapsed)
        predictions = [
            {"filename": name, "width": img.width, "height": img.height, **_jsonable(res)}
            for name, img, res in zip(names, images, results)
        ]
        return {"predictions": predictions, "elapsed_ms": round(1000 * elapsed, 1)}

    return app

