"""YFCC100M importer: stream the metadata file (plain or .bz2) and keep geotagged photos inside a box.

The official ``yfcc100m_dataset`` file is tab-separated without a header; the 25-field release starts with a
line number and a hash, the older 23-field one does not (both are recognised). Downloads come from the
original Flickr URL or, with ``mirror="multimedia-commons"``, from the Multimedia Commons copy keyed by hash.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from geopak.data.sources.base import PAKISTAN_BBOX, BBox, records_frame

log = logging.getLogger(__name__)

FIELDS_25 = [
    "line", "photo_id", "hash", "user_nsid", "user_nickname", "date_taken", "date_uploaded", "device", "title",
    "description", "user_tags", "machine_tags", "longitude", "latitude", "accuracy", "page_url", "download_url",
    "licence_name", "licence_url", "server", "farm", "secret", "secret_original", "extension", "marker",
]
FIELDS_23 = [f for f in FIELDS_25 if f not in ("line", "hash")]
MULTIMEDIA_COMMONS = "https://multimedia-commons.s3-us-west-2.amazonaws.com/data/images/{a}/{b}/{h}.jpg"


def _fields_for(path: Path) -> list[str]:
    import bz2

    opener = bz2.open if path.suffix == ".bz2" else open
    with opener(path, "rt", encoding="utf-8", errors="replace") as f:
        first = f.readline().rstrip("\n")
    n = len(first.split("\t"))
    if n == 25:
        return FIELDS_25
    if n == 23:
        return FIELDS_23
    raise ValueError(f"{path}: line 1 has {n} tab-separated fields; a YFCC100M metadata file has 25 (or 23)")


def iter_records(
    path: str | Path, bbox: BBox = PAKISTAN_BBOX, mirror: str | None = None, chunksize: int = 200_000,
) -> Iterator[dict[str, Any]]:
    """Geotagged photos (not videos) inside ``bbox`` as manifest records."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"YFCC100M metadata file not found: {path}")
    names = _fields_for(path)
    reader = pd.read_csv(
        path, sep="\t", header=None, names=names, dtype=str, chunksize=chunksize, quoting=3,
        keep_default_na=False, on_bad_lines="warn",
    )
    for chunk in reader:
        lat = pd.to_numeric(chunk["latitude"], errors="coerce")
        lon = pd.to_numeric(chunk["longitude"], errors="coerce")
        keep = bbox.contains(lat, lon) & (chunk["marker"].str.strip() == "0")
        for (_, r), la, lo in zip(chunk[keep].iterrows(), lat[keep], lon[keep]):
            url = r["download_url"]
            if mirror == "multimedia-commons" and r.get("hash"):
                h = r["hash"]
                url = MULTIMEDIA_COMMONS.format(a=h[:3], b=h[3:6], h=h)
            acc = pd.to_numeric(r["accuracy"], errors="coerce")
            yield {
                "id": f"yfcc:{r['photo_id']}", "url": url, "lat": float(la), "lon": float(lo), "source": "yfcc",
                "licence": r["licence_name"], "attribution": f"{r['user_nickname']} on Flickr, {r['page_url']}",
                "owner": r["user_nsid"], "taken_at": r["date_taken"] or None,
                "accuracy_m": None if pd.isna(acc) else {16: 50, 15: 100, 14: 200, 13: 500, 12: 1000,
                                                         11: 2000}.get(int(acc), 5000),
            }


def load(path: str | Path, bbox: BBox = PAKISTAN_BBOX, mirror: str | None = None) -> pd.DataFrame:
    return records_frame(iter_records(path, bbox, mirror))
