"""`geopak serve`: the HTTP API and the map page around a checkpoint."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import typer

logger = logging.getLogger(__name__)


def _require_serve_extra() -> None:
    """Fail with an install hint when FastAPI/uvicorn/python-multipart are missing."""
    import importlib.util

    missing = [m for m in ("fastapi", "uvicorn") if importlib.util.find_spec(m) is None]
    if importlib.util.find_spec("python_multipart") is None and importlib.util.find_spec("multipart") is None:
        missing.append("python-multipart")
    if missing:
        raise typer.BadParameter(
            f"`geopak serve` needs {', '.join(missing)}: pip install 'geopak[serve]'", param_hint="serve extra"
        )


def _load_polygons(boundaries: Path | None) -> Any:
    """Province polygons from FILE, else from the local cache (never downloads); None when there are none."""
    try:
        from geopak.boundaries import load_polygons
    except ImportError as e:  # pragma: no cover - boundaries ship with the core package
        logger.warning("province outlines unavailable (%s); the map will show no provinces", e)
        return None
    if boundaries is not None:
        polygons = load_polygons(boundaries)
        if not polygons:
            raise typer.BadParameter(f"no province polygons in {boundaries}", param_hint="--boundaries")
        return polygons
    polygons = load_polygons(None, allow_download=False)
    if polygons is None:
        logger.info("no cached province boundaries; pass --boundaries FILE to draw province outlines")
    return polygons


def serve(
    checkpoint: Path = typer.Argument(..., metavar="CHECKPOINT", help="Checkpoint directory (model.safetensors + config.json)."),
    host: str = typer.Option("127.0.0.1", help="Interface to listen on (0.0.0.0 for every interface)."),
    port: int = typer.Option(8000, min=0, max=65535, help="TCP port."),
    boundaries: Path | None = typer.Option(
        None, "--boundaries", exists=True, dir_okay=False, help="Province polygons (GeoJSON or shapefile) for the map."
    ),
    max_upload_mb: float = typer.Option(20.0, min=0.01, help="Largest accepted image, in MiB."),
    max_files: int = typer.Option(16, min=1, help="Most images per request."),
    device: str | None = typer.Option(None, help="Torch device (cpu, cuda, cuda:1); default: CUDA when available."),
) -> None:
    """Serve predictions over HTTP with a web page that maps them (open http://HOST:PORT/)."""
    _require_serve_extra()
    if not checkpoint.exists():
        raise typer.BadParameter(f"checkpoint {checkpoint} does not exist", param_hint="CHECKPOINT")
    import uvicorn

    from geopak.inference import GeopakPredictor
    from geopak.serve.app import create_app

    predictor = GeopakPredictor(checkpoint_path=checkpoint, device=device)
    polygons = _load_polygons(boundaries)
    app = create_app(
        predictor, boundaries=polygons, max_file_bytes=int(max_upload_mb * 1024 * 1024), max_files=max_files
    )
    logger.info("GEOPAK serving %s on http://%s:%d/", checkpoint, host, port)
    uvicorn.run(app, host=host, port=port, log_level="info")


def register(app: typer.Typer) -> None:
    """Add this module's commands to the root app."""
    app.command("serve")(serve)
