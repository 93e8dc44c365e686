"""Per-photo geographic descriptors, computed for all photos at once from the world's rasters.

A *scene table* holds, for each location, what the renderer needs to know about the place (not about
the shot: heading, time, weather are drawn per image while rendering): the ground's satellite colour,
vegetation and desert indices, terrain level and valley floor, roughness, snow, distance and bearing to the
sea, urban density from GeoNames populations, the nearest settlement's influence, and the regional style
field values. None of these is a coordinate; all vary smoothly or by place, as real cues do.
"""

from __future__ import annotations

import math

import numpy as np

from geopak.data.synth.world import KM_PER_DEG, World

__all__ = ["SCENE_COLUMNS", "offset_deg", "scene_table"]

SCENE_COLUMNS: tuple[str, ...] = (
    "lat", "lon", "province_id", "mode_id",
    "gcol_r", "gcol_g", "gcol_b", "bright", "veg", "desert",
    "elev", "floor", "rough", "snow", "coast_km", "sea_bearing", "sea_near",
    "density", "urban", "settle", "settle_w", "settle_pop",
    *(f"style{i}" for i in range(10)),
)
"""Columns of the (N, C) float64 scene array, in order."""

_BEARINGS = np.arange(0.0, 360.0, 22.5)
_SEA_DIST_KM = np.array([1.5, 4.0, 8.0, 15.0])


def offset_deg(lat: np.ndarray, lon: np.ndarray, bearing_deg: np.ndarray, dist_km: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flat-earth destination (good to ~0.1% within 200 km): degrees moved along a bearing."""
    b = np.radians(bearing_deg)
    dlat = dist_km * np.cos(b) / KM_PER_DEG
    dlon = dist_km * np.sin(b) / (KM_PER_DEG * np.cos(np.radians(lat)))
    return lat + dlat, lon + dlon


def _settlement_terms(world: World, lat: np.ndarray, lon: np.ndarray) -> tuple[np.ndarray, ...]:
    s = world.settlements
    n = lat.shape[0]
    density = np.zeros(n)
    best = np.zeros(n, dtype=np.int64)
    best_w = np.zeros(n)
    area = math.pi * s.radius_km**2
    for a in range(0, n, 2048):
        la = lat[a : a + 2048, None]
        lo = lon[a : a + 2048, None]
        dy = (la - s.lat[None]) * KM_PER_DEG
        dx = (lo - s.lon[None]) * KM_PER_DEG * np.cos(np.radians(la))
        d = np.sqrt(dx**2 + dy**2)
        q = d / s.radius_km[None]
        density[a : a + 2048] = (s.population[None] / area[None] * np.exp(-(q**2))).sum(1)
        j = q.argmin(1)
        best[a : a + 2048] = j
        best_w[a : a + 2048] = np.exp(-((q[np.arange(j.size), j] / 2.5) ** 2))
    return density, best, best_w


def scene_table(world: World, lat: np.ndarray, lon: np.ndarray, province_id: np.ndarray, mode_id: np.ndarray) -> np.ndarray:
    """The (N, len(SCENE_COLUMNS)) float64 scene array for the given locations.

    Args:
        world: the synthetic world.
        lat, lon: degrees, shape (N,).
        province_id: canonical province ids (N,).
        mode_id: 0 urban, 1 hotspot, 2 rural (N,).
    """
    lat = np.asarray(lat, dtype=np.float64)
    lon = np.asarray(lon, dtype=np.float64)
    n = lat.shape[0]
    # Ground colour: land-weighted mean over a 3x3 stencil of +-0.07 degrees (coastal points see land colour).
    offs = np.array([-0.07, 0.0, 0.07])
    sl = (lat[:, None, None] + offs[None, :, None]) + 0 * offs[None, None, :]
    so = (lon[:, None, None] + 0 * offs[None, :, None]) + offs[None, None, :]
    col = world.color.sample(sl, so).reshape(n, 9, 3)
    land = 1.0 - world.sea.sample(sl, so).reshape(n, 9)
    land = land + 1e-3
    gcol = (col * land[..., None]).sum(1) / land.sum(1)[:, None]
    bright = gcol.mean(1)
    veg = np.clip((0.56 - bright) / 0.22 + (gcol[:, 1] - gcol[:, 0]) * 3.0, 0.0, 1.0)
    desert = np.clip((bright - 0.45) / 0.12, 0.0, 1.0)
    elev = world.elevation.sample(lat, lon)
    floor = world.floor.sample(lat, lon)
    rough = world.roughness.sample(lat, lon)
    snow = world.snow.sample(lat, lon)
    coast = world.coast_km.sample(lat, lon)
    # Where the sea is, seen from here: sea fraction along 16 bearings at a few distances.
    bl, bo = offset_deg(
        lat[:, None, None], lon[:, None, None], _BEARINGS[None, :, None], _SEA_DIST_KM[None, None, :]
    )
    sea = world.sea.sample(bl, bo)  # (N, 16, 4)
    score = (sea / _SEA_DIST_KM[None, None, :]).sum(-1)
    sea_bearing = _BEARINGS[score.argmax(1)]
    sea_near = sea[:, :, :3].max(axis=(1, 2))
    density, settle, settle_w = _settlement_terms(world, lat, lon)
    urban = np.clip((np.log10(density + 1.0) - 1.0) / 3.2, 0.0, 1.0)
    style = world.style(lat, lon)
    cols = [
        lat, lon, np.asarray(province_id, dtype=np.float64), np.asarray(mode_id, dtype=np.float64),
        gcol[:, 0], gcol[:, 1], gcol[:, 2], bright, veg, desert,
        elev, floor, rough, snow, coast, sea_bearing, sea_near,
        density, urban, settle.astype(np.float64), settle_w, world.settlements.population[settle],
        *[style[:, i] for i in range(style.shape[1])],
    ]
    out = np.stack([np.asarray(c, dtype=np.float64).reshape(n) for c in cols], axis=1)
    assert out.shape[1] == len(SCENE_COLUMNS)
    return out
