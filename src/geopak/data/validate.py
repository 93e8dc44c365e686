"""Validate a manifest: every input row ends up either accepted or rejected with one reason code.

:func:`validate_manifest` checks, in this order, and gives each rejected row the first reason that applies:

=================  =========================================================================================
``bad_coordinates`` lat/lon missing, NaN, out of range, or exactly (0, 0)
``missing_id``      empty id
``bad_province``    the given province names no province of Pakistan
``swapped_latlon``  outside Pakistan, but (lon, lat) is inside: the columns are likely swapped
``outside_pakistan`` the location is in no province (abroad, at sea)
``province_mismatch`` the given province disagrees with the location (beyond a tolerance; see below)
``missing_file``    the image file does not exist
``not_an_image``    empty file, or not a recognised image format
``unreadable_image`` corrupt or truncated image data
``too_large``       more pixels than the decompression-bomb guard allows
``too_small``       shorter side under ``min_size`` pixels
``duplicate_id``    the id of an earlier accepted row
``duplicate_image`` the same bytes (SHA-256) as an earlier accepted row
=================  =========================================================================================

Accepted + rejected = input rows, always (asserted, and stated in the summary). Provinces missing in the
input are filled from the location. Locations are looked up with province polygons when a boundaries file
is given or cached, else with the offline GeoNames fallback (the summary says which). Province mismatches
allow for border noise: with polygons the point must lie more than ``province_tolerance_km`` outside the
given province; with the fallback, the given province's nearest settlement must be both more than
:data:`FALLBACK_MISMATCH_KM` farther and :data:`FALLBACK_MISMATCH_RATIO` x farther than the nearest
settlement of any province (about 0.3% of correctly labelled random points inside Pakistan fail that).

Image checks run in a thread pool and read each file once (for its SHA-256): the header gives format and
size; JPEGs are also decoded at 1/8 scale (fast, catches truncation) and PNGs must end with their IEND
chunk. ``full_decode=True`` decodes every image completely with :func:`geopak.data.images.open_image`.
Rows whose path is a URI are not fetched; they are accepted on their metadata and counted in the summary.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from geopak.data.images import DEFAULT_MAX_PIXELS, ImageReadError, open_image, probe_image
from geopak.data.manifest import canonical_columns, is_uri, read_manifest, write_manifest
from geopak.provinces import UnknownProvinceError, normalize_province

__all__ = [
    "DEFAULT_MIN_SIZE",
    "FALLBACK_MISMATCH_KM",
    "FALLBACK_MISMATCH_RATIO",
    "REASONS",
    "ImageCheck",
    "check_image_file",
    "validate_file",
    "validate_manifest",
]

logger = logging.getLogger(__name__)

REASONS: tuple[str, ...] = (
    "bad_coordinates", "missing_id", "bad_province", "swapped_latlon", "outside_pakistan", "province_mismatch",
    "missing_file", "not_an_image", "unreadable_image", "too_large", "too_small", "duplicate_id",
    "duplicate_image",
)
"""Reason codes, in the order the checks run."""
DEFAULT_MIN_SIZE = 64
"""Images whose shorter side is below this many pixels are rejected as ``too_small``."""
FALLBACK_MISMATCH_KM = 25.0
FALLBACK_MISMATCH_RATIO = 2.0
REJECT_COLUMNS: tuple[str, ...] = ("row", "id", "path", "reason", "detail", "lat", "lon", "province")


@dataclass(frozen=True)
class ImageCheck:
    """Outcome of checking one image file."""

    reason: str | None
    """None when the image is usable, else a reason code."""
    detail: str = ""
    width: int = 0
    height: int = 0
    sha256: str | None = None


def _draft_decode(data: bytes) -> None:
    """Decode a JPEG at 1/8 scale (DCT scaling): a few ms, and it fails on truncated or corrupt data."""
    with Image.open(io.BytesIO(data)) as img:
        img.draft("RGB", (max(1, img.width // 8), max(1, img.height // 8)))
        img.load()


def check_image_file(
    path: str, min_size: int = DEFAULT_MIN_SIZE, full_decode: bool = False, max_pixels: int = DEFAULT_MAX_PIXELS
) -> ImageCheck:
    """Check one image file: existence, format, integrity, size; returns its SHA-256 when readable.

    Never raises for a bad file; the returned :class:`ImageCheck` carries the reason code and detail.
    """
    p = Path(path)
    if not p.exists():
        return ImageCheck("missing_file", f"{path} does not exist")
    if not p.is_file():
        return ImageCheck("not_an_image", f"{path} is not a regular file")
    try:
        data = p.read_bytes()
    except OSError as e:
        return ImageCheck("missing_file", f"cannot read {path}: {e}")
    if not data:
        return ImageCheck("not_an_image", "empty file (0 bytes)")
    digest = hashlib.sha256(data).hexdigest()
    try:
        info = probe_image(data, max_pixels=max_pixels)
    except ImageReadError as e:
        return ImageCheck(e.code if e.code in REASONS else "unreadable_image", e.reason, sha256=digest)
    w, h = info.width, info.height
    try:
        if full_decode:
            open_image(data, max_pixels=max_pixels)
        elif info.format == "JPEG":
            _draft_decode(data)
        elif info.format == "PNG" and b"IEND" not in data[-64:]:
            return ImageCheck("unreadable_image", "truncated PNG (no IEND chunk at the end)", w, h, digest)
    except ImageReadError as e:
        return ImageCheck(e.code if e.code in REASONS else "unreadable_image", e.reason, w, h, digest)
    except Exception as e:  # noqa: BLE001 - any decoder failure means the file is unusable
        return ImageCheck("unreadable_image", f"corrupt or truncated {info.format} data: {e}", w, h, digest)
    if min(w, h) < min_size:
        return ImageCheck("too_small", f"{w}x{h} is below the minimum side of {min_size} px", w, h, digest)
    return ImageCheck(None, "", w, h, digest)


def _text(v: object) -> str | None:
    """A cell as stripped text, None when empty or missing (None, NaN, pandas NA)."""
    if v is None or v is pd.NA or (isinstance(v, float) and np.isnan(v)):
        return None
    t = str(v).strip()
    return t or None


def _prepare(df: pd.DataFrame) -> pd.DataFrame:
    """Map aliased columns onto the schema and add missing optional-but-needed ones."""
    mapping = canonical_columns([str(c) for c in df.columns])
    out = df.rename(columns={c: mapping.get(str(c), str(c)) for c in df.columns}).reset_index(drop=True)
    missing = [c for c in ("path", "lat", "lon") if c not in out.columns]
    if missing:
        raise ValueError(f"manifest has no column for {', '.join(missing)} (columns: {', '.join(map(str, out.columns))})")
    if "id" not in out.columns:
        out["id"] = out["path"]
    if "province" not in out.columns:
        out["province"] = None
    if "source" not in out.columns:
        out["source"] = "manifest"
    out["lat"] = pd.to_numeric(out["lat"], errors="coerce").astype(np.float64)
    out["lon"] = pd.to_numeric(out["lon"], errors="coerce").astype(np.float64)
    return out


def _resolve_polygons(boundaries: Any, allow_download: bool) -> tuple[Mapping[str, Any] | None, str | None]:
    from geopak.boundaries import read_boundaries_file, resolve_boundaries

    if isinstance(boundaries, Mapping):
        return boundaries, "<polygons>"
    path = resolve_boundaries(boundaries, allow_download=allow_download)
    if path is None:
        return None, None
    return read_boundaries_file(path), str(path)


def validate_manifest(
    df: pd.DataFrame,
    boundaries: str | os.PathLike | Mapping[str, Any] | None = None,
    min_size: int = DEFAULT_MIN_SIZE,
    check_images: bool = True,
    full_decode: bool = False,
    workers: int = 8,
    province_tolerance_km: float = 2.0,
    allow_download: bool = False,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """Split a manifest into accepted rows and rejected rows with reason codes.

    Args:
        df: a manifest (as :func:`geopak.data.manifest.read_manifest` returns with ``strict=False``; aliased
            column names are accepted). Image paths should be absolute or relative to the working folder.
        boundaries: province polygons (file or loaded mapping); None uses the cache, else the GeoNames fallback.
        min_size: minimum shorter side in pixels.
        check_images: open the image files (off: only metadata checks).
        full_decode: decode every image fully instead of header + fast JPEG draft decode.
        workers: threads for the image checks.
        province_tolerance_km: with polygons, how far outside its given province a point may lie.
        allow_download: download geoBoundaries' polygons into the cache when none are given or cached.
        max_pixels: decompression-bomb limit.
        progress: called as ``progress(done, total)`` while images are checked.

    Returns:
        ``(accepted, rejects, summary)``: the accepted manifest (provinces filled and canonical, plus
        ``width``, ``height``, ``sha256`` when images were checked); the rejects with columns
        ``row`` (0-based input row), ``id``, ``path``, ``reason``, ``detail``, ``lat``, ``lon``, ``province``;
        and a JSON-ready summary (``input``, ``accepted``, ``rejected``, ``by_reason``, ``accounted``, ...).
    """
    from geopak.boundaries import (
        FALLBACK_MAX_KM,
        lookup_provinces,
        polygon_distance_km,
        settlement_distances_km,
    )

    data = _prepare(df)
    n = len(data)
    reason = np.full(n, None, dtype=object)
    detail = np.full(n, "", dtype=object)

    def reject(mask: np.ndarray, code: str, details: Any) -> None:
        m = mask & (reason == None)
        reason[m] = code
        detail[m] = details[m] if isinstance(details, np.ndarray) else details

    lat = data["lat"].to_numpy(np.float64)
    lon = data["lon"].to_numpy(np.float64)
    bad = ~np.isfinite(lat) | ~np.isfinite(lon) | (np.abs(lat) > 90) | (np.abs(lon) > 180) | ((lat == 0) & (lon == 0))
    coord_detail = np.array([f"lat={a!r}, lon={b!r}" for a, b in zip(data["lat"].tolist(), data["lon"].tolist())],
                            dtype=object) if bad.any() else ""
    reject(bad, "bad_coordinates", coord_detail)

    ids = np.array([_text(v) for v in data["id"].to_numpy(dtype=object)], dtype=object)
    reject(ids == None, "missing_id", "empty id")

    given = np.full(n, None, dtype=object)
    prov_raw = data["province"].to_numpy(dtype=object)
    for i, v in enumerate(prov_raw):
        text = _text(v)
        if text is None:
            continue
        try:
            given[i] = normalize_province(text).name
        except UnknownProvinceError:
            if reason[i] is None:
                reason[i], detail[i] = "bad_province", f"province {v!r} names no province of Pakistan"

    # Location.
    polygons, poly_source = _resolve_polygons(boundaries, allow_download)
    method = "polygons" if polygons is not None else "geonames"
    ok = np.flatnonzero(~bad)
    where = np.full(n, None, dtype=object)
    res = lookup_provinces(lat[ok], lon[ok], polygons, method=method)
    where[ok] = res.province
    lookup_method, lookup_source = res.method, (poly_source if polygons is not None else res.source)
    outside = (~bad) & (where == None)
    cand = np.flatnonzero(outside & (np.abs(lon) <= 90))
    if cand.size:
        swapped = lookup_provinces(lon[cand], lat[cand], polygons, method=method).province
        hit = swapped != None
        sw_mask = np.zeros(n, dtype=bool)
        sw_mask[cand[hit]] = True
        sw_detail = np.full(n, "", dtype=object)
        sw_detail[cand[hit]] = [f"({lat[i]:.5f}, {lon[i]:.5f}) is outside Pakistan but (lon, lat) is in {p}"
                                for i, p in zip(cand[hit], swapped[hit])]
        reject(sw_mask, "swapped_latlon", sw_detail)
    out_detail = np.array([f"({a:.5f}, {b:.5f}) is in no province of Pakistan ({lookup_method})"
                           for a, b in zip(lat, lon)], dtype=object) if outside.any() else ""
    reject(outside, "outside_pakistan", out_detail)

    # Given province vs location.
    check = np.flatnonzero((reason == None) & (given != None) & (where != None) & (given != where))
    if check.size:
        if polygons is not None:
            d = polygon_distance_km(polygons, lat[check], lon[check], given[check])
            mism = ~(d <= province_tolerance_km)
            why = [f"given {given[i]}, location in {where[i]} ({dd:.1f} km outside {given[i]})"
                   for i, dd in zip(check, d)]
        else:
            d_prov, d_any = settlement_distances_km(lat[check], lon[check], given[check])
            mism = ~((d_prov - d_any <= FALLBACK_MISMATCH_KM) | (d_prov <= FALLBACK_MISMATCH_RATIO * d_any))
            why = [f"given {given[i]}, location looks like {where[i]} (nearest {given[i]} settlement {dp:.0f} km "
                   f"away vs {da:.0f} km; offline GeoNames check)" for i, dp, da in zip(check, d_prov, d_any)]
        m = np.zeros(n, dtype=bool)
        m[check[mism]] = True
        det = np.full(n, "", dtype=object)
        det[check] = why
        reject(m, "province_mismatch", det)

    # Images.
    paths = np.array([_text(v) for v in data["path"].to_numpy(dtype=object)], dtype=object)
    width = np.zeros(n, dtype=np.int64)
    height = np.zeros(n, dtype=np.int64)
    sha = np.full(n, None, dtype=object)
    remote = np.zeros(n, dtype=bool)
    if check_images:
        todo = [i for i in np.flatnonzero(reason == None) if paths[i] and not is_uri(paths[i])]
        for i in np.flatnonzero(reason == None):
            p = paths[i]
            if not p:
                reason[i], detail[i] = "missing_file", "empty path"
            elif is_uri(p):
                remote[i] = True
        total = len(todo)
        logger.info("checking %d image file(s) with %d thread(s)%s", total, workers,
                    " (full decode)" if full_decode else "")
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            results = pool.map(lambda i: check_image_file(paths[i], min_size, full_decode, max_pixels), todo)
            for k, (i, r) in enumerate(zip(todo, results), 1):
                width[i], height[i], sha[i] = r.width, r.height, r.sha256
                if r.reason is not None:
                    reason[i], detail[i] = r.reason, r.detail
                if progress is not None:
                    progress(k, total)

    # Duplicates among the rows still accepted: the first keeps its id / content.
    alive = np.flatnonzero(reason == None)
    first_by_id: dict[str, int] = {}
    for i in alive:
        key = ids[i]
        if key in first_by_id:
            reason[i], detail[i] = "duplicate_id", f"id {key!r} already accepted at row {first_by_id[key]}"
        else:
            first_by_id[key] = int(i)
    first_by_sha: dict[str, int] = {}
    for i in np.flatnonzero(reason == None):
        h = sha[i]
        if h is None:
            continue
        if h in first_by_sha:
            j = first_by_sha[h]
            reason[i], detail[i] = "duplicate_image", f"same bytes as row {j} (id {ids[j]!r}), sha256 {h[:12]}..."
        else:
            first_by_sha[h] = int(i)

    keep = reason == None
    filled = int(np.sum(keep & (given == None)))
    accepted = data.loc[keep].copy()
    accepted["id"] = ids[keep]
    accepted["path"] = paths[keep]
    accepted["province"] = np.where(given[keep] == None, where[keep], given[keep])
    accepted["source"] = accepted["source"].astype(str)
    if check_images:
        accepted["width"] = width[keep]
        accepted["height"] = height[keep]
        accepted["sha256"] = sha[keep]
    accepted = accepted.reset_index(drop=True)

    rej = np.flatnonzero(~keep)
    rejects = pd.DataFrame({
        "row": rej.astype(np.int64),
        "id": np.array([_text(v) for v in data["id"].to_numpy(dtype=object)[rej]], dtype=object),
        "path": paths[rej],
        "reason": reason[rej],
        "detail": detail[rej],
        "lat": lat[rej],
        "lon": lon[rej],
        "province": prov_raw[rej],
    }, columns=list(REJECT_COLUMNS))

    assert len(accepted) + len(rejects) == n, "every input row must be accepted or rejected"
    by_reason = {r: int(c) for r, c in pd.Series(reason[rej]).value_counts().reindex(REASONS).dropna().items()}
    notes = []
    if lookup_method == "geonames":
        notes.append(
            "no province polygons given or cached: locations were checked with the offline GeoNames fallback "
            "(about 95% agreement with geoBoundaries; pass --boundaries FILE or run `geopak data fetch-boundaries`)"
        )
    summary: dict[str, Any] = {
        "input": n,
        "accepted": len(accepted),
        "rejected": len(rejects),
        "accounted": bool(len(accepted) + len(rejects) == n),
        "by_reason": by_reason,
        "provinces_filled": filled,
        "accepted_by_province": {str(k): int(v) for k, v in accepted["province"].value_counts().items()},
        "lookup": {"method": lookup_method, "source": lookup_source,
                   "province_tolerance_km": province_tolerance_km if lookup_method == "polygons" else None,
                   "fallback_max_km": FALLBACK_MAX_KM if lookup_method == "geonames" else None},
        "images": {"checked": bool(check_images), "mode": "full" if full_decode else "header+draft",
                   "min_size": min_size, "max_pixels": max_pixels, "remote_not_checked": int(remote[keep].sum())},
        "notes": notes,
    }
    logger.info("validated %d rows: %d accepted, %d rejected %s", n, summary["accepted"], summary["rejected"],
                by_reason)
    return accepted, rejects, summary


def validate_file(
    manifest: str | os.PathLike, out_dir: str | os.PathLike, **kwargs: Any
) -> dict[str, Any]:
    """Read a manifest, validate it and write ``manifest.parquet``, ``rejects.csv`` and ``summary.json``.

    Keyword arguments go to :func:`validate_manifest`. Returns the summary (with the output paths added).
    """
    import json

    df = read_manifest(manifest, strict=False)
    accepted, rejects, summary = validate_manifest(df, **kwargs)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = {"manifest": str(Path(manifest)), **summary}
    write_manifest(accepted, out / "manifest.parquet", check=True)
    rejects.to_csv(out / "rejects.csv", index=False)
    summary["outputs"] = {"manifest": str(out / "manifest.parquet"), "rejects": str(out / "rejects.csv"),
                          "summary": str(out / "summary.json")}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary

