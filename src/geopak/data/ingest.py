"""Build a manifest from a folder of photos by reading the GPS position in their EXIF.

:func:`read_exif` reads one image's EXIF header (no pixels are decoded): GPS latitude/longitude as
degree/minute/second rationals with their N/S/E/W references, the horizontal positioning error, the time
the photo was taken (``DateTimeOriginal`` with its UTC offset, else ``DateTime``), the ``Artist`` (owner)
and ``Copyright`` (attribution). :func:`ingest_folder` walks a folder in a thread pool and returns the
manifest rows plus a rejects table for every image without a usable position (no GPS, a zero position,
out-of-range values, unreadable files), so nothing is dropped silently. Provinces are left empty:
``geopak data validate`` fills them from the coordinates.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import ExifTags, Image, UnidentifiedImageError

__all__ = [
    "IMAGE_EXTENSIONS",
    "ExifInfo",
    "GpsError",
    "find_images",
    "ingest_folder",
    "parse_dms",
    "read_exif",
    "rejects_path_for",
]

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".tif", ".tiff", ".webp", ".heic", ".heif", ".bmp", ".gif"}
)
"""File suffixes treated as images (case-insensitive)."""

_GPS_IFD = int(ExifTags.IFD.GPSInfo)
_EXIF_IFD = int(ExifTags.IFD.Exif)
_TAG_ARTIST, _TAG_COPYRIGHT, _TAG_DATETIME = 0x013B, 0x8298, 0x0132
_TAG_DATETIME_ORIGINAL, _TAG_OFFSET_ORIGINAL = 0x9003, 0x9011
_GPS_LAT_REF, _GPS_LAT, _GPS_LON_REF, _GPS_LON, _GPS_HPE = 1, 2, 3, 4, 31
REJECT_COLUMNS: tuple[str, ...] = ("path", "reason", "detail")


class GpsError(ValueError):
    """A GPS tag is present but unusable."""


@dataclass(frozen=True)
class ExifInfo:
    """What one image's EXIF says."""

    lat: float | None
    lon: float | None
    reason: str | None
    """None when the position is usable; else ``no_gps``, ``zero_gps``, ``bad_gps``, ``not_an_image``,
    ``unreadable_image``."""
    detail: str = ""
    accuracy_m: float | None = None
    taken_at: str | None = None
    owner: str | None = None
    attribution: str | None = None


def _rational(v: Any) -> float:
    if isinstance(v, tuple) and len(v) == 2:  # (numerator, denominator) from older writers
        num, den = v
        if float(den) == 0:
            raise GpsError(f"rational {num}/{den} has a zero denominator")
        return float(num) / float(den)
    denominator = getattr(v, "denominator", 1)
    if denominator == 0:
        raise GpsError(f"rational {v!r} has a zero denominator")
    f = float(v)
    if not math.isfinite(f):
        raise GpsError(f"value {v!r} is not finite")
    return f


def _ref(ref: Any) -> str | None:
    if ref is None:
        return None
    if isinstance(ref, bytes):
        ref = ref.decode("ascii", "ignore")
    text = str(ref).strip("\x00 ").upper()
    return text[:1] or None


def parse_dms(value: Any, ref: Any, axis: str) -> float:
    """Decimal degrees from an EXIF GPS value (degrees, minutes, seconds rationals) and its reference.

    Args:
        value: a 3-tuple (or 1- or 2-tuple) of rationals, ``(num, den)`` pairs or numbers; or a number.
        ref: ``"N"``/``"S"`` for latitude, ``"E"``/``"W"`` for longitude (bytes accepted); missing means N/E.
        axis: ``"lat"`` or ``"lon"`` (sets the valid range and references).

    Raises:
        GpsError: zero denominators, minutes/seconds out of range, a wrong reference, or out-of-range degrees.
    """
    parts = list(value) if isinstance(value, (tuple, list)) else [value]
    if not parts or len(parts) > 3:
        raise GpsError(f"{axis} has {len(parts)} components, expected degrees, minutes, seconds")
    nums = [_rational(p) for p in parts] + [0.0] * (3 - len(parts))
    deg, minutes, seconds = nums
    if deg < 0 or not 0 <= minutes < 60 or not 0 <= seconds < 60.5:
        raise GpsError(f"{axis} {deg:g} deg {minutes:g}' {seconds:g}\" is not a valid D/M/S triple")
    dec = deg + minutes / 60.0 + seconds / 3600.0
    r = _ref(ref)
    valid = ("N", "S") if axis == "lat" else ("E", "W")
    if r is not None and r not in valid:
        raise GpsError(f"{axis} reference {ref!r} is not one of {'/'.join(valid)}")
    if r in ("S", "W"):
        dec = -dec
    limit = 90.0 if axis == "lat" else 180.0
    if abs(dec) > limit:
        raise GpsError(f"{axis} {dec:g} is outside [-{limit:g}, {limit:g}]")
    return dec


def _text(v: Any) -> str | None:
    if v is None:
        return None
    if isinstance(v, bytes):
        v = v.decode("utf-8", "replace")
    t = str(v).strip("\x00 \t\r\n")
    return t or None


def _iso_time(dt: Any, offset: Any) -> str | None:
    """``"2019:04:01 10:00:00"`` (+ ``"+05:00"``) -> ``"2019-04-01T10:00:00+05:00"``; None when malformed."""
    t = _text(dt)
    if t is None or len(t) < 19 or t.startswith("0000"):
        return None
    iso = f"{t[0:4]}-{t[5:7]}-{t[8:10]}T{t[11:19]}"
    if not (iso[:4].isdigit() and iso[5:7].isdigit() and iso[8:10].isdigit()):
        return None
    off = _text(offset)
    if off and len(off) == 6 and off[0] in "+-":
        iso += off
    return iso


def read_exif(path: str | os.PathLike) -> ExifInfo:
    """Read GPS position, accuracy, time, owner and attribution from an image's EXIF (header only).

    Never raises for a bad file: the returned :class:`ExifInfo` carries a reason code instead.
    """
    try:
        with Image.open(path) as img:
            exif = img.getexif()
            gps = dict(exif.get_ifd(_GPS_IFD)) if _GPS_IFD in exif else {}
            sub = dict(exif.get_ifd(_EXIF_IFD)) if _EXIF_IFD in exif else {}
    except FileNotFoundError:
        return ExifInfo(None, None, "missing_file", f"{path} does not exist")
    except UnidentifiedImageError:
        return ExifInfo(None, None, "not_an_image", "not a recognised image format")
    except Image.DecompressionBombError as e:
        return ExifInfo(None, None, "unreadable_image", f"decompression-bomb guard: {e}")
    except Exception as e:  # noqa: BLE001 - malformed EXIF raises many types
        return ExifInfo(None, None, "unreadable_image", f"cannot read header/EXIF: {e}")

    taken = _iso_time(sub.get(_TAG_DATETIME_ORIGINAL), sub.get(_TAG_OFFSET_ORIGINAL)) or _iso_time(
        exif.get(_TAG_DATETIME), None)
    meta: dict[str, Any] = {
        "taken_at": taken,
        "owner": _text(exif.get(_TAG_ARTIST)),
        "attribution": _text(exif.get(_TAG_COPYRIGHT)),
    }
    if _GPS_LAT not in gps or _GPS_LON not in gps:
        return ExifInfo(None, None, "no_gps", "no GPS latitude/longitude in EXIF", **meta)
    try:
        lat = parse_dms(gps[_GPS_LAT], gps.get(_GPS_LAT_REF), "lat")
        lon = parse_dms(gps[_GPS_LON], gps.get(_GPS_LON_REF), "lon")
    except (GpsError, TypeError, ValueError, ZeroDivisionError) as e:
        return ExifInfo(None, None, "bad_gps", str(e), **meta)
    if lat == 0.0 and lon == 0.0:
        return ExifInfo(None, None, "zero_gps", "GPS position is exactly (0, 0): no fix was recorded", **meta)
    accuracy = None
    if _GPS_HPE in gps:
        try:
            accuracy = _rational(gps[_GPS_HPE])
        except (GpsError, TypeError, ValueError):
            accuracy = None
    return ExifInfo(lat, lon, None, "", accuracy_m=accuracy, **meta)


def find_images(folder: str | os.PathLike, recursive: bool = True) -> list[Path]:
    """Image files under ``folder`` (by suffix), sorted, skipping hidden files and folders."""
    root = Path(folder)
    if not root.is_dir():
        raise NotADirectoryError(f"{root} is not a folder")
    it: Iterable[Path] = root.rglob("*") if recursive else root.iterdir()
    out = []
    for p in it:
        rel = p.relative_to(root).parts
        if any(part.startswith(".") for part in rel):
            continue
        if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file():
            out.append(p)
    return sorted(out)


def ingest_folder(
    folder: str | os.PathLike,
    recursive: bool = True,
    source: str = "folder",
    workers: int = 8,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read every image's EXIF GPS under a folder.

    Args:
        folder: the photo folder.
        recursive: include sub-folders.
        source: value of the ``source`` column.
        workers: threads reading EXIF headers.
        progress: called as ``progress(done, total)``.

    Returns:
        ``(manifest, rejects)``: the manifest rows (``id`` = path relative to the folder, absolute ``path``,
        ``lat``, ``lon``, ``province`` empty, ``source``, ``owner``, ``taken_at``, ``accuracy_m``,
        ``attribution``) and the rejected files (``path``, ``reason``, ``detail``).
    """
    root = Path(folder).resolve()
    files = find_images(root, recursive)
    logger.info("reading EXIF of %d image(s) under %s", len(files), root)
    rows: list[dict[str, Any]] = []
    rejects: list[dict[str, Any]] = []
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for k, (p, info) in enumerate(zip(files, pool.map(read_exif, files)), 1):
            if info.reason is None:
                rows.append({
                    "id": p.relative_to(root).as_posix(), "path": str(p), "lat": info.lat, "lon": info.lon,
                    "province": None, "source": source, "owner": info.owner, "taken_at": info.taken_at,
                    "accuracy_m": np.nan if info.accuracy_m is None else info.accuracy_m,
                    "attribution": info.attribution,
                })
            else:
                rejects.append({"path": str(p), "reason": info.reason, "detail": info.detail})
            if progress is not None:
                progress(k, len(files))
    columns = ["id", "path", "lat", "lon", "province", "source", "owner", "taken_at", "accuracy_m", "attribution"]
    manifest = pd.DataFrame(rows, columns=columns)
    manifest["lat"] = manifest["lat"].astype(np.float64)
    manifest["lon"] = manifest["lon"].astype(np.float64)
    manifest["accuracy_m"] = manifest["accuracy_m"].astype(np.float64)
    manifest["province"] = pd.Series([None] * len(manifest), dtype=object)
    return manifest, pd.DataFrame(rejects, columns=list(REJECT_COLUMNS))


def rejects_path_for(out: str | os.PathLike) -> Path:
    """Where the rejects CSV of a manifest written to ``out`` goes: ``<stem>.rejects.csv`` beside it."""
    o = Path(out)
    return o.with_name(f"{o.stem}.rejects.csv")
