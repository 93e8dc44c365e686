"""Feature cache: the frozen encoders' outputs computed once, memory-mapped, keyed by image id and encoder.

While both encoders are frozen (phases 0 and 1) a training step only needs ``model.encode(images)``, which
never changes; re-running ViT-B/16 + ResNet-50 every epoch is what made the reference implementation slow.
:class:`FeatureCache` computes ``encode`` once per image and view and stores the features as ``.npy`` files
that are read back memory-mapped:

```
ROOT/
  meta.json                      fingerprint, n, views, encoder names and dims, dtype
  ids.json                       image ids in row order (row i of every array is image ids[i])
  <clip encoder name>/view0.npy  (N, Dc)   view 0 = the eval transform
  <clip encoder name>/view1.npy  (N, Dc)   views 1..K-1 = seeded training augmentations
  <scene encoder name>/view0.npy (N, Ds)
  ...
```

The fingerprint (encoder names, a hash of the encoders' weights, image size, views, augmentation options,
seed and a hash of the ids) decides reuse: a cache whose fingerprint matches is reused across phases and
runs; otherwise it is rebuilt. A build writes into a temporary folder and renames it into place, so a
killed build never leaves a half-written cache that looks complete.

:class:`CachedFeatureDataset` serves training batches from the cache: each sample draws one of its K views
per epoch, from a seeded hash of (seed, epoch, row), so a resumed run sees the same views. It implements
``__getitems__``: a whole batch is one fancy-indexing gather per view, not a Python loop over samples.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

__all__ = [
    "CacheError",
    "CachedFeatureDataset",
    "FeatureCache",
    "collate_batch",
    "encoder_fingerprint",
    "ids_hash",
    "view_for",
]

logger = logging.getLogger(__name__)

CACHE_FORMAT = 1


class CacheError(RuntimeError):
    """A feature cache that is missing, incomplete or does not match the request."""


def ids_hash(ids: Sequence[str]) -> str:
    """sha256 of an ordered list of image ids."""
    h = hashlib.sha256()
    for i in ids:
        h.update(str(i).encode())
        h.update(b"\0")
    return h.hexdigest()


def _module_hash(module: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(str(t.dtype).encode())
        a = t.detach().cpu().contiguous()
        if a.dtype == torch.bfloat16:
            a = a.view(torch.int16)
        h.update(a.numpy().tobytes())
    return h.hexdigest()


def encoder_fingerprint(model: Any) -> dict[str, Any]:
    """Names, feature dims and weight hashes of the model's two encoders (what ``encode`` depends on)."""
    out: dict[str, Any] = {}
    for role in ("clip", "scene"):
        enc = _encoder(model, role)
        out[role] = {"name": enc.spec.name, "dim": int(enc.spec.feature_dim), "weights": _module_hash(enc)}
    return out


def _encoder(model: Any, role: str) -> torch.nn.Module:
    for attr in (f"{role}_encoder", role, f"{role}_enc"):
        enc = getattr(model, attr, None)
        if isinstance(enc, torch.nn.Module) and hasattr(enc, "spec"):
            return enc
    kind = "clip" if role == "clip" else "scene"
    for _, m in model.named_modules():
        spec = getattr(m, "spec", None)
        if spec is not None and getattr(spec, "kind", None) == kind and isinstance(m, torch.nn.Module):
            return m
    raise CacheError(f"model {type(model).__name__} has no {role} encoder (a module with .spec.kind == {kind!r})")


def view_for(rows: np.ndarray, epoch: int, seed: int, views: int) -> np.ndarray:
    """Deterministic view (0..views-1) of each row in an epoch: a splitmix64 hash of (seed, epoch, row)."""
    if views <= 1:
        return np.zeros(len(rows), dtype=np.int64)
    with np.errstate(over="ignore"):
        x = rows.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
        x ^= np.uint64((seed * 1_000_003 + epoch * 7919) & 0xFFFFFFFFFFFFFFFF)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x ^= x >> np.uint64(31)
    return (x % np.uint64(views)).astype(np.int64)


def collate_batch(batch: Any) -> Any:
    """Collate for datasets whose ``__getitems__`` already returns a batched dict (identity)."""
    return batch


class FeatureCache:
    """Memory-mapped encoder features for a fixed, ordered list of image ids.

    Args:
        root: the cache folder (one folder per id list; keep train and val apart).
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self._meta: dict[str, Any] | None = None
        self._arrays: dict[tuple[str, int], np.ndarray] = {}
        self._row: dict[str, int] | None = None

    # ----------------------------------------------------------------- state
    @property
    def meta(self) -> dict[str, Any]:
        """The cache's ``meta.json`` (raises :class:`CacheError` when absent)."""
        if self._meta is None:
            path = self.root / "meta.json"
            if not path.exists():
                raise CacheError(f"no feature cache at {self.root} (meta.json missing); build it first")
            self._meta = json.loads(path.read_text())
        return self._meta

    @property
    def exists(self) -> bool:
        """Whether a complete cache is present."""
        return (self.root / "meta.json").exists()

    @property
    def fingerprint(self) -> dict[str, Any]:
        return dict(self.meta["fingerprint"])

    @property
    def views(self) -> int:
        return int(self.meta["views"])

    @property
    def ids(self) -> list[str]:
        return list(json.loads((self.root / "ids.json").read_text()))

    def __len__(self) -> int:
        return int(self.meta["n"])

    def matches(self, fingerprint: dict[str, Any]) -> bool:
        """True when a complete cache with exactly this fingerprint is present."""
        if not self.exists:
            return False
        try:
            return _canonical(self.meta.get("fingerprint")) == _canonical(fingerprint)
        except (OSError, ValueError):
            return False

    def array(self, role: str, view: int = 0) -> np.ndarray:
        """The memory-mapped ``(N, D)`` array of encoder ``role`` ("clip" or "scene") for one view."""
        key = (role, int(view))
        if key not in self._arrays:
            meta = self.meta
            if role not in ("clip", "scene"):
                raise CacheError(f"role must be 'clip' or 'scene', got {role!r}")
            if not 0 <= view < meta["views"]:
                raise CacheError(f"view {view} out of range: the cache at {self.root} has {meta['views']} views")
            path = self.root / meta["encoders"][role]["name"] / f"view{view}.npy"
            self._arrays[key] = np.load(path, mmap_mode="r")
        return self._arrays[key]

    def rows_of(self, ids: Sequence[str]) -> np.ndarray:
        """Row positions of image ids (raises :class:`CacheError` naming a missing id)."""
        if self._row is None:
            self._row = {k: i for i, k in enumerate(self.ids)}
        out = np.empty(len(ids), dtype=np.int64)
        for j, k in enumerate(ids):
            r = self._row.get(str(k))
            if r is None:
                raise CacheError(f"image id {k!r} is not in the feature cache at {self.root}; rebuild it")
            out[j] = r
        return out

    def get(
        self, index: Sequence[int] | Sequence[str] | np.ndarray | torch.Tensor, view: int | np.ndarray = 0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Features of a batch: ``(clip (B, Dc), scene (B, Ds))`` float32 tensors.

        Args:
            index: row positions (ints) or image ids (strings).
            view: one view for all, or ``(B,)`` views per sample (one gather per distinct view).
        """
        if isinstance(index, torch.Tensor):
            index = index.cpu().numpy()
        idx = np.asarray(index)
        if idx.dtype.kind in "OUS":
            rows = self.rows_of([str(x) for x in idx])
        else:
            rows = idx.astype(np.int64).reshape(-1)
            if len(rows) and (rows.min() < 0 or rows.max() >= len(self)):
                raise CacheError(f"row index out of range 0..{len(self) - 1} in the cache at {self.root}")
        views = np.broadcast_to(np.asarray(view, dtype=np.int64), rows.shape)
        out = []
        for role in ("clip", "scene"):
            dim = int(self.meta["encoders"][role]["dim"])
            buf = np.empty((len(rows), dim), dtype=np.float32)
            for v in np.unique(views):
                sel = views == v
                buf[sel] = self.array(role, int(v))[rows[sel]]
            out.append(torch.from_numpy(buf))
        return out[0], out[1]

    # ----------------------------------------------------------------- build
    @torch.no_grad()
    def build(
        self,
        model: Any,
        dataset: Dataset,
        ids: Sequence[str],
        views: int = 1,
        view_dataset: Callable[[int], Dataset] | None = None,
        batch_size: int = 64,
        num_workers: int = 0,
        device: str | torch.device = "cpu",
        precision: str = "32-true",
        dtype: str = "float32",
        fingerprint: dict[str, Any] | None = None,
        progress: bool = True,
    ) -> FeatureCache:
        """Encode every image once per view and store the features.

        Args:
            model: anything with ``encode(images) -> (clip, scene)`` and two encoders with ``.spec``
                (a :class:`geopak.model.geopak.GeopakModel`).
            dataset: items are dicts with ``image`` ((3,S,S) float in [0,1]) in ``ids`` order: view 0.
            ids: the image id of each dataset row.
            views: K; views 1..K-1 come from ``view_dataset(v)``.
            view_dataset: returns the (seeded, augmented) dataset of view ``v``; required when ``views > 1``.
            batch_size, num_workers: of the encoding DataLoader.
            device: where to run the encoders.
            precision: ``"bf16-mixed"`` encodes under bf16 autocast; anything else in float32.
            dtype: storage dtype, ``float32`` or ``float16``.
            fingerprint: stored in ``meta.json`` for :meth:`matches`; defaults to
                :func:`cache_fingerprint` of the arguments.
            progress: show a progress bar.

        Returns:
            self, reopened on the new files.
        """
        n = len(dataset)  # type: ignore[arg-type]
        if n != len(ids):
            raise CacheError(f"dataset has {n} rows but {len(ids)} ids were given")
        if views < 1:
            raise CacheError(f"views must be >= 1, got {views}")
        if views > 1 and view_dataset is None:
            raise CacheError("views > 1 needs view_dataset(v) giving the augmented dataset of view v")
        if dtype not in ("float32", "float16"):
            raise CacheError(f"dtype must be float32 or float16, got {dtype!r}")
        enc_fp = encoder_fingerprint(model)
        if fingerprint is None:
            fingerprint = {"encoders": enc_fp, "views": views, "ids": ids_hash(ids), "format": CACHE_FORMAT}
        tmp = self.root.with_name(f".{self.root.name}.tmp-{os.getpid()}")
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        t0 = time.perf_counter()
        was_training = model.training
        model.eval()
        dev = torch.device(device)
        autocast = precision.startswith("bf16")
        try:
            for role in ("clip", "scene"):
                (tmp / enc_fp[role]["name"]).mkdir(exist_ok=True)
            for v in range(views):
                ds = dataset if v == 0 else view_dataset(v)  # type: ignore[misc]
                if len(ds) != n:  # type: ignore[arg-type]
                    raise CacheError(f"view {v}'s dataset has {len(ds)} rows, expected {n}")  # type: ignore[arg-type]
                mm = {
                    role: np.lib.format.open_memmap(
                        tmp / enc_fp[role]["name"] / f"view{v}.npy", mode="w+", dtype=dtype,
                        shape=(n, enc_fp[role]["dim"]),
                    )
                    for role in ("clip", "scene")
                }
                loader = DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=num_workers)
                pos = 0
                for batch in _progress(loader, f"caching features (view {v + 1}/{views})", progress):
                    images = batch["image"] if isinstance(batch, dict) else batch[0]
                    images = images.to(dev, non_blocking=True)
                    with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=autocast):
                        c, s = model.encode(images)
                    b = images.shape[0]
                    mm["clip"][pos : pos + b] = c.float().cpu().numpy()
                    mm["scene"][pos : pos + b] = s.float().cpu().numpy()
                    pos += b
                if pos != n:
                    raise CacheError(f"view {v}: encoded {pos} images, expected {n}")
                for a in mm.values():
                    a.flush()
                del mm
            (tmp / "ids.json").write_text(json.dumps([str(i) for i in ids]))
            meta = {
                "format": CACHE_FORMAT,
                "fingerprint": fingerprint,
                "n": n,
                "views": views,
                "dtype": dtype,
                "encoders": {r: {"name": enc_fp[r]["name"], "dim": enc_fp[r]["dim"]} for r in ("clip", "scene")},
                "build_seconds": round(time.perf_counter() - t0, 3),
            }
            (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
            if self.root.exists():
                shutil.rmtree(self.root)
            tmp.rename(self.root)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
            model.train(was_training)
        self._meta, self._arrays, self._row = None, {}, None
        logger.info("feature cache: %d images x %d views in %.1f s -> %s", n, views, meta["build_seconds"], self.root)
        return self


def _canonical(x: Any) -> str:
    return json.dumps(x, sort_keys=True, default=str)


def _progress(it: Any, desc: str, enabled: bool) -> Any:
    if not enabled:
        return it
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm comes with lightning
        return it
    return tqdm(it, desc=desc, leave=False)


class CachedFeatureDataset(Dataset):
    """Training/validation samples served from a :class:`FeatureCache`.

    Items (batched through ``__getitems__``) are dicts of tensors: ``clip_feat``, ``scene_feat``, ``index``
    (row in ``targets``), ``province``, ``cell_id``, ``lat``, ``lon``.

    Args:
        cache: the feature cache whose rows are this dataset's rows.
        targets: dict of ``(N,)`` arrays ``province``, ``cell_id``, ``lat``, ``lon`` in cache row order.
        seed: seeds the per-epoch view choice.
        random_views: draw a view per sample per epoch (training); False = view 0 (validation).
    """

    def __init__(
        self, cache: FeatureCache, targets: dict[str, np.ndarray], seed: int = 0, random_views: bool = True
    ) -> None:
        self.cache = cache
        self.n = len(cache)
        for k in ("province", "cell_id", "lat", "lon"):
            if k not in targets or len(targets[k]) != self.n:
                raise CacheError(f"targets[{k!r}] must have one value per cached row ({self.n})")
        self.targets = {
            "province": torch.as_tensor(np.array(targets["province"]), dtype=torch.long),
            "cell_id": torch.as_tensor(np.array(targets["cell_id"]), dtype=torch.long),
            "lat": torch.as_tensor(np.array(targets["lat"]), dtype=torch.float32),
            "lon": torch.as_tensor(np.array(targets["lon"]), dtype=torch.float32),
        }
        self.seed = int(seed)
        self.random_views = random_views
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose views are served (called by the data module each epoch)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.n

    def __getitems__(self, index: Sequence[int]) -> dict[str, torch.Tensor]:
        rows = np.asarray(index, dtype=np.int64)
        views = view_for(rows, self.epoch, self.seed, self.cache.views) if self.random_views else 0
        clip, scene = self.cache.get(rows, views)
        t = torch.from_numpy(rows)
        return {
            "clip_feat": clip,
            "scene_feat": scene,
            "index": t,
            **{k: v[t] for k, v in self.targets.items()},
        }

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {k: v[0] for k, v in self.__getitems__([i]).items()}
