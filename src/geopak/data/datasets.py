"""Torch datasets: images from a manifest, and cached encoder features.

Items are dicts of tensors. Image datasets give ``image`` ``(3, S, S)`` float in [0, 1] (not normalised:
the encoders normalise themselves) and the targets ``index`` (row), ``province`` (canonical id, long),
``cell_id`` (global cell id, long, -1 without a cell), ``lat``, ``lon`` (float32 degrees). The image id of
each row is kept in the parallel list ``dataset.ids`` (the feature cache keys on it).

- :class:`GeoImageDataset`: the array-based core (paths + target arrays), with a transform built from an
  image size and augmentation options, or any callable; ``view_seed`` makes the augmentation of each row
  reproducible (the feature cache's augmented views).
- :class:`ManifestImageDataset`: the same built from a manifest DataFrame (and optionally a cell table).
- :class:`FeatureDataset`: cached features ``clip_feat (N, Dc)``, ``scene_feat (N, Ds)`` with the same
  targets, batched reads through ``__getitems__`` (use :func:`collate`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor
from torch.utils.data import Dataset, default_collate

from geopak.provinces import NUM_PROVINCES, UnknownProvinceError, normalize_province

if TYPE_CHECKING:
    from geopak.data.augment import AugmentConfig
    from geopak.geocells import CellTable

__all__ = ["DatasetError", "FeatureDataset", "GeoImageDataset", "ManifestImageDataset", "collate"]

logger = logging.getLogger(__name__)

TARGET_KEYS = ("province", "cell_id", "lat", "lon")


class DatasetError(ValueError):
    """Inputs that cannot make a dataset; the message names the row and the value."""


# --------------------------------------------------------------------------- target arrays
def _province_ids(values: Any, ids: Sequence[str] | None, where: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.dtype.kind in "iu":
        out = arr.astype(np.int64)
        bad = np.flatnonzero((out < 0) | (out >= NUM_PROVINCES))
        if len(bad):
            i = int(bad[0])
            raise DatasetError(
                f"{where}: row {i}{_id(ids, i)} has province id {out[i]}, outside 0..{NUM_PROVINCES - 1}"
            )
        return out
    series = pd.Series(arr, dtype=object)
    missing = np.flatnonzero(series.isna().to_numpy())
    if len(missing):
        i = int(missing[0])
        raise DatasetError(
            f"{where}: row {i}{_id(ids, i)} has no province; label provinces first (geopak data)"
        )
    uniq = pd.unique(series.astype(str))
    lookup: dict[str, int] = {}
    for u in uniq:
        try:
            lookup[u] = normalize_province(u).id
        except UnknownProvinceError as e:
            i = int(np.flatnonzero(series.astype(str).to_numpy() == u)[0])
            raise DatasetError(f"{where}: row {i}{_id(ids, i)}: {e}") from None
    return series.astype(str).map(lookup).to_numpy(np.int64)


def _id(ids: Sequence[str] | None, i: int) -> str:
    return f" (id {ids[i]!r})" if ids is not None else ""


def _coords(
    values: Any, name: str, lo: float, hi: float, ids: Sequence[str] | None, where: str
) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    bad = np.flatnonzero(~np.isfinite(arr) | (arr < lo) | (arr > hi))
    if len(bad):
        i = int(bad[0])
        raise DatasetError(
            f"{where}: row {i}{_id(ids, i)} has {name}={float(arr[i])!r}, expected a number in [{lo}, {hi}]"
        )
    return arr


def _check_targets(
    targets: Mapping[str, Any], n: int, ids: Sequence[str] | None, where: str
) -> dict[str, np.ndarray]:
    missing = [k for k in ("province", "lat", "lon") if k not in targets]
    if missing:
        raise DatasetError(
            f"{where}: targets lack {missing}; need province, lat, lon (and optionally cell_id)"
        )
    out = {
        "province": _province_ids(targets["province"], ids, where),
        "lat": _coords(targets["lat"], "lat", -90.0, 90.0, ids, where),
        "lon": _coords(targets["lon"], "lon", -180.0, 180.0, ids, where),
    }
    cell = targets.get("cell_id")
    out["cell_id"] = (
        np.full(n, -1, np.int64) if cell is None else np.asarray(cell, dtype=np.int64).reshape(-1)
    )
    for k, v in out.items():
        if len(v) != n:
            raise DatasetError(f"{where}: targets[{k!r}] has {len(v)} values for {n} rows")
    return out


def _validate_cells(
    cell_id: np.ndarray, province: np.ndarray, cells: CellTable, ids: Sequence[str], where: str
) -> None:
    bad = np.flatnonzero((cell_id < -1) | (cell_id >= cells.n_cells))
    if len(bad):
        i = int(bad[0])
        raise DatasetError(
            f"{where}: row {i}{_id(ids, i)} has cell_id {cell_id[i]}, but the cell table has {cells.n_cells} cells; "
            "rebuild the assignments with this table (geopak cells build)"
        )
    has = cell_id >= 0
    wrong = np.flatnonzero(has & (cells.province_ids[np.maximum(cell_id, 0)] != province))
    if len(wrong):
        i = int(wrong[0])
        raise DatasetError(
            f"{where}: row {i}{_id(ids, i)}: cell {cell_id[i]} lies in province {cells.province_ids[cell_id[i]]}, "
            f"the row in {province[i]}; the cell ids come from another cell table"
        )


# --------------------------------------------------------------------------- image datasets
def _row_seed(view_seed: Any, row: int) -> int:
    base = [int(s) for s in (view_seed if isinstance(view_seed, (tuple, list)) else (view_seed,))]
    return int(np.random.SeedSequence([*base, int(row)]).generate_state(1, np.uint64)[0] % (2**63))


class GeoImageDataset(Dataset):
    """Images and targets from aligned arrays.

    Args:
        paths: ``(N,)`` image sources (paths or anything :func:`geopak.data.images.open_image` accepts).
        targets: ``province`` (ids or names), ``lat``, ``lon`` and optionally ``cell_id`` (default -1), each
            ``(N,)``.
        transform: a callable PIL image -> ``(3, S, S)`` tensor; default built from ``image_size`` and
            ``augment``.
        image_size: S, when ``transform`` is None.
        augment: None -> the deterministic eval transform; a mapping or :class:`AugmentConfig` (``{}`` for
            the defaults) -> the geography-safe training transform.
        view_seed: None: fresh random augmentation on every read; an int or a tuple of ints (e.g.
            ``(seed, view)``): each row's random draws are fixed by ``(view_seed, row)``.
        ids: ``(N,)`` image ids (default: the row numbers as strings).
    """

    def __init__(
        self,
        paths: Sequence[Any],
        targets: Mapping[str, Any],
        transform: Callable[[Any], Tensor] | None = None,
        image_size: int = 224,
        augment: AugmentConfig | Mapping[str, Any] | None = None,
        view_seed: int | Sequence[int] | None = None,
        ids: Sequence[Any] | None = None,
    ) -> None:
        self.paths = list(paths)
        n = len(self.paths)
        self.ids: list[str] = [str(i) for i in ids] if ids is not None else [str(i) for i in range(n)]
        if len(self.ids) != n:
            raise DatasetError(f"{len(self.ids)} ids for {n} images")
        where = type(self).__name__
        t = _check_targets(targets, n, self.ids, where)
        self.province, self.cell_id, self.lat, self.lon = t["province"], t["cell_id"], t["lat"], t["lon"]
        if transform is None:
            from geopak.data.augment import build_eval_transform, build_train_transform

            transform = (
                build_eval_transform(image_size)
                if augment is None
                else build_train_transform(image_size, augment)
            )
        self.transform = transform
        self.view_seed = view_seed
        self._tensors = {
            "province": torch.tensor(self.province, dtype=torch.long),
            "cell_id": torch.tensor(self.cell_id, dtype=torch.long),
            "lat": torch.tensor(self.lat, dtype=torch.float32),
            "lon": torch.tensor(self.lon, dtype=torch.float32),
        }

    def __len__(self) -> int:
        return len(self.paths)

    def targets(self) -> dict[str, np.ndarray]:
        """The target arrays (``province`` ids, ``cell_id``, ``lat``, ``lon``) in row order."""
        return {"province": self.province, "cell_id": self.cell_id, "lat": self.lat, "lon": self.lon}

    def load(self, i: int) -> Any:
        """The RGB PIL image of row ``i``; an unreadable file raises ImageReadError naming the row and id."""
        from geopak.data.images import ImageReadError, open_image

        try:
            return open_image(self.paths[i])
        except ImageReadError as e:
            raise ImageReadError(f"{e.source} (row {i}, id {self.ids[i]!r})", e.reason, e.code) from e

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        i = int(i)
        if not -len(self) <= i < len(self):
            raise IndexError(f"row {i} out of range for {len(self)} images")
        i %= len(self)
        img = self.load(i)
        if self.view_seed is None:
            image = self.transform(img)
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(_row_seed(self.view_seed, i))
                image = self.transform(img)
        return {
            "image": image,
            "index": torch.tensor(i, dtype=torch.long),
            **{k: v[i] for k, v in self._tensors.items()},
        }


class ManifestImageDataset(GeoImageDataset):
    """Images and targets of a manifest DataFrame.

    Args:
        df: manifest rows with ``id``, ``path``, ``lat``, ``lon``, ``province`` (and optionally ``cell_id``).
        transform: PIL image -> ``(3, S, S)`` float tensor in [0, 1] (see :mod:`geopak.data.augment`).
        cells: the cell table. Without it every ``cell_id`` is -1. With it, the cell ids are ``cell_ids``
            if given, else the manifest's ``cell_id`` column if present (validated against the table),
            else the nearest cell of the row's province (``cells.assign``).
        cell_ids: ``(N,)`` explicit global cell ids (e.g. the assignments written by ``build_cells``).
        view_seed: see :class:`GeoImageDataset`.
    """

    def __init__(
        self,
        df: pd.DataFrame,
        transform: Callable[[Any], Tensor],
        cells: CellTable | None = None,
        cell_ids: Sequence[int] | np.ndarray | None = None,
        view_seed: int | Sequence[int] | None = None,
    ) -> None:
        where = "manifest"
        missing = [c for c in ("id", "path", "lat", "lon", "province") if c not in df.columns]
        if missing:
            raise DatasetError(f"{where} lacks columns {missing}; required: id, path, lat, lon, province")
        ids = df["id"].astype(str).tolist()
        province = _province_ids(df["province"].to_numpy(), ids, where)
        lat = _coords(df["lat"].to_numpy(), "lat", -90.0, 90.0, ids, where)
        lon = _coords(df["lon"].to_numpy(), "lon", -180.0, 180.0, ids, where)
        if cells is None:
            if cell_ids is not None:
                raise DatasetError("cell_ids were given without the cell table they index; pass cells=")
            cell = np.full(len(df), -1, np.int64)
        elif cell_ids is not None:
            cell = np.asarray(cell_ids, dtype=np.int64).reshape(-1)
            if len(cell) != len(df):
                raise DatasetError(f"{len(cell)} cell_ids for {len(df)} manifest rows")
            _validate_cells(cell, province, cells, ids, where)
        elif "cell_id" in df.columns:
            col = pd.to_numeric(df["cell_id"], errors="coerce")
            bad = np.flatnonzero(col.isna().to_numpy())
            if len(bad):
                i = int(bad[0])
                raise DatasetError(
                    f"{where}: row {i} (id {ids[i]!r}) has cell_id {df['cell_id'].iloc[i]!r}, not an integer"
                )
            cell = col.to_numpy().astype(np.int64)
            _validate_cells(cell, province, cells, ids, where)
        else:
            cell = cells.assign(lat, lon, province)
        no_cell = int((cell < 0).sum())
        if cells is not None and no_cell:
            logger.info(
                "%d of %d rows have no geocell (their province has none): province/aux losses only",
                no_cell,
                len(df),
            )
        super().__init__(
            paths=df["path"].tolist(),
            targets={"province": province, "cell_id": cell, "lat": lat, "lon": lon},
            transform=transform,
            view_seed=view_seed,
            ids=ids,
        )


# --------------------------------------------------------------------------- cached features
class FeatureDataset(Dataset):
    """Cached encoder features with their targets.

    Items are dicts: ``clip_feat (Dc,)``, ``scene_feat (Ds,)`` float32, ``index``, ``province``,
    ``cell_id``, ``lat``, ``lon`` (the keys ``GeopakModel.forward_features`` and the training step read).
    ``__getitems__`` reads a whole batch with one fancy index per array (fast on memory maps) and returns
    the batched dict; give the DataLoader ``collate_fn=collate``.

    Args:
        clip: ``(N, Dc)`` features (numpy array, memmap or tensor).
        scene: ``(N, Ds)`` features.
        targets: ``province`` (ids or names), ``lat``, ``lon``, optionally ``cell_id``, each ``(N,)``.
        ids: optional ``(N,)`` image ids.
    """

    def __init__(
        self, clip: Any, scene: Any, targets: Mapping[str, Any], ids: Sequence[Any] | None = None
    ) -> None:
        if len(clip) != len(scene):
            raise DatasetError(f"clip has {len(clip)} rows but scene has {len(scene)}")
        for name, a in (("clip", clip), ("scene", scene)):
            if len(getattr(a, "shape", ())) != 2:
                raise DatasetError(
                    f"{name} features must be 2-D (N, D), got shape {getattr(a, 'shape', None)}"
                )
        self.clip, self.scene = clip, scene
        n = len(clip)
        self.ids = [str(i) for i in ids] if ids is not None else [str(i) for i in range(n)]
        if len(self.ids) != n:
            raise DatasetError(f"{len(self.ids)} ids for {n} feature rows")
        t = _check_targets(targets, n, self.ids, type(self).__name__)
        self._tensors = {
            "province": torch.tensor(t["province"], dtype=torch.long),
            "cell_id": torch.tensor(t["cell_id"], dtype=torch.long),
            "lat": torch.tensor(t["lat"], dtype=torch.float32),
            "lon": torch.tensor(t["lon"], dtype=torch.float32),
        }

    def __len__(self) -> int:
        return len(self.clip)

    @staticmethod
    def _rows(a: Any, rows: np.ndarray) -> Tensor:
        if isinstance(a, Tensor):
            return a[torch.from_numpy(rows)].float()
        return torch.from_numpy(np.ascontiguousarray(a[rows], dtype=np.float32))

    def __getitems__(self, index: Sequence[int]) -> dict[str, Tensor]:
        rows = np.asarray(index, dtype=np.int64).reshape(-1)
        n = len(self)
        if len(rows) and (rows.min() < -n or rows.max() >= n):
            raise IndexError(
                f"rows out of range for {n} features: {rows[(rows < -n) | (rows >= n)][:5].tolist()}"
            )
        rows = rows % n if n else rows
        t = torch.from_numpy(rows)
        return {
            "clip_feat": self._rows(self.clip, rows),
            "scene_feat": self._rows(self.scene, rows),
            "index": t,
            **{k: v[t] for k, v in self._tensors.items()},
        }

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return {k: v[0] for k, v in self.__getitems__([int(i)]).items()}


def collate(batch: Any) -> Any:
    """DataLoader collate for both kinds of dataset: a batched dict (from ``__getitems__``) passes through,
    a list of item dicts is stacked with torch's default collate."""
    if isinstance(batch, Mapping):
        return batch
    return default_collate(batch)
