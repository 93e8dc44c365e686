"""Write a GeoPak-Synth dataset: images, manifest, per-image scene metadata, dataset card; and a contact sheet.

Determinism: locations come from generators seeded by ``(seed, purpose, province, round)``; each image from
its own generator seeded by ``(seed, RENDER_STREAM, index)``, so the output does not depend on the number
of worker processes or on how indices are split between them.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import shlex
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from geopak.provinces import PROVINCES

__all__ = ["ATTRIBUTION", "LICENCE", "RENDER_STREAM", "SOURCE", "generate", "preview", "render_images"]

logger = logging.getLogger(__name__)

RENDER_STREAM = 0x1A6E
"""Second entropy word of every image generator: ``default_rng([seed, RENDER_STREAM, index])``."""
SOURCE = "synth"
LICENCE = "CC-BY-4.0"
ATTRIBUTION = "GeoPak-Synth; contains GeoNames data (CC BY 4.0) and NASA/NOAA/Natural Earth imagery (public domain)"
_CHUNK = 32
_WORKER_WORLD: Any = None


def image_id(seed: int, index: int) -> str:
    """The id of image ``index`` of the dataset made with ``seed``."""
    return f"synth-s{int(seed)}-{int(index):07d}"


def image_relpath(seed: int, index: int) -> str:
    """Path of image ``index`` relative to the dataset folder."""
    return f"images/{int(index) // 1000:03d}/{image_id(seed, index)}.jpg"


def _init_worker(world: Any) -> None:
    global _WORKER_WORLD
    _WORKER_WORLD = world


def _render_chunk(args: tuple[int, int, int, np.ndarray, str]) -> list[dict[str, Any]]:
    """Render and save images ``start..start+len(rows)``; returns their shot metadata."""
    from PIL import Image

    from geopak.data.synth.render import render

    start, seed, size, rows, out_dir = args
    world = _WORKER_WORLD
    infos: list[dict[str, Any]] = []
    for k in range(rows.shape[0]):
        i = start + k
        rng = np.random.default_rng([int(seed), RENDER_STREAM, i])
        info: dict[str, Any] = {}
        img = render(world, rows[k], rng, size, info)
        quality = int(rng.integers(72, 96))
        path = Path(out_dir) / image_relpath(seed, i)
        Image.fromarray(img).save(path, format="JPEG", quality=quality, subsampling=2, optimize=False)
        info["jpeg_quality"] = quality
        infos.append(info)
    return infos


def render_images(
    scenes: np.ndarray,
    out_dir: Path,
    seed: int,
    size: int,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[dict[str, Any]]:
    """Render every scene row to ``out_dir/images/...``; returns each image's shot metadata, in order.

    Args:
        scenes: the (N, C) scene table.
        out_dir: dataset folder.
        seed: dataset seed.
        size: image side in pixels.
        workers: processes (None: all CPUs, at most 8; 1 renders in this process).
        progress: called as ``progress(done, total)``.
    """
    from geopak.data.synth.world import load_world

    world = load_world()
    n = scenes.shape[0]
    for d in sorted({image_relpath(seed, i).rsplit("/", 1)[0] for i in range(0, n, 1000)}):
        (out_dir / d).mkdir(parents=True, exist_ok=True)
    tasks = [(a, seed, size, scenes[a : a + _CHUNK], str(out_dir)) for a in range(0, n, _CHUNK)]
    if workers is None:
        workers = min(os.cpu_count() or 1, 8)
    workers = max(1, min(int(workers), len(tasks) or 1))
    results: list[list[dict[str, Any]]] = []
    done = 0
    if workers == 1:
        _init_worker(world)
        for t in tasks:
            results.append(_render_chunk(t))
            done += t[3].shape[0]
            if progress:
                progress(done, n)
        return [i for r in results for i in r]
    ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context()
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker, initargs=(world,)) as ex:
        for t, r in zip(tasks, ex.map(_render_chunk, tasks)):
            results.append(r)
            done += t[3].shape[0]
            if progress:
                progress(done, n)
    return [i for r in results for i in r]


def _proportions_note(proportions: Mapping[str, float] | Sequence[float] | None) -> str:
    if proportions is None:
        return "the seed dataset's (Sindh 65,221 : Punjab 8,459 : KPK 5,344 : ICT 4,410 : Balochistan 3,627 : GB 2,379 : AJK 1,075)"
    from geopak.data.synth.placement import province_counts

    w = province_counts(10**6, proportions) / 10**6
    return " : ".join(f"{p.short} {w[p.id]:.3f}" for p in PROVINCES)


def generate(
    n: int,
    out_dir: str | os.PathLike,
    seed: int = 0,
    size: int = 224,
    workers: int | None = None,
    proportions: Mapping[str, float] | Sequence[float] | None = None,
    boundaries: Any = None,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
    command: str | None = None,
) -> pd.DataFrame:
    """Generate a GeoPak-Synth dataset of ``n`` images in ``out_dir``.

    Writes ``out_dir/manifest.parquet`` (paths relative to ``out_dir``), ``out_dir/images/NNN/<id>.jpg``,
    ``out_dir/scenes.parquet`` (per-image metadata) and ``out_dir/CARD.md``.

    Args:
        n: number of images (>= 1).
        out_dir: dataset folder (created).
        seed: dataset seed; the same seed gives the same bytes.
        size: image side in pixels (>= 16; the manifest validator rejects images under 64 px).
        workers: render processes (None: all CPUs up to 8; 1: in this process). Does not change the output.
        proportions: province weights (name -> weight, or 7 weights in canonical order); None for the seed
            dataset's proportions.
        boundaries: province polygons for the lookup (file or loaded mapping); None uses the cached
            geoBoundaries file, else the offline GeoNames fallback.
        overwrite: replace an existing dataset in ``out_dir``, removing its ``images/`` folder first (otherwise
            an existing manifest is an error).
        progress: called as ``progress(done, total)`` while rendering.
        command: the command line recorded in the card (default: a Python call).

    Returns:
        The manifest (as :func:`geopak.data.manifest.read_manifest` returns it: absolute paths).

    Raises:
        ValueError: bad ``n``, ``size`` or ``proportions``.
        FileExistsError: ``out_dir`` holds a manifest and ``overwrite`` is False.
    """
    from geopak.data.manifest import read_manifest, write_manifest
    from geopak.data.synth.card import card_text
    from geopak.data.synth.placement import MODES, province_lookup, sample_locations
    from geopak.data.synth.scene import SCENE_COLUMNS, scene_table
    from geopak.data.synth.world import WORLD_VERSION, load_world

    if int(n) != n or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if int(size) != size or size < 16:
        raise ValueError(f"size must be an integer >= 16 pixels, got {size!r}")
    n, size, seed = int(n), int(size), int(seed)
    out = Path(out_dir).expanduser()
    if (out / "manifest.parquet").exists() and not overwrite:
        raise FileExistsError(
            f"{out / 'manifest.parquet'} already exists; choose an empty folder or pass overwrite=True (--overwrite)"
        )
    if overwrite and (out / "manifest.parquet").exists() and (out / "images").is_dir():
        import shutil

        shutil.rmtree(out / "images")  # the previous dataset's images (a smaller n would leave strays)
    out.mkdir(parents=True, exist_ok=True)
    world = load_world()
    lookup, lookup_desc = province_lookup(boundaries)
    locs = sample_locations(n, seed, proportions, world, lookup)
    mode_id = locs["mode"].map({m: i for i, m in enumerate(MODES)}).to_numpy(np.int64)
    scenes = scene_table(world, locs["lat"].to_numpy(), locs["lon"].to_numpy(), locs["province_id"].to_numpy(), mode_id)
    logger.info("rendering %d images at %d px with seed %d", n, size, seed)
    infos = render_images(scenes, out, seed, size, workers=workers, progress=progress)

    ids = [image_id(seed, i) for i in range(n)]
    manifest = pd.DataFrame(
        {
            "id": ids,
            "path": [image_relpath(seed, i) for i in range(n)],  # relative to the manifest's folder: portable
            "lat": locs["lat"].to_numpy(np.float64),
            "lon": locs["lon"].to_numpy(np.float64),
            "province": locs["province"].to_numpy(object),
            "source": SOURCE,
            "licence": LICENCE,
            "attribution": ATTRIBUTION,
        }
    )
    write_manifest(manifest, out / "manifest.parquet")
    col = {c: i for i, c in enumerate(SCENE_COLUMNS)}
    names = world.settlements.name
    anchor = locs["anchor"].to_numpy()
    settle = scenes[:, col["settle"]].astype(np.int64)
    meta = pd.DataFrame(
        {
            "id": ids,
            "mode": locs["mode"].to_numpy(object),
            "anchor_settlement": [names[a] if a >= 0 else None for a in anchor],
            "nearest_settlement": names[settle],
            "settlement_weight": scenes[:, col["settle_w"]].round(4),
            "urban": scenes[:, col["urban"]].round(4),
            "elevation_m": scenes[:, col["floor"]].round(1),
            "terrain_level_m": scenes[:, col["elev"]].round(1),
            "roughness": scenes[:, col["rough"]].round(4),
            "vegetation": scenes[:, col["veg"]].round(4),
            "coast_km": scenes[:, col["coast_km"]].round(2),
        }
    )
    meta = pd.concat([meta, pd.DataFrame(infos)], axis=1)
    meta.to_parquet(out / "scenes.parquet", index=False)
    params = {
        "n": n,
        "seed": seed,
        "size": size,
        "world_version": WORLD_VERSION,
        "proportions_note": _proportions_note(proportions),
        "command": command or f"geopak.data.synth.generate(n={n}, out_dir=..., seed={seed}, size={size})",
    }
    (out / "CARD.md").write_text(card_text(manifest, meta, params, lookup_desc), encoding="utf-8")
    logger.info("wrote %d images, manifest, scenes and card to %s", n, out)
    return read_manifest(out / "manifest.parquet")


def _load_for_preview(source: str | os.PathLike | pd.DataFrame) -> pd.DataFrame:
    from geopak.data.manifest import read_manifest

    if isinstance(source, pd.DataFrame):
        return source
    p = Path(source).expanduser()
    if p.is_dir():
        p = p / "manifest.parquet"
    if not p.exists():
        raise FileNotFoundError(f"no manifest at {p}; give a GeoPak-Synth folder or its manifest.parquet")
    return read_manifest(p)


def _varied_order(df: pd.DataFrame, scenes: pd.DataFrame | None) -> pd.DataFrame:
    """Rows reordered so each province's first rows cycle through its kinds of shot (sampling mode and beach
    view, from ``scenes.parquet``); without scene metadata the manifest order is kept."""
    if scenes is None or not {"id", "mode", "beach_view"} <= set(scenes.columns):
        return df
    key = scenes.set_index("id").reindex(df["id"])
    kind = (key["mode"].astype(str) + np.where(key["beach_view"].fillna(False).astype(bool), "+beach", "")).to_numpy()
    df = df.assign(_kind=kind, _pos=np.arange(len(df)))
    df["_rank"] = df.groupby(["province", "_kind"]).cumcount()
    return df.sort_values(["_rank", "_pos"], kind="stable").drop(columns=["_kind", "_pos", "_rank"])


def preview(
    source: str | os.PathLike | pd.DataFrame,
    path: str | os.PathLike,
    per_province: int = 8,
    tile: int = 128,
) -> Path:
    """A contact sheet PNG: one row per province (canonical order), ``per_province`` images each.

    When the dataset folder's ``scenes.parquet`` is available the images of a province are taken round-robin
    over its kinds of shot (urban, hotspot, rural, beach view), so the sheet shows the variety; otherwise the
    first images in manifest order.

    Args:
        source: a dataset folder, its manifest file, or a manifest DataFrame (absolute or working-folder paths).
        path: PNG to write.
        per_province: images per row.
        tile: tile side in pixels.

    Returns:
        The PNG's path.
    """
    from PIL import Image, ImageDraw

    from geopak.data.images import open_image

    df = _load_for_preview(source)
    scenes = None
    if len(df):
        folder = Path(df["path"].iloc[0]).parents[2]
        if (folder / "scenes.parquet").exists():
            scenes = pd.read_parquet(folder / "scenes.parquet")
    df = _varied_order(df, scenes)
    label_w = 56
    sheet = Image.new("RGB", (label_w + per_province * tile, len(PROVINCES) * tile), (24, 24, 24))
    draw = ImageDraw.Draw(sheet)
    for p in PROVINCES:
        rows = df[df["province"] == p.name].head(per_province)
        draw.text((6, p.id * tile + tile // 2 - 12), p.short, fill=(235, 235, 235))
        draw.text((6, p.id * tile + tile // 2 + 2), f"n={int((df['province'] == p.name).sum())}", fill=(160, 160, 160))
        for k, img_path in enumerate(rows["path"]):
            img = open_image(img_path).resize((tile, tile))
            sheet.paste(img, (label_w + k * tile, p.id * tile))
    out = Path(path).expanduser()
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out, format="PNG")
    return out


def cli_command(argv: Sequence[str]) -> str:
    """A shell-quoted command line for the card."""
    return " ".join(shlex.quote(a) for a in argv)
