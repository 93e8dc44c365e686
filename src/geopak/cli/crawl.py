"""`geopak crawl` commands: fetch geotagged photos of Pakistan from public sources into a raw manifest.

Each command writes OUT/manifest.parquet (rows with a local image path), OUT/rejects.csv (rows that could not
be fetched, with a reason) and OUT/images/. Run `geopak data validate OUT/manifest.parquet --out DIR` next.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import typer

crawl_app = typer.Typer(help="Fetch geotagged photos from Flickr, YFCC100M, Google Landmarks v2, Google Places.",
                        no_args_is_help=True)

BBOX_HELP = "Box 'west,south,east,north' in degrees (default: Pakistan)."


def _finish(records: Any, out: Path, download: bool, workers: int, client: Any = None) -> None:
    from geopak.data.sources.base import CrawlResult, download_images

    if download:
        result = download_images(records, out, client=client, workers=workers)
    else:
        result = CrawlResult(records)
    m, r = result.write(out)
    typer.echo(f"{len(result.records)} rows -> {m}; {len(result.rejects)} rejected -> {r}")


def _bbox(text: str | None) -> Any:
    from geopak.data.sources.base import PAKISTAN_BBOX, BBox

    return BBox.parse(text) if text else PAKISTAN_BBOX


@crawl_app.command("flickr")
def flickr(
    out: Path = typer.Option(..., "--out", help="Output folder."),
    api_key: str = typer.Option(os.environ.get("FLICKR_API_KEY", ""), "--api-key", help="Flickr API key."),
    bbox: str = typer.Option(None, "--bbox", help=BBOX_HELP),
    limit: int = typer.Option(None, "--limit", help="Stop after this many photos."),
    download: bool = typer.Option(True, "--download/--no-download", help="Fetch the images too."),
    workers: int = typer.Option(4, "--workers"),
) -> None:
    """Search Flickr for openly licensed geotagged photos in the box."""
    from geopak.data.sources.flickr import FlickrCrawler

    crawler = FlickrCrawler(api_key)
    _finish(crawler.crawl(_bbox(bbox), limit), out, download, workers)


@crawl_app.command("yfcc")
def yfcc(
    metadata: Path = typer.Argument(..., help="YFCC100M metadata file (yfcc100m_dataset, plain or .bz2)."),
    out: Path = typer.Option(..., "--out"),
    bbox: str = typer.Option(None, "--bbox", help=BBOX_HELP),
    mirror: str = typer.Option(None, "--mirror", help="'multimedia-commons' to fetch from the S3 mirror."),
    download: bool = typer.Option(True, "--download/--no-download"),
    workers: int = typer.Option(8, "--workers"),
) -> None:
    """Keep YFCC100M's geotagged photos inside the box."""
    from geopak.data.sources import yfcc as src

    _finish(src.load(metadata, _bbox(bbox), mirror), out, download, workers)


@crawl_app.command("gldv2")
def gldv2(
    train_csv: Path = typer.Argument(..., help="GLDv2 train.csv (id,url,landmark_id)."),
    landmarks: Path = typer.Option(..., "--landmarks", help="CSV landmark_id,lat,lon (e.g. from Wikidata)."),
    out: Path = typer.Option(..., "--out"),
    attribution: Path = typer.Option(None, "--attribution", help="GLDv2 train_attribution.csv."),
    bbox: str = typer.Option(None, "--bbox", help=BBOX_HELP),
    download: bool = typer.Option(True, "--download/--no-download"),
    workers: int = typer.Option(8, "--workers"),
) -> None:
    """Google Landmarks v2 photos of landmarks located inside the box."""
    from geopak.data.sources import gldv2 as src

    _finish(src.load(train_csv, landmarks, attribution, _bbox(bbox)), out, download, workers)


@crawl_app.command("places")
def places(
    out: Path = typer.Option(..., "--out"),
    api_key: str = typer.Option(os.environ.get("GOOGLE_PLACES_API_KEY", ""), "--api-key"),
    query: list[str] = typer.Option(None, "--query", help="Text query (repeatable)."),
    bbox: str = typer.Option(None, "--bbox", help=BBOX_HELP),
    download: bool = typer.Option(True, "--download/--no-download"),
    workers: int = typer.Option(4, "--workers"),
) -> None:
    """Photos of places found by text search inside the box (Google Places API, New)."""
    from geopak.data.sources.places import DEFAULT_QUERIES, PlacesCrawler

    crawler = PlacesCrawler(api_key)
    records = crawler.crawl(tuple(query) if query else DEFAULT_QUERIES, _bbox(bbox))
    _finish(records, out, download, workers, client=crawler.client)


def register(app: typer.Typer) -> None:
    """Add the `crawl` group to the root app."""
    app.add_typer(crawl_app, name="crawl")
