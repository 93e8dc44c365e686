"""Scene pretraining of the small encoders: an offline stand-in for CLIP / Places365 pretraining.

The real model starts from pretrained encoders (CLIP ViT-B/16, ResNet-50-Places365). Offline, the CPU demo's
small encoders (``clip_vit_tiny``, ``resnet_small``) would start from random weights, and its frozen-encoder
phases would learn from random features. :func:`pretrain_encoders` gives them a start instead: each encoder,
with its own linear head, learns to predict the **scene attributes** GeoPak-Synth records for every image
(``scenes.parquet``: how urban, how high, how rough, how green, how far from the coast, how far one sees,
time of day, season, weather, kind of shot, ...) on a GeoPak-Synth set generated separately from the one the
model is trained and evaluated on (another seed).

**It never sees a location.** The targets are the rows of :data:`SCENE_TARGETS` and nothing else; the
manifest is read for ``id`` and ``path`` only, and no column of :data:`LOCATION_COLUMNS` (latitude, longitude,
province, the anchor and nearest settlements) is read from either file. Predicting them would be training the
task itself on a second, differently seeded copy of it.

Outputs in ``out_dir``:

- ``clip.safetensors``, ``scene.safetensors``: the encoders' **backbone** state dicts, loadable with
  ``geopak.model.encoders.create_encoder(name, path)`` (and so as ``weights.clip`` / ``weights.scene`` of a
  training config);
- ``pretrain.json``: the configuration, the data fingerprint (image count, sha256 of ``manifest.parquet``,
  ``scenes.parquet`` and of the images' bytes), the target table with the training rows' mean/std, per-epoch
  training (and held-out) loss per encoder, held-out R^2 / accuracy per target next to the constant baseline,
  seconds and the files with their sha256.

A second call with the same configuration and data returns the recorded result without training (the demo
reruns cheaply); a different configuration or data set, or ``force=True``, removes the old files and trains
again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "LOCATION_COLUMNS",
    "PRETRAIN_FILE",
    "PRETRAIN_FORMAT",
    "SCENE_TARGETS",
    "PretrainConfig",
    "PretrainError",
    "PretrainResult",
    "SceneTarget",
    "augment_batch",
    "pretrain_encoders",
]

logger = logging.getLogger(__name__)

PRETRAIN_FILE = "pretrain.json"
"""The record written last in ``out_dir``; its presence with matching keys means the weights are reusable."""
PRETRAIN_FORMAT = 1
"""Version of the procedure; part of the reuse key, so a change here retrains old outputs."""
WEIGHT_FILES = {"clip": "clip.safetensors", "scene": "scene.safetensors"}
"""Encoder role -> backbone weight file in ``out_dir``."""

_SYNTH_HINT = "generate one with `geopak synth --n 3000 --out DIR --seed 101 --size 96`"


class PretrainError(ValueError):
    """Pretraining cannot run on this data or configuration; the message says what is wrong and what to do."""


# ------------------------------------------------------------------------------------------ targets
def _identity(x: np.ndarray) -> np.ndarray:
    return x


def _log_hectometres(x: np.ndarray) -> np.ndarray:
    return np.log1p(np.maximum(x, 0.0) / 100.0)


@dataclass(frozen=True)
class SceneTarget:
    """One thing the encoders learn to predict, read from a column of ``scenes.parquet``.

    Attributes:
        name: target name (in ``pretrain.json``).
        column: the ``scenes.parquet`` column it is computed from.
        kind: ``"continuous"`` (transformed, standardised with the training rows' mean/std, squared error) or
            ``"categorical"`` (cross-entropy over ``classes``).
        formula: how the column becomes the target, in words (continuous targets); recorded and part of the
            reuse key, so keep it in step with ``transform``.
        transform: the function applied to the column's values (continuous targets).
        classes: the class values in a fixed order (categorical targets); any other value is an error.
    """

    name: str
    column: str
    kind: Literal["continuous", "categorical"]
    formula: str = ""
    transform: Callable[[np.ndarray], np.ndarray] = _identity
    classes: tuple[Any, ...] = ()

    def describe(self) -> dict[str, Any]:
        """JSON-ready description (no function objects)."""
        d: dict[str, Any] = {"name": self.name, "column": self.column, "kind": self.kind}
        if self.kind == "continuous":
            d["formula"] = self.formula
        else:
            d["classes"] = [c if isinstance(c, str) else bool(c) for c in self.classes]
        return d


SCENE_TARGETS: tuple[SceneTarget, ...] = (
    # name                 column               kind           formula / classes
    SceneTarget("urban", "urban", "continuous", "urban", _identity),
    SceneTarget("elevation", "elevation_m", "continuous", "log1p(max(elevation_m, 0) / 100)", _log_hectometres),
    SceneTarget("roughness", "roughness", "continuous", "roughness", _identity),
    SceneTarget("vegetation", "vegetation", "continuous", "vegetation", _identity),
    SceneTarget("coast", "coast_km", "continuous", "log1p(coast_km)", np.log1p),
    SceneTarget("visibility", "visibility_km", "continuous", "log(visibility_km)", np.log),
    SceneTarget("settlement_weight", "settlement_weight", "continuous", "settlement_weight", _identity),
    SceneTarget("time_of_day", "time_of_day", "categorical", classes=("day", "golden", "dusk")),
    SceneTarget("season", "season", "categorical", classes=("winter", "spring", "summer", "autumn")),
    SceneTarget("weather", "weather", "categorical", classes=("clear", "fog", "dust", "rain")),
    SceneTarget("mode", "mode", "categorical", classes=("urban", "hotspot", "rural")),
    SceneTarget("beach_view", "beach_view", "categorical", classes=(False, True)),
)
"""The pretraining targets: scene attributes only. Edit this table to change what the encoders learn."""

LOCATION_COLUMNS: frozenset[str] = frozenset(
    {"lat", "lon", "latitude", "longitude", "province", "province_id", "anchor_settlement", "nearest_settlement"}
)
"""Columns that locate an image; pretraining must never read them (:func:`pretrain_encoders` checks)."""


def _check_targets(targets: Sequence[SceneTarget]) -> None:
    names = [t.name for t in targets]
    if len(set(names)) != len(names):
        raise PretrainError(f"scene targets have duplicate names: {names}")
    for t in targets:
        if t.column in LOCATION_COLUMNS:
            raise PretrainError(
                f"scene target {t.name!r} reads the location column {t.column!r}; pretraining on a location "
                "would train the task itself. Use scene attributes only."
            )
        if t.kind == "categorical" and len(t.classes) < 2:
            raise PretrainError(f"categorical scene target {t.name!r} needs at least 2 classes, has {t.classes}")
        if t.kind not in ("continuous", "categorical"):
            raise PretrainError(f"scene target {t.name!r}: kind must be continuous or categorical, got {t.kind!r}")


# ------------------------------------------------------------------------------------------- config
@dataclass
class PretrainConfig:
    """Settings of :func:`pretrain_encoders`.

    Attributes:
        clip_encoder: registered semantic encoder trained and written as ``clip.safetensors``.
        scene_encoder: registered scene encoder trained and written as ``scene.safetensors``.
        epochs: passes over the training rows, per encoder.
        batch_size: images per step.
        clip_lr: peak learning rate of the semantic encoder and its head (one-cycle schedule).
        scene_lr: peak learning rate of the scene encoder and its head.
        weight_decay: AdamW weight decay (not on biases, norms, position embeddings and tokens).
        warmup_fraction: share of the steps spent warming up to the peak rate (then cosine annealing).
        holdout_fraction: share of the images held out (seeded) for the reported per-target metrics.
        crop_scale: (min, max) area share of the random square crop (geography-safe augmentation: no flips,
            rotations or warps).
        jitter: brightness and contrast are scaled by factors drawn in [1 - jitter, 1 + jitter].
        seed: seeds the split, initial weights, batch order and augmentation.
        threads: torch CPU threads while pretraining (None = torch's default).
        bf16: bf16 autocast; None = :func:`geopak.inference.bf16_default` for the device.
        device: ``"cpu"``, ``"cuda"``, ...; None = CUDA when available, else CPU.
    """

    clip_encoder: str = "clip_vit_tiny"
    scene_encoder: str = "resnet_small"
    epochs: int = 8
    batch_size: int = 64
    clip_lr: float = 5e-4
    scene_lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_fraction: float = 0.1
    holdout_fraction: float = 0.1
    crop_scale: tuple[float, float] = (0.7, 1.0)
    jitter: float = 0.15
    seed: int = 0
    threads: int | None = None
    bf16: bool | None = None
    device: str | None = None

    def validate(self) -> PretrainConfig:
        """Check the values; returns self.

        Raises:
            PretrainError: a value out of range or an encoder name that is not registered.
        """
        from geopak.model.encoders import UnknownEncoderError, encoder_spec

        for role, name in (("clip", self.clip_encoder), ("scene", self.scene_encoder)):
            try:
                encoder_spec(name)
            except UnknownEncoderError as e:
                raise PretrainError(f"{role} encoder: {e}") from e
        checks = [
            (self.epochs >= 1, "epochs", self.epochs, ">= 1"),
            (self.batch_size >= 2, "batch_size", self.batch_size, ">= 2"),
            (self.clip_lr > 0 and self.scene_lr > 0, "clip_lr/scene_lr", (self.clip_lr, self.scene_lr), "> 0"),
            (self.weight_decay >= 0, "weight_decay", self.weight_decay, ">= 0"),
            (0 < self.warmup_fraction < 1, "warmup_fraction", self.warmup_fraction, "in (0, 1)"),
            (0 <= self.holdout_fraction < 0.5, "holdout_fraction", self.holdout_fraction, "in [0, 0.5)"),
            (0 < self.crop_scale[0] <= self.crop_scale[1] <= 1, "crop_scale", self.crop_scale,
             "(min, max) with 0 < min <= max <= 1"),
            (0 <= self.jitter < 1, "jitter", self.jitter, "in [0, 1)"),
            (self.threads is None or self.threads >= 1, "threads", self.threads, ">= 1 or None"),
        ]
        for ok, key, value, rule in checks:
            if not ok:
                raise PretrainError(f"pretraining config: {key} = {value!r} must be {rule}")
        return self

    def reuse_key(self) -> dict[str, Any]:
        """The settings that change the result (all but ``threads`` and ``device``), JSON-normalised."""
        d = asdict(self)
        d.pop("threads")
        d.pop("device")
        return json.loads(json.dumps(d))


@dataclass
class PretrainResult:
    """What :func:`pretrain_encoders` returns.

    Attributes:
        out_dir: the output folder.
        clip_weights: the semantic encoder's backbone weights (``clip.safetensors``).
        scene_weights: the scene encoder's backbone weights (``scene.safetensors``).
        summary: the content of ``pretrain.json``.
        reused: True when an earlier result was returned without training.
    """

    out_dir: Path
    clip_weights: Path
    scene_weights: Path
    summary: dict[str, Any]
    reused: bool = False

    def holdout(self, role: Literal["clip", "scene"]) -> dict[str, dict[str, Any]]:
        """Held-out metrics per target of one encoder (``r2`` or ``accuracy`` + ``majority_accuracy``)."""
        return dict(self.summary["encoders"][role]["holdout"])

    def describe_holdout(self, role: Literal["clip", "scene"]) -> str:
        """One line of held-out figures, e.g. ``urban R2 0.81, ..., weather 91% (majority 85%)``."""
        return _describe(self.holdout(role))


# --------------------------------------------------------------------------------------------- data
@dataclass
class _SceneData:
    ids: list[str]
    paths: list[Path]
    continuous: np.ndarray  # (N, C) transformed, not standardised
    categorical: np.ndarray  # (N, K) class indices
    continuous_targets: list[SceneTarget] = field(default_factory=list)
    categorical_targets: list[SceneTarget] = field(default_factory=list)


def _data_files(data_dir: Path) -> tuple[Path, Path]:
    if not data_dir.is_dir():
        raise PretrainError(f"pretraining data folder {data_dir} does not exist; {_SYNTH_HINT}")
    manifest, scenes = data_dir / "manifest.parquet", data_dir / "scenes.parquet"
    if not manifest.is_file():
        raise PretrainError(f"{manifest} not found: pretraining needs a GeoPak-Synth folder; {_SYNTH_HINT}")
    if not scenes.is_file():
        raise PretrainError(
            f"{scenes} not found: pretraining needs GeoPak-Synth's scenes.parquet; {_SYNTH_HINT}"
        )
    return manifest, scenes


def _read_scene_data(data_dir: Path, targets: Sequence[SceneTarget]) -> _SceneData:
    """Ids, image paths and target values; reads no location column (see :data:`LOCATION_COLUMNS`)."""
    manifest_path, scenes_path = _data_files(data_dir)
    import pyarrow.parquet as pq

    have = set(pq.read_schema(manifest_path).names)
    if not {"id", "path"} <= have:
        raise PretrainError(f"{manifest_path} has no {sorted({'id', 'path'} - have)} column(s); {_SYNTH_HINT}")
    manifest = pd.read_parquet(manifest_path, columns=["id", "path"])
    columns = sorted({t.column for t in targets})
    assert not LOCATION_COLUMNS & set(columns)  # _check_targets guarantees it
    have = set(pq.read_schema(scenes_path).names)
    missing_cols = [c for c in ["id", *columns] if c not in have]
    if missing_cols:
        raise PretrainError(
            f"{scenes_path} lacks the column(s) {missing_cols} that the scene targets need; it may come from an "
            f"older GeoPak-Synth: {_SYNTH_HINT}"
        )
    scenes = pd.read_parquet(scenes_path, columns=["id", *columns])
    ids = manifest["id"].astype(str)
    if ids.duplicated().any():
        raise PretrainError(f"{manifest_path}: duplicate id {ids[ids.duplicated()].iloc[0]!r}")
    sid = scenes["id"].astype(str)
    if sid.duplicated().any():
        raise PretrainError(f"{scenes_path}: duplicate id {sid[sid.duplicated()].iloc[0]!r}")
    scenes = scenes.set_axis(sid, axis=0)
    absent = ids[~ids.isin(scenes.index)]
    if len(absent):
        raise PretrainError(
            f"{len(absent)} of {len(ids)} ids of {manifest_path} are missing in {scenes_path} (first: "
            f"{', '.join(map(repr, absent.head(3)))}); the two files must come from the same `geopak synth` run"
        )
    scenes = scenes.loc[ids.to_list()]
    cont_t = [t for t in targets if t.kind == "continuous"]
    cat_t = [t for t in targets if t.kind == "categorical"]
    cont = np.zeros((len(ids), len(cont_t)), np.float64)
    for j, t in enumerate(cont_t):
        raw = pd.to_numeric(scenes[t.column], errors="coerce").to_numpy(np.float64)
        with np.errstate(all="ignore"):
            vals = np.asarray(t.transform(raw), np.float64)
        bad = ~np.isfinite(vals)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise PretrainError(
                f"{scenes_path}: id {ids.iloc[i]!r}, column {t.column!r} = {scenes[t.column].iloc[i]!r} gives "
                f"{t.formula} = {vals[i]} (not finite); {int(bad.sum())} such rows. Fix or drop those rows."
            )
        cont[:, j] = vals
    cat = np.zeros((len(ids), len(cat_t)), np.int64)
    for j, t in enumerate(cat_t):
        codes = scenes[t.column].map({c: k for k, c in enumerate(t.classes)})
        bad = codes.isna().to_numpy()
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise PretrainError(
                f"{scenes_path}: id {ids.iloc[i]!r}, column {t.column!r} = {scenes[t.column].iloc[i]!r} is not one "
                f"of the classes {list(t.classes)} of scene target {t.name!r} ({int(bad.sum())} such rows); "
                "add the class to SCENE_TARGETS in geopak.model.pretrain or drop those rows"
            )
        cat[:, j] = codes.to_numpy(np.int64)
    paths = [p if p.is_absolute() else data_dir / p for p in map(Path, manifest["path"].astype(str))]
    return _SceneData(ids.to_list(), paths, cont, cat, cont_t, cat_t)


def _load_images(paths: Sequence[Path], side: int, workers: int) -> torch.Tensor:
    """All images as one uint8 tensor (N, 3, side, side): shorter side resized, centre-cropped."""
    from geopak.data.images import ImageReadError, to_tensor

    def one(p: Path) -> torch.Tensor:
        try:
            return to_tensor(p, side).mul_(255.0).round_().to(torch.uint8)
        except ImageReadError as e:
            raise PretrainError(f"{e}; regenerate the pretraining set ({_SYNTH_HINT})") from e

    out = torch.empty((len(paths), 3, side, side), dtype=torch.uint8)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for i, img in enumerate(pool.map(one, paths)):
            out[i] = img
    return out


# -------------------------------------------------------------------------------------- augmentation
def augment_batch(
    images: torch.Tensor,
    generator: torch.Generator,
    crop_scale: tuple[float, float] = (0.7, 1.0),
    jitter: float = 0.15,
) -> torch.Tensor:
    """Geography-safe light augmentation of a batch, one draw per image.

    A random square crop covering ``crop_scale`` of the area, resized back to the full side (a zoom: no flip,
    rotation, shear or change of aspect ratio, so horizons, sun direction and layouts stay as photographed),
    then brightness and contrast scaled by factors in ``[1 - jitter, 1 + jitter]``.

    Args:
        images: (B, 3, H, W) float in [0, 1].
        generator: CPU generator the random parameters are drawn from (deterministic for a seed).
        crop_scale: (min, max) area share of the crop.
        jitter: brightness/contrast amplitude.

    Returns:
        (B, 3, H, W) float in [0, 1] on the images' device.
    """
    b = images.shape[0]
    r = torch.rand((b, 5), generator=generator, dtype=torch.float32).to(images.device)
    lo, hi = crop_scale
    side = (lo + (hi - lo) * r[:, 0]).sqrt()  # crop side as a share of the image side
    theta = torch.zeros((b, 2, 3), dtype=images.dtype, device=images.device)
    theta[:, 0, 0] = side
    theta[:, 1, 1] = side
    theta[:, 0, 2] = (1 - side) * (2 * r[:, 1] - 1)
    theta[:, 1, 2] = (1 - side) * (2 * r[:, 2] - 1)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    x = F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
    brightness = (1 + jitter * (2 * r[:, 3] - 1)).view(b, 1, 1, 1)
    contrast = (1 + jitter * (2 * r[:, 4] - 1)).view(b, 1, 1, 1)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (((x - mean) * contrast + mean) * brightness).clamp_(0.0, 1.0)


# ---------------------------------------------------------------------------------------- training
def _param_groups(enc: nn.Module, head: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: no decay on biases, norms (1-d parameters), position embeddings and tokens."""
    skip = set()
    backbone = getattr(enc, "backbone", None)
    if backbone is not None and hasattr(backbone, "no_weight_decay"):
        skip = {f"backbone.{n}" for n in backbone.no_weight_decay()}
    decay, no_decay = [], []
    for module, prefix in ((enc, ""), (head, "head.")):
        for n, p in module.named_parameters():
            (no_decay if p.ndim <= 1 or prefix + n in skip else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


class _Objective:
    """Standardised squared error over the continuous targets + mean cross-entropy over the categorical ones."""

    def __init__(self, data: _SceneData, train_idx: np.ndarray) -> None:
        cont = data.continuous[train_idx]
        self.mean = cont.mean(0) if len(cont) else np.zeros(data.continuous.shape[1])
        std = cont.std(0) if len(cont) else np.ones(data.continuous.shape[1])
        self.std = np.where(std > 1e-8, std, 1.0)
        self.n_cont = data.continuous.shape[1]
        self.sizes = [len(t.classes) for t in data.categorical_targets]
        self.n_out = self.n_cont + sum(self.sizes)
        self.continuous = torch.from_numpy(((data.continuous - self.mean) / self.std).astype(np.float32))
        self.categorical = torch.from_numpy(data.categorical)

    def loss(self, out: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        out = out.float()
        total = out.new_zeros(())
        if self.n_cont:
            total = total + F.mse_loss(out[:, : self.n_cont], self.continuous[idx].to(out.device))
        k = self.n_cont
        if self.sizes:
            cats = self.categorical[idx].to(out.device)
            ce = out.new_zeros(())
            for j, n in enumerate(self.sizes):
                ce = ce + F.cross_entropy(out[:, k : k + n], cats[:, j])
                k += n
            total = total + ce / len(self.sizes)
        return total


def _predict(
    enc: nn.Module, head: nn.Module, images: torch.Tensor, idx: np.ndarray, device: torch.device, bf16: bool
) -> torch.Tensor:
    outs = []
    enc.eval()
    with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        for s in range(0, len(idx), 256):
            x = images[torch.from_numpy(idx[s : s + 256])].to(device).float().div_(255.0)
            outs.append(head(enc(x)).float().cpu())
    enc.train()
    return torch.cat(outs) if outs else torch.zeros((0, head.out_features))


def _holdout_metrics(out: torch.Tensor, idx: np.ndarray, obj: _Objective, data: _SceneData,
                     train_idx: np.ndarray) -> dict[str, dict[str, Any]]:
    res: dict[str, dict[str, Any]] = {}
    y = obj.continuous[torch.from_numpy(idx)].numpy().astype(np.float64)
    pred = out[:, : obj.n_cont].numpy().astype(np.float64)
    for j, t in enumerate(data.continuous_targets):
        sst = float(((y[:, j] - y[:, j].mean()) ** 2).sum())
        sse = float(((y[:, j] - pred[:, j]) ** 2).sum())
        res[t.name] = {"r2": round(1.0 - sse / sst, 4) if sst > 1e-12 else None, "n": len(idx)}
    k = obj.n_cont
    for j, (t, n) in enumerate(zip(data.categorical_targets, obj.sizes)):
        truth = data.categorical[idx, j]
        guess = out[:, k : k + n].argmax(1).numpy()
        majority = int(np.bincount(data.categorical[train_idx, j], minlength=n).argmax())
        res[t.name] = {
            "accuracy": round(float((guess == truth).mean()), 4),
            "majority_accuracy": round(float((truth == majority).mean()), 4),
            "n": len(idx),
        }
        k += n
    return res


def _train_one(
    role: str, name: str, lr: float, images: torch.Tensor, data: _SceneData, obj: _Objective,
    train_idx: np.ndarray, hold_idx: np.ndarray, cfg: PretrainConfig, device: torch.device, bf16: bool,
    callback: Callable[[dict[str, Any]], None] | None,
) -> tuple[nn.Module, dict[str, Any]]:
    from geopak.model.encoders import create_encoder

    seed = cfg.seed * 2 + (0 if role == "clip" else 1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        enc = create_encoder(name)
        head = nn.Linear(enc.feature_dim, obj.n_out)
    convolutional = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in enc.modules())
    if convolutional:
        enc.set_channels_last(True)  # faster convolutions (oneDNN / cuDNN), bf16 above all
    enc.to(device).train()
    head.to(device).train()
    gen = torch.Generator().manual_seed(seed)
    steps = len(train_idx) // cfg.batch_size
    opt = torch.optim.AdamW(_param_groups(enc, head, cfg.weight_decay), lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps * cfg.epochs,
                                                pct_start=cfg.warmup_fraction)
    n_params = sum(p.numel() for p in enc.parameters())
    logger.info("pretraining %s encoder %s (%.2fM parameters): %d epochs x %d steps of %d images, lr %g, %s%s",
                role, name, n_params / 1e6, cfg.epochs, steps, cfg.batch_size, lr, device.type,
                ", bf16" if bf16 else "")
    if callback:
        callback({"event": "start", "role": role, "encoder": name, "epochs": cfg.epochs, "steps": steps})
    train_t = torch.from_numpy(train_idx)
    history = []
    t0 = time.perf_counter()
    for epoch in range(1, cfg.epochs + 1):
        te = time.perf_counter()
        perm = train_t[torch.randperm(len(train_t), generator=gen)]
        total = 0.0
        for s in range(steps):
            idx = perm[s * cfg.batch_size : (s + 1) * cfg.batch_size]
            x = images[idx].to(device, non_blocking=True).float().div_(255.0)
            x = augment_batch(x, gen, cfg.crop_scale, cfg.jitter)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                out = head(enc(x))
            loss = obj.loss(out, idx)
            if not torch.isfinite(loss):
                raise PretrainError(
                    f"{role} encoder {name}: the loss became {loss.item()} at epoch {epoch}, step {s + 1}; "
                    f"lower its learning rate ({lr:g})"
                )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach())
        rec: dict[str, Any] = {"epoch": epoch, "train_loss": round(total / steps, 5)}
        if len(hold_idx):
            out = _predict(enc, head, images, hold_idx, device, bf16)
            rec["holdout_loss"] = round(float(obj.loss(out, torch.from_numpy(hold_idx))), 5)
        rec["seconds"] = round(time.perf_counter() - te, 2)
        history.append(rec)
        logger.log(logging.DEBUG if callback else logging.INFO,
                   "  %s %s epoch %d/%d: train loss %.4f%s (%.1f s)", role, name, epoch, cfg.epochs,
                   rec["train_loss"], f", held-out loss {rec['holdout_loss']:.4f}" if "holdout_loss" in rec
                   else "", rec["seconds"])
        if callback:
            callback({"event": "epoch", "role": role, "encoder": name, "epochs": cfg.epochs, **rec})
    seconds = time.perf_counter() - t0
    holdout: dict[str, dict[str, Any]] = {}
    if len(hold_idx):
        out = _predict(enc, head, images, hold_idx, device, bf16)
        holdout = _holdout_metrics(out, hold_idx, obj, data, train_idx)
    record = {
        "encoder": name,
        "parameters": n_params,
        "lr": lr,
        "channels_last": convolutional,
        "steps_per_epoch": steps,
        "epochs": history,
        "holdout": holdout,
        "seconds": round(seconds, 2),
        "images_per_second": round(steps * cfg.batch_size * cfg.epochs / max(seconds, 1e-9), 1),
    }
    return enc.cpu(), record


def _save_backbone(enc: nn.Module, path: Path) -> None:
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous() for k, v in enc.backbone.state_dict().items()}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    # one metadata key only: safetensors writes a metadata map in no fixed order, and same seed = same bytes
    save_file(state, str(tmp), metadata={"format": "pt"})
    tmp.replace(path)


def _reusable(out_dir: Path, key: dict[str, Any]) -> dict[str, Any] | None:
    from geopak.model.weights import sha256_file

    path = out_dir / PRETRAIN_FILE
    if not path.is_file():
        return None
    try:
        summary = json.loads(path.read_text())
    except (OSError, ValueError):
        logger.warning("ignoring unreadable %s", path)
        return None
    if summary.get("key") != key:
        logger.info("%s was made with another configuration or data set; pretraining again", path)
        return None
    for role, rec in (summary.get("files") or {}).items():
        f = out_dir / rec.get("path", "")
        if not f.is_file() or sha256_file(f) != rec.get("sha256"):
            logger.info("%s: %s weights %s are missing or changed; pretraining again", path, role, f)
            return None
    if set(summary.get("files") or {}) != set(WEIGHT_FILES):
        return None
    return summary


def _fingerprint(data_dir: Path) -> dict[str, Any]:
    from geopak.model.weights import sha256_file

    manifest, scenes = _data_files(data_dir)
    paths = pd.read_parquet(manifest, columns=["path"])["path"].astype(str)
    images = hashlib.sha256()
    for p in paths:  # the same manifest can list images rendered at another size
        f = Path(p) if Path(p).is_absolute() else data_dir / p
        if not f.is_file():
            raise PretrainError(f"{manifest}: image {f} does not exist; regenerate the set ({_SYNTH_HINT})")
        images.update(hashlib.sha256(f.read_bytes()).digest())
    return {
        "n": len(paths),
        "manifest_sha256": sha256_file(manifest),
        "scenes_sha256": sha256_file(scenes),
        "images_sha256": images.hexdigest(),
    }


# ------------------------------------------------------------------------------------------ entry point
def pretrain_encoders(
    data_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    config: PretrainConfig | None = None,
    *,
    force: bool = False,
    callback: Callable[[dict[str, Any]], None] | None = None,
) -> PretrainResult:
    """Pretrain both encoders on the scene attributes of a GeoPak-Synth set and write their backbones.

    Every image is loaded once into a uint8 tensor at the larger of the two encoders' input sizes (each encoder
    resizes to its own). Each encoder trains with its own linear head on all :data:`SCENE_TARGETS`, with the
    light augmentation of :func:`augment_batch`, AdamW and a one-cycle schedule; the result is deterministic for
    a seed on a given machine and device.

    Args:
        data_dir: a GeoPak-Synth folder (``manifest.parquet``, ``scenes.parquet``, images), generated with a
            different seed than the data the model is later trained and evaluated on.
        out_dir: where ``clip.safetensors``, ``scene.safetensors`` and ``pretrain.json`` go (created).
        config: settings (default :class:`PretrainConfig`).
        force: train even when ``out_dir`` holds a result of the same configuration and data.
        callback: called with event dicts: ``{"event": "loaded", "n", "n_train", "n_holdout", "side"}``, then
            per encoder ``{"event": "start", "role", "encoder", "epochs", "steps"}`` and after every epoch
            ``{"event": "epoch", "role", "encoder", "epoch", "epochs", "train_loss", "holdout_loss", "seconds"}``.

    Returns:
        A :class:`PretrainResult` (``reused=True`` when nothing had to be trained).

    Raises:
        PretrainError: no ``scenes.parquet`` (or manifest) in ``data_dir``, ids of the manifest missing in the
            scenes, a target value that is not finite or not a known class, fewer training images than two
            batches, an unknown encoder or a setting out of range.
    """
    from geopak.model.encoders import encoder_spec

    cfg = (config or PretrainConfig()).validate()
    _check_targets(SCENE_TARGETS)
    data_dir, out = Path(data_dir).expanduser().resolve(), Path(out_dir).expanduser().resolve()
    key = {
        "format": PRETRAIN_FORMAT,
        "config": cfg.reuse_key(),
        "targets": [t.describe() for t in SCENE_TARGETS],
        "data": _fingerprint(data_dir),
    }
    if not force:
        summary = _reusable(out, key)
        if summary is not None:
            logger.info("reusing the pretrained encoders in %s (same configuration and data)", out)
            return PretrainResult(out, out / WEIGHT_FILES["clip"], out / WEIGHT_FILES["scene"], summary, True)
    out.mkdir(parents=True, exist_ok=True)
    for f in (PRETRAIN_FILE, *WEIGHT_FILES.values()):  # the record goes first: no stale record survives a crash
        (out / f).unlink(missing_ok=True)

    t_all = time.perf_counter()
    device = torch.device(cfg.device) if cfg.device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if cfg.bf16 is None:
        from geopak.inference import bf16_default

        bf16 = bf16_default(device)
    else:
        bf16 = bool(cfg.bf16)
    old_threads = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        data = _read_scene_data(data_dir, SCENE_TARGETS)
        n = len(data.ids)
        rng = np.random.default_rng(cfg.seed)
        n_hold = 0 if cfg.holdout_fraction == 0 else max(1, round(n * cfg.holdout_fraction))
        perm = rng.permutation(n)
        hold_idx, train_idx = np.sort(perm[:n_hold]), np.sort(perm[n_hold:])
        if len(train_idx) < 2 * cfg.batch_size:
            raise PretrainError(
                f"too few images to pretrain: {n} in {data_dir}, {len(train_idx)} after holding out "
                f"{n_hold}; at least 2 batches of {cfg.batch_size} ({2 * cfg.batch_size}) are needed. Generate "
                f"more (`geopak synth --n 3000 ...`) or lower batch_size"
            )
        specs = {"clip": encoder_spec(cfg.clip_encoder), "scene": encoder_spec(cfg.scene_encoder)}
        side = max(s.input_size for s in specs.values())
        tl = time.perf_counter()
        images = _load_images(data.paths, side, workers=min(8, os.cpu_count() or 1))
        if device.type != "cpu":
            images = images.to(device)
        load_s = time.perf_counter() - tl
        logger.info("loaded %d images at %d px in %.1f s (%d for training, %d held out)", n, side, load_s,
                    len(train_idx), n_hold)
        if callback:
            callback({"event": "loaded", "n": n, "n_train": len(train_idx), "n_holdout": n_hold, "side": side})
        obj = _Objective(data, train_idx)
        encoders: dict[str, Any] = {}
        files: dict[str, Any] = {}
        from geopak.model.weights import sha256_file

        for role, name, lr in (("clip", cfg.clip_encoder, cfg.clip_lr), ("scene", cfg.scene_encoder, cfg.scene_lr)):
            enc, rec = _train_one(role, name, lr, images, data, obj, train_idx, hold_idx, cfg, device, bf16,
                                  callback)
            path = out / WEIGHT_FILES[role]
            _save_backbone(enc, path)
            encoders[role] = rec
            files[role] = {"path": WEIGHT_FILES[role], "encoder": name, "sha256": sha256_file(path),
                           "bytes": path.stat().st_size}
            del enc
            if rec["holdout"]:
                logger.info("  %s %s held out: %s", role, name, _describe(rec["holdout"]))
    finally:
        torch.set_num_threads(old_threads)

    targets = []
    for j, t in enumerate(data.continuous_targets):
        targets.append({**t.describe(), "train_mean": round(float(obj.mean[j]), 6),
                        "train_std": round(float(obj.std[j]), 6)})
    targets += [t.describe() for t in data.categorical_targets]
    summary = {
        "key": key,
        "config": json.loads(json.dumps(asdict(cfg))),
        "resolved": {"device": str(device), "bf16": bf16, "threads": torch.get_num_threads() if not cfg.threads
                     else cfg.threads, "image_side": side},
        "data": {**key["data"], "dir": str(data_dir), "n_train": len(train_idx), "n_holdout": n_hold,
                 "load_seconds": round(load_s, 2)},
        "targets": targets,
        "encoders": encoders,
        "files": files,
        "seconds": round(time.perf_counter() - t_all, 2),
        "note": "Encoders trained on scene attributes of a GeoPak-Synth set; no location column was read.",
    }
    tmp = out / f".{PRETRAIN_FILE}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(summary, indent=1, allow_nan=False))
    tmp.replace(out / PRETRAIN_FILE)
    logger.info("pretrained encoders written to %s in %.1f s", out, summary["seconds"])
    return PretrainResult(out, out / WEIGHT_FILES["clip"], out / WEIGHT_FILES["scene"], summary, False)


def _describe(holdout: dict[str, dict[str, Any]]) -> str:
    parts = []
    for name, m in holdout.items():
        if "r2" in m:
            parts.append(f"{name} R2 " + ("-" if m["r2"] is None else f"{m['r2']:.2f}"))
        else:
            parts.append(f"{name} {100 * m['accuracy']:.0f}% (majority {100 * m['majority_accuracy']:.0f}%)")
    return ", ".join(parts)
