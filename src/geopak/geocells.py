"""Geocells: the cell table (the contract every later stage relies on) and assignment of points to cells.

A :class:`CellTable` lists cells with a global, contiguous ``cell_id`` grouped by province in the canonical
province order (all Sindh cells first, then Punjab, ...). Within a province a cell also has a *local*
index (0..n_p-1): the position of its logit in that province's geocell head. The table provides the padded
layouts the model, the losses and the mixture use:

- ``padded_index()``: (7, K) global cell ids, -1 for padding, K = the largest province's cell count;
- ``padded_distances()``: (7, K, K) centre-to-centre km within each province, ``inf`` on padding;
- ``centers``, ``clamp_km``: per-cell centre and offset clamp (radius x the province's clamp scale).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from geopak import geo
from geopak.provinces import NUM_PROVINCES, PROVINCE_NAMES, PROVINCES, normalize_province

__all__ = ["CellTable", "CellTableError", "CELL_COLUMNS"]

CELL_COLUMNS = ["cell_id", "province", "province_id", "center_lat", "center_lon", "radius_km", "count", "urban"]
"""Required columns of a cell table; ``neighbors`` (list of cell ids) and others are optional."""

_HASH_COLUMNS = ["cell_id", "province_id", "center_lat", "center_lon", "radius_km"]


class CellTableError(ValueError):
    """A cell table that breaks the contract (ids, grouping, values)."""


@dataclass
class CellTable:
    """Validated table of geocells; see the module docstring for the layout."""

    cells: pd.DataFrame

    def __post_init__(self) -> None:
        df = self.cells.copy()
        missing = [c for c in CELL_COLUMNS if c not in df.columns and c != "province_id"]
        if missing:
            raise CellTableError(f"cell table lacks columns {missing}; required: {CELL_COLUMNS}")
        if len(df) == 0:
            raise CellTableError("cell table is empty: at least one cell is needed")
        df["province"] = [normalize_province(p).name for p in df["province"]]
        df["province_id"] = [PROVINCE_NAMES.index(p) for p in df["province"]]
        df = df.sort_values("cell_id", kind="stable").reset_index(drop=True)
        ids = df["cell_id"].to_numpy()
        if not np.array_equal(ids, np.arange(len(df))):
            raise CellTableError("cell_id must be contiguous 0..N-1 (one row per cell)")
        if np.any(np.diff(df["province_id"].to_numpy()) < 0):
            raise CellTableError("cells must be grouped by province in canonical order (Sindh, Punjab, ...)")
        for col in ("center_lat", "center_lon", "radius_km"):
            v = df[col].to_numpy(float)
            if not np.all(np.isfinite(v)):
                raise CellTableError(f"column {col} has non-finite values")
        if np.any(df["radius_km"].to_numpy(float) < 0):
            raise CellTableError("radius_km must be >= 0")
        df["cell_id"] = df["cell_id"].astype(np.int64)
        df["province_id"] = df["province_id"].astype(np.int64)
        df["count"] = df["count"].astype(np.int64)
        df["urban"] = df["urban"].astype(bool)
        self.cells = df

    # ----------------------------------------------------------------- shape
    @property
    def n_cells(self) -> int:
        return len(self.cells)

    @cached_property
    def province_ids(self) -> np.ndarray:
        """(N,) province id of each cell."""
        return self.cells["province_id"].to_numpy(np.int64)

    @cached_property
    def counts_per_province(self) -> np.ndarray:
        """(7,) number of cells per province (0 for a province without data)."""
        return np.bincount(self.province_ids, minlength=NUM_PROVINCES).astype(np.int64)

    @cached_property
    def offsets(self) -> np.ndarray:
        """(8,) start of each province's block of global ids; block p is offsets[p]:offsets[p+1]."""
        return np.concatenate([[0], np.cumsum(self.counts_per_province)]).astype(np.int64)

    @property
    def max_cells(self) -> int:
        """K: the largest per-province cell count (the padded width)."""
        return int(self.counts_per_province.max())

    @cached_property
    def local_index(self) -> np.ndarray:
        """(N,) index of each cell within its province's head."""
        return np.arange(self.n_cells) - self.offsets[self.province_ids]

    @cached_property
    def centers(self) -> np.ndarray:
        """(N, 2) cell centres (lat, lon) in degrees."""
        return self.cells[["center_lat", "center_lon"]].to_numpy(np.float64)

    @cached_property
    def clamp_km(self) -> np.ndarray:
        """(N,) largest offset the model may predict from each centre: radius x province clamp scale.

        A floor of 1 km keeps a tiny cell's offset head alive.
        """
        scale = np.array([p.clamp_scale for p in PROVINCES])[self.province_ids]
        return np.maximum(self.cells["radius_km"].to_numpy(float) * scale, 1.0)

    def padded_index(self) -> np.ndarray:
        """(7, K) global cell id at each (province, local index); -1 on padding."""
        out = np.full((NUM_PROVINCES, max(self.max_cells, 1)), -1, dtype=np.int64)
        out[self.province_ids, self.local_index] = np.arange(self.n_cells)
        return out

    def distance_matrix(self, province: int | str) -> np.ndarray:
        """(n_p, n_p) centre-to-centre great-circle distances (km) within one province."""
        p = province if isinstance(province, int) else normalize_province(province).id
        c = self.centers[self.offsets[p] : self.offsets[p + 1]]
        return geo.haversine_km(c[:, None, 0], c[:, None, 1], c[None, :, 0], c[None, :, 1])

    def padded_distances(self) -> np.ndarray:
        """(7, K, K) float32 per-province distance matrices, ``inf`` where either index is padding.

        Index it by a batch: ``D[province, local_true]`` gives each sample's distances to its province's cells.
        """
        k = max(self.max_cells, 1)
        out = np.full((NUM_PROVINCES, k, k), np.inf, dtype=np.float32)
        for p in range(NUM_PROVINCES):
            n = int(self.counts_per_province[p])
            if n:
                out[p, :n, :n] = self.distance_matrix(p)
        return out

    # ---------------------------------------------------------------- assign
    def assign(self, lat: Any, lon: Any, province: Any, chunk: int = 8192) -> np.ndarray:
        """Nearest cell of the point's own province, vectorised; -1 where the province has no cells.

        ``province`` is an array of ids (0-6) or names/aliases.
        """
        lat = np.asarray(lat, float).reshape(-1)
        lon = np.asarray(lon, float).reshape(-1)
        prov = np.asarray(province).reshape(-1)
        if prov.dtype.kind in "OUS":
            prov = np.array([normalize_province(str(p)).id for p in prov], dtype=np.int64)
        prov = prov.astype(np.int64)
        if not (len(lat) == len(lon) == len(prov)):
            raise ValueError(f"lat, lon and province lengths differ: {len(lat)}, {len(lon)}, {len(prov)}")
        out = np.full(len(lat), -1, dtype=np.int64)
        for p in range(NUM_PROVINCES):
            rows = np.flatnonzero(prov == p)
            lo, hi = self.offsets[p], self.offsets[p + 1]
            if len(rows) == 0 or hi == lo:
                continue
            c = self.centers[lo:hi]
            for s in range(0, len(rows), chunk):
                r = rows[s : s + chunk]
                d = geo.haversine_km(lat[r, None], lon[r, None], c[None, :, 0], c[None, :, 1])
                out[r] = lo + np.argmin(d, axis=1)
        return out

    # ------------------------------------------------------------ identity/io
    @cached_property
    def content_hash(self) -> str:
        """sha256 of the cells' ids, provinces, centres (1e-6 deg) and radii (1e-3 km); checkpoints record it."""
        df = self.cells[_HASH_COLUMNS].copy()
        df["center_lat"] = df["center_lat"].round(6)
        df["center_lon"] = df["center_lon"].round(6)
        df["radius_km"] = df["radius_km"].round(3)
        payload = json.dumps(df.to_numpy().tolist(), separators=(",", ":"))
        return hashlib.sha256(payload.encode()).hexdigest()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (used inside checkpoints)."""
        records = json.loads(self.cells.to_json(orient="records"))
        return {"hash": self.content_hash, "n_cells": self.n_cells, "cells": records}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CellTable:
        table = cls(pd.DataFrame(d["cells"]))
        if "hash" in d and d["hash"] != table.content_hash:
            raise CellTableError(
                f"cell table hash mismatch: stored {d['hash'][:12]}..., computed {table.content_hash[:12]}...; "
                "the table was edited after it was written"
            )
        return table

    def save(self, out_dir: str | Path) -> Path:
        """Write ``cells.parquet`` and ``cells.json`` into ``out_dir``; returns the parquet path."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        self.cells.to_parquet(out / "cells.parquet", index=False)
        (out / "cells.json").write_text(json.dumps(self.to_dict(), indent=1))
        return out / "cells.parquet"

    @classmethod
    def load(cls, path: str | Path) -> CellTable:
        """Read a cell table from a directory (``cells.parquet``), a ``.parquet`` or a ``.json`` file."""
        p = Path(path)
        if p.is_dir():
            p = p / "cells.parquet" if (p / "cells.parquet").exists() else p / "cells.json"
        if not p.exists():
            raise FileNotFoundError(f"no cell table at {p}; build one with `geopak cells build MANIFEST --out DIR`")
        if p.suffix == ".json":
            return cls.from_dict(json.loads(p.read_text()))
        return cls(pd.read_parquet(p))
