"""Render one ground-level photo of a place: sky, mountains on the real horizon, sea, ground, road,
buildings, trees, people and wires, then light, weather and camera.

The renderer is a pure function of (world, scene row, per-image generator, size): every random choice
comes from the generator, so a photo depends only on the dataset seed and its index. All pixel work is
numpy on whole regions (no per-pixel Python); the only Python loops run over a handful of objects
(buildings, trees, poles) and paint array slices.

What carries the geography:

- **horizon**: rays cast from the camera across the field of view through the decoded ETOPO1 terrain
  (with earth curvature and a valley model around the camera's floor elevation); ridge colour from Blue
  Marble at the ridge, snow above a latitude- and season-dependent snow line, lowered where Blue Marble
  shows ice;
- **ground**: Blue Marble colour at the place, with textures chosen by its vegetation, desert and roughness
  indices (irrigated fields, sand ripples, scree, meadow, paving, snow);
- **sea**: beach views facing the real sea bearing near the coast, a sea horizon where rays reach the sea;
- **settlement**: building density and height from GeoNames population density; materials, roofs,
  signs, window rhythm and kerb paint from a province palette, smooth regional style fields and the nearest
  settlement's fixed signature;
- **climate**: haze, dust, fog, rain, cloud and season probabilities by region.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

import numpy as np

from geopak.data.synth.scene import SCENE_COLUMNS, offset_deg
from geopak.data.synth.world import World

__all__ = ["MATERIALS", "render"]

_C = {name: i for i, name in enumerate(SCENE_COLUMNS)}

MATERIALS: tuple[tuple[str, tuple[float, float, float]], ...] = (
    ("fired brick", (0.60, 0.33, 0.25)),
    ("grey concrete", (0.66, 0.66, 0.63)),
    ("white paint", (0.90, 0.89, 0.85)),
    ("cream paint", (0.87, 0.80, 0.60)),
    ("pastel blue", (0.60, 0.74, 0.84)),
    ("pastel green", (0.63, 0.79, 0.64)),
    ("mud plaster", (0.70, 0.57, 0.41)),
    ("stone", (0.52, 0.49, 0.45)),
    ("timber", (0.42, 0.29, 0.19)),
    ("salmon paint", (0.86, 0.63, 0.57)),
)
_MAT_RGB = np.array([m[1] for m in MATERIALS], dtype=np.float32)

# Province (canonical order) -> material logits: Sindh, Punjab, KP, ICT, GB, Balochistan, AJK.
_PROV_MATERIAL = np.array(
    [
        [0.2, 1.6, 0.0, 0.5, 1.0, 0.9, 0.3, -1.0, -1.5, 0.8],
        [1.8, 0.9, 0.4, 0.6, -0.5, -0.5, 0.0, -1.0, -1.5, 0.3],
        [0.6, 1.0, 0.0, 0.4, -1.0, -0.5, 1.0, 0.6, -0.5, -0.5],
        [0.3, 0.6, 1.8, 1.0, -0.5, -0.5, -1.5, -0.5, -1.5, -0.5],
        [-1.0, 0.0, 0.5, -0.5, -1.5, -1.5, 0.7, 1.6, 1.0, -1.5],
        [-0.5, 0.4, -0.5, 0.6, -1.5, -1.5, 2.0, 0.4, -1.0, -1.0],
        [-0.5, 0.8, 0.8, 0.0, 0.6, 0.6, -0.5, 0.4, 0.8, 0.5],
    ],
    dtype=np.float32,
)
# Kerb paint per province: 0 none, 1 black/yellow, 2 black/white, 3 red/white.
_PROV_KERB = (1, 1, 1, 2, 0, 3, 0)
# Sign vividness per province (how often shops carry painted boards).
_PROV_SIGNS = (1.0, 0.9, 0.8, 0.5, 0.4, 0.6, 0.6)
_TIN_COLOURS = np.array(
    [(0.20, 0.45, 0.25), (0.62, 0.16, 0.14), (0.18, 0.32, 0.58), (0.62, 0.64, 0.66), (0.45, 0.12, 0.16)],
    dtype=np.float32,
)
_VIVID = np.array(
    [
        (0.85, 0.10, 0.12), (0.05, 0.45, 0.20), (0.10, 0.25, 0.70), (0.95, 0.75, 0.05), (0.95, 0.45, 0.05),
        (0.55, 0.10, 0.55), (0.00, 0.60, 0.65), (0.95, 0.95, 0.95), (0.10, 0.10, 0.10), (0.90, 0.30, 0.55),
    ],
    dtype=np.float32,
)
# Fixed projections of the 10 style fields onto the style parameters (world seed, not dataset seed).
_STYLE_RNG = np.random.default_rng([0x6E09A4, 11])
_STYLE_TO_MATERIAL = _STYLE_RNG.normal(0.0, 0.8, size=(10, 10)).astype(np.float32)
_STYLE_TO_MATERIAL[7:] *= 1.6  # town-scale fields weigh more on a town's materials
_STYLE_TO_SIGN = _STYLE_RNG.normal(0.0, 1.0, size=(10, 2)).astype(np.float32)
_TINT_MIX = np.array([[1.0, -0.3, -0.7], [-0.5, 1.0, -0.5], [-0.6, -0.2, 1.0]], dtype=np.float32)

_EARTH_R_KM = 6371.0088
_RAY_D = np.geomspace(0.25, 160.0, 40)
_SUN = {
    "day": np.array([1.0, 0.98, 0.95], dtype=np.float32),
    "golden": np.array([1.12, 0.90, 0.68], dtype=np.float32),
    "dusk": np.array([0.46, 0.42, 0.55], dtype=np.float32),
}


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


@lru_cache(maxsize=512)
def _interp_index(n_out: int, n_in: int) -> tuple[np.ndarray, np.ndarray]:
    """Knot indices (4, n_out) and cubic B-spline weights (4, n_out) of n_out samples over n_in knots."""
    p = np.linspace(0.0, n_in - 1.0, n_out)
    i = np.floor(p).astype(np.intp)
    t = p - i
    idx = np.clip(i[None, :] + np.arange(-1, 3)[:, None], 0, n_in - 1)
    w = np.stack(
        [(1 - t) ** 3, 3 * t**3 - 6 * t**2 + 4, -3 * t**3 + 3 * t**2 + 3 * t + 1, t**3]
    ) / 6.0
    return idx, w.astype(np.float32)


def _noise(rng: np.random.Generator, h: int, w: int, gh: int, gw: int) -> np.ndarray:
    """Smooth noise (h, w) float32 of unit-ish variance: a gh x gw random grid, cubic B-spline interpolated.

    Gathers and weighted sums only (no BLAS, whose threads misbehave on tiny products in busy worker pools);
    the B-spline leaves no plateaus or seams at the knots.
    """
    gh, gw = max(int(gh), 2), max(int(gw), 2)
    g = rng.standard_normal((gh, gw), dtype=np.float32) * np.float32(2.15)
    iy, wy = _interp_index(h, gh)
    ix, wx = _interp_index(w, gw)
    rows = g[iy[0]] * wy[0][:, None] + g[iy[1]] * wy[1][:, None] + g[iy[2]] * wy[2][:, None] + g[iy[3]] * wy[3][:, None]
    return rows[:, ix[0]] * wx[0] + rows[:, ix[1]] * wx[1] + rows[:, ix[2]] * wx[2] + rows[:, ix[3]] * wx[3]


def _hash(i: np.ndarray, j: np.ndarray, salt: int) -> np.ndarray:
    """Integer hash of two integer-valued grids -> float32 in [0, 1) (uint32 arithmetic, wrapping)."""
    a = i.astype(np.int32).view(np.uint32) * np.uint32(0x27D4EB2D)
    a ^= j.astype(np.int32).view(np.uint32) * np.uint32(0x165667B1)
    a ^= np.uint32((salt * 0x9E3779B1) & 0xFFFFFFFF)
    a ^= a >> np.uint32(15)
    a *= np.uint32(0x2C1B3C6D)
    a ^= a >> np.uint32(12)
    return (a & np.uint32(0xFFFF)).astype(np.float32) * np.float32(1.0 / 65536.0)


def _mix(a: np.ndarray, b: Any, t: Any) -> np.ndarray:
    return a + (np.asarray(b, dtype=np.float32) - a) * t


def _gain(c: np.ndarray) -> np.ndarray:
    """Satellite reflectance -> ground-level colour: brighter, a little more contrast."""
    return np.clip(c * 1.45 + 0.04, 0.0, 1.0).astype(np.float32)


class _Shot:
    """Everything drawn for one photo before painting: camera, season, time of day, weather, visibility, snow
    line, and the place's style (materials, roof, sign and window colours, tints). Plain attributes."""

    def __init__(self, row: np.ndarray, rng: np.random.Generator, size: int, signatures: np.ndarray) -> None:
        self.row = row
        g = lambda k: float(row[_C[k]])
        self.g = g
        self.size = size
        self.pid = int(g("province_id"))
        lat = g("lat")
        # Camera.
        self.hfov = rng.uniform(52.0, 78.0)
        self.f = (size / 2) / math.tan(math.radians(self.hfov / 2))
        coastal = g("sea_near") > 0.1 and g("coast_km") < 12.0
        self.beach = coastal and rng.random() < (0.6 if g("mode_id") == 1 else 0.35)
        if self.beach:
            self.heading = (g("sea_bearing") + rng.normal(0.0, 20.0)) % 360.0
        else:
            self.heading = rng.uniform(0.0, 360.0)
        elevated = rng.random() < (0.08 + 0.15 * g("rough"))
        self.cam_h = rng.uniform(6.0, 40.0) if elevated else rng.uniform(1.4, 2.0)
        self.y0 = size * rng.uniform(0.42, 0.54)
        # Season and time.
        self.season = int(rng.choice(4, p=[0.25, 0.25, 0.3, 0.2]))  # winter, spring, summer, autumn
        self.tod = str(rng.choice(["day", "golden", "dusk"], p=[0.9, 0.08, 0.02]))
        self.sun_side = rng.choice([-1.0, 1.0])
        # Weather by climate.
        lowland = g("floor") < 700
        plains_north = lowland and 28.0 < lat < 34.8 and self.pid in (1, 2, 3)
        p_fog = 0.35 if (plains_north and self.season == 0) else 0.02
        p_dust = (0.02 + 0.15 * g("desert")) * (1.4 if self.season in (1, 2) else 0.6)
        p_rain = 0.02 + (0.12 if (self.season == 2 and lat > 30.5 and self.pid != 5) else 0.0) + 0.06 * (g("floor") > 1500)
        p_rain = min(p_rain, 0.35)
        p_clear = max(1.0 - p_fog - p_dust - p_rain, 0.1)
        w = np.array([p_clear, p_fog, p_dust, p_rain])
        self.weather = str(rng.choice(["clear", "fog", "dust", "rain"], p=w / w.sum()))
        # Clear-day visibility: smoggy irrigated plains and the humid coast are hazy, the mountains clear.
        highland = min(max((g("floor") - 300.0) / 2200.0, 0.0), 1.0)
        base_vis = (6.0 + 120.0 * highland**1.2) * (1.0 + 1.5 * g("desert"))
        self.vis_km = {
            "clear": base_vis * rng.uniform(0.6, 1.4),
            "fog": rng.uniform(0.08, 0.6),
            "dust": rng.uniform(1.5, 6.0),
            "rain": rng.uniform(3.0, 12.0),
        }[self.weather]
        # Cloud cover on clear days: rare over the arid south, monsoon clouds in the north, most in the mountains.
        cloud_max = 0.12 + 0.25 * (lat > 30.0 and self.season in (1, 2)) + 0.35 * highland - 0.1 * g("desert")
        self.cloud = {
            "clear": rng.uniform(0.0, max(cloud_max, 0.05)),
            "fog": 1.0,
            "dust": rng.uniform(0.0, 0.2),
            "rain": rng.uniform(0.75, 1.0),
        }[self.weather]
        # Snow line (m): ~5,300 m at 30 N falling northwards, lower in winter and spring.
        self.snowline = 5300.0 - 110.0 * (lat - 30.0) + (-1900.0, -700.0, 250.0, -300.0)[self.season]
        self.snowline += rng.normal(0.0, 150.0)
        # Style: materials from province + regional fields + settlement signature.
        style = np.array([g(f"style{i}") for i in range(10)], dtype=np.float32)
        self.style = style
        sig_w = g("settle_w")
        sig = signatures[int(g("settle"))]
        self.sig, self.sig_w = sig, sig_w
        logits = 2.0 * _PROV_MATERIAL[self.pid] + style @ _STYLE_TO_MATERIAL
        dom = np.zeros(10, dtype=np.float32)
        dom[int(np.argmax(sig[:10]))] = 1.0
        logits = logits + sig_w * (3.2 * dom + 1.5 * (sig[:10] - 0.5))
        if self.pid in (0, 1, 5):
            logits[6] += 1.5 * (1.0 - g("urban"))  # villages of the plains and deserts: mud plaster
        p = np.exp(logits - logits.max())
        self.mat_p = p / p.sum()
        self.tin = _TIN_COLOURS[int(sig[10] * len(_TIN_COLOURS)) % len(_TIN_COLOURS)]
        hue = (style @ _STYLE_TO_SIGN)
        k1 = int((sig[11] * 10 + (hue[0] > 0) * 3) % 10) if sig_w > 0.2 else int(rng.integers(10))
        k2 = int((sig[12] * 10 + (hue[1] > 0) * 5) % 10) if sig_w > 0.2 else int(rng.integers(10))
        self.sign_cols = _VIVID[[k1, k2 if k2 != k1 else (k1 + 4) % 10]]
        self.win_frac = 0.35 + 0.35 * float(sig[13])
        self.win_col = np.array(
            [(0.12, 0.14, 0.16), (0.22, 0.36, 0.38), (0.35, 0.22, 0.14), (0.16, 0.22, 0.34)][int(sig[14] * 4) % 4],
            dtype=np.float32,
        )
        self.width_scale = 0.7 + 0.7 * float(sig[15])
        # District-scale tints: soil and wall colour drift smoothly across the country.
        self.soil_tint = (
            1.0 + 0.07 * np.tanh(style[0:3] @ _TINT_MIX) + 0.06 * np.tanh(style[3:6] @ _TINT_MIX)
        ).astype(np.float32)
        self.town_tint = (1.0 + 0.06 * sig_w * (sig[[2, 5, 8]] - 0.5) * 2.0).astype(np.float32)
        self.wall_tint = (
            1.0 + 0.1 * np.tanh(style[0:3] @ _TINT_MIX[::-1]) + 0.08 * np.tanh(style[4:7] @ _TINT_MIX[::-1])
        ).astype(np.float32)
        self.p_pitched = 0.9 * _sigmoid((g("floor") - 1250.0) / 260.0) + (0.25 if self.pid == 6 else 0.0)


def _c(col: Any) -> np.ndarray:
    """A colour as a (3, 1, 1) float32 array (for broadcasting against channel-first images)."""
    return np.asarray(col, dtype=np.float32).reshape(3, 1, 1)


def _sky(sh: _Shot, rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Sky image (3, h, w) and the horizon (haze) colour (3,)."""
    alt = min(max(sh.g("floor") / 4000.0, 0.0), 1.0)
    zen = _mix(np.array([0.24, 0.47, 0.80], np.float32), [0.10, 0.28, 0.72], alt)
    hor = np.array([0.72, 0.81, 0.92], np.float32)
    low = 1.0 - min(max((sh.g("floor") - 200.0) / 1000.0, 0.0), 1.0)
    if sh.g("coast_km") < 40:  # humid sea haze: cool white
        hor = _mix(hor, [0.84, 0.89, 0.92], 0.85)
        zen = _mix(zen, [0.56, 0.70, 0.84], 0.7)
    elif low > 0:  # plains: brown-yellow aerosol haze, thicker over the irrigated (vegetated) plains
        k = low * (0.3 + 0.7 * sh.g("veg"))
        hor = _mix(hor, [0.82, 0.75, 0.60], k)
        zen = _mix(zen, [0.60, 0.63, 0.68], 0.85 * k)
    if sh.g("desert") > 0.3 and sh.g("floor") < 1800:  # desert: pale, dusty blue
        hor = _mix(hor, [0.88, 0.84, 0.74], 0.5 * sh.g("desert"))
    if sh.weather == "dust":
        hor = np.array([0.86, 0.76, 0.58], np.float32)
        zen = np.array([0.72, 0.68, 0.60], np.float32)
    elif sh.weather in ("fog", "rain"):
        hor = np.array([0.76, 0.77, 0.78], np.float32) * (0.85 if sh.weather == "rain" else 1.0)
        zen = hor * 0.9
    if sh.tod == "golden":
        hor = _mix(hor, [0.98, 0.70, 0.45], 0.6)
        zen = _mix(zen, [0.35, 0.45, 0.70], 0.3)
    elif sh.tod == "dusk":
        hor = _mix(hor, [0.85, 0.45, 0.32], 0.7)
        zen = np.array([0.08, 0.10, 0.26], np.float32)
    t = np.clip((sh.y0 - np.arange(h, dtype=np.float32)) / max(sh.y0, 1.0), 0.0, 1.0) ** 0.55
    sky = np.broadcast_to(_c(hor) + _c(zen - hor) * t[None, :, None], (3, h, w)).copy()
    hs = min(math.ceil(sh.y0) + 1, h)
    if sh.cloud > 0.02 and hs > 2:
        n = _noise(rng, hs, w, 4, 7) + 0.5 * _noise(rng, hs, w, 9, 15)
        thr = 1.6 - 2.6 * sh.cloud
        c = np.clip((n - thr) * 1.2, 0.0, 1.0) * np.clip(t[:hs] * 3.0, 0.0, 1.0)[:, None]
        ccol = np.array([0.96, 0.96, 0.97], np.float32) if sh.weather == "clear" else np.array([0.62, 0.64, 0.67], np.float32)
        if sh.tod != "day":
            ccol = _mix(ccol, hor, 0.6)
        sky[:, :hs] += (_c(ccol) - sky[:, :hs]) * (c * np.float32(0.9))[None]
    return sky, hor


def _horizon(sh: _Shot, world: World, w: int) -> dict[str, np.ndarray]:
    """Per-column ridge height (px above the horizon row), distance, colour (3, w), snow, and a sea flag."""
    k = 25
    az = sh.heading + np.degrees(np.arctan((np.linspace(-0.5, 0.5, k) * w * 1.06) / sh.f))
    lat, lon = sh.g("lat"), sh.g("lon")
    pl, po = offset_deg(np.full((k, 1), lat), np.full((k, 1), lon), az[:, None], _RAY_D[None, :])
    level = world.elevation.sample(pl, po)
    sea = world.sea.sample(pl, po)
    e0 = sh.g("floor") + sh.cam_h
    valley = 1.5 + 5.0 * sh.g("rough")  # km over which the valley sides rise to the terrain level
    d = _RAY_D[None, :]
    terr = sh.g("floor") + (level - sh.g("floor")) * np.clip(d / valley, 0.0, 1.0)
    terr = np.where(sea > 0.5, 0.0, terr)
    drop = d**2 / (2 * _EARTH_R_KM) * 1000.0 * 0.87
    ang = np.arctan((terr - e0 - drop) / (d * 1000.0))
    near = d < 10.0
    ang_far = np.where(near, -1.0, ang)
    ang_near = np.where(near, ang, -1.0)
    rows = np.arange(k)
    out: dict[str, np.ndarray] = {}
    xs = np.linspace(0, k - 1, w)
    for name, a in (("far", ang_far), ("near", ang_near)):
        j = a.argmax(1)
        amax = a[rows, j]
        hpx = np.maximum(np.tan(np.clip(amax, -0.2, 1.2)) * sh.f, 0.0)
        col = world.color.sample(pl[rows, j], po[rows, j])
        snow = world.snow.sample(pl[rows, j], po[rows, j])
        out[f"{name}_h"] = np.interp(xs, rows, hpx).astype(np.float32)
        out[f"{name}_d"] = np.interp(xs, rows, _RAY_D[j]).astype(np.float32)
        out[f"{name}_e"] = np.interp(xs, rows, terr[rows, j]).astype(np.float32)
        out[f"{name}_snow"] = np.interp(xs, rows, snow).astype(np.float32)
        out[f"{name}_col"] = np.stack([np.interp(xs, rows, col[:, c]) for c in range(3)]).astype(np.float32)
    # Sea on the horizon: the ray meets the sea within 40 km before any land rises above the eye.
    first_sea = np.where((sea > 0.5) & (d < 40.0), np.arange(_RAY_D.size)[None, :], 10**6).min(1)
    prefix = np.maximum.accumulate(np.concatenate([np.full((k, 1), -1.0), ang], axis=1), axis=1)
    has_sea = first_sea < 10**6
    blocked = ~has_sea | (prefix[rows, np.where(has_sea, first_sea, 0)] > 0.002)
    out["sea"] = np.interp(xs, rows, (~blocked).astype(np.float32)).astype(np.float32)
    return out


def _mountains(sh: _Shot, rng: np.random.Generator, img: np.ndarray, depth: np.ndarray, hz: dict[str, np.ndarray], haze: np.ndarray) -> None:
    _, h, w = img.shape
    rough = sh.g("rough")
    e_cam = sh.g("floor")
    for layer, dark in (("far", 0.0), ("near", 0.15)):
        hpx = hz[f"{layer}_h"]
        if hpx.max() < 0.6:
            continue
        n1 = _noise(rng, 1, w, 1, 3 + int(5 * rough))[0]
        n2 = _noise(rng, 1, w, 1, 8 + int(14 * rough))[0]
        n3 = _noise(rng, 1, w, 1, 20 + int(30 * rough))[0]
        amp = 0.1 + 0.5 * rough
        smooth = np.maximum(hpx * (1.0 + amp * 0.6 * n1), 0.0)
        hpx = np.maximum(smooth + hpx * amp * (0.3 * n2 + 0.12 * n3), 0.0)
        r_top = max(math.floor(sh.y0 - hpx.max()), 0)
        r_bot = min(math.ceil(sh.y0) + 1, h)
        if r_bot <= r_top:
            continue
        ys = np.arange(r_top, r_bot, dtype=np.float32)[:, None]
        mask = ys >= (sh.y0 - hpx)[None, :]
        dist = hz[f"{layer}_d"]
        rock = _gain(hz[f"{layer}_col"].T).T * (1.0 - dark)  # (3, w)
        rock = rock + (rock.mean(0, keepdims=True) - rock) * 0.35
        # Light: the broad slope of the skyline, fake hill shading from a ridge field, height, rock grain.
        shade = 1.0 + np.clip(np.gradient(smooth) * sh.sun_side * 0.25, -0.25, 0.25)
        bh = r_bot - r_top
        # Fall lines: noise stretched vertically, lit on one side (gullies and spurs), plus fine grain.
        kx = max(w // 7, 2)
        ridges = _noise(rng, bh, w, max(bh // 14, 2), kx)
        gx = np.clip(np.gradient(ridges, axis=1) * np.float32(w / kx) * sh.sun_side, -2.0, 2.0)
        tex = _noise(rng, bh, w, max(bh // 4, 2), max(w // 8, 2))
        rel = np.clip((sh.y0 - ys) / np.maximum(hpx[None, :], 1.0), 0.0, 1.0)  # 0 at base, 1 at the ridge
        lum = shade[None, :] * (1.0 + (0.08 + 0.1 * rough) * gx) * (0.85 + 0.2 * rel) * (1.0 + 0.04 * tex)
        col = rock[:, None, :] * lum[None]
        # Snow above the snow line (lower where Blue Marble shows ice): a soft ragged edge, and steep
        # faces (strong side light) keep some rock.
        e_top = hz[f"{layer}_e"]
        sl = sh.snowline - 1800.0 * hz[f"{layer}_snow"]
        e_row = e_cam + (e_top - e_cam)[None, :] * rel
        alpha = np.clip((e_row - sl[None, :] + 220.0 * tex) / 300.0, 0.0, 1.0) * np.clip(1.4 - 0.35 * np.abs(gx), 0.3, 1.0)
        if alpha.max() > 0:
            col += (_c([0.93, 0.95, 0.98]) * lum[None] - col) * alpha[None]
        # Aerial perspective.
        t = np.clip(1.0 - np.exp(-dist / max(sh.vis_km, 0.05)), 0.0, 0.97).astype(np.float32)
        col += (_c(haze) - col) * t[None, None, :]
        img[:, r_top:r_bot] = np.where(mask[None], col, img[:, r_top:r_bot])
        depth[r_top:r_bot] = np.where(mask, dist[None, :] * np.float32(1000.0), depth[r_top:r_bot])


def _ground(sh: _Shot, rng: np.random.Generator, img: np.ndarray, depth: np.ndarray, hz: dict[str, np.ndarray], haze: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Paint the ground below the horizon; returns ground-plane X, Z (m) of the painted rows and the first row."""
    _, h, w = img.shape
    r0 = math.floor(sh.y0) + 1
    if r0 >= h:
        return np.zeros((0, w), np.float32), np.zeros((0, w), np.float32), h
    gh = h - r0
    ys = np.arange(r0, h, dtype=np.float32)[:, None]
    xs = np.arange(w, dtype=np.float32)[None, :]
    z = np.minimum(np.float32(sh.f * sh.cam_h) / np.maximum(ys - np.float32(sh.y0), np.float32(0.05)), np.float32(20000.0))
    X = (xs - np.float32(w / 2)) * (z / np.float32(sh.f))
    Z = np.broadcast_to(z, X.shape)
    base = _gain(np.array([sh.g("gcol_r"), sh.g("gcol_g"), sh.g("gcol_b")], np.float32)) * sh.soil_tint
    veg, desert, rough, urban = sh.g("veg"), sh.g("desert"), sh.g("rough"), sh.g("urban")
    snowy = sh.g("floor") > sh.snowline - 400.0 or (sh.season == 0 and sh.g("floor") > 1900)
    weights = {
        "fields": veg * (1 - rough) * (1 - 0.7 * urban) * (1.6 if sh.pid in (0, 1) else 0.9),
        "sand": desert * (1 - rough) * 1.3,
        "scree": rough * (1 - veg * 0.5) * 1.2,
        "meadow": veg * rough * 1.4,
        "paved": urban * 1.2,
        "snow": 2.5 if snowy else 0.0,
        "dry": 0.25,
    }
    names = list(weights)
    wv = np.array([weights[k] for k in names]) ** 2
    kind = names[int(rng.choice(len(names), p=wv / wv.sum()))]
    # Pixel-scale grain, fading with distance (world-anchored cells would show as squares near the camera).
    n_fine = (_hash(xs + 0 * ys, ys + 0 * xs, 11) - np.float32(0.5)) * np.exp(Z * np.float32(-1.0 / 25.0))
    n_mid = _noise(rng, gh, w, max(gh // 8, 2), max(w // 10, 2)) + 0.5 * _noise(rng, gh, w, max(gh // 3, 2), max(w // 4, 2))
    b = _c(base)
    if kind == "fields":
        palette = np.array(
            [(0.30, 0.50, 0.17), (0.48, 0.60, 0.24), (0.78, 0.68, 0.38), (0.52, 0.40, 0.27), (0.38, 0.56, 0.22)],
            np.float32,
        )
        if sh.season in (0, 3):
            palette[2] = (0.55, 0.50, 0.35)
        palette = palette + (base - palette) * 0.25
        fw, fl = rng.uniform(15, 40), rng.uniform(25, 80)
        hid = _hash(np.floor(X / np.float32(fw) + np.float32(0.37)), np.floor(Z / np.float32(fl)), 3)
        col = np.take(palette.T, np.minimum((hid * 5).astype(np.intp), 4), axis=1)
        col *= (1.0 + 0.06 * np.sin(X * 6.3) * np.exp(Z * np.float32(-1.0 / 30.0)) + 0.05 * n_mid)[None]
    elif kind == "sand":
        ripple = 0.05 * np.sin(Z * 2.2 + 4.0 * n_mid) * np.exp(Z * np.float32(-1.0 / 60.0))
        col = _c(_mix(base, [0.86, 0.76, 0.56], 0.35)) * (1.0 + ripple + 0.04 * n_mid)[None]
        shrub = (_hash(np.floor(X / 1.5), np.floor(Z / 1.5), 5) < 0.02) & (Z < 200)
        col = np.where(shrub[None], _c([0.35, 0.36, 0.22]), col)
    elif kind == "scree":
        col = _c(_mix(base, base.mean(), 0.3)) * (0.9 + 0.14 * n_mid + 0.6 * n_fine)[None]
    elif kind == "meadow":
        g = [0.30, 0.48, 0.20] if sh.season in (1, 2) else [0.52, 0.50, 0.30]
        col = _c(_mix(base, g, 0.6)) * (1.0 + 0.12 * n_mid + 0.3 * n_fine)[None]
    elif kind == "paved":
        col = _c(_mix(base, [0.62, 0.60, 0.56], 0.35) * sh.town_tint) * (1.0 + 0.05 * n_mid + 0.2 * n_fine)[None]
    elif kind == "snow":
        col = _c([0.90, 0.92, 0.96]) * (1.0 + 0.04 * n_mid)[None]
        patches = _noise(rng, gh, w, max(gh // 2, 2), max(w // 10, 2))  # flattened like ground seen obliquely
        col = np.where((patches < -1.3 + 0.5 * (sh.season != 0))[None], b * 0.7, col)
    else:
        col = b * (1.0 + 0.1 * n_mid + 0.2 * n_fine)[None]
    if col.shape != (3, gh, w):
        col = np.broadcast_to(col, (3, gh, w)).astype(np.float32)
    if sh.beach:  # sea band, surf line and sand between the camera and the shore
        shore = rng.uniform(3.0, 40.0)
        sea_c = _mix(np.array([0.16, 0.36, 0.48], np.float32), haze, 0.35)
        waves = 0.08 * np.sin(Z * 0.9 + 2.0 * n_mid) * np.exp(Z * np.float32(-1.0 / 400.0))
        sea_img = _c(sea_c) * (1.0 + waves)[None]
        sea_img = np.where(((Z > shore) & (Z < shore * 1.15))[None], _c([0.92, 0.93, 0.92]), sea_img)
        sand = _c(_mix(base, [0.80, 0.72, 0.56], 0.6)) * (1.0 + 0.05 * n_mid)[None]
        col = np.where((Z > shore)[None], sea_img, sand)
    else:  # a thin sea line where the far rays meet open sea
        far_sea = (hz["sea"][None, :] > 0.5) & (Z > 600.0)
        if far_sea.any():
            col = np.where(far_sea[None], _c(_mix(np.array([0.20, 0.38, 0.52], np.float32), haze, 0.4)), col)
    # Distance: fine texture fades into the mean colour.
    fade = np.float32(0.5) - np.float32(0.5) * np.exp(Z * np.float32(-1.0 / (25.0 * max(sh.cam_h, 1.0))))
    col += (col.mean(axis=(1, 2), keepdims=True) - col) * fade[None]
    img[:, r0:] = col
    depth[r0:] = Z
    return X, Z, r0


def _road(sh: _Shot, rng: np.random.Generator, img: np.ndarray, X: np.ndarray, Z: np.ndarray, r0: int) -> tuple[float, float]:
    """Maybe a road: returns (centre X at the camera, half width) or (nan, 0)."""
    urban = sh.g("urban")
    if sh.beach or X.size == 0 or rng.random() > 0.05 + 0.45 * urban:
        return float("nan"), 0.0
    wide = 1.0 + (0.8 if sh.pid == 3 else 0.0) + 0.25 * float(sh.style[7])
    half = max(1.6, (1.8 + 5.5 * urban * rng.uniform(0.6, 1.2)) * wide)
    xc = rng.uniform(-0.6, 0.6) * half + rng.uniform(-2.0, 2.0)
    bend = rng.normal(0.0, 0.15)
    dx = np.abs(X - (xc + bend * Z))
    road = dx < half
    if not road.any():
        return float("nan"), 0.0
    sub = img[:, r0:]
    paved = urban > 0.25 or rng.random() < 0.3
    if paved:  # asphalt, dusty where the land is dry
        rc = np.array([0.32, 0.33, 0.35], np.float32) * np.float32(rng.uniform(0.85, 1.2))
        base = _gain(np.array([sh.g("gcol_r"), sh.g("gcol_g"), sh.g("gcol_b")], np.float32))
        rc = _mix(rc, base, 0.15 + 0.35 * sh.g("desert") + 0.15 * (1.0 - sh.g("veg")))
    else:
        rc = sub[:, road].mean(1) * np.float32(0.9)
    grain = 1.0 + 0.06 * (_hash(np.floor(X * 4), np.floor(Z * 4), 9) - 0.5)
    paint = _c(rc) * grain[None]
    if paved:
        dash = (dx < 0.09) & (np.mod(Z, 9.0) < 4.0)
        paint = np.where(dash[None], _c((0.92, 0.92, 0.88) if sh.pid != 1 else (0.92, 0.80, 0.25)), paint)
    sub[:] = np.where(road[None], paint, sub)
    kerb = _PROV_KERB[sh.pid]
    if paved and kerb and urban > 0.3:
        kb = (np.abs(dx - half) < 0.22) & (Z < 120.0)
        stripe = np.mod(np.floor(Z), 2) == 0
        c1 = {1: (0.10, 0.10, 0.10), 2: (0.10, 0.10, 0.10), 3: (0.75, 0.12, 0.10)}[kerb]
        c2 = {1: (0.95, 0.80, 0.10), 2: (0.93, 0.93, 0.90), 3: (0.93, 0.93, 0.90)}[kerb]
        sub[:] = np.where(kb[None], np.where(stripe[None], _c(c1), _c(c2)), sub)
    return xc, half


def _project(sh: _Shot, X: float, z: float, hgt: float, wid: float, w: int) -> tuple[int, int, int, int]:
    xl = w / 2 + sh.f * (X - wid / 2) / z
    xr = w / 2 + sh.f * (X + wid / 2) / z
    yb = sh.y0 + sh.f * sh.cam_h / z
    yt = yb - sh.f * hgt / z
    return round(xl), round(xr), round(yt), round(yb)


def _paint(img: np.ndarray, depth: np.ndarray, top: int, a: int, m: np.ndarray, col: np.ndarray, z: float) -> None:
    """Paint ``col`` ((3,) or (3, mh, mw)) where ``m`` (mh, mw) is True, at rows top.., columns a..; set depth."""
    mh, mw = m.shape
    reg = img[:, top : top + mh, a : a + mw]
    c = col if col.ndim == 3 else _c(col)
    reg[:] = np.where(m[None], c, reg)
    d = depth[top : top + mh, a : a + mw]
    d[m] = z


def _walls(sh: _Shot, rng: np.random.Generator, img: np.ndarray, depth: np.ndarray, road: tuple[float, float]) -> None:
    """Compound and boundary walls: long, low, in the place's dominant material, beside the road."""
    _, h, w = img.shape
    urban = sh.g("urban")
    n = int(rng.poisson(0.2 + 1.6 * urban + 0.6 * (sh.g("mode_id") == 2)))
    if n == 0 or sh.beach:
        return
    mat = int(np.argmax(sh.mat_p)) if rng.random() < 0.7 else int(rng.choice(len(MATERIALS), p=sh.mat_p))
    xc, half = road
    for _ in range(min(n, 3)):
        z = rng.uniform(7.0, 70.0)
        side = rng.choice([-1.0, 1.0])
        inner = (xc if not math.isnan(xc) else rng.uniform(-20.0, 20.0)) + side * (half + rng.uniform(1.0, 3.0))
        outer = inner + side * rng.uniform(15.0, 80.0)
        left, right = min(inner, outer), max(inner, outer)
        hgt = rng.uniform(1.8, 3.2)
        xl, xr, yt, yb = _project(sh, (left + right) / 2, z, hgt, right - left, w)
        a, b, top, bot = max(xl, 0), min(xr, w), max(yt, 0), min(yb, h)
        if b <= a or bot <= top:
            continue
        col = _MAT_RGB[mat] * sh.wall_tint * np.float32(rng.uniform(0.85, 1.0))
        yy = np.arange(top, bot, dtype=np.float32)[:, None]
        xx = np.arange(a, b, dtype=np.float32)[None, :]
        lum = np.ones((bot - top, b - a), np.float32)
        course = max((yb - yt) / 9.0, 1.0)  # brick or block courses
        if course >= 1.5:
            lum = np.where(np.mod(yy - yt, course) < 0.6, np.float32(0.88), lum)
        lum[: max(1, int(course))] *= 0.85  # coping
        reg = _c(col) * lum[None]
        gw = (yb - yt) * 0.9
        if rng.random() < 0.5 and xr - xl > 3 * gw:  # a gate
            gx = xl + rng.uniform(0.2, 0.8) * (xr - xl)
            gate = (np.abs(xx - gx) < gw / 2) & (yy > yt + 0.15 * (yb - yt))
            reg = np.where(gate[None], _c(_VIVID[int(rng.integers(10))] * np.float32(0.6)), reg)
        img[:, top:bot, a:b] = reg
        depth[top:bot, a:b] = z


def _buildings(sh: _Shot, rng: np.random.Generator, img: np.ndarray, depth: np.ndarray, road: tuple[float, float]) -> None:
    _, h, w = img.shape
    urban = sh.g("urban")
    lam = 18.0 * urban**1.5 * (1.0 + 0.3 * float(sh.style[3])) + (2.0 if sh.g("mode_id") == 2 else 0.6) * (urban < 0.3)
    if sh.beach:
        lam *= 0.3
    nb = int(min(rng.poisson(max(lam, 0.0)), 40))
    if nb == 0:
        return
    pop = sh.g("settle_pop") * (sh.g("settle_w") > 0.3)
    tall = 1.0 + 7.0 * urban**2 * min(max(math.log10(pop + 1) - 4.5, 0.0) / 2.5, 1.0)
    xc, half = road
    z = np.concatenate([rng.uniform(10.0, 60.0, nb // 3), rng.uniform(60.0, 500.0, nb - nb // 3)])
    side = np.where(rng.random(nb) < 0.5, -1.0, 1.0)
    lateral = np.abs(rng.normal(0.0, 0.55, nb)) * z * 0.9 + (half if half > 0 else 1.0) + 3.0
    X = (xc if not math.isnan(xc) else 0.0) + side * lateral
    wid = rng.uniform(5.0, 16.0, nb) * sh.width_scale
    storeys = 1 + rng.poisson(tall - 1.0, nb) if tall > 1.0 else np.ones(nb, dtype=np.int64)
    storeys = np.minimum(storeys, 18)
    mats = rng.choice(len(MATERIALS), size=nb, p=sh.mat_p)
    shade_u = rng.uniform(0.88, 1.06, nb)
    st_u = rng.uniform(0.9, 1.1, nb)
    roof_u = rng.random(nb)
    sign_u = rng.random(nb)
    tank_u = rng.random(nb)
    pitch_u = rng.uniform(0.22, 0.38, nb)
    tin_u = rng.uniform(0.85, 1.1, nb)
    tank_x = rng.uniform(0.1, 0.8, nb)
    tank_c = rng.random(nb)
    mosque = int(rng.integers(nb)) if rng.random() < 0.12 + 0.1 * urban else -1
    thar = sh.pid == 0 and sh.g("desert") > 0.5 and sh.g("lon") > 69.3 and urban < 0.5
    for i in np.argsort(-z, kind="stable"):
        hgt = storeys[i] * 3.1 * st_u[i]
        xl, xr, yt, yb = _project(sh, float(X[i]), float(z[i]), hgt, float(wid[i]), w)
        if xr <= 0 or xl >= w or xr - xl < 1 or yb <= 0:
            continue
        a, b = max(xl, 0), min(xr, w)
        top, bot = max(yt, 0), min(yb, h)
        if bot <= top:
            continue
        col = _MAT_RGB[mats[i]] * sh.wall_tint * np.float32(shade_u[i])
        sub_h, sub_w = bot - top, b - a
        yy = np.arange(top, bot, dtype=np.float32)[:, None]
        xx = np.arange(a, b, dtype=np.float32)[None, :]
        lum = np.ones((sub_h, sub_w), np.float32)
        side_w = max(1, int((xr - xl) * 0.22))  # the wall facing away from the sun
        if sh.sun_side > 0:
            lum[:, : max(0, min(sub_w, xl + side_w - a))] = 0.72
        else:
            lum[:, max(0, xr - side_w - a):] = 0.72
        pp = max(1, int((yb - yt) / max(storeys[i], 1) * 0.12))
        lum[: max(0, min(sub_h, yt + pp - top))] *= 0.8  # parapet
        facade = _c(col) * lum[None]
        st_px = (yb - yt) / max(storeys[i], 1)
        if st_px >= 3.0 and not thar:
            fy = np.mod((yy - yt) / st_px, 1.0)
            bay = max(st_px * 1.1 * (0.8 + sh.win_frac), 2.5)
            fx = np.mod((xx - xl) / bay, 1.0)
            win = (fy > 0.28) & (fy < 0.78) & (fx > 0.2) & (fx < 0.2 + sh.win_frac)
            facade = np.where(win[None], _c(sh.win_col), facade)
        if st_px >= 2.0 and sign_u[i] < _PROV_SIGNS[sh.pid] * urban * 1.2 and z[i] < 150:  # shop signs
            band = (yy >= yb - st_px * 0.95) & (yy < yb - st_px * 0.62)
            blk = np.mod(np.floor((xx - xl) / max(st_px * 0.7, 1.5)), 2).astype(bool)
            facade = np.where(band[None], np.where(blk[None], _c(sh.sign_cols[0]), _c(sh.sign_cols[1])), facade)
        img[:, top:bot, a:b] = facade
        depth[top:bot, a:b] = z[i]
        bw = xr - xl
        if thar and roof_u[i] < 0.8:
            _cone(img, depth, xl, xr, yt, int(bw * 0.7), np.array([0.50, 0.40, 0.26], np.float32), float(z[i]))
        elif i == mosque:
            _dome(img, depth, xl, xr, yt, sh, float(z[i]))
        elif roof_u[i] < sh.p_pitched:
            _cone(img, depth, xl, xr, yt, int(bw * pitch_u[i]), sh.tin * np.float32(tin_u[i]), float(z[i]), flat_top=0.15)
        elif tank_u[i] < 0.55 * (sh.pid != 4) and bw > 8:  # rooftop water tank
            tw = max(2, int(bw * 0.12))
            tx = xl + int(bw * tank_x[i])
            ta, tb = max(tx, 0), min(tx + tw, w)
            tt, tbb = max(yt - max(2, int(tw * 1.1)), 0), min(yt, h)
            if tb > ta and tbb > tt:
                img[:, tt:tbb, ta:tb] = _c((0.10, 0.10, 0.11) if tank_c[i] < 0.6 else (0.15, 0.35, 0.60))
                depth[tt:tbb, ta:tb] = z[i]


def _cone(img: np.ndarray, depth: np.ndarray, xl: int, xr: int, yt: int, rh: int, col: np.ndarray, z: float, flat_top: float = 0.0) -> None:
    _, h, w = img.shape
    if rh < 1:
        return
    a, b = max(xl, 0), min(xr, w)
    top, bot = max(yt - rh, 0), min(yt, h)
    if b <= a or bot <= top:
        return
    yy = np.arange(top, bot, dtype=np.float32)[:, None]
    xx = np.arange(a, b, dtype=np.float32)[None, :]
    cx, half = (xl + xr) / 2, (xr - xl) / 2
    m = np.abs(xx - cx) <= half * (1.0 - (yt - yy) / rh * (1.0 - flat_top)) + 0.5
    shade = np.where(xx < cx, np.float32(1.0), np.float32(0.8))
    _paint(img, depth, top, a, m, _c(col) * shade[None], z)


def _dome(img: np.ndarray, depth: np.ndarray, xl: int, xr: int, yt: int, sh: _Shot, z: float) -> None:
    _, h, w = img.shape
    bw = xr - xl
    r = max(bw * 0.32, 1.5)
    cx = (xl + xr) / 2
    col = np.array([0.92, 0.92, 0.90], np.float32) if sh.pid in (3, 1) else np.array([0.30, 0.55, 0.45], np.float32)
    a, b = max(int(cx - r), 0), min(int(cx + r) + 1, w)
    top, bot = max(int(yt - r), 0), min(yt, h)
    if b > a and bot > top:
        yy = np.arange(top, bot, dtype=np.float32)[:, None]
        xx = np.arange(a, b, dtype=np.float32)[None, :]
        _paint(img, depth, top, a, (xx - cx) ** 2 + (yy - yt) ** 2 <= r * r, col, z)
    mw = max(1, int(bw * 0.07))  # minaret
    mx = xr - mw
    a, b = max(mx, 0), min(mx + mw, w)
    top, bot = max(int(yt - r * 2.6), 0), min(yt, h)
    if b > a and bot > top:
        img[:, top:bot, a:b] = _c((0.90, 0.89, 0.86))
        depth[top:bot, a:b] = z


_TREE = {  # kind: (height m, width / height, canopy colour)
    "conifer": (14.0, 0.45, (0.12, 0.26, 0.14)),
    "poplar": (16.0, 0.22, (0.45, 0.58, 0.22)),
    "palm": (9.0, 0.8, (0.30, 0.45, 0.18)),
    "shrub": (2.0, 1.5, (0.42, 0.44, 0.28)),
    "broadleaf": (8.0, 0.8, (0.22, 0.40, 0.16)),
}


def _trees(sh: _Shot, rng: np.random.Generator, img: np.ndarray, depth: np.ndarray, road: tuple[float, float]) -> None:
    _, h, w = img.shape
    veg, floor = sh.g("veg"), sh.g("floor")
    lam = 1.0 + 9.0 * veg + (3.0 if sh.pid == 3 else 0.0) - 5.0 * sh.g("desert")
    nt = int(min(rng.poisson(max(lam, 0.2)), 16))
    if nt == 0:
        return
    lat = sh.g("lat")
    palm_u = rng.random()
    if floor > 1400 and veg > 0.45:
        kind = "conifer"
    elif floor > 1200:
        kind = "poplar"
    elif lat < 28.6 and floor < 400 and (sh.g("coast_km") < 60 or palm_u < 0.6):  # date and coconut palms
        kind = "palm"
    elif sh.g("desert") > 0.6:
        kind = "shrub"
    else:
        kind = "broadleaf"
    base_h, aspect, canopy = _TREE[kind]
    cc = np.array((0.85, 0.70, 0.20) if (kind == "poplar" and sh.season == 3) else canopy, np.float32)
    z = rng.uniform(5.0, 250.0, nt)
    xc, half = road
    X = (xc if not math.isnan(xc) else 0.0) + rng.normal(0.0, 0.6, nt) * z + np.where(rng.random(nt) < 0.5, -1, 1) * (half + 1.5)
    height = base_h * rng.uniform(0.6, 1.3, nt)
    tone = rng.uniform(0.8, 1.15, nt)
    for i in np.argsort(-z, kind="stable"):
        zi, hg = float(z[i]), float(height[i])
        xl, xr, yt, yb = _project(sh, float(X[i]), zi, hg, hg * aspect, w)
        if xr <= 0 or xl >= w or yb <= 0 or yt >= h or xr - xl < 1:
            continue
        a, b = max(xl, 0), min(xr + 1, w)
        top, bot = max(yt, 0), min(yb, h)
        if bot <= top or b <= a:
            continue
        yy = np.arange(top, bot, dtype=np.float32)[:, None]
        xx = np.arange(a, b, dtype=np.float32)[None, :]
        cx, halfw = (xl + xr) / 2, max((xr - xl) / 2, 0.5)
        rel = (yy - yt) / max(yb - yt, 1)  # 0 top, 1 ground
        fr = (xx - cx) / halfw
        if kind == "conifer":
            m = (np.abs(fr) <= np.clip(rel / 0.85, 0, 1)) & (rel < 0.9)
        elif kind == "palm":
            m = (rel < 0.3) & ((fr**2 + ((rel - 0.15) / 0.15) ** 2) < 1.0)
        else:
            ry = {"poplar": 0.85, "broadleaf": 0.6, "shrub": 1.0}[kind] / 2
            m = (fr**2 + ((rel - ry) / ry) ** 2) < 1.0
        if kind != "shrub":
            trunk = (np.abs(xx - cx) <= max((xr - xl) * 0.06, 0.5)) & (rel > 0.3) & ~m
            _paint(img, depth, top, a, trunk, np.array((0.28, 0.22, 0.16), np.float32), zi)
        tex = 1.0 + 0.2 * (_hash(xx + 0 * yy, yy + 0 * xx, 13) - 0.5)
        _paint(img, depth, top, a, m, _c(cc * np.float32(tone[i])) * tex[None], zi)


def _street_life(sh: _Shot, rng: np.random.Generator, img: np.ndarray, depth: np.ndarray, road: tuple[float, float]) -> None:
    """Vehicles and people on the road, power poles with sagging wires, a foreground occluder."""
    _, h, w = img.shape
    urban = sh.g("urban")
    xc, half = road
    if not math.isnan(xc):
        for _ in range(int(rng.poisson(0.5 + 4.0 * urban))):
            z = rng.uniform(8.0, 120.0)
            kind = rng.random()
            if kind < 0.25:  # painted truck
                hg, wd = 3.6, 2.5
                cols = _VIVID[rng.choice(10, 3, replace=False)]
            elif kind < 0.55:  # rickshaw
                hg, wd = 1.8, 1.4
                cols = np.array([(0.10, 0.10, 0.10), (0.05, 0.45, 0.20) if sh.pid == 1 else (0.10, 0.30, 0.65), (0.85, 0.80, 0.20)], np.float32)
            else:  # car
                hg, wd = 1.5, 1.8
                c = (0.92, 0.92, 0.92) if rng.random() < 0.6 else tuple(_VIVID[int(rng.integers(10))])
                cols = np.array([c, c, (0.15, 0.17, 0.2)], np.float32)
            xl, xr, yt, yb = _project(sh, xc + rng.uniform(-0.7, 0.7) * half, z, hg, wd, w)
            a, b, top, bot = max(xl, 0), min(xr, w), max(yt, 0), min(yb, h)
            if b <= a or bot <= top:
                continue
            band = np.minimum((np.arange(top, bot) - yt) * 3 // max(yb - yt, 1), 2)
            img[:, top:bot, a:b] = cols[band].T[:, :, None]
            depth[top:bot, a:b] = z
    for _ in range(int(rng.poisson(0.3 + 4.0 * urban))):  # people
        z = rng.uniform(6.0, 80.0)
        X = (xc if not math.isnan(xc) else 0.0) + rng.normal(0.0, 0.5) * z
        xl, xr, yt, yb = _project(sh, X, z, 1.7, 0.5, w)
        a, b, top, bot = max(xl, 0), min(xr + 1, w), max(yt, 0), min(yb, h)
        c = _VIVID[int(rng.integers(10))] * 0.8 if rng.random() < 0.4 else np.array([0.85, 0.84, 0.80], np.float32) * np.float32(rng.uniform(0.5, 1.0))
        if b <= a or bot <= top:
            continue
        img[:, top:bot, a:b] = _c(c)
        img[:, top : min(top + max(1, (bot - top) // 7), h), a:b] = _c((0.30, 0.22, 0.16))
        depth[top:bot, a:b] = z
    if rng.random() < 0.05 + 0.25 * urban:  # poles and wires
        for _ in range(int(rng.integers(1, 4))):
            z = rng.uniform(8.0, 60.0)
            X = (xc if not math.isnan(xc) else 0.0) + rng.choice([-1.0, 1.0]) * (half + rng.uniform(1.0, 4.0))
            xl, xr, yt, yb = _project(sh, X, z, 9.0, 0.3, w)
            a, b, top, bot = max(xl, 0), min(max(xr, xl + 1), w), max(yt, 0), min(yb, h)
            if b > a and bot > top:
                img[:, top:bot, a:b] = _c((0.25, 0.24, 0.23))
                depth[top:bot, a:b] = z
        xs = np.arange(w, dtype=np.float32)
        for _ in range(int(rng.integers(1, 4))):
            y_a = rng.uniform(0.05, 0.35) * h
            slope = rng.normal(0.0, 0.08)
            sag = rng.uniform(0.0, 0.25) / max(w, 1)
            yi = np.round(y_a + slope * xs + sag * (xs - rng.uniform(0, w)) ** 2).astype(np.intp)
            ok = (yi >= 0) & (yi < h)
            img[:, yi[ok], xs[ok].astype(np.intp)] = np.float32(0.12)
    if rng.random() < 0.05:  # out-of-focus foreground occluder at an edge
        yy = np.arange(h, dtype=np.float32)[:, None]
        xx = np.arange(w, dtype=np.float32)[None, :]
        cx = rng.choice([0.0, float(w)])
        cy = rng.uniform(0.3, 1.0) * h
        r = rng.uniform(0.12, 0.3) * w
        t = np.clip((r - np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2)) / (0.25 * r), 0.0, 1.0) * np.float32(0.9)
        img += (_c((0.12, 0.10, 0.08)) - img) * t[None]


def render(
    world: World, row: np.ndarray, rng: np.random.Generator, size: int, info: dict[str, Any] | None = None
) -> np.ndarray:
    """Render one photo.

    Args:
        world: the synthetic world.
        row: one row of :func:`~geopak.data.synth.scene.scene_table`.
        rng: the photo's own generator (seeded from the dataset seed and the photo's index).
        size: output side in pixels (square, >= 16).
        info: if given, filled with the shot's draws (heading, fov, time of day, season, weather, ...).

    Returns:
        (size, size, 3) uint8 RGB.
    """
    if size < 16:
        raise ValueError(f"size must be at least 16 pixels, got {size}")
    h = w = int(size)
    sh = _Shot(row, rng, size, world.settlements.signature)
    if info is not None:
        info.update(
            heading_deg=round(float(sh.heading), 2), hfov_deg=round(float(sh.hfov), 2),
            camera_height_m=round(float(sh.cam_h), 2), time_of_day=sh.tod,
            season=("winter", "spring", "summer", "autumn")[sh.season], weather=sh.weather,
            visibility_km=round(float(sh.vis_km), 3), beach_view=bool(sh.beach),
        )
    # Channel-first (3, h, w) float32 throughout: per-channel broadcasts stay fast.
    img, haze = _sky(sh, rng, h, w)
    depth = np.full((h, w), np.inf, dtype=np.float32)
    hz = _horizon(sh, world, w)
    _mountains(sh, rng, img, depth, hz, haze)
    X, Z, r0 = _ground(sh, rng, img, depth, hz, haze)
    road = _road(sh, rng, img, X, Z, r0)
    _buildings(sh, rng, img, depth, road)
    _walls(sh, rng, img, depth, road)
    _trees(sh, rng, img, depth, road)
    _street_life(sh, rng, img, depth, road)
    # Light (the sky takes the light's tint too), then haze over everything that is not sky.
    sun = _SUN[sh.tod] * np.float32(rng.uniform(0.9, 1.1) * (0.8 if sh.weather in ("fog", "rain") else 1.0))
    dist = np.where(np.isfinite(depth), depth, np.float32(0.0))
    t = np.float32(0.95) - np.float32(0.95) * np.exp(dist * np.float32(-1.0 / (max(sh.vis_km, 0.05) * 1000.0)))
    img *= _c(sun)
    img += (_c(haze) - img) * t[None]
    if sh.weather == "rain":
        streak = _noise(rng, h, w, 3, max(w // 2, 2))
        img *= np.float32(0.88)
        img += (np.float32(0.08) * np.clip(streak - 1.2, 0.0, 1.0))[None]
    # Camera: white balance and exposure, vignette, sensor noise; to 8 bits.
    wb = (rng.normal(1.0, 0.02, 3) * rng.uniform(0.9, 1.08) * 255.0).astype(np.float32)
    vy = (np.arange(h, dtype=np.float32)[:, None] / h - 0.5) ** 2
    vx = (np.arange(w, dtype=np.float32)[None, :] / w - 0.5) ** 2
    img *= (1.0 - np.float32(rng.uniform(0.0, 0.5)) * (vx + vy))[None]
    img *= _c(wb)
    bank = _noise_bank(max(640, h, w))
    oy, ox = int(rng.integers(bank.shape[1] - h + 1)), int(rng.integers(bank.shape[2] - w + 1))
    img += bank[:, oy : oy + h, ox : ox + w] * np.float32(255.0 * rng.uniform(0.004, 0.025))
    img += np.float32(0.5)
    np.clip(img, 0.0, 255.0, out=img)
    return np.ascontiguousarray(img.astype(np.uint8).transpose(1, 2, 0))


@lru_cache(maxsize=2)
def _noise_bank(n: int) -> np.ndarray:
    """A fixed (3, n, n) tile of unit Gaussian sensor noise (each photo takes a seeded window of it)."""
    return np.random.default_rng([0x6E09A4, 5, n]).standard_normal((3, n, n), dtype=np.float32)
