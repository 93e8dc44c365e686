"""`geopak cells` commands: build geocells from a manifest and write the table, assignments, report and map."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import typer

logger = logging.getLogger(__name__)

cells_app = typer.Typer(
    help="Geocells: build province-aware cells from geotagged points.", no_args_is_help=True
)


def _read_any(path: Path) -> Any:
    """Read a points table (.parquet, .csv/.tsv, .jsonl) with pandas."""
    import pandas as pd

    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        return pd.read_parquet(path)
    if suffix in (".csv", ".tsv", ".txt"):
        return pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",")
    if suffix in (".jsonl", ".ndjson"):
        return pd.read_json(path, lines=True, dtype=False)
    raise ValueError(f"{path}: unknown format {suffix!r}; use .parquet, .csv, .tsv or .jsonl")


def read_points(path: Path) -> Any:
    """The manifest's rows as a DataFrame: through ``geopak.data.manifest.read_manifest`` when the file is a
    full manifest (it has a ``path`` column), else read as a plain table (``id``, ``lat``, ``lon``,
    ``province`` suffice)."""
    if not path.exists():
        raise FileNotFoundError(f"manifest {path} does not exist")
    raw = _read_any(path) if path.is_file() else None
    if raw is not None and "path" not in raw.columns:
        return raw
    try:
        from geopak.data.manifest import read_manifest
    except ImportError:  # the manifest module is optional for this command
        if raw is None:
            raise ValueError(f"{path} is a folder; give a manifest file") from None
        return raw
    return read_manifest(path, resolve_paths=False)


def _load_polygons(path: Path | None) -> tuple[Any, str]:
    """Province polygons for the map, and a note for the report when there are none."""
    try:
        from geopak.boundaries import load_polygons
    except ImportError:
        return None, "Province outlines are not drawn: geopak.boundaries is not available."
    try:
        polygons = load_polygons(path)
    except (OSError, ValueError) as err:
        return None, f"Province outlines are not drawn: {err}"
    if not polygons:
        return None, (
            "Province outlines are not drawn: no boundaries file was given or cached "
            "(pass --boundaries FILE, e.g. a geoBoundaries PAK ADM1 GeoJSON)."
        )
    return polygons, ""


@cells_app.command("build")
def build(
    manifest: Path = typer.Argument(
        ..., help="Manifest or points table (.parquet/.csv/.jsonl) with id, lat, lon, province."
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder."),
    min_cluster_size: int = typer.Option(
        40, help="HDBSCAN min_cluster_size, also the minimum points per cell."
    ),
    min_samples: int = typer.Option(10, help="HDBSCAN min_samples."),
    method: str = typer.Option("eom", help="HDBSCAN cluster selection: eom or leaf."),
    urban_radius_km: float = typer.Option(5.0, help="Radius limit of urban cells (km)."),
    rural_radius_km: float = typer.Option(50.0, help="Radius limit of rural cells (km)."),
    urban_density: float = typer.Option(2.0, help="Points per km2 (within 2 km) that make a point urban."),
    seed: int = typer.Option(0, help="Seed of the 2-means splits."),
    boundaries: Path | None = typer.Option(
        None, help="Province boundaries file for the map (GeoJSON/shapefile)."
    ),
) -> None:
    """Build geocells; writes cells.parquet/.json, assignments.parquet, report.md and cells.png into OUT."""
    from geopak.geocells import (
        CellBuildError,
        CellConfig,
        build_cells,
        check_cells,
        plot_cells,
        report_markdown,
        validate_points,
    )
    from geopak.provinces import PROVINCES

    try:
        config = CellConfig(
            min_cluster_size=min_cluster_size,
            min_samples=min_samples,
            cluster_selection_method=method,
            urban_max_radius_km=urban_radius_km,
            rural_max_radius_km=rural_radius_km,
            urban_density_per_km2=urban_density,
            seed=seed,
        )
    except ValueError as err:
        raise typer.BadParameter(str(err)) from None
    try:
        df = read_points(manifest)
        points = validate_points(df, source=str(manifest))
    except (CellBuildError, ValueError, OSError) as err:
        typer.secho(f"error: {err}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None
    t0 = time.perf_counter()
    table, assignments = build_cells(points, config)
    seconds = time.perf_counter() - t0
    check = check_cells(table, assignments, points, config)

    out.mkdir(parents=True, exist_ok=True)
    table.save(out)
    assignments.to_parquet(out / "assignments.parquet", index=False)
    polygons, note = _load_polygons(boundaries)
    cell_of = assignments["cell_id"].to_numpy()
    plot_cells(
        table,
        points["lat"].to_numpy(),
        points["lon"].to_numpy(),
        cell_of,
        out / "cells.png",
        polygons=polygons,
        seed=seed,
    )
    report = report_markdown(table, check, config, source=str(manifest), seconds=seconds, map_note=note)
    (out / "report.md").write_text(report)

    counts = ", ".join(f"{p.short} {n}" for p, n in zip(PROVINCES, table.counts_per_province) if n)
    typer.echo(f"{table.n_cells} cells ({counts}) from {len(points):,} points in {seconds:.1f} s")
    typer.echo(check.summary())
    if note:
        typer.echo(note)
    typer.echo(f"wrote {out / 'cells.parquet'}, cells.json, assignments.parquet, report.md, cells.png")
    if not check.ok:
        typer.secho("constraint violations: see report.md", fg=typer.colors.RED, err=True)
        raise typer.Exit(1)


@cells_app.command("assign")
def assign(
    cells: Path = typer.Argument(
        ..., help="Cell table: a folder with cells.parquet, or a .parquet/.json file."
    ),
    points: Path = typer.Argument(..., help="Points table with id, lat, lon, province."),
    out: Path = typer.Option(..., "--out", "-o", help="Output .parquet with id, cell_id."),
) -> None:
    """Assign new points to the nearest cell of their own province (-1 where that province has no cells)."""
    import pandas as pd

    from geopak.geocells import CellBuildError, CellTable, validate_points

    try:
        table = CellTable.load(cells)
        pts = validate_points(read_points(points), source=str(points))
    except (CellBuildError, ValueError, OSError) as err:
        typer.secho(f"error: {err}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None
    cell_id = table.assign(pts["lat"].to_numpy(), pts["lon"].to_numpy(), pts["province"].to_numpy())
    out.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"id": pts["id"], "cell_id": cell_id}).to_parquet(out, index=False)
    typer.echo(f"assigned {len(pts):,} points ({int((cell_id < 0).sum())} without a cell) -> {out}")


def register(app: typer.Typer) -> None:
    """Add this module's commands to the root app."""
    app.add_typer(cells_app, name="cells")
