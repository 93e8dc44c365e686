"""`geopak cells` commands: build geocells from a manifest and write the table, assignments, report and map."""

from __future__ import annotations

import logging
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
    from geopak.geocells import CellBuildError, CellConfig, validate_points
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
    from geopak.geocells import build_and_write

    table, assignments, check, seconds, note = build_and_write(
        points, out, config, source=str(manifest), boundaries=boundaries
    )

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
