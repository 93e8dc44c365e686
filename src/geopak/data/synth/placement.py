"""Where GeoPak-Synth's photos are taken: province quotas, then population-weighted settlements.

Each province gets its share of the images (by default the seed dataset's proportions). Within a
province a photo is one of:

- **urban**: a GeoNames settlement chosen with weight population ** 0.85, the point spread around it with
  a Gaussian whose scale is the settlement's urban radius (about 1.4 km for 10,000 people, 11 km for 10
  million);
- **hotspot**: a tourist or landmark spot (a fixed list below, heavier in Gilgit-Baltistan, Azad Kashmir and
  northern Khyber Pakhtunkhwa), spread by ~1.5 km;
- **rural**: either a wide (18 km) spread around settlements weighted by population ** 0.3, or a point
  uniform over the province's extent.

Every candidate is labelled by the project's province lookup (:func:`geopak.boundaries.lookup_provinces`);
candidates whose label differs from the intended province, or that fall outside Pakistan, are resampled.
Everything is drawn from ``numpy`` generators seeded by ``(seed, purpose, province, round)``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from geopak.data.synth.world import KM_PER_DEG, World
from geopak.provinces import NUM_PROVINCES, PROVINCE_NAMES, PROVINCES, normalize_province

__all__ = [
    "HOTSPOTS",
    "MODES",
    "Lookup",
    "default_proportions",
    "province_counts",
    "province_lookup",
    "sample_locations",
]

logger = logging.getLogger(__name__)

Lookup = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""(lat, lon) -> object array of canonical province names, None outside Pakistan."""

MODES = ("urban", "hotspot", "rural")

# Tourist and landmark spots (approximate coordinates; each point is checked by the province lookup anyway).
HOTSPOTS: dict[str, tuple[tuple[str, float, float, float], ...]] = {
    "Sindh": (
        ("Clifton Beach", 24.795, 67.025, 3.0), ("Hawke's Bay", 24.865, 66.860, 1.5),
        ("Mazar-e-Quaid", 24.875, 67.041, 2.0), ("Keenjhar Lake", 24.950, 68.050, 1.0),
        ("Mohenjo-daro", 27.329, 68.139, 1.0), ("Makli", 24.760, 67.900, 0.7),
        ("Ranikot", 25.900, 67.910, 0.5), ("Sukkur Barrage", 27.680, 68.850, 0.7),
    ),
    "Punjab": (
        ("Badshahi Mosque", 31.588, 74.310, 2.0), ("Murree", 33.907, 73.391, 2.0),
        ("Katas Raj", 32.724, 72.950, 0.6), ("Derawar Fort", 28.768, 71.335, 0.6),
        ("Rohtas Fort", 32.963, 73.576, 0.6), ("Fort Munro", 29.900, 69.960, 0.5),
    ),
    "Khyber Pakhtunkhwa": (
        ("Kalam", 35.490, 72.580, 1.5), ("Malam Jabba", 34.800, 72.570, 1.0), ("Naran", 34.909, 73.651, 1.5),
        ("Shogran", 34.640, 73.465, 0.8), ("Chitral", 35.851, 71.786, 0.8), ("Kalash Valleys", 35.705, 71.680, 0.8),
        ("Nathia Gali", 34.073, 73.381, 1.0), ("Mingora", 34.776, 72.360, 0.8),
    ),
    "Islamabad Capital Territory": (
        ("Faisal Mosque", 33.730, 73.037, 2.0), ("Daman-e-Koh", 33.739, 73.058, 1.0),
        ("Pakistan Monument", 33.693, 73.069, 1.0), ("Rawal Lake", 33.700, 73.120, 0.7),
        ("Saidpur Village", 33.743, 73.067, 0.6),
    ),
    "Gilgit-Baltistan": (
        ("Karimabad", 36.318, 74.662, 2.0), ("Passu", 36.485, 74.885, 1.0), ("Attabad Lake", 36.335, 74.835, 1.0),
        ("Fairy Meadows", 35.387, 74.590, 1.2), ("Skardu", 35.297, 75.633, 1.5), ("Shigar", 35.425, 75.735, 0.6),
        ("Khaplu", 35.155, 76.335, 0.6), ("Deosai Plains", 35.020, 75.450, 0.8), ("Naltar", 36.160, 74.180, 0.7),
        ("Khunjerab Pass", 36.850, 75.420, 0.6), ("Gilgit", 35.920, 74.310, 1.0), ("Astore", 35.366, 74.857, 0.5),
    ),
    "Balochistan": (
        ("Ziarat", 30.381, 67.726, 1.0), ("Hanna Lake", 30.250, 67.110, 0.8), ("Kund Malir", 25.395, 65.460, 0.8),
        ("Gwadar", 25.125, 62.325, 1.0), ("Hingol", 25.570, 65.480, 0.6), ("Quetta", 30.185, 67.000, 1.0),
    ),
    "Azad Kashmir": (
        ("Muzaffarabad", 34.370, 73.470, 1.5), ("Keran", 34.655, 73.955, 1.0), ("Sharda", 34.793, 74.188, 1.0),
        ("Arang Kel", 34.805, 74.345, 0.8), ("Rawalakot", 33.858, 73.760, 1.0), ("Banjosa Lake", 33.820, 73.815, 0.8),
        ("Pir Chinasi", 34.390, 73.550, 0.7), ("Bagh", 33.980, 73.780, 0.5),
    ),
}

# Share of (urban, hotspot, rural) photos per province.
MODE_SHARES: dict[str, tuple[float, float, float]] = {
    "Sindh": (0.74, 0.12, 0.14),
    "Punjab": (0.66, 0.10, 0.24),
    "Khyber Pakhtunkhwa": (0.50, 0.25, 0.25),
    "Islamabad Capital Territory": (0.70, 0.22, 0.08),
    "Gilgit-Baltistan": (0.25, 0.55, 0.20),
    "Balochistan": (0.55, 0.15, 0.30),
    "Azad Kashmir": (0.35, 0.45, 0.20),
}

_HOTSPOT_SPREAD_KM = 1.5
_RURAL_SPREAD_KM = 18.0
_RURAL_UNIFORM = 0.35
_MAX_ROUNDS = 60


def default_proportions() -> dict[str, float]:
    """The seed dataset's province proportions (Sindh 65,221 : Punjab 8,459 : ... : AJK 1,075)."""
    total = sum(p.seed_count for p in PROVINCES)
    return {p.name: p.seed_count / total for p in PROVINCES}


def province_counts(n: int, proportions: Mapping[str, float] | Sequence[float] | None = None) -> np.ndarray:
    """Images per province (canonical order) summing to ``n``: largest-remainder rounding of ``n x share``.

    Args:
        n: total number of images (>= 0).
        proportions: province name (any alias) -> weight, or 7 weights in canonical order; None for the
            seed dataset's proportions. Weights need not sum to 1; missing provinces get 0.

    Raises:
        ValueError: for negative, non-finite or all-zero weights, or a wrong-length sequence.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if proportions is None:
        proportions = default_proportions()
    w = np.zeros(NUM_PROVINCES)
    if isinstance(proportions, Mapping):
        for name, v in proportions.items():
            w[normalize_province(name).id] += float(v)
    else:
        vals = np.asarray(list(proportions), dtype=np.float64)
        if vals.shape != (NUM_PROVINCES,):
            raise ValueError(
                f"proportions must name provinces or give {NUM_PROVINCES} weights in canonical order "
                f"({', '.join(PROVINCE_NAMES)}); got {vals.shape[0] if vals.ndim else 0} values"
            )
        w = vals
    if not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise ValueError(f"proportions must be finite, >= 0 and not all zero; got {w.tolist()}")
    exact = n * w / w.sum()
    counts = np.floor(exact).astype(np.int64)
    rest = n - int(counts.sum())
    if rest:
        order = np.argsort(-(exact - counts), kind="stable")
        counts[order[:rest]] += 1
    return counts


def province_lookup(boundaries: Any = None) -> tuple[Lookup, str]:
    """The project's province lookup (:func:`geopak.boundaries.lookup_provinces`) bound to ``boundaries``,
    and a description of what answers (``"polygons: <file>"`` or ``"geonames: <table>"``).

    Args:
        boundaries: a boundary file or loaded polygons; None uses the cached geoBoundaries file when there
            is one, else the offline GeoNames fallback. The choice is made once, here.
    """
    from geopak.boundaries import load_polygons, lookup_provinces

    if isinstance(boundaries, Mapping):
        polys: Any = dict(boundaries)
        where = "<polygons>"
    else:
        polys = load_polygons(boundaries)
        where = str(boundaries) if boundaries is not None else "cached geoBoundaries file"
    method = "polygons" if polys is not None else "geonames"

    def lookup(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
        res = lookup_provinces(
            np.asarray(lat, dtype=np.float64), np.asarray(lon, dtype=np.float64), polys, method=method
        )
        return np.asarray(res.province, dtype=object)

    probe = lookup_provinces(np.array([24.86]), np.array([67.01]), polys, method=method)
    return lookup, f"{probe.method}: {probe.source if method == 'geonames' else where}"


@dataclass(frozen=True)
class _Pools:
    """Per-province sampling pools, derived once from the world and the lookup."""

    settlement_province: np.ndarray
    bbox: np.ndarray
    """(7, 4) lat_min, lat_max, lon_min, lon_max around each province's settlements and hotspots."""


def _pools(world: World, lookup: Lookup) -> _Pools:
    s = world.settlements
    prov = lookup(s.lat, s.lon)
    ids = np.array([-1 if p is None else normalize_province(p).id for p in prov], dtype=np.int64)
    bbox = np.zeros((NUM_PROVINCES, 4))
    for p in PROVINCES:
        lats = np.concatenate([s.lat[ids == p.id], [h[1] for h in HOTSPOTS[p.name]]])
        lons = np.concatenate([s.lon[ids == p.id], [h[2] for h in HOTSPOTS[p.name]]])
        pad = 0.35
        bbox[p.id] = (lats.min() - pad, lats.max() + pad, lons.min() - pad, lons.max() + pad)
    return _Pools(settlement_province=ids, bbox=bbox)


def _offset(lat: np.ndarray, lon: np.ndarray, north_km: np.ndarray, east_km: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    lat2 = lat + north_km / KM_PER_DEG
    lon2 = lon + east_km / (KM_PER_DEG * np.cos(np.radians(lat)))
    return lat2, lon2


def _candidates(
    world: World, pools: _Pools, pid: int, m: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``m`` candidate points for province ``pid``: lat, lon, mode index, anchor settlement (-1 if none)."""
    name = PROVINCES[pid].name
    s = world.settlements
    mode = rng.choice(3, size=m, p=np.asarray(MODE_SHARES[name]))
    lat = np.empty(m)
    lon = np.empty(m)
    anchor = np.full(m, -1, dtype=np.int64)
    own = np.flatnonzero(pools.settlement_province == pid)
    gauss = rng.standard_normal((m, 2))
    unif = rng.random((m, 3))
    # Urban: population ** 0.85 weighted settlements, Gaussian of the urban radius.
    if own.size:
        w = s.population[own] ** 0.85
        pick = own[rng.choice(own.size, size=m, p=w / w.sum())]
        r = s.radius_km[pick] * 0.6
        la, lo = _offset(s.lat[pick], s.lon[pick], gauss[:, 0] * r, gauss[:, 1] * r)
        sel = mode == 0
        lat[sel], lon[sel], anchor[sel] = la[sel], lo[sel], pick[sel]
        # Rural around settlements: population ** 0.3, wide spread.
        w = s.population[own] ** 0.3
        pick_r = own[rng.choice(own.size, size=m, p=w / w.sum())]
        la, lo = _offset(s.lat[pick_r], s.lon[pick_r], gauss[:, 0] * _RURAL_SPREAD_KM, gauss[:, 1] * _RURAL_SPREAD_KM)
        sel = (mode == 2) & (unif[:, 0] >= _RURAL_UNIFORM)
        lat[sel], lon[sel] = la[sel], lo[sel]
    else:
        mode = np.where(mode == 0, 1, mode)  # no own settlement: urban photos go to hotspots
    # Hotspots.
    spots = HOTSPOTS[name]
    hw = np.array([h[3] for h in spots])
    k = rng.choice(len(spots), size=m, p=hw / hw.sum())
    hl = np.array([h[1] for h in spots])[k]
    hn = np.array([h[2] for h in spots])[k]
    la, lo = _offset(hl, hn, gauss[:, 0] * _HOTSPOT_SPREAD_KM, gauss[:, 1] * _HOTSPOT_SPREAD_KM)
    sel = mode == 1
    lat[sel], lon[sel] = la[sel], lo[sel]
    # Rural uniform over the province's extent (or everywhere rural when it has no settlement).
    b = pools.bbox[pid]
    la = b[0] + unif[:, 1] * (b[1] - b[0])
    lo = b[2] + unif[:, 2] * (b[3] - b[2])
    sel = (mode == 2) & ((unif[:, 0] < _RURAL_UNIFORM) | (own.size == 0))
    lat[sel], lon[sel] = la[sel], lo[sel]
    return lat, lon, mode, anchor


def sample_locations(
    n: int,
    seed: int = 0,
    proportions: Mapping[str, float] | Sequence[float] | None = None,
    world: World | None = None,
    lookup: Lookup | None = None,
) -> pd.DataFrame:
    """Sample ``n`` photo locations in Pakistan.

    Args:
        n: number of locations.
        seed: sampling seed (same seed, same locations).
        proportions: province weights (see :func:`province_counts`); None for the seed dataset's.
        world: the synthetic world (default :func:`~geopak.data.synth.world.load_world`).
        lookup: province lookup (default :func:`province_lookup` with the cached boundaries or the fallback).

    Returns:
        A DataFrame with ``lat``, ``lon`` (float64), ``province`` (canonical name, from the lookup),
        ``province_id``, ``mode`` (urban/hotspot/rural) and ``anchor`` (settlement index or -1), in a
        seeded random order (any prefix is a fair sample).

    Raises:
        RuntimeError: when a province's points cannot be placed (the lookup never agrees with it).
    """
    from geopak.data.synth.world import load_world

    world = world if world is not None else load_world()
    if lookup is None:
        lookup, _ = province_lookup()
    counts = province_counts(n, proportions)
    pools = _pools(world, lookup)
    parts: list[pd.DataFrame] = []
    for p in PROVINCES:
        need = int(counts[p.id])
        got: list[pd.DataFrame] = []
        have = 0
        for rnd in range(_MAX_ROUNDS):
            if have >= need:
                break
            rng = np.random.default_rng([int(seed), 0x5EA7, p.id, rnd])
            m = math.ceil((need - have) * 1.5) + 16
            lat, lon, mode, anchor = _candidates(world, pools, p.id, m, rng)
            lab = lookup(lat, lon)
            ok = np.asarray(lab == p.name, dtype=bool)
            if ok.any():
                got.append(pd.DataFrame({"lat": lat[ok], "lon": lon[ok], "mode": mode[ok], "anchor": anchor[ok]}))
                have += int(ok.sum())
            logger.debug("%s round %d: %d/%d candidates accepted", p.name, rnd, int(ok.sum()), m)
        if have < need:
            raise RuntimeError(
                f"could not place {need} points in {p.name} after {_MAX_ROUNDS} rounds ({have} accepted): "
                "the province lookup rejects nearly every candidate; check the boundaries file"
            )
        if need:
            df = pd.concat(got, ignore_index=True).iloc[:need]
            df["province_id"] = p.id
            parts.append(df)
    out = (
        pd.concat(parts, ignore_index=True)
        if parts
        else pd.DataFrame({"lat": [], "lon": [], "mode": [], "anchor": [], "province_id": []})
    )
    order = np.random.default_rng([int(seed), 0x0DE7]).permutation(len(out))
    out = out.iloc[order].reset_index(drop=True)
    out["province_id"] = out["province_id"].astype(np.int64)
    out["province"] = [PROVINCE_NAMES[i] for i in out["province_id"]]
    out["mode"] = [MODES[int(i)] for i in out["mode"]]
    out["anchor"] = out["anchor"].astype(np.int64)
    return out[["lat", "lon", "province", "province_id", "mode", "anchor"]]
