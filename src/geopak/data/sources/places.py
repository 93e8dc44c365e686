"""Google Places API (New) crawler: text searches restricted to a box, then each place's photos.

A photo is located at its place (``accuracy_m`` reflects that). Google requires the photos' author
attributions to be shown with them; they are kept in the ``attribution`` column. Needs an API key with the
Places API (New) enabled.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Any

import pandas as pd

from geopak.data.sources.base import PAKISTAN_BBOX, BBox, HttpClient, records_frame

log = logging.getLogger(__name__)

API_URL = "https://places.googleapis.com/v1"
DEFAULT_QUERIES = ("tourist attraction", "mosque", "park", "market", "museum", "lake", "fort", "beach", "valley")
_FIELDS = "places.id,places.displayName,places.location,places.photos,nextPageToken"


class PlacesCrawler:
    def __init__(
        self, api_key: str, client: HttpClient | None = None, api_url: str = API_URL,
        max_photos_per_place: int = 5, max_width_px: int = 1600,
    ) -> None:
        if not api_key:
            raise ValueError("Google Places needs an API key: pass --api-key or set GOOGLE_PLACES_API_KEY")
        self.api_key = api_key
        self.client = client or HttpClient(min_interval_s=0.1, headers={"X-Goog-Api-Key": api_key})
        self.api_url = api_url.rstrip("/")
        self.max_photos_per_place = max_photos_per_place
        self.max_width_px = max_width_px

    def _search(self, query: str, bbox: BBox, token: str | None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "textQuery": query, "pageSize": 20,
            "locationRestriction": {"rectangle": {
                "low": {"latitude": bbox.south, "longitude": bbox.west},
                "high": {"latitude": bbox.north, "longitude": bbox.east},
            }},
        }
        if token:
            body["pageToken"] = token
        r = self.client.request(
            "POST", f"{self.api_url}/places:searchText", json=body,
            headers={"X-Goog-Api-Key": self.api_key, "X-Goog-FieldMask": _FIELDS},
        )
        return r.json()

    def iter_records(
        self, queries: Sequence[str] = DEFAULT_QUERIES, bbox: BBox = PAKISTAN_BBOX, max_pages: int = 3,
    ) -> Iterator[dict[str, Any]]:
        seen: set[str] = set()
        for q in queries:
            token = None
            for _ in range(max_pages):
                data = self._search(q, bbox, token)
                for place in data.get("places", []):
                    loc = place.get("location") or {}
                    if "latitude" not in loc or place.get("id") in seen:
                        continue
                    seen.add(place["id"])
                    name = (place.get("displayName") or {}).get("text", "")
                    for ph in (place.get("photos") or [])[: self.max_photos_per_place]:
                        authors = ", ".join(a.get("displayName", "") for a in ph.get("authorAttributions", []))
                        yield {
                            "id": f"places:{ph['name'].split('/')[-1]}",
                            # The key travels in a header at download time, never in the manifest.
                            "url": f"{self.api_url}/{ph['name']}/media?maxWidthPx={self.max_width_px}",
                            "lat": float(loc["latitude"]), "lon": float(loc["longitude"]), "source": "google_places",
                            "licence": "Google Maps Platform Terms of Service",
                            "attribution": f"{authors} (Google Maps), place: {name}",
                            "owner": authors or None, "taken_at": None, "accuracy_m": 250.0,
                            "place_id": place["id"],
                        }
                token = data.get("nextPageToken")
                if not token:
                    break

    def crawl(self, queries: Sequence[str] = DEFAULT_QUERIES, bbox: BBox = PAKISTAN_BBOX) -> pd.DataFrame:
        return records_frame(self.iter_records(queries, bbox))
