"""The manifest: one table schema for every image source, stored as Parquet.

A manifest is a pandas DataFrame with the required columns :data:`REQUIRED_COLUMNS` (``id``, ``path``,
``lat``, ``lon``, ``province``, ``source``) and any of :data:`OPTIONAL_COLUMNS`; other columns are kept.
:func:`read_manifest` reads Parquet, CSV/TSV, JSONL/JSON and Hugging Face imagefolder metadata
(``metadata.jsonl`` / ``metadata.csv`` with a ``file_name`` column, or the folder holding it), maps common
column names (``latitude``, ``lng``, ``file_name``, ``license`` ...) onto the schema, normalises province
names, and resolves relative paths against the manifest's folder. :func:`write_manifest` writes Parquet
with paths stored relative to the output folder when they lie under it, so a dataset folder can move.

Reading is strict by default: a value that breaks the schema raises :class:`ManifestError` naming the
file, the row (0-based data row) and the value. ``strict=False`` keeps such rows (numbers that do not
parse become NaN, unknown province names stay as written) for :mod:`geopak.data.validate` to report.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from geopak.provinces import UnknownProvinceError, normalize_province

__all__ = [
    "COLUMN_ALIASES",
    "HF_METADATA_NAMES",
    "MANIFEST_SCHEMA_VERSION",
    "OPTIONAL_COLUMNS",
    "REQUIRED_COLUMNS",
    "ManifestError",
    "canonical_columns",
    "check_manifest",
    "is_uri",
    "normalize_provinces",
    "read_manifest",
    "write_manifest",
]

logger = logging.getLogger(__name__)

MANIFEST_SCHEMA_VERSION = 1
REQUIRED_COLUMNS: tuple[str, ...] = ("id", "path", "lat", "lon", "province", "source")
OPTIONAL_COLUMNS: tuple[str, ...] = (
    "split", "licence", "attribution", "owner", "taken_at", "accuracy_m", "url", "cell_id",
)
SPLITS: tuple[str, ...] = ("train", "val", "test")
HF_METADATA_NAMES: tuple[str, ...] = ("metadata.jsonl", "metadata.csv", "metadata.parquet")
"""File names of a Hugging Face imagefolder's metadata, looked for when a folder is given."""

COLUMN_ALIASES: dict[str, tuple[str, ...]] = {
    "id": ("image_id", "photo_id", "img_id", "uid", "key", "identifier"),
    "path": ("file_name", "filename", "file", "filepath", "file_path", "image", "image_path", "img_path",
             "img", "relpath", "local_path", "uri"),
    "lat": ("latitude", "gps_lat", "gps_latitude", "gpslatitude", "lat_deg", "y_lat"),
    "lon": ("longitude", "lng", "long", "gps_lon", "gps_lng", "gps_longitude", "gpslongitude", "lon_deg", "x_lon"),
    "province": ("province_name", "admin1", "adm1", "state", "region"),
    "source": ("dataset", "origin", "collection"),
    "split": ("subset", "fold", "partition"),
    "licence": ("license", "licence_name", "license_name", "rights"),
    "attribution": ("credit", "credits", "author_attribution"),
    "owner": ("user", "user_id", "owner_id", "owner_name", "photographer", "author", "uploader"),
    "taken_at": ("datetaken", "date_taken", "taken", "timestamp", "datetime", "date_time", "time", "date"),
    "accuracy_m": ("accuracy", "gps_accuracy", "horizontal_accuracy", "hpe_m"),
    "url": ("image_url", "photo_url", "download_url", "page_url"),
    "cell_id": ("cell", "geocell", "geocell_id"),
}
"""Canonical column -> other names it is read under (matched case-insensitively, spaces/hyphens as ``_``)."""

_URI = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.\-]*://")
_NUMERIC = ("lat", "lon", "accuracy_m")


class ManifestError(ValueError):
    """A manifest breaks the schema; the message names the file, the row and the value, and what to do."""


def _show(value: object) -> str:
    """repr of a value as the user wrote it (numpy scalars shown as plain numbers)."""
    if isinstance(value, np.generic):
        value = value.item()
    return repr(value)


def is_uri(path: str) -> bool:
    """Whether ``path`` is a URI (``http://``, ``s3://``, ``hf://`` ...) rather than a local file path."""
    return bool(_URI.match(path))


def _norm(name: str) -> str:
    return re.sub(r"[\s\-]+", "_", str(name).strip().lower())


_ALIAS_LOOKUP: dict[str, str] = {}
for _canon, _names in COLUMN_ALIASES.items():
    for _n in (_canon, *_names):
        _ALIAS_LOOKUP[_norm(_n)] = _canon


def canonical_columns(columns: Sequence[str], where: str = "manifest") -> dict[str, str]:
    """Map a table's column names onto the schema: ``{original: canonical}`` for the columns that match.

    An exact canonical name wins over an alias (a table with both ``lat`` and ``latitude`` reads ``lat``
    and keeps ``latitude`` as an extra column); two aliases of one column are an error.

    Raises:
        ManifestError: two columns (neither canonical) both map to the same schema column.
    """
    mapping: dict[str, str] = {}
    taken: dict[str, str] = {}
    exact = {c for c in columns if _norm(c) in COLUMN_ALIASES}
    for col in sorted(columns, key=lambda c: c not in exact):
        canon = _ALIAS_LOOKUP.get(_norm(col))
        if canon is None:
            continue
        if canon in taken:
            if taken[canon] in exact and col not in exact:
                continue  # the exact name wins; the alias stays as an extra column
            raise ManifestError(
                f"{where}: columns {taken[canon]!r} and {col!r} both mean {canon!r}; drop or rename one"
            )
        taken[canon] = col
        mapping[col] = canon
    return mapping


def normalize_provinces(values: pd.Series, where: str = "manifest", strict: bool = True) -> pd.Series:
    """Canonical province names for a column; empty cells become None.

    Raises:
        ManifestError: (strict) a value names no province of Pakistan.
    """
    out = np.empty(len(values), dtype=object)
    cache: dict[str, str | None] = {}
    for i, v in enumerate(values.to_numpy(dtype=object)):
        if v is None or (isinstance(v, float) and np.isnan(v)) or (isinstance(v, str) and not v.strip()):
            out[i] = None
            continue
        key = str(v)
        if key not in cache:
            try:
                cache[key] = normalize_province(key).name
            except UnknownProvinceError as e:
                if strict:
                    raise ManifestError(f"{where}: row {i}: province {key!r}: {e}") from e
                cache[key] = None
        out[i] = cache[key] if cache[key] is not None else key
    return pd.Series(out, index=values.index, name=values.name, dtype=object)


def _read_table(path: Path) -> pd.DataFrame:
    suffix = "".join(path.suffixes[-2:]).lower() if path.suffix.lower() == ".gz" else path.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            return pd.read_parquet(path)
        if suffix in (".csv", ".csv.gz", ".tsv", ".tsv.gz", ".txt"):
            sep = "\t" if ".tsv" in suffix else None
            return pd.read_csv(path, sep=sep, engine="python" if sep is None else "c", dtype=str,
                               keep_default_na=False, na_values=["", "NA", "NaN", "nan", "null", "None"])
        if suffix in (".jsonl", ".ndjson", ".jsonl.gz"):
            return pd.read_json(path, lines=True, dtype=False)
        if suffix == ".json":
            with open(path, encoding="utf-8") as f:
                obj = json.load(f)
            if isinstance(obj, dict):
                obj = obj.get("images") or obj.get("rows") or obj.get("data") or [obj]
            if not isinstance(obj, list):
                raise ManifestError(f"{path}: expected a JSON list of records")
            return pd.DataFrame.from_records(obj)
    except ManifestError:
        raise
    except (ValueError, OSError, UnicodeDecodeError) as e:
        raise ManifestError(f"{path}: cannot read as {suffix.lstrip('.')}: {e}") from e
    raise ManifestError(
        f"{path}: unknown manifest format {suffix!r}; use .parquet, .csv, .tsv, .jsonl or an HF imagefolder "
        "metadata.jsonl/metadata.csv"
    )


def _locate(path: Path) -> Path:
    if path.is_dir():
        for name in HF_METADATA_NAMES:
            if (path / name).is_file():
                return path / name
        raise ManifestError(
            f"{path} is a folder without {', '.join(HF_METADATA_NAMES)}; give a manifest file, or use "
            "`geopak data ingest-folder` to read GPS from the images' EXIF"
        )
    if not path.exists():
        raise ManifestError(f"manifest {path} does not exist")
    return path


def _resolve_paths(paths: pd.Series, base: Path) -> pd.Series:
    def fix(p: object) -> object:
        if not isinstance(p, str) or not p or is_uri(p):
            return p
        q = Path(p).expanduser()
        return str(q if q.is_absolute() else (base / q).resolve())

    return paths.map(fix).astype(object)


def read_manifest(
    path: str | os.PathLike,
    strict: bool = True,
    default_source: str | None = None,
    resolve_paths: bool = True,
) -> pd.DataFrame:
    """Read a manifest into the schema.

    Args:
        path: a ``.parquet``, ``.csv``/``.tsv``, ``.jsonl``/``.json`` file, an HF imagefolder
            ``metadata.jsonl``/``metadata.csv``, or a folder holding one of those.
        strict: raise on the first schema violation (unparsable coordinate, unknown province, empty path,
            duplicate id). With ``False`` such rows are kept for :func:`geopak.data.validate.validate_manifest`.
        default_source: ``source`` for rows without one (default: ``"imagefolder"`` for HF metadata, else the
            manifest's file stem).
        resolve_paths: make relative ``path`` values absolute, relative to the manifest's folder.

    Returns:
        A DataFrame with the required columns first (``lat``/``lon`` float64, ``province`` canonical names or
        None), then the optional ones present, then any other columns. Without an ``id`` column, ids are the
        paths as written in the file.

    Raises:
        ManifestError: unreadable file, a missing ``path``/``lat``/``lon`` column, or (strict) a bad value.
    """
    src = _locate(Path(path).expanduser())
    where = str(src)
    df = _read_table(src)
    mapping = canonical_columns([str(c) for c in df.columns], where)
    df = df.rename(columns={c: mapping.get(str(c), str(c)) for c in df.columns})
    missing = [c for c in ("path", "lat", "lon") if c not in df.columns]
    if missing:
        raise ManifestError(
            f"{where}: no column for {', '.join(missing)} (columns: {', '.join(map(str, df.columns))}); "
            f"accepted names include {', '.join(COLUMN_ALIASES['lat'][:2])} for lat, "
            f"{', '.join(COLUMN_ALIASES['lon'][:3])} for lon, {', '.join(COLUMN_ALIASES['path'][:3])} for path"
        )
    df = df.reset_index(drop=True)
    hf = src.name in HF_METADATA_NAMES
    df["path"] = df["path"].map(lambda p: None if p is None or (isinstance(p, float) and np.isnan(p)) else str(p))
    if "id" not in df.columns:
        df["id"] = df["path"]
    df["id"] = df["id"].map(lambda v: None if v is None or (isinstance(v, float) and np.isnan(v)) else (
        str(int(v)) if isinstance(v, (float, np.floating)) and float(v).is_integer() else str(v)))
    if "source" not in df.columns:
        df["source"] = default_source or ("imagefolder" if hf else src.stem)
    else:
        df["source"] = df["source"].where(df["source"].notna(), default_source or src.stem).astype(str)
    if "province" not in df.columns:
        df["province"] = None
    df["province"] = normalize_provinces(df["province"], where, strict=strict)

    for col in _NUMERIC:
        if col not in df.columns:
            continue
        raw = df[col]
        num = pd.to_numeric(raw, errors="coerce").astype(np.float64)
        bad = num.isna() & raw.notna() & (raw.astype(str).str.strip() != "")
        if strict and bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise ManifestError(
                f"{where}: row {i} (id {df['id'].iat[i]!r}): {col} {_show(raw.iat[i])} is not a number in decimal "
                f"degrees{' or metres' if col == 'accuracy_m' else ''}; fix it, or run `geopak data validate` "
                "to list such rows"
            )
        df[col] = num
    if "cell_id" in df.columns:
        df["cell_id"] = pd.to_numeric(df["cell_id"], errors="coerce").astype("Int64")
    if "split" in df.columns:
        df["split"] = df["split"].map(lambda s: s.strip().lower() if isinstance(s, str) else s)
        df["split"] = df["split"].replace({"validation": "val", "valid": "val", "dev": "val", "training": "train"})
    if strict:
        check_manifest(df, where)
    if resolve_paths:
        df["path"] = _resolve_paths(df["path"], src.parent)
    return _order(df)


def _order(df: pd.DataFrame) -> pd.DataFrame:
    cols = [c for c in (*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS) if c in df.columns]
    return df[cols + [c for c in df.columns if c not in cols]]


def check_manifest(df: pd.DataFrame, where: str = "manifest") -> None:
    """Check a DataFrame against the schema.

    Raises:
        ManifestError: a required column is missing, or a value breaks the schema (empty id or path,
            duplicate id, non-numeric or out-of-range coordinates, unknown province, unknown split);
            the message names the row and the value.
    """
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise ManifestError(f"{where}: missing required column(s) {', '.join(missing)}")

    def first(mask: Any) -> int:
        return int(np.flatnonzero(np.asarray(mask))[0])

    ids = df["id"]
    empty = ids.isna() | (ids.astype(str).str.strip() == "")
    if empty.any():
        i = first(empty)
        raise ManifestError(f"{where}: row {i}: empty id; give every row a unique id")
    dup = ids.duplicated(keep=False)
    if dup.any():
        i = first(ids.duplicated(keep="first"))
        j = first(ids == ids.iat[i])
        raise ManifestError(f"{where}: row {i}: id {ids.iat[i]!r} already used by row {j}; ids must be unique")
    paths = df["path"]
    empty = paths.isna() | (paths.astype(str).str.strip() == "")
    if empty.any():
        i = first(empty)
        raise ManifestError(f"{where}: row {i} (id {ids.iat[i]!r}): empty path")
    for col, lim in (("lat", 90.0), ("lon", 180.0)):
        v = pd.to_numeric(df[col], errors="coerce").to_numpy(dtype=np.float64)
        bad = ~np.isfinite(v) | (np.abs(v) > lim)
        if bad.any():
            i = first(bad)
            raise ManifestError(
                f"{where}: row {i} (id {ids.iat[i]!r}): {col} {_show(df[col].iat[i])} is not a finite value in "
                f"[-{lim:g}, {lim:g}]; run `geopak data validate` to reject such rows"
            )
    prov = df["province"]
    known = prov.isna() | prov.isin(
        [p for p in prov.dropna().unique() if _is_canonical(p)]
    )
    if not known.all():
        i = first(~known)
        raise ManifestError(f"{where}: row {i} (id {ids.iat[i]!r}): unknown province {prov.iat[i]!r}")
    if "split" in df.columns:
        bad = df["split"].notna() & ~df["split"].isin(SPLITS)
        if bad.any():
            i = first(bad)
            raise ManifestError(
                f"{where}: row {i} (id {ids.iat[i]!r}): split {df['split'].iat[i]!r} is not one of {', '.join(SPLITS)}"
            )


def _is_canonical(name: object) -> bool:
    try:
        return isinstance(name, str) and normalize_province(name).name == name
    except UnknownProvinceError:
        return False


def _relative_paths(paths: pd.Series, out_dir: Path) -> pd.Series:
    out_dir = out_dir.resolve()

    def rel(p: object) -> object:
        if not isinstance(p, str) or not p or is_uri(p):
            return p
        q = Path(p).expanduser()
        if not q.is_absolute():
            return p
        try:
            return q.resolve().relative_to(out_dir).as_posix()
        except ValueError:
            return str(q)

    return paths.map(rel).astype(object)


def write_manifest(df: pd.DataFrame, path: str | os.PathLike, check: bool = True) -> Path:
    """Write a manifest: Parquet (``.parquet``), or CSV/JSONL when the suffix says so.

    Paths under the output file's folder are stored relative to it (so :func:`read_manifest` resolves them
    again wherever the folder moves); others stay absolute. The file is written atomically.

    Args:
        df: the manifest.
        path: output file.
        check: run :func:`check_manifest` first.

    Returns:
        The path written.

    Raises:
        ManifestError: the table breaks the schema (with ``check``), or the suffix is unknown.
    """
    out = Path(path).expanduser()
    if check:
        check_manifest(df, f"manifest to write to {out}")
    out.parent.mkdir(parents=True, exist_ok=True)
    table = _order(df.copy())
    table["path"] = _relative_paths(table["path"], out.parent)
    table["lat"] = table["lat"].astype(np.float64)
    table["lon"] = table["lon"].astype(np.float64)
    for col in ("id", "source"):
        table[col] = table[col].astype(str)
    table["province"] = table["province"].astype(object)
    tmp = out.with_name(f".{out.name}.tmp")
    suffix = out.suffix.lower()
    if suffix in (".parquet", ".pq", ""):
        import pyarrow as pa
        import pyarrow.parquet as pq

        t = pa.Table.from_pandas(table.reset_index(drop=True), preserve_index=False)
        meta = dict(t.schema.metadata or {})
        meta[b"geopak.manifest"] = json.dumps({"schema_version": MANIFEST_SCHEMA_VERSION}).encode()
        pq.write_table(t.replace_schema_metadata(meta), tmp)
    elif suffix == ".csv":
        table.to_csv(tmp, index=False)
    elif suffix in (".jsonl", ".ndjson"):
        table.to_json(tmp, orient="records", lines=True, force_ascii=False)
    else:
        raise ManifestError(f"cannot write a manifest as {suffix!r}; use .parquet (or .csv / .jsonl)")
    os.replace(tmp, out)
    logger.debug("wrote %d rows to %s", len(table), out)
    return out
