"""Shared machinery of the crawlers: bounding boxes, a polite HTTP client, resumable image downloads."""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

RECORD_COLUMNS = [
    "id", "url", "lat", "lon", "source", "licence", "attribution", "owner", "taken_at", "accuracy_m",
]
"""Columns every source yields; ``path`` is added by :func:`download_images`."""


@dataclass(frozen=True)
class BBox:
    """A latitude/longitude rectangle (degrees)."""

    west: float
    south: float
    east: float
    north: float

    def __post_init__(self) -> None:
        if not (-180 <= self.west < self.east <= 180 and -90 <= self.south < self.north <= 90):
            raise ValueError(f"invalid bounding box {self}: need west < east and south < north, in degrees")

    @classmethod
    def parse(cls, text: str) -> BBox:
        """Parse ``"west,south,east,north"`` (the Flickr order)."""
        try:
            w, s, e, n = (float(v) for v in text.split(","))
        except ValueError:
            raise ValueError(f"bounding box {text!r} must be 'west,south,east,north' in degrees") from None
        return cls(w, s, e, n)

    def contains(self, lat: Any, lon: Any) -> np.ndarray:
        lat, lon = np.asarray(lat, float), np.asarray(lon, float)
        return (lat >= self.south) & (lat <= self.north) & (lon >= self.west) & (lon <= self.east)

    def quadrants(self) -> list[BBox]:
        """The four halves-by-halves of this box (used to subdivide result-capped API queries)."""
        mx, my = (self.west + self.east) / 2, (self.south + self.north) / 2
        return [
            BBox(self.west, self.south, mx, my), BBox(mx, self.south, self.east, my),
            BBox(self.west, my, mx, self.north), BBox(mx, my, self.east, self.north),
        ]

    @property
    def size_deg(self) -> float:
        return max(self.east - self.west, self.north - self.south)

    def as_flickr(self) -> str:
        return f"{self.west:.5f},{self.south:.5f},{self.east:.5f},{self.north:.5f}"


PAKISTAN_BBOX = BBox(60.8, 23.6, 77.9, 37.1)
"""A box around Pakistan (and Azad Kashmir / Gilgit-Baltistan); precise labels come from the province lookup."""


class SourceError(RuntimeError):
    """An API answered with an error (bad key, quota, malformed response)."""


class HttpClient:
    """A small wrapper over ``httpx.Client``: user agent, timeout, a minimum interval between requests and retries
    with exponential backoff on 429/5xx and connection errors."""

    def __init__(
        self,
        min_interval_s: float = 0.0,
        retries: int = 3,
        backoff_s: float = 1.0,
        timeout_s: float = 30.0,
        headers: dict[str, str] | None = None,
    ) -> None:
        try:
            import httpx
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise ImportError("the crawlers need httpx: pip install 'geopak[crawl]'") from e
        self._httpx = httpx
        from geopak import __version__

        h = {"User-Agent": f"geopak/{__version__} (+https://github.com/geopak)"}
        h.update(headers or {})
        self.client = httpx.Client(timeout=timeout_s, headers=h, follow_redirects=True)
        self.min_interval_s = min_interval_s
        self.retries = retries
        self.backoff_s = backoff_s
        self._last = 0.0

    def request(self, method: str, url: str, **kw: Any) -> Any:
        """Send a request; retry transient failures; raise :class:`SourceError` with the URL on final failure."""
        err: str = ""
        for attempt in range(self.retries + 1):
            wait = self._last + self.min_interval_s - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            self._last = time.monotonic()
            try:
                r = self.client.request(method, url, **kw)
            except self._httpx.TransportError as e:
                err = f"{type(e).__name__}: {e}"
            else:
                if r.status_code < 400:
                    return r
                err = f"HTTP {r.status_code}: {r.text[:200]}"
                if r.status_code not in (429, 500, 502, 503, 504):
                    break
            if attempt < self.retries:
                time.sleep(self.backoff_s * 2**attempt)
        raise SourceError(f"{method} {url} failed: {err}")

    def get_json(self, url: str, **kw: Any) -> Any:
        r = self.request("GET", url, **kw)
        try:
            return r.json()
        except ValueError:
            raise SourceError(f"GET {url} did not return JSON: {r.text[:200]!r}") from None

    def close(self) -> None:
        self.client.close()


@dataclass
class CrawlResult:
    """Accepted rows (with local ``path``) and rejected rows (with ``reason`` and ``detail``)."""

    records: pd.DataFrame
    rejects: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=["id", "url", "reason", "detail"]))

    def write(self, out_dir: str | Path) -> tuple[Path, Path]:
        """Write ``manifest.parquet`` (paths relative to ``out_dir``) and ``rejects.csv``."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        df = self.records.copy()
        if "path" in df.columns:
            df["path"] = [
                str(Path(p).resolve().relative_to(out.resolve())) if _under(p, out) else p for p in df["path"]
            ]
        if "province" not in df.columns:
            df["province"] = None  # filled by `geopak data validate` from the location
        df.to_parquet(out / "manifest.parquet", index=False)
        self.rejects.to_csv(out / "rejects.csv", index=False)
        return out / "manifest.parquet", out / "rejects.csv"


def _under(p: str, root: Path) -> bool:
    try:
        Path(p).resolve().relative_to(root.resolve())
    except ValueError:
        return False
    return True


def records_frame(rows: Sequence[dict[str, Any]] | Iterator[dict[str, Any]]) -> pd.DataFrame:
    """Rows -> a DataFrame with :data:`RECORD_COLUMNS` (missing optional fields as None), ids de-duplicated."""
    df = pd.DataFrame(list(rows))
    for c in RECORD_COLUMNS:
        if c not in df.columns:
            df[c] = None
    if len(df):
        df["lat"] = df["lat"].astype(float)
        df["lon"] = df["lon"].astype(float)
    return df[RECORD_COLUMNS + [c for c in df.columns if c not in RECORD_COLUMNS]]


def _file_name(record_id: str, url: str) -> str:
    ext = Path(url.split("?")[0]).suffix.lower()
    if ext not in (".jpg", ".jpeg", ".png", ".webp"):
        ext = ".jpg"
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in record_id)
    return f"{safe}_{hashlib.sha1(record_id.encode()).hexdigest()[:8]}{ext}"


def download_images(
    records: pd.DataFrame,
    out_dir: str | Path,
    client: HttpClient | None = None,
    workers: int = 4,
    min_bytes: int = 1024,
) -> CrawlResult:
    """Fetch each row's ``url`` into ``out_dir/images/``; resumable (existing files are kept).

    Every row ends up in exactly one of the result's tables: accepted with ``path``, or rejected with a reason
    (``no_url``, ``download_failed``, ``not_an_image``, ``too_small``).
    """
    out = Path(out_dir) / "images"
    out.mkdir(parents=True, exist_ok=True)
    own = client is None
    client = client or HttpClient()

    def fetch(i: int) -> tuple[int, str | None, str, str]:
        row = records.iloc[i]
        url = row.get("url")
        if not isinstance(url, str) or not url:
            return i, None, "no_url", "row has no image URL"
        dest = out / _file_name(str(row["id"]), url)
        if dest.exists() and dest.stat().st_size >= min_bytes:
            return i, str(dest), "", ""
        try:
            r = client.request("GET", url)
        except SourceError as e:
            return i, None, "download_failed", str(e)
        ctype = r.headers.get("content-type", "")
        if not ctype.startswith("image/"):
            return i, None, "not_an_image", f"content-type {ctype!r} from {url}"
        if len(r.content) < min_bytes:
            return i, None, "too_small", f"{len(r.content)} bytes from {url}"
        tmp = dest.with_suffix(dest.suffix + ".part")
        tmp.write_bytes(r.content)
        tmp.replace(dest)
        return i, str(dest), "", ""

    try:
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            results = list(pool.map(fetch, range(len(records))))
    finally:
        if own:
            client.close()
    ok = [(i, p) for i, p, _, _ in results if p is not None]
    bad = [(i, reason, detail) for i, p, reason, detail in results if p is None]
    acc = records.iloc[[i for i, _ in ok]].copy()
    acc["path"] = [p for _, p in ok]
    rej = records.iloc[[i for i, _, _ in bad]][["id", "url"]].copy()
    rej["reason"] = [r for _, r, _ in bad]
    rej["detail"] = [d for _, _, d in bad]
    log.info("downloaded %d images, %d rejected", len(acc), len(rej))
    return CrawlResult(acc.reset_index(drop=True), rej.reset_index(drop=True))
