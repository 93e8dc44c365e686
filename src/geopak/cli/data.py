"""`geopak data` commands: validate manifests, ingest geotagged folders, split, fetch province boundaries."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import typer

logger = logging.getLogger(__name__)

data_app = typer.Typer(
    help="Datasets: validate manifests, read EXIF GPS from folders, split, fetch province boundaries.",
    no_args_is_help=True,
)


def _fail(message: str) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=1)


def _print_counts(title: str, counts: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, show_header=True)
    table.add_column("")
    table.add_column("rows", justify="right")
    for k, v in counts.items():
        table.add_row(str(k), str(v))
    Console().print(table)


@data_app.command("validate")
def validate(
    manifest: Path = typer.Argument(..., help="Manifest (.parquet/.csv/.jsonl, or an HF imagefolder metadata file/folder)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder for manifest.parquet, rejects.csv, summary.json."),
    boundaries: Path | None = typer.Option(
        None, help="Province boundaries (GeoJSON/shapefile/zip). Default: the cache, else the offline fallback."),
    download_boundaries: bool = typer.Option(
        False, "--download-boundaries", help="Download geoBoundaries' polygons if none are given or cached."),
    min_size: int = typer.Option(64, help="Reject images whose shorter side is below this many pixels."),
    full_decode: bool = typer.Option(False, "--full-decode", help="Decode every image fully (slower)."),
    no_images: bool = typer.Option(False, "--no-images", help="Skip the image-file checks (metadata only)."),
    workers: int = typer.Option(8, help="Threads for the image checks."),
    province_tolerance_km: float = typer.Option(
        2.0, help="With polygons: how far outside its given province a point may lie before it is a mismatch."),
) -> None:
    """Check every row; write the accepted manifest, a rejects file with a reason per row, and a summary."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from geopak.boundaries import BoundaryError
    from geopak.data.manifest import ManifestError
    from geopak.data.validate import validate_file

    with Progress(TextColumn("images"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  transient=True) as bar:
        task = bar.add_task("images", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        try:
            summary = validate_file(
                manifest, out, boundaries=boundaries, allow_download=download_boundaries, min_size=min_size,
                full_decode=full_decode, check_images=not no_images, workers=workers,
                province_tolerance_km=province_tolerance_km, progress=progress,
            )
        except (ManifestError, BoundaryError) as e:
            _fail(str(e))
            return
    _print_counts("rejected by reason", summary["by_reason"] or {"(none)": 0})
    typer.echo(
        f"{summary['input']} rows: {summary['accepted']} accepted + {summary['rejected']} rejected "
        f"({'all rows accounted for' if summary['accounted'] else 'ROWS MISSING'}); "
        f"{summary['provinces_filled']} provinces filled; lookup: {summary['lookup']['method']}"
    )
    for note in summary["notes"]:
        typer.secho(f"note: {note}", fg=typer.colors.YELLOW)
    typer.echo(f"wrote {out / 'manifest.parquet'}, {out / 'rejects.csv'}, {out / 'summary.json'}")


@data_app.command("ingest-folder")
def ingest_folder(
    folder: Path = typer.Argument(..., help="Folder of photos with GPS in their EXIF."),
    out: Path = typer.Option(..., "--out", "-o", help="Output manifest (.parquet)."),
    source: str = typer.Option("folder", help="Value of the manifest's source column."),
    recursive: bool = typer.Option(True, "--recursive/--no-recursive", help="Include sub-folders."),
    workers: int = typer.Option(8, help="Threads reading EXIF headers."),
) -> None:
    """Read GPS, time and owner from each image's EXIF; images without a usable position go to a rejects CSV."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from geopak.data.ingest import ingest_folder as ingest
    from geopak.data.ingest import rejects_path_for
    from geopak.data.manifest import write_manifest

    if not folder.is_dir():
        _fail(f"{folder} is not a folder")
    with Progress(TextColumn("EXIF"), BarColumn(), MofNCompleteColumn(), transient=True) as bar:
        task = bar.add_task("exif", total=None)
        manifest, rejects = ingest(folder, recursive=recursive, source=source, workers=workers,
                                   progress=lambda d, t: bar.update(task, completed=d, total=t))
    if manifest.empty and rejects.empty:
        _fail(f"no image files under {folder}")
    write_manifest(manifest, out)
    rej_path = rejects_path_for(out)
    rejects.to_csv(rej_path, index=False)
    if not rejects.empty:
        _print_counts("images without a usable position", rejects["reason"].value_counts().to_dict())
    typer.echo(f"{len(manifest) + len(rejects)} images: {len(manifest)} with GPS -> {out}; "
               f"{len(rejects)} without -> {rej_path}")
    typer.echo(f"next: geopak data validate {out} --out DIR  (checks the images and fills provinces)")


@data_app.command("split")
def split(
    manifest: Path = typer.Argument(..., help="Manifest to split (usually the validated manifest.parquet)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output manifest with a split column (.parquet)."),
    method: str = typer.Option("random", help="random (stratified by province) or grouped (blocks/owner/duplicates)."),
    seed: int = typer.Option(0, help="Random seed."),
    val: float = typer.Option(0.1, help="Fraction for validation (0 for none)."),
    test: float = typer.Option(0.1, help="Fraction for test. The seed dataset's 90/10 is --val 0 --test 0.1."),
    block_km: float = typer.Option(5.0, help="grouped: side of the spatial blocks in km (0: no spatial grouping)."),
    by_owner: bool = typer.Option(False, "--by-owner", help="grouped: keep each owner's photos on one side."),
    hash_images: bool = typer.Option(
        False, "--hash-images", help="grouped: hash image files to find exact duplicates when there is no sha256 column."),
) -> None:
    """Add a train/val/test split column, seeded and stratified by province."""
    from geopak.data.manifest import ManifestError, read_manifest, write_manifest
    from geopak.data.splits import SplitError, split_groups, split_manifest, split_report

    try:
        df = read_manifest(manifest)
        groups = split_groups(df, block_km or None, by_owner, hash_images) if method == "grouped" else None
        result = split_manifest(df, method=method, val=val, test=test, seed=seed, block_km=block_km or None,
                                by_owner=by_owner, hash_images=hash_images)
    except (ManifestError, SplitError) as e:
        _fail(str(e))
        return
    write_manifest(result, out)
    report = split_report(result, groups)
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{method} split (seed {seed})")
    table.add_column("province")
    for name in ("train", "val", "test"):
        table.add_column(name, justify="right")
    for prov, c in report["by_province"].items():
        table.add_row(prov, *(str(c[k]) for k in ("train", "val", "test")))
    table.add_row("all", *(f"{report['counts'][k]} ({report['fractions'][k]:.1%})" for k in ("train", "val", "test")))
    Console().print(table)
    if groups is not None:
        typer.echo(f"{report['groups']} groups (largest {report['largest_group']} rows), "
                   f"{report['groups_straddling']} straddling splits")
    typer.echo(f"wrote {out}")


@data_app.command("fetch-boundaries")
def fetch_boundaries(
    api_url: str | None = typer.Option(
        None, help="geoBoundaries API URL (default: $GEOPAK_BOUNDARIES_API or the public gbOpen PAK ADM1 URL)."),
    force: bool = typer.Option(False, "--force", help="Download again even when a verified copy is cached."),
) -> None:
    """Download Pakistan's province polygons (geoBoundaries ADM1, public domain) into the cache."""
    from geopak.boundaries import BoundaryError, cached_boundaries_path, download_boundaries, sha256_file

    try:
        cached = None if force else cached_boundaries_path()
        path = cached or download_boundaries(api_url=api_url)
    except BoundaryError as e:
        _fail(str(e))
        return
    typer.echo(f"{'cached' if cached else 'downloaded'}: {path} (sha256 {sha256_file(path)})")


@data_app.command("lookup")
def lookup(
    lat: float = typer.Argument(..., help="Latitude (degrees)."),
    lon: float = typer.Argument(..., help="Longitude (degrees)."),
    boundaries: Path | None = typer.Option(None, help="Province boundaries file (default: cache, else fallback)."),
    method: str = typer.Option("auto", help="auto, polygons or geonames."),
) -> None:
    """Print the province of one coordinate and which method answered."""
    from geopak.boundaries import BoundaryError, lookup_provinces

    try:
        res = lookup_provinces([lat], [lon], boundaries, method=method)
    except (BoundaryError, ValueError) as e:
        _fail(str(e))
        return
    typer.echo(json.dumps({"lat": lat, "lon": lon, "province": res.province[0], "method": res.method,
                           "source": res.source}))


def register(app: typer.Typer) -> None:
    """Add the ``data`` group to the root app."""
    app.add_typer(data_app, name="data")
