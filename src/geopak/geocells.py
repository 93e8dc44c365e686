"""Geocells: the cell table (the contract every later stage relies on) and assignment of points to cells.

A :class:`CellTable` lists cells with a global, contiguous ``cell_id`` grouped by province in the canonical
province order (all Sindh cells first, then Punjab, ...). Within a province a cell also has a *local*
index (0..n_p-1): the position of its logit in that province's geocell head. The table provides the padded
layouts the model, the losses and the mixture use:

- ``padded_index()``: (7, K) global cell ids, -1 for padding, K = the largest province's cell count;
- ``padded_distances()``: (7, K, K) centre-to-centre km within each province, ``inf`` on padding;
- ``centers``, ``clamp_km``: per-cell centre and offset clamp (radius x the province's clamp scale).

:func:`build_cells` makes a table from geotagged points, one province at a time, in a metric projection:

1. HDBSCAN (the standalone ``hdbscan`` package) with ``min_cluster_size`` / ``min_samples``;
2. clusters under the minimum size merge into their nearest cluster; noise points join the nearest cell;
3. a cell whose radius exceeds the limit for its kind (urban ~5 km, rural ~50 km) is split in two by 2-means
   in metres, recursively, while both parts keep the minimum (when 2-means leaves a part too small, the cut
   moves along the same axis until it holds exactly the minimum);
4. the province is steered toward its target count ``min(PROVINCES[p].target_cells, n_p // min)``: while
   below it, the cell with the largest sum of point-to-centre distances is split (the split that most
   lowers the province's mean distance to a centre); while above it, the smallest cell merges into the
   nearest cell with which the merged cell still respects its radius limit.

No step ever makes a cell smaller than the minimum; radius limits hold wherever a cell has enough points to
split (at least twice the minimum). A province with fewer points than the minimum gets one cell.

*Centre*: the cell's own point nearest its geometric median (Weiszfeld in the projected plane), an
approximate medoid: robust to outliers and always on a real photo location, so it lies among the cell's
points even for a crescent-shaped cell. *Radius*: the ``radius_quantile`` (default 0.9) of the great-circle
distances from the centre to the cell's points, in km. *Urban*: a point is urban when the density of points
within ``urban_probe_km`` of it reaches ``urban_density_per_km2``; a cell is urban when at least
``urban_fraction`` of its points are. *Neighbours*: the ``n_neighbors`` nearest cells of the same province by
centre distance, as global ids, nearest first.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import logging
import math
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from geopak import geo
from geopak.provinces import NUM_PROVINCES, PROVINCE_NAMES, PROVINCES, normalize_province

__all__ = [
    "CELL_COLUMNS",
    "CellBuildError",
    "CellCheck",
    "CellConfig",
    "CellTable",
    "CellTableError",
    "build_cells",
    "check_cells",
    "plot_cells",
    "report_markdown",
    "validate_points",
]

logger = logging.getLogger(__name__)

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

    def neighbors(self, cell_id: int, k: int | None = None) -> np.ndarray:
        """Global ids of a cell's nearest cells of the same province, nearest first (itself excluded).

        Uses the table's ``neighbors`` column when present (as :func:`build_cells` writes it), else computes
        them from the centres. ``k`` caps the number returned.
        """
        cid = int(cell_id)
        if not 0 <= cid < self.n_cells:
            raise IndexError(f"cell_id {cid} out of range 0..{self.n_cells - 1}")
        if "neighbors" in self.cells.columns:
            ids = np.asarray(self.cells["neighbors"].iloc[cid], dtype=np.int64).reshape(-1)
        else:
            p = int(self.province_ids[cid])
            d = self.distance_matrix(p)[cid - self.offsets[p]]
            ids = self.offsets[p] + np.argsort(d, kind="stable")
            ids = ids[ids != cid].astype(np.int64)
        return ids if k is None else ids[:k]

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


# =================================================================================================== build
class CellBuildError(ValueError):
    """Input points that cannot be clustered (missing columns, bad coordinates, unknown provinces)."""


@dataclass
class CellConfig:
    """Settings of :func:`build_cells`; defaults follow the design brief.

    Attributes:
        min_cluster_size: HDBSCAN's ``min_cluster_size`` and the minimum number of points per cell.
        min_samples: HDBSCAN's ``min_samples`` (density smoothing).
        cluster_selection_method: HDBSCAN's ``"eom"`` (default) or ``"leaf"`` (finer clusters).
        urban_max_radius_km: radius limit of an urban cell.
        rural_max_radius_km: radius limit of a rural cell.
        urban_probe_km: radius of the disc in which a point's density is measured.
        urban_density_per_km2: a point is urban when its disc holds at least this many points per km2
            (itself included); 2/km2 over 2 km = 26 points.
        urban_fraction: a cell is urban when at least this share of its points are urban.
        radius_quantile: the quantile of point-to-centre distances reported as the cell radius.
        targets: per-province target cell counts (canonical name or alias -> count) overriding
            ``PROVINCES[p].target_cells``; every target is capped by ``n_p // min_cluster_size``.
        n_neighbors: neighbour ids stored per cell.
        projection: ``"aeqd"`` (centred on each province) or ``"utm"``, see :func:`geo.metric_projection`.
        seed: seeds the 2-means initialisation; the same seed and points give the same cells.
        n_jobs: HDBSCAN's ``core_dist_n_jobs``; 1 (default) is faster than joblib workers here (2.2 s vs 4-9 s
            for 65k points on 2 cores) and the cluster labels can differ slightly with the worker count.
    """

    min_cluster_size: int = 40
    min_samples: int = 10
    cluster_selection_method: str = "eom"
    urban_max_radius_km: float = 5.0
    rural_max_radius_km: float = 50.0
    urban_probe_km: float = 2.0
    urban_density_per_km2: float = 2.0
    urban_fraction: float = 0.5
    radius_quantile: float = 0.9
    targets: dict[str, int] = field(default_factory=dict)
    n_neighbors: int = 8
    projection: str = "aeqd"
    seed: int = 0
    n_jobs: int = 1

    def __post_init__(self) -> None:
        if self.min_cluster_size < 2:
            raise ValueError(f"min_cluster_size must be >= 2, got {self.min_cluster_size}")
        if self.min_samples < 1:
            raise ValueError(f"min_samples must be >= 1, got {self.min_samples}")
        if self.cluster_selection_method not in ("eom", "leaf"):
            raise ValueError(
                f"cluster_selection_method must be 'eom' or 'leaf', got {self.cluster_selection_method!r}"
            )
        for name in ("urban_max_radius_km", "rural_max_radius_km", "urban_probe_km", "urban_density_per_km2"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if not 0.0 < self.radius_quantile <= 1.0:
            raise ValueError(f"radius_quantile must be in (0, 1], got {self.radius_quantile}")
        if not 0.0 <= self.urban_fraction <= 1.0:
            raise ValueError(f"urban_fraction must be in [0, 1], got {self.urban_fraction}")
        if self.n_neighbors < 0:
            raise ValueError(f"n_neighbors must be >= 0, got {self.n_neighbors}")
        if self.projection not in ("aeqd", "utm"):
            raise ValueError(f"projection must be 'aeqd' or 'utm', got {self.projection!r}")
        targets = {}
        for name, t in dict(self.targets).items():
            if int(t) < 1:
                raise ValueError(f"target for {name!r} must be >= 1, got {t}")
            targets[normalize_province(name).name] = int(t)
        self.targets = targets

    def target_for(self, province: int | str, n_points: int) -> int:
        """The province's target cell count, capped by ``n_points // min_cluster_size`` (at least 1)."""
        p = PROVINCES[province] if isinstance(province, int) else normalize_province(province)
        target = self.targets.get(p.name, p.target_cells)
        return max(1, min(target, n_points // self.min_cluster_size))

    def radius_limit_km(self, urban: Any) -> Any:
        """The radius limit for urban (True) or rural (False) cells; works on arrays too."""
        return np.where(urban, self.urban_max_radius_km, self.rural_max_radius_km)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (recorded in reports)."""
        return asdict(self)


def validate_points(df: pd.DataFrame, source: str = "manifest") -> pd.DataFrame:
    """Check and normalise the columns :func:`build_cells` needs: ``id``, ``lat``, ``lon``, ``province``.

    Returns:
        A frame with exactly those columns: ``id`` as str, ``lat``/``lon`` float64, ``province`` canonical.

    Raises:
        CellBuildError: naming the source, the row and the value when something is wrong.
    """
    missing = [c for c in ("id", "lat", "lon", "province") if c not in df.columns]
    if missing:
        raise CellBuildError(
            f"{source}: missing column(s) {missing}; geocells need id, lat, lon and province "
            "(label provinces first, e.g. with `geopak data` or geopak.boundaries.lookup_provinces)"
        )
    out = df[["id", "lat", "lon", "province"]].reset_index(drop=True).copy()
    if out["id"].isna().any():
        row = int(np.flatnonzero(out["id"].isna().to_numpy())[0])
        raise CellBuildError(f"{source}: row {row} has no id; every row needs a unique id")
    out["id"] = out["id"].astype(str)
    dup = out["id"].duplicated(keep=False).to_numpy()
    if dup.any():
        rows = np.flatnonzero(dup)[:5].tolist()
        raise CellBuildError(
            f"{source}: duplicate id {out['id'].iloc[rows[0]]!r} (rows {rows}); ids must be unique"
        )
    for col, bound in (("lat", 90.0), ("lon", 180.0)):
        v = pd.to_numeric(out[col], errors="coerce").to_numpy(np.float64)
        bad = ~np.isfinite(v) | (np.abs(v) > bound)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raw = df[col].iloc[row]
            shown = repr(raw) if isinstance(raw, str) else str(raw)
            raise CellBuildError(
                f"{source}: row {row} (id {out['id'].iloc[row]!r}) has {col}={shown}; "
                f"need a finite number in [-{bound:g}, {bound:g}] (degrees); fix or drop the row"
            )
        out[col] = v
    names: dict[Any, str] = {}
    for value in pd.unique(out["province"]):
        try:
            names[value] = normalize_province(value).name  # type: ignore[arg-type]
        except ValueError as err:
            hit = out["province"].isna() if pd.isna(value) else out["province"] == value
            row = int(np.flatnonzero(hit.to_numpy())[0])
            raise CellBuildError(f"{source}: row {row} (id {out['id'].iloc[row]!r}): {err}") from None
    out["province"] = out["province"].map(names)
    return out


@dataclass
class _Cell:
    """A cell under construction: member point indices (sorted) and its summary."""

    idx: np.ndarray
    center: int
    radius_km: float
    urban: bool
    spread_km: float
    """Sum of point-to-centre distances (km): the split priority."""


class _ProvinceBuilder:
    """Builds one province's cells; see the module docstring for the steps."""

    def __init__(self, lat: np.ndarray, lon: np.ndarray, province: int, config: CellConfig) -> None:
        self.lat, self.lon, self.cfg, self.province = lat, lon, config, province
        self.n = len(lat)
        self.m = config.min_cluster_size
        proj = geo.metric_projection(lat, lon, method=config.projection)
        x, y = proj.forward(lat, lon)
        self.xy = np.column_stack([x, y]) / 1000.0  # km
        self.rng = np.random.default_rng([config.seed, province])
        self.urban_pt = self._urban_points()
        self.cells: dict[int, _Cell] = {}
        self._next = 0
        self.stats: dict[str, Any] = {"points": self.n}

    # ------------------------------------------------------------ helpers
    def _urban_points(self) -> np.ndarray:
        from scipy.spatial import cKDTree

        k = max(1, math.ceil(self.cfg.urban_density_per_km2 * math.pi * self.cfg.urban_probe_km**2))
        if self.n < k:
            return np.zeros(self.n, dtype=bool)
        d, _ = cKDTree(self.xy).query(
            self.xy, k=[k], distance_upper_bound=self.cfg.urban_probe_km * 1.0000001
        )
        return np.isfinite(d[:, 0])

    def _limit(self, cell: _Cell) -> float:
        return self.cfg.urban_max_radius_km if cell.urban else self.cfg.rural_max_radius_km

    def summarise(self, idx: np.ndarray) -> _Cell:
        """Centre (member nearest the geometric median), radius quantile, urban flag, spread."""
        p = self.xy[idx]
        c = p.mean(0)
        for _ in range(100):  # Weiszfeld in the plane
            w = 1.0 / np.maximum(np.hypot(p[:, 0] - c[0], p[:, 1] - c[1]), 1e-3)
            new = (p * w[:, None]).sum(0) / w.sum()
            step = float(np.hypot(*(new - c)))
            c = new
            if step < 1e-3:
                break
        j = int(np.argmin(np.hypot(p[:, 0] - c[0], p[:, 1] - c[1])))
        center = int(idx[j])
        d = geo.haversine_km(self.lat[idx], self.lon[idx], self.lat[center], self.lon[center])
        return _Cell(
            idx=idx,
            center=center,
            radius_km=float(np.quantile(d, self.cfg.radius_quantile)),
            urban=bool(self.urban_pt[idx].mean() >= self.cfg.urban_fraction),
            spread_km=float(d.sum()),
        )

    def _add(self, cell: _Cell) -> int:
        key = self._next
        self._next += 1
        self.cells[key] = cell
        return key

    def split2(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """Two parts of at least the minimum each (2-means in km, seeded k-means++ start), or None."""
        n, m = len(idx), self.m
        if n < 2 * m:
            return None
        p = self.xy[idx]
        i0 = int(self.rng.integers(n))
        d2 = ((p - p[i0]) ** 2).sum(1)
        if not d2.max() > 0:
            return None  # all points at one spot: no split can help
        i1 = int(self.rng.choice(n, p=d2 / d2.sum()))
        c = p[[i0, i1]].copy()
        lab = np.zeros(n, dtype=bool)
        for _ in range(50):
            lab = ((p - c[1]) ** 2).sum(1) < ((p - c[0]) ** 2).sum(1)
            if lab.all() or not lab.any():
                break
            new = np.stack([p[~lab].mean(0), p[lab].mean(0)])
            if np.allclose(new, c, atol=1e-6):
                break
            c = new
        n1 = int(lab.sum())
        if m <= n1 <= n - m:
            return np.sort(idx[~lab]), np.sort(idx[lab])
        # 2-means left a part under the minimum: cut along its axis (then the principal axis) where the
        # smaller side holds about the minimum; failing that, a ball around the most-photographed spot
        q = p - p.mean(0)
        axes = [c[1] - c[0], np.linalg.eigh(q.T @ q)[1][:, -1]]
        for axis in axes:
            if not np.hypot(*axis) > 0:
                continue
            cut = self._cut(p @ axis, min(max(n - n1, m), n - m))
            if cut is not None:
                return np.sort(idx[cut[0]]), np.sort(idx[cut[1]])
        _, inv, cnt = np.unique(p, axis=0, return_inverse=True, return_counts=True)
        spot = p[int(np.flatnonzero(inv.reshape(-1) == int(np.argmax(cnt)))[0])]
        cut = self._cut(np.hypot(p[:, 0] - spot[0], p[:, 1] - spot[1]), m)
        return None if cut is None else (np.sort(idx[cut[0]]), np.sort(idx[cut[1]]))

    def _cut(self, key: np.ndarray, want: int) -> tuple[np.ndarray, np.ndarray] | None:
        """Split positions sorted by ``key`` into a low and a high part, both >= the minimum, cutting only
        between distinct key values (photos taken at one spot never end up in two cells), as close to
        ``want`` points in the low part as possible; None when no such cut exists."""
        n, m = len(key), self.m
        order = np.argsort(key, kind="stable")
        s = key[order]
        ok = np.flatnonzero(s[m - 1 : n - m] < s[m : n - m + 1]) + m  # cut i: parts [:i] and [i:]
        if len(ok) == 0:
            return None
        i = int(ok[np.argmin(np.abs(ok - want))])
        return order[:i], order[i:]

    def enforce_radius(self, key: int) -> list[int]:
        """Split a cell recursively while it is over its limit and both parts keep the minimum."""
        out, stack = [], [key]
        while stack:
            k = stack.pop()
            cell = self.cells[k]
            if cell.radius_km > self._limit(cell):
                parts = self.split2(cell.idx)
                if parts is not None:
                    del self.cells[k]
                    stack.extend(self._add(self.summarise(part)) for part in parts)
                    self.stats["radius_splits"] = self.stats.get("radius_splits", 0) + 1
                    continue
            out.append(k)
        return out

    # --------------------------------------------------------------- steps
    def initial(self) -> None:
        """HDBSCAN, merge under-minimum clusters, attach noise to the nearest cell."""
        if self.n < max(self.m, self.cfg.min_samples + 1):
            self._add(self.summarise(np.arange(self.n)))
            self.stats.update(clusters=0, noise=0)
            return
        import hdbscan

        labels = hdbscan.HDBSCAN(
            min_cluster_size=self.m,
            min_samples=self.cfg.min_samples,
            cluster_selection_method=self.cfg.cluster_selection_method,
            core_dist_n_jobs=self.cfg.n_jobs,
        ).fit_predict(self.xy)
        labels = self._unify_spots(labels)
        n_clusters = int(labels.max()) + 1
        noise = np.flatnonzero(labels < 0)
        self.stats.update(clusters=n_clusters, noise=len(noise))
        if n_clusters == 0:
            self._add(self.summarise(np.arange(self.n)))
            return
        order = np.argsort(labels, kind="stable")
        bounds = np.searchsorted(labels[order], np.arange(n_clusters + 1))
        for k in range(n_clusters):
            self._add(self.summarise(np.sort(order[bounds[k] : bounds[k + 1]])))
        # clusters under the minimum join their nearest cluster (unconditionally: the minimum is hard)
        while len(self.cells) > 1:
            small = [k for k, c in self.cells.items() if len(c.idx) < self.m]
            if not small:
                break
            k = min(small, key=lambda k: (len(self.cells[k].idx), k))
            other = self._nearest(k, 1)[0]
            a, b = self.cells.pop(k), self.cells.pop(other)
            self._add(self.summarise(np.sort(np.concatenate([a.idx, b.idx]))))
            self.stats["small_merges"] = self.stats.get("small_merges", 0) + 1
        if len(noise):
            from scipy.spatial import cKDTree

            keys = list(self.cells)
            centres = self.xy[[self.cells[k].center for k in keys]]
            _, nearest = cKDTree(centres).query(self.xy[noise])
            for j in np.unique(nearest):
                k = keys[j]
                cell = self.cells.pop(k)
                self.cells[k] = self.summarise(np.sort(np.concatenate([cell.idx, noise[nearest == j]])))

    def _unify_spots(self, labels: np.ndarray) -> np.ndarray:
        """Give all points at one exact coordinate the same label (HDBSCAN may split a stack of identical
        points): the most common cluster label among them (noise only when none is clustered); labels are
        then renumbered 0..k-1 in order of first appearance."""
        _, spot = np.unique(self.xy, axis=0, return_inverse=True)
        spot = spot.reshape(-1)
        lab = labels.astype(np.int64).copy()
        clustered = lab >= 0
        if clustered.any():
            pairs = pd.DataFrame({"spot": spot[clustered], "label": lab[clustered]})
            size = pairs.groupby(["spot", "label"]).size().reset_index(name="n")
            best = size.sort_values(["spot", "n", "label"], ascending=[True, False, True]).drop_duplicates("spot")
            winner = np.full(int(spot.max()) + 1, -1, dtype=np.int64)
            winner[best["spot"].to_numpy()] = best["label"].to_numpy()
            lab = winner[spot]
        _, first = np.unique(lab, return_index=True)
        kept = lab[np.sort(first)]
        kept = kept[kept >= 0]
        remap = np.full(int(max(lab.max(), 0)) + 2, -1, dtype=np.int64)
        remap[kept] = np.arange(len(kept))
        return np.where(lab >= 0, remap[np.maximum(lab, 0)], -1)

    def _nearest(self, key: int, count: int) -> list[int]:
        keys = np.array([k for k in self.cells if k != key])
        centres = self.xy[[self.cells[k].center for k in keys]]
        d = np.hypot(*(centres - self.xy[self.cells[key].center]).T)
        return keys[np.lexsort((keys, d))[:count]].tolist()

    def steer(self, target: int) -> None:
        """Split by largest spread while below ``target``; merge smallest (radius-safe) while above."""
        if len(self.cells) < target:
            heap = [(-c.spread_km, k) for k, c in self.cells.items() if len(c.idx) >= 2 * self.m]
            heapq.heapify(heap)
            while len(self.cells) < target and heap:
                _, k = heapq.heappop(heap)
                parts = self.split2(self.cells[k].idx)
                if parts is None:
                    continue
                del self.cells[k]
                self.stats["target_splits"] = self.stats.get("target_splits", 0) + 1
                for part in parts:
                    for kk in self.enforce_radius(self._add(self.summarise(part))):
                        if len(self.cells[kk].idx) >= 2 * self.m:
                            heapq.heappush(heap, (-self.cells[kk].spread_km, kk))
        elif len(self.cells) > target:
            heap = [(len(c.idx), k) for k, c in self.cells.items()]
            heapq.heapify(heap)
            while len(self.cells) > target and heap:
                _, k = heapq.heappop(heap)
                if k not in self.cells:
                    continue
                for other in self._nearest(k, max(self.cfg.n_neighbors, 1)):
                    merged = self.summarise(
                        np.sort(np.concatenate([self.cells[k].idx, self.cells[other].idx]))
                    )
                    if merged.radius_km <= self._limit(merged):
                        del self.cells[k], self.cells[other]
                        kk = self._add(merged)
                        heapq.heappush(heap, (len(merged.idx), kk))
                        self.stats["target_merges"] = self.stats.get("target_merges", 0) + 1
                        break

    def build(self) -> list[_Cell]:
        """Run all steps; returns the cells (unordered)."""
        target = self.cfg.target_for(self.province, self.n)
        self.stats["target"] = target
        self.initial()
        if self.n >= 2 * self.m:
            for k in list(self.cells):
                self.enforce_radius(k)
            self.steer(target)
        self.stats["cells"] = len(self.cells)
        return list(self.cells.values())


def build_cells(
    manifest_df: pd.DataFrame, config: CellConfig | None = None
) -> tuple[CellTable, pd.DataFrame]:
    """Build province-aware geocells from geotagged points (see the module docstring for the method).

    Args:
        manifest_df: rows with ``id``, ``lat``, ``lon``, ``province`` (other columns are ignored).
        config: the settings; ``CellConfig()`` when None.

    Returns:
        ``(table, assignments)``: the :class:`CellTable` (extra columns ``center_id``: the id of the point at
        the centre, ``mean_km``, ``max_km``, ``limit_km``, ``neighbors``) and a DataFrame ``[id, cell_id]``
        in the input's row order. ``table.cells.attrs["build"]`` holds per-province statistics.

    Raises:
        CellBuildError: on missing columns, bad coordinates, duplicate ids or unknown provinces.
    """
    cfg = config or CellConfig()
    pts = validate_points(manifest_df)
    if len(pts) == 0:
        raise CellBuildError("manifest has no rows: geocells need at least one point")
    lat_all, lon_all = pts["lat"].to_numpy(), pts["lon"].to_numpy()
    prov_all = pts["province"].map({n: i for i, n in enumerate(PROVINCE_NAMES)}).to_numpy(np.int64)
    cell_of = np.full(len(pts), -1, dtype=np.int64)
    rows: list[dict[str, Any]] = []
    stats: dict[str, Any] = {}
    for p in range(NUM_PROVINCES):
        sel = np.flatnonzero(prov_all == p)
        if len(sel) == 0:
            continue
        t0 = time.perf_counter()
        builder = _ProvinceBuilder(lat_all[sel], lon_all[sel], p, cfg)
        cells = builder.build()
        lat, lon = lat_all[sel], lon_all[sel]
        # local order: centres north to south, then west to east
        cells.sort(key=lambda c: (-lat[c.center], lon[c.center], c.center))
        first = len(rows)
        for j, c in enumerate(cells):
            cell_of[sel[c.idx]] = first + j
            d = geo.haversine_km(lat[c.idx], lon[c.idx], lat[c.center], lon[c.center])
            rows.append(
                {
                    "cell_id": first + j,
                    "province": PROVINCE_NAMES[p],
                    "center_lat": float(lat[c.center]),
                    "center_lon": float(lon[c.center]),
                    "radius_km": c.radius_km,
                    "count": len(c.idx),
                    "urban": c.urban,
                    "center_id": str(pts["id"].iloc[sel[c.center]]),
                    "mean_km": float(d.mean()),
                    "max_km": float(d.max()),
                    "limit_km": float(cfg.radius_limit_km(c.urban)),
                }
            )
        # neighbours: the k nearest cells of the province by centre distance
        cl = np.array([[r["center_lat"], r["center_lon"]] for r in rows[first:]])
        dm = geo.haversine_km(cl[:, None, 0], cl[:, None, 1], cl[None, :, 0], cl[None, :, 1])
        np.fill_diagonal(dm, np.inf)
        k = min(cfg.n_neighbors, len(cl) - 1)
        nb = np.argsort(dm, axis=1, kind="stable")[:, :k] + first
        for j in range(len(cl)):
            rows[first + j]["neighbors"] = nb[j].astype(np.int64).tolist()
        builder.stats["seconds"] = round(time.perf_counter() - t0, 3)
        builder.stats["tiny"] = len(sel) < cfg.min_cluster_size
        stats[PROVINCE_NAMES[p]] = builder.stats
        logger.info(
            "%s: %d points -> %d cells (target %d; HDBSCAN %d clusters, %d noise) in %.1f s",
            PROVINCE_NAMES[p],
            len(sel),
            len(cells),
            builder.stats["target"],
            builder.stats["clusters"],
            builder.stats["noise"],
            builder.stats["seconds"],
        )
        if builder.stats["tiny"]:
            logger.warning(
                "%s has only %d points (< minimum %d): it gets one cell below the minimum size",
                PROVINCE_NAMES[p],
                len(sel),
                cfg.min_cluster_size,
            )
    table = CellTable(pd.DataFrame(rows))
    table.cells.attrs["build"] = stats
    assignments = pd.DataFrame({"id": pts["id"].to_numpy(), "cell_id": cell_of})
    return table, assignments


@dataclass
class CellCheck:
    """Result of :func:`check_cells`: the constraints, with ids of offending cells/points."""

    n_points: int
    n_cells: int
    under_minimum: list[int]
    """Cells below the minimum count (tiny provinces excluded: they are listed in ``tiny_provinces``)."""
    tiny_provinces: list[str]
    unassigned: int
    wrong_province: int
    count_mismatch: list[int]
    """Cells whose ``count`` column disagrees with the assignments."""
    radius_violations: list[int]
    """Cells over their radius limit that could be split: >= 2x the minimum points, and >= the minimum
    apart from their largest stack of photos at one spot (spots are never split across cells)."""
    radius_over_unsplittable: list[int]
    """Cells over their limit with too few points to split: allowed, reported."""

    @property
    def ok(self) -> bool:
        return not (
            self.under_minimum
            or self.unassigned
            or self.wrong_province
            or self.count_mismatch
            or self.radius_violations
        )

    def summary(self) -> str:
        """One line per constraint."""
        lines = [
            f"every cell >= minimum count: {'yes' if not self.under_minimum else f'NO ({len(self.under_minimum)} cells)'}"
            + (
                f" (tiny provinces with one smaller cell: {', '.join(self.tiny_provinces)})"
                if self.tiny_provinces
                else ""
            ),
            "every point in exactly one cell of its own province: "
            + (
                "yes"
                if not (self.unassigned or self.wrong_province)
                else f"NO ({self.unassigned} unassigned, {self.wrong_province} in another province's cell)"
            ),
            f"cell counts match assignments: {'yes' if not self.count_mismatch else f'NO ({len(self.count_mismatch)} cells)'}",
            "radius within limit wherever the minimum allows a split: "
            + ("yes" if not self.radius_violations else f"NO ({len(self.radius_violations)} cells)"),
            f"cells over their radius limit but too small to split (allowed): {len(self.radius_over_unsplittable)}",
        ]
        return "\n".join(lines)


def check_cells(
    table: CellTable, assignments: pd.DataFrame, points: pd.DataFrame, config: CellConfig | None = None
) -> CellCheck:
    """Check a built table against the points it came from (minimum count, own province, radius limits)."""
    cfg = config or CellConfig()
    pts = validate_points(points)
    a = assignments.set_index("id")["cell_id"].reindex(pts["id"]).to_numpy()
    unassigned = int((pd.isna(a) | (np.nan_to_num(a.astype(float), nan=-1) < 0)).sum())
    a = np.nan_to_num(a.astype(float), nan=-1).astype(np.int64)
    ok = a >= 0
    cells = table.cells
    prov_of_cell = cells["province"].to_numpy()
    wrong = int((prov_of_cell[a[ok]] != pts["province"].to_numpy()[ok]).sum())
    counts = np.bincount(a[ok], minlength=table.n_cells)
    mismatch = np.flatnonzero(counts != cells["count"].to_numpy()).tolist()
    n_prov = pts["province"].value_counts()
    tiny = [p for p in PROVINCE_NAMES if 0 < n_prov.get(p, 0) < cfg.min_cluster_size]
    under = [int(i) for i in np.flatnonzero(counts < cfg.min_cluster_size) if prov_of_cell[i] not in tiny]
    limit = cfg.radius_limit_km(cells["urban"].to_numpy(bool))
    over = cells["radius_km"].to_numpy(float) > limit + 1e-9
    # a cell can be split when two parts of >= minimum exist without separating photos taken at one spot
    spots = pd.DataFrame({"cell": a[ok], "lat": pts["lat"].to_numpy()[ok], "lon": pts["lon"].to_numpy()[ok]})
    stack = spots.groupby(["cell", "lat", "lon"]).size().groupby(level="cell").max()
    largest = stack.reindex(np.arange(table.n_cells), fill_value=0).to_numpy()
    splittable = (counts >= 2 * cfg.min_cluster_size) & (counts - largest >= cfg.min_cluster_size)
    return CellCheck(
        n_points=len(pts),
        n_cells=table.n_cells,
        under_minimum=under,
        tiny_provinces=tiny,
        unassigned=unassigned,
        wrong_province=wrong,
        count_mismatch=[int(i) for i in mismatch],
        radius_violations=np.flatnonzero(over & splittable).tolist(),
        radius_over_unsplittable=np.flatnonzero(over & ~splittable).tolist(),
    )


# ================================================================================================== report
def _q(v: np.ndarray, q: float) -> float:
    return float(np.quantile(v, q)) if len(v) else float("nan")


def report_markdown(
    table: CellTable,
    check: CellCheck,
    config: CellConfig,
    source: str = "",
    seconds: float | None = None,
    map_note: str = "",
) -> str:
    """A Markdown report: cells per province, count and radius distributions, constraint check."""
    cells = table.cells
    stats: dict[str, Any] = cells.attrs.get("build", {})
    lines = ["# Geocells", ""]
    if source:
        lines.append(f"Input: `{source}`, {check.n_points:,} points.")
    lines.append(
        f"{table.n_cells} cells, table hash `{table.content_hash[:16]}`"
        + (f", built in {seconds:.1f} s." if seconds is not None else ".")
    )
    lines += [
        "",
        (
            f"Method: per-province HDBSCAN (min_cluster_size {config.min_cluster_size}, min_samples "
            f"{config.min_samples}, {config.cluster_selection_method}) in a metric projection ({config.projection}); "
            "under-minimum clusters merged into the nearest, noise to the nearest cell; cells over their radius "
            f"limit (urban {config.urban_max_radius_km:g} km, rural {config.rural_max_radius_km:g} km) split by "
            "2-means while both parts keep the minimum; then steered toward the target count. Centre: the cell's "
            "point nearest its geometric median. Radius: "
            f"p{config.radius_quantile * 100:g} of point-to-centre distances. Urban: at least "
            f"{config.urban_fraction:.0%} of the cell's points have >= {config.urban_density_per_km2:g} points/km2 "
            f"within {config.urban_probe_km:g} km."
        ),
        "",
        "## Cells per province",
        "",
        (
            "| province | points | target | cells | urban | HDBSCAN clusters | noise | count min / median / max "
            "| radius km p50 / p90 / max | over limit, unsplittable |"
        ),
        "|---|---:|---:|---:|---:|---:|---:|---|---|---:|",
    ]
    over = set(check.radius_over_unsplittable)
    for p, name in enumerate(PROVINCE_NAMES):
        blk = cells[cells["province_id"] == p]
        st = stats.get(name, {})
        if len(blk) == 0:
            lines.append(f"| {name} | 0 | - | 0 | - | - | - | - | - | - |")
            continue
        c, r = blk["count"].to_numpy(), blk["radius_km"].to_numpy()
        n_over = sum(int(i) in over for i in blk["cell_id"])
        lines.append(
            f"| {name}{' (tiny: one cell)' if st.get('tiny') else ''} | {int(c.sum()):,} | {st.get('target', '-')} "
            f"| {len(blk)} | {int(blk['urban'].sum())} | {st.get('clusters', '-')} | {st.get('noise', '-')} "
            f"| {c.min()} / {int(np.median(c))} / {c.max()} | {_q(r, 0.5):.1f} / {_q(r, 0.9):.1f} / {r.max():.1f} "
            f"| {n_over} |"
        )
    lines += [
        "",
        "## Distributions",
        "",
        "| | cells | p10 | p50 | p90 | max |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    cnt = cells["count"].to_numpy()
    lines.append(
        f"| points per cell | {len(cnt)} | {_q(cnt, 0.1):.0f} | {_q(cnt, 0.5):.0f} | {_q(cnt, 0.9):.0f} | {cnt.max()} |"
    )
    for label, mask in (("urban", cells["urban"].to_numpy(bool)), ("rural", ~cells["urban"].to_numpy(bool))):
        r = cells["radius_km"].to_numpy()[mask]
        if len(r):
            lines.append(
                f"| radius km, {label} | {len(r)} | {_q(r, 0.1):.1f} | {_q(r, 0.5):.1f} | {_q(r, 0.9):.1f} "
                f"| {r.max():.1f} |"
            )
    lines += ["", "## Constraints", "", *[f"- {x}" for x in check.summary().splitlines()]]
    if check.tiny_provinces:
        lines.append(
            f"- provinces with fewer points than the minimum ({config.min_cluster_size}) got one cell each: "
            + ", ".join(check.tiny_provinces)
        )
    for title, ids in (
        ("under the minimum", check.under_minimum),
        ("splittable but over the limit", check.radius_violations),
    ):
        if ids:
            lines.append(f"- cells {title}: {', '.join(map(str, ids[:50]))}{' ...' if len(ids) > 50 else ''}")
    lines += ["", "## Map", "", "![cells](cells.png)", ""]
    if map_note:
        lines += [map_note, ""]
    return "\n".join(lines)


def plot_cells(
    table: CellTable,
    lat: np.ndarray,
    lon: np.ndarray,
    cell_id: np.ndarray,
    path: str | Path,
    polygons: Mapping[str, Any] | None = None,
    max_points: int = 40_000,
    seed: int = 0,
) -> Path:
    """Draw the points coloured by cell, the cell centres and (when given) the province outlines to a PNG.

    Args:
        table: the cells.
        lat, lon, cell_id: the points and their cells (up to ``max_points`` are drawn, a seeded sample).
        path: the PNG to write.
        polygons: canonical province name -> shapely (multi)polygon, e.g. ``geopak.boundaries.load_polygons()``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lat, lon, cell_id = (np.asarray(a).reshape(-1) for a in (lat, lon, cell_id))
    rng = np.random.default_rng(seed)
    if len(lat) > max_points:
        keep = np.sort(rng.choice(len(lat), max_points, replace=False))
        lat, lon, cell_id = lat[keep], lon[keep], cell_id[keep]
    palette = plt.get_cmap("tab20")(np.arange(20))
    colour = palette[rng.permutation(max(table.n_cells, 1)) % 20]
    c = table.centers
    urban = table.cells["urban"].to_numpy(bool)
    # zoom on the densest spot: the centre with the most other centres within 25 km
    dm = geo.haversine_km(c[:, None, 0], c[:, None, 1], c[None, :, 0], c[None, :, 1])
    z = c[int(np.argmax((dm < 25.0).sum(1)))]
    half = 0.35
    fig, axes = plt.subplots(1, 2, figsize=(16, 8.5), dpi=100, gridspec_kw={"width_ratios": [1.15, 1]})
    ok = cell_id >= 0
    for i, ax in enumerate(axes):
        if polygons:
            for geom in polygons.values():
                for poly in getattr(geom, "geoms", [geom]):
                    x, y = poly.exterior.xy
                    ax.plot(x, y, color="0.25", lw=0.6 if i == 0 else 1.0, zorder=1)
        ax.scatter(
            lon[ok], lat[ok], s=1.0 if i == 0 else 3.0, c=colour[cell_id[ok]], lw=0, zorder=2, rasterized=True
        )
        ax.scatter(
            c[~urban, 1],
            c[~urban, 0],
            s=7 if i == 0 else 16,
            c="k",
            lw=0,
            zorder=3,
            label="rural cell centre",
        )
        ax.scatter(
            c[urban, 1],
            c[urban, 0],
            s=7 if i == 0 else 16,
            c="crimson",
            lw=0,
            zorder=3,
            label="urban cell centre",
        )
        ax.set_xlabel("longitude")
        ax.set_ylabel("latitude")
        ax.set_aspect(1.0 / math.cos(math.radians(float(z[0] if i else np.mean(c[:, 0])))))
    ax = axes[1]
    r = table.cells["radius_km"].to_numpy(float)
    near = (np.abs(c[:, 0] - z[0]) < 2 * half) & (np.abs(c[:, 1] - z[1]) < 2 * half)
    t = np.linspace(0, 2 * np.pi, 48)
    for j in np.flatnonzero(near):  # radius circles of the cells around the zoom
        rl, ro = geo.apply_offset_km(c[j, 0], c[j, 1], r[j] * np.cos(t), r[j] * np.sin(t))
        ax.plot(ro, rl, color="crimson" if urban[j] else "k", lw=0.4, alpha=0.6, zorder=3)
    ax.set_xlim(z[1] - half / math.cos(math.radians(z[0])), z[1] + half / math.cos(math.radians(z[0])))
    ax.set_ylim(z[0] - half, z[0] + half)
    ax.set_title(f"zoom on the densest area ({z[0]:.2f}, {z[1]:.2f}); circles: cell radius", fontsize=10)
    axes[0].indicate_inset_zoom(ax, edgecolor="0.3")
    counts = ", ".join(f"{p.short} {n}" for p, n in zip(PROVINCES, table.counts_per_province) if n)
    axes[0].set_title(
        f"{table.n_cells} geocells ({counts})" + ("" if polygons else "\n(no province outlines available)"),
        fontsize=10,
    )
    axes[0].legend(loc="lower right", markerscale=2, fontsize=8)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out


def build_and_write(
    points: pd.DataFrame, out: str | Path, config: CellConfig, source: str = "", boundaries: Path | None = None
) -> tuple[CellTable, pd.DataFrame, CellCheck, float, str]:
    """Build cells from validated points and write cells.parquet/.json, assignments.parquet, cells.png and
    report.md into ``out``. Returns (table, assignments, check, build seconds, map note)."""
    out = Path(out)
    t0 = time.perf_counter()
    table, assignments = build_cells(points, config)
    seconds = time.perf_counter() - t0
    check = check_cells(table, assignments, points, config)
    out.mkdir(parents=True, exist_ok=True)
    table.save(out)
    assignments.to_parquet(out / "assignments.parquet", index=False)
    polygons, note = _map_polygons(boundaries)
    plot_cells(
        table,
        points["lat"].to_numpy(),
        points["lon"].to_numpy(),
        assignments["cell_id"].to_numpy(),
        out / "cells.png",
        polygons=polygons,
        seed=config.seed,
    )
    report = report_markdown(table, check, config, source=source, seconds=seconds, map_note=note)
    (out / "report.md").write_text(report)
    return table, assignments, check, seconds, note


def _map_polygons(path: Path | None) -> tuple[Any, str]:
    """Province polygons for the map, and a note for the report when there are none."""
    try:
        from geopak.boundaries import load_polygons
    except ImportError:
        return None, "Province outlines are not drawn: geopak.boundaries is not available."
    try:
        polygons = load_polygons(path)
    except (OSError, ValueError) as err:
        return None, f"Province outlines are not drawn: {err}"
    if not polygons:
        return None, (
            "Province outlines are not drawn: no boundaries file was given or cached "
            "(pass --boundaries FILE, e.g. a geoBoundaries PAK ADM1 GeoJSON)."
        )
    return polygons, ""
