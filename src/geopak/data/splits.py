"""Train / val / test splits of a manifest, seeded and stratified by province.

* ``random``: each province's rows are shuffled with the seed and cut at the requested fractions (the
  seed's 90/10 is ``val=0, test=0.1``). Totals are exact: each split gets ``round(N x fraction)`` rows,
  shared among provinces by largest remainder.
* ``grouped``: rows that should not be on both sides of a split are grouped first, and whole groups are
  dealt to the splits: the same spatial block (a ``block_km`` grid in an azimuthal-equidistant projection
  centred on Pakistan), optionally the same owner, and always the same image bytes (``sha256`` column, or
  hashed from the files with ``hash_images``). Groups are the connected components of "shares a block /
  owner / hash", so an owner who photographed two cities ties both cities' blocks together. Each group
  counts for its majority province; within a province, groups are dealt in seeded random order, each to the
  split furthest below its target. Proportions are close when groups are small next to a province's
  share of a split; :func:`split_report` shows how close they came.
"""

from __future__ import annotations

import hashlib
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pandas as pd

from geopak.provinces import PROVINCE_NAMES

__all__ = [
    "SPLIT_NAMES",
    "SplitError",
    "grouped_split",
    "random_split",
    "split_groups",
    "split_manifest",
    "split_report",
]

logger = logging.getLogger(__name__)

SPLIT_NAMES: tuple[str, ...] = ("train", "val", "test")
_CENTRE = (30.0, 69.5)


class SplitError(ValueError):
    """Bad split parameters or a manifest the split cannot use."""


def _fractions(val: float, test: float) -> np.ndarray:
    for name, f in (("val", val), ("test", test)):
        if not 0.0 <= f < 1.0:
            raise SplitError(f"--{name} must be in [0, 1), got {f}")
    if val + test >= 1.0:
        raise SplitError(f"val + test = {val + test:g} leaves nothing to train on; keep it below 1")
    return np.array([1.0 - val - test, val, test])


def _strata(df: pd.DataFrame) -> np.ndarray:
    """Province per row as a stratum label (unknown provinces form one more stratum)."""
    if "province" not in df.columns:
        return np.full(len(df), "", dtype=object)
    return np.array([p if isinstance(p, str) and p else "" for p in df["province"].to_numpy(dtype=object)],
                    dtype=object)


def _stratum_order(strata: np.ndarray) -> list[str]:
    present = set(strata.tolist())
    return [p for p in PROVINCE_NAMES if p in present] + sorted(present - set(PROVINCE_NAMES))


def _allocate(sizes: np.ndarray, fractions: np.ndarray) -> np.ndarray:
    """Rows per (stratum, split): exact totals round(N x f), shared by largest remainder, each row sums to size."""
    n = int(sizes.sum())
    want = sizes[:, None] * fractions[None, :]
    alloc = np.floor(want).astype(np.int64)
    for k in (1, 2):  # val, test: fix their totals; train takes the rest
        target = round(n * fractions[k])
        short = target - int(alloc[:, k].sum())
        if short > 0:
            room = sizes - alloc.sum(axis=1)
            order = np.argsort(-(want[:, k] - alloc[:, k]), kind="stable")
            for s in order:
                if short == 0:
                    break
                if room[s] > 0:
                    alloc[s, k] += 1
                    room[s] -= 1
                    short -= 1
    alloc[:, 0] = sizes - alloc[:, 1] - alloc[:, 2]
    return alloc


def random_split(df: pd.DataFrame, val: float = 0.1, test: float = 0.1, seed: int = 0) -> np.ndarray:
    """Split labels (object array of train/val/test) for a seeded random split stratified by province."""
    fr = _fractions(val, test)
    strata = _strata(df)
    order = _stratum_order(strata)
    rng = np.random.default_rng(seed)
    out = np.full(len(df), "train", dtype=object)
    members = [np.flatnonzero(strata == s) for s in order]
    alloc = _allocate(np.array([m.size for m in members], dtype=np.int64), fr)
    for idx, (_, n_val, n_test) in zip(members, alloc):
        perm = idx[rng.permutation(idx.size)]
        out[perm[:n_test]] = "test"
        out[perm[n_test:n_test + n_val]] = "val"
    return out


def _hash_file(path: str) -> str | None:
    try:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        return h.hexdigest()
    except OSError:
        return None


def _components(keys: list[np.ndarray], n: int) -> np.ndarray:
    """Connected components of rows linked by equal key codes (-1 = no key), by min-label propagation."""
    labels = np.arange(n, dtype=np.int64)
    keys = [k for k in keys if (k >= 0).any()]
    while True:
        changed = False
        for k in keys:
            has = k >= 0
            if not has.any():
                continue
            m = np.full(int(k.max()) + 1, np.iinfo(np.int64).max, dtype=np.int64)
            np.minimum.at(m, k[has], labels[has])
            new = labels.copy()
            new[has] = np.minimum(labels[has], m[k[has]])
            if (new != labels).any():
                labels = new
                changed = True
        # Pointer jumping: follow labels to their roots so long chains collapse in few rounds.
        while True:
            nxt = labels[labels]
            if (nxt == labels).all():
                break
            labels = nxt
            changed = True
        if not changed:
            break
    return np.unique(labels, return_inverse=True)[1].astype(np.int64)


def split_groups(
    df: pd.DataFrame,
    block_km: float | None = 5.0,
    by_owner: bool = False,
    hash_images: bool = False,
    workers: int = 8,
) -> np.ndarray:
    """Group id per row: rows sharing a spatial block, an owner (optional) or image bytes share a group.

    Args:
        df: manifest with ``lat``, ``lon`` (and ``owner``, ``sha256`` or ``path`` as used).
        block_km: side of the square spatial blocks in km; None or 0 disables spatial grouping.
        by_owner: also group rows of the same ``owner``.
        hash_images: hash the files at ``path`` when there is no ``sha256`` column.
        workers: threads for hashing.

    Raises:
        SplitError: ``by_owner`` without an ``owner`` column, or bad coordinates with spatial blocks.
    """
    n = len(df)
    keys: list[np.ndarray] = []
    if block_km:
        if block_km < 0:
            raise SplitError(f"block size must be positive, got {block_km}")
        from geopak.geo import MetricProjection

        lat = pd.to_numeric(df["lat"], errors="coerce").to_numpy(np.float64)
        lon = pd.to_numeric(df["lon"], errors="coerce").to_numpy(np.float64)
        bad = ~(np.isfinite(lat) & np.isfinite(lon))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise SplitError(f"row {i}: lat/lon {df['lat'].iat[i]!r}, {df['lon'].iat[i]!r} are not numbers; "
                             "validate the manifest first (`geopak data validate`)")
        proj = MetricProjection(f"+proj=aeqd +lat_0={_CENTRE[0]} +lon_0={_CENTRE[1]} +datum=WGS84 +units=m +no_defs")
        x, y = proj.forward(lat, lon)
        bx = np.floor(np.asarray(x) / (block_km * 1000.0)).astype(np.int64)
        by = np.floor(np.asarray(y) / (block_km * 1000.0)).astype(np.int64)
        keys.append(pd.factorize(pd.MultiIndex.from_arrays([bx, by]))[0].astype(np.int64))
    if by_owner:
        if "owner" not in df.columns:
            raise SplitError("grouping by owner needs an 'owner' column; drop --by-owner or add owners")
        owner = df["owner"].to_numpy(dtype=object)
        owner = np.array([o if isinstance(o, str) and o.strip() else None for o in owner], dtype=object)
        codes = pd.factorize(pd.Series(owner, dtype=object), use_na_sentinel=True)[0]
        keys.append(codes.astype(np.int64))
    hashes = None
    if "sha256" in df.columns:
        hashes = df["sha256"].to_numpy(dtype=object)
    elif hash_images:
        paths = df["path"].astype(str).tolist()
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            hashes = np.array(list(pool.map(_hash_file, paths)), dtype=object)
    if hashes is not None:
        clean = pd.Series([h if isinstance(h, str) and h else None for h in hashes], dtype=object)
        keys.append(pd.factorize(clean, use_na_sentinel=True)[0].astype(np.int64))
    return _components(keys, n)


def grouped_split(
    df: pd.DataFrame, groups: np.ndarray, val: float = 0.1, test: float = 0.1, seed: int = 0
) -> np.ndarray:
    """Split labels dealing whole groups to train/val/test, stratified by each group's majority province."""
    fr = _fractions(val, test)
    groups = np.asarray(groups, dtype=np.int64)
    if groups.shape != (len(df),):
        raise SplitError(f"need one group id per row, got {groups.shape} for {len(df)} rows")
    strata = _strata(df)
    g_codes, g_index = np.unique(groups, return_inverse=True)
    sizes = np.bincount(g_index, minlength=g_codes.size)
    # Majority stratum per group.
    table = pd.crosstab(g_index, strata)
    g_stratum = table.idxmax(axis=1).reindex(range(g_codes.size)).to_numpy(dtype=object)
    rng = np.random.default_rng(seed)
    split_of_group = np.zeros(g_codes.size, dtype=np.int64)
    order = _stratum_order(g_stratum)
    st_sizes = np.array([sizes[g_stratum == s].sum() for s in order], dtype=np.int64)
    alloc = _allocate(st_sizes, fr)
    for s, target in zip(order, alloc):
        gs = np.flatnonzero(g_stratum == s)
        gs = gs[rng.permutation(gs.size)]
        filled = np.zeros(3, dtype=np.float64)
        t = target.astype(np.float64)
        for g in gs:
            # The split furthest below its target (relative), among those with a target.
            deficit = np.where(t > 0, (t - filled) / np.maximum(t, 1.0), -np.inf)
            k = int(np.argmax(deficit))
            split_of_group[g] = k
            filled[k] += sizes[g]
    return np.asarray(SPLIT_NAMES, dtype=object)[split_of_group[g_index]]


def split_manifest(
    df: pd.DataFrame,
    method: str = "random",
    val: float = 0.1,
    test: float = 0.1,
    seed: int = 0,
    block_km: float | None = 5.0,
    by_owner: bool = False,
    hash_images: bool = False,
) -> pd.DataFrame:
    """A copy of the manifest with a ``split`` column (``train``/``val``/``test``).

    Args:
        df: the manifest.
        method: ``"random"`` (seeded, stratified by province) or ``"grouped"`` (see the module docs).
        val, test: fractions of rows (train gets the rest).
        seed: random seed; the same manifest, method, fractions and seed give the same split.
        block_km, by_owner, hash_images: grouping options of ``"grouped"`` (see :func:`split_groups`).

    Raises:
        SplitError: unknown method or bad fractions.
    """
    if method == "random":
        labels = random_split(df, val, test, seed)
    elif method == "grouped":
        groups = split_groups(df, block_km, by_owner, hash_images)
        labels = grouped_split(df, groups, val, test, seed)
        largest = int(np.bincount(groups).max()) if len(groups) else 0
        smallest_target = min((f * len(df) for f in (val, test) if f > 0), default=float(len(df)))
        if largest > 0.5 * smallest_target:
            logger.warning(
                "one group ties %d of %d rows together (%s), more than half the smallest split's target; "
                "proportions will be off: use a smaller --block-km%s",
                largest, len(df), "blocks, owners and duplicates chained" if by_owner else "a block and duplicates",
                " or drop --by-owner" if by_owner else "",
            )
    else:
        raise SplitError(f"unknown split method {method!r}; use 'random' or 'grouped'")
    out = df.copy()
    if "split" in out.columns:
        logger.info("replacing the manifest's existing split column")
    out["split"] = pd.Series(labels, index=out.index, dtype=object)
    return out


def split_report(df: pd.DataFrame, groups: np.ndarray | None = None) -> dict[str, Any]:
    """Rows per split overall and per province (counts and fractions); with groups, how many straddle."""
    counts = df["split"].value_counts().reindex(SPLIT_NAMES, fill_value=0)
    n = max(int(counts.sum()), 1)
    report: dict[str, Any] = {
        "rows": int(counts.sum()),
        "counts": {k: int(v) for k, v in counts.items()},
        "fractions": {k: round(int(v) / n, 4) for k, v in counts.items()},
        "by_province": {},
    }
    strata = _strata(df)
    for s in _stratum_order(strata):
        m = strata == s
        c = df.loc[m, "split"].value_counts().reindex(SPLIT_NAMES, fill_value=0)
        report["by_province"][s or "(none)"] = {k: int(v) for k, v in c.items()}
    if groups is not None:
        per = pd.DataFrame({"g": groups, "s": df["split"].to_numpy()}).groupby("g")["s"].nunique()
        report["groups"] = int(per.size)
        report["groups_straddling"] = int((per > 1).sum())
        report["largest_group"] = int(pd.Series(groups).value_counts().max()) if len(groups) else 0
    return report
