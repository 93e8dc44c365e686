"""Flickr API crawler (``flickr.photos.search`` over a bounding box, geotagged, openly licensed).

Flickr returns at most ~4,000 distinct results per query, so a box whose ``total`` exceeds that is split into
quadrants recursively (down to ``min_tile_deg``). Needs an API key (https://www.flickr.com/services/api/).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pandas as pd

from geopak.data.sources.base import PAKISTAN_BBOX, BBox, HttpClient, SourceError, records_frame

log = logging.getLogger(__name__)

API_URL = "https://api.flickr.com/services/rest/"
RESULT_CAP = 4000
OPEN_LICENCES = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16)
LICENCE_NAMES = {
    0: "All Rights Reserved", 1: "CC BY-NC-SA 2.0", 2: "CC BY-NC 2.0", 3: "CC BY-NC-ND 2.0", 4: "CC BY 2.0",
    5: "CC BY-SA 2.0", 6: "CC BY-ND 2.0", 7: "No known copyright restrictions", 8: "United States Government Work",
    9: "CC0 1.0", 10: "Public Domain Mark 1.0", 11: "CC BY 4.0", 12: "CC BY-SA 4.0", 13: "CC BY-ND 4.0",
    14: "CC BY-NC 4.0", 15: "CC BY-NC-SA 4.0", 16: "CC BY-NC-ND 4.0",
}
# Flickr's accuracy levels 1 (world) .. 16 (street); a rough radius in metres for each.
_ACCURACY_M = {16: 50, 15: 100, 14: 200, 13: 500, 12: 1000, 11: 2000, 10: 5000, 9: 10000, 8: 20000,
               7: 50000, 6: 100000, 5: 200000, 4: 500000, 3: 1000000, 2: 2000000, 1: 5000000}


class FlickrCrawler:
    """Search geotagged photos in a box. ``min_accuracy`` 11 (city) keeps photos placed to ~2 km or better."""

    def __init__(
        self,
        api_key: str,
        client: HttpClient | None = None,
        api_url: str = API_URL,
        licences: tuple[int, ...] = OPEN_LICENCES,
        min_accuracy: int = 11,
        per_page: int = 250,
        min_tile_deg: float = 0.05,
        extra_params: dict[str, str] | None = None,
    ) -> None:
        if not api_key:
            raise ValueError("Flickr needs an API key: pass --api-key or set FLICKR_API_KEY")
        self.api_key = api_key
        self.client = client or HttpClient(min_interval_s=1.0)  # Flickr allows 3,600 calls/hour
        self.api_url = api_url
        self.licences = licences
        self.min_accuracy = min_accuracy
        self.per_page = per_page
        self.min_tile_deg = min_tile_deg
        self.extra_params = extra_params or {}

    def _search(self, bbox: BBox, page: int) -> dict[str, Any]:
        params = {
            "method": "flickr.photos.search", "api_key": self.api_key, "format": "json", "nojsoncallback": "1",
            "bbox": bbox.as_flickr(), "has_geo": "1", "accuracy": str(self.min_accuracy), "content_type": "1",
            "media": "photos", "license": ",".join(map(str, self.licences)), "per_page": str(self.per_page),
            "page": str(page), "extras": "geo,license,owner_name,date_taken,url_l,url_o,url_c",
            **self.extra_params,
        }
        data = self.client.get_json(self.api_url, params=params)
        if data.get("stat") != "ok":
            raise SourceError(f"Flickr API error {data.get('code')}: {data.get('message')}")
        return data["photos"]

    def tiles(self, bbox: BBox) -> Iterator[tuple[BBox, int]]:
        """Boxes whose result count fits under Flickr's cap, with their totals."""
        first = self._search(bbox, 1)
        total = int(first.get("total", 0))
        if total > RESULT_CAP and bbox.size_deg / 2 >= self.min_tile_deg:
            for q in bbox.quadrants():
                yield from self.tiles(q)
        else:
            if total > RESULT_CAP:
                log.warning("box %s still has %d results at the minimum tile size; only %d reachable",
                            bbox, total, RESULT_CAP)
            yield bbox, total

    def iter_records(self, bbox: BBox = PAKISTAN_BBOX, limit: int | None = None) -> Iterator[dict[str, Any]]:
        seen: set[str] = set()
        for tile, total in self.tiles(bbox):
            pages = max(1, -(-min(total, RESULT_CAP) // self.per_page))
            for page in range(1, pages + 1):
                for p in self._search(tile, page).get("photo", []):
                    rec = photo_record(p)
                    if rec is None or rec["id"] in seen:
                        continue
                    seen.add(rec["id"])
                    yield rec
                    if limit is not None and len(seen) >= limit:
                        return

    def crawl(self, bbox: BBox = PAKISTAN_BBOX, limit: int | None = None) -> pd.DataFrame:
        return records_frame(self.iter_records(bbox, limit))


def photo_record(p: dict[str, Any]) -> dict[str, Any] | None:
    """One Flickr ``photo`` JSON object -> a manifest record (None when it lacks coordinates)."""
    try:
        lat, lon = float(p["latitude"]), float(p["longitude"])
    except (KeyError, TypeError, ValueError):
        return None
    if lat == 0 and lon == 0:
        return None
    url = p.get("url_l") or p.get("url_c") or p.get("url_o")
    if not url and all(k in p for k in ("server", "id", "secret")):
        url = f"https://live.staticflickr.com/{p['server']}/{p['id']}_{p['secret']}_b.jpg"
    lic = int(p.get("license", 0) or 0)
    owner = p.get("ownername") or p.get("owner")
    return {
        "id": f"flickr:{p['id']}", "url": url, "lat": lat, "lon": lon, "source": "flickr",
        "licence": LICENCE_NAMES.get(lic, str(lic)),
        "attribution": f"{owner} on Flickr, https://www.flickr.com/photos/{p.get('owner')}/{p['id']}",
        "owner": p.get("owner"), "taken_at": p.get("datetaken"),
        "accuracy_m": _ACCURACY_M.get(int(p.get("accuracy", 0) or 0)),
    }
