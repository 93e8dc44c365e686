"""Training orchestration: phases in sequence, each from the previous phase's checkpoint.

:func:`train` reads the manifest and the cell table, splits train/val, and for each phase builds the model
(fresh for the first phase, else from ``RUN/<previous phase>/``), sets the trainable parts, trains it with
Lightning (from the feature cache when both encoders are frozen), picks the best epoch by the phase's monitor
(end-to-end validation) and exports a GEOPAK checkpoint directory ``RUN/<phase>/`` (``model.safetensors``,
``config.json``, the cell table, ``phase_summary.json``), self-contained, so it can be copied or served as
is. Lightning's own files live in ``RUN/lightning/<phase>/`` (``checkpoints/last.ckpt`` every epoch and the
best one; ``logs/metrics.csv``; ``tensorboard/``).

Resuming: run the same command again. A phase whose export is complete is skipped; a phase with a
``last.ckpt`` continues from it; the config must be the one the run started with (``RUN/config.json``).

``RUN/summary.json`` records, per phase, the exported model's validation metrics, the monitor warnings, the
epochs/steps and wall times, and the baselines (the training set's geometric median as a constant
prediction; the majority province) to compare against.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from geopak import geo
from geopak.geocells import CellTable
from geopak.jsonable import to_jsonable
from geopak.provinces import NUM_PROVINCES, PROVINCE_NAMES, normalize_province
from geopak.train.config import ConfigError, PhaseConfig, TrainConfig, config_to_dict, load_config

__all__ = ["TrainError", "baselines", "load_training_data", "train"]

logger = logging.getLogger(__name__)

SUMMARY_FILE = "summary.json"
PHASE_SUMMARY_FILE = "phase_summary.json"


class TrainError(RuntimeError):
    """Training cannot start or continue (bad inputs, a run folder from another config, a missing phase)."""


# ------------------------------------------------------------------------------------------ inputs
def _read_manifest(manifest: pd.DataFrame | str | Path) -> pd.DataFrame:
    """The manifest as a DataFrame; relative image paths resolved against the manifest file's folder."""
    if isinstance(manifest, pd.DataFrame):
        return manifest.copy()
    path = Path(manifest)
    if not path.exists():
        raise TrainError(f"manifest {path} does not exist")
    from geopak.data.manifest import read_manifest

    return read_manifest(path)


def _split_rows(df: pd.DataFrame, val_fraction: float, seed: int, source: str) -> pd.Series:
    """Train/val labels: the manifest's ``split`` column, or a seeded stratified carve of ``val_fraction``."""
    split = (
        df["split"].astype(str).str.strip().str.lower() if "split" in df.columns else pd.Series("train", index=df.index)
    )
    bad = ~split.isin(["train", "val", "test"])
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise TrainError(f"{source}: row {i} (id {df['id'].iloc[i]!r}) has split {split.iloc[i]!r}; use train/val/test")
    if (split == "val").any():
        return split
    rng = np.random.default_rng([seed, 7])
    split = split.copy()
    prov = df["province_id"].to_numpy()
    for p in range(NUM_PROVINCES):
        rows = np.flatnonzero((prov == p) & (split.to_numpy() == "train"))
        if len(rows) < 2:
            continue
        k = max(1, round(val_fraction * len(rows)))
        split.iloc[rng.choice(rows, size=k, replace=False)] = "val"
    logger.info("no validation rows in the manifest: carved %d (%.0f%%, seeded, per province)",
                int((split == "val").sum()), 100 * val_fraction)
    return split


def load_training_data(
    manifest: pd.DataFrame | str | Path, cells: CellTable | str | Path, val_fraction: float = 0.1, seed: int = 0
) -> tuple[pd.DataFrame, CellTable]:
    """The manifest rows with ``province_id``, ``cell_id`` and ``split`` (train/val only), and the cell table.

    Cells come from ``cells`` (a :class:`CellTable` or a folder from ``geopak cells build``); the cell of each
    row is taken from the folder's ``assignments.parquet`` (columns ``id``, ``cell_id``) when it covers the
    rows, else assigned with :meth:`CellTable.assign` (nearest cell of the row's province).

    Raises:
        TrainError: missing columns, bad values (naming the row), an empty split.
    """
    source = str(manifest) if not isinstance(manifest, pd.DataFrame) else "manifest"
    df = _read_manifest(manifest)
    missing = [c for c in ("id", "path", "lat", "lon", "province") if c not in df.columns]
    if missing:
        raise TrainError(f"{source}: missing columns {missing}; a training manifest needs id, path, lat, lon, province")
    df = df.reset_index(drop=True)
    df["id"] = df["id"].astype(str)
    dup = df["id"].duplicated()
    if dup.any():
        raise TrainError(f"{source}: duplicate id {df['id'][dup].iloc[0]!r}; ids must be unique")
    for col in ("lat", "lon"):
        v = pd.to_numeric(df[col], errors="coerce").to_numpy(float)
        bad = ~np.isfinite(v)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise TrainError(f"{source}: row {i} (id {df['id'][i]!r}) has {col}={df[col][i]!r}; expected a number")
        df[col] = v
    try:
        df["province_id"] = [normalize_province(str(p)).id for p in df["province"]]
    except ValueError as e:
        raise TrainError(f"{source}: {e}") from e
    df["province"] = [PROVINCE_NAMES[p] for p in df["province_id"]]

    table = cells if isinstance(cells, CellTable) else CellTable.load(cells)
    cell_id = None
    if not isinstance(cells, CellTable):
        apath = Path(cells) / "assignments.parquet" if Path(cells).is_dir() else None
        if apath is not None and apath.exists():
            a = pd.read_parquet(apath)
            a["id"] = a["id"].astype(str)
            m = df[["id"]].merge(a[["id", "cell_id"]], on="id", how="left")
            if m["cell_id"].notna().all():
                cell_id = m["cell_id"].to_numpy(np.int64)
            else:
                logger.info("%s does not cover every manifest row: assigning cells by position", apath)
    if cell_id is None:
        cell_id = table.assign(df["lat"].to_numpy(), df["lon"].to_numpy(), df["province_id"].to_numpy())
    bad = (cell_id >= table.n_cells) | ((cell_id >= 0) & (table.province_ids[np.clip(cell_id, 0, None)] != df["province_id"].to_numpy()))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise TrainError(
            f"row {i} (id {df['id'][i]!r}): cell {cell_id[i]} does not belong to the cell table's "
            f"{df['province'][i]} cells; rebuild the assignments with the same cell table"
        )
    df["cell_id"] = cell_id
    n_none = int((cell_id < 0).sum())
    if n_none:
        logger.warning("%d rows lie in provinces without cells: they train the province and aux heads only", n_none)
    df["split"] = _split_rows(df, val_fraction, seed, source)
    df = df[df["split"].isin(["train", "val"])].reset_index(drop=True)
    for s in ("train", "val"):
        if not (df["split"] == s).any():
            raise TrainError(f"{source}: no {s} rows; give a split column with train and val rows (or only train)")
    return df, table


def _split_data(df: pd.DataFrame, split: str) -> Any:
    from geopak.train.module import SplitData

    d = df[df["split"] == split]
    return SplitData(
        ids=d["id"].to_numpy(str),
        paths=d["path"].astype(str).to_numpy(),
        province=d["province_id"].to_numpy(np.int64),
        cell_id=d["cell_id"].to_numpy(np.int64),
        lat=d["lat"].to_numpy(np.float64),
        lon=d["lon"].to_numpy(np.float64),
    )


def baselines(df: pd.DataFrame) -> dict[str, Any]:
    """Validation figures of two trivial predictors: the training set's geometric median (a constant
    position: the *prior*) and the majority training province."""
    from geopak.evaluate import compute_metrics

    tr, va = df[df["split"] == "train"], df[df["split"] == "val"]
    mlat, mlon = geo.geometric_median(tr["lat"].to_numpy(), tr["lon"].to_numpy())
    n = len(va)
    majority = int(np.bincount(tr["province_id"], minlength=NUM_PROVINCES).argmax())
    m = compute_metrics(
        np.full(n, float(mlat)), np.full(n, float(mlon)), va["lat"], va["lon"], va["province_id"],
        np.full(n, majority),
    )
    return {
        "prior_lat": float(mlat),
        "prior_lon": float(mlon),
        "prior_median_km": m["median_km"],
        "prior_macro_median_km": m["macro_median_km"],
        "majority_province": PROVINCE_NAMES[majority],
        "majority_province_accuracy": m["province_accuracy"],
    }


# ------------------------------------------------------------------------------------------ helpers
def _rank() -> int:
    for k in ("RANK", "SLURM_PROCID", "LOCAL_RANK"):
        if k in os.environ:
            try:
                return int(os.environ[k])
            except ValueError:
                pass
    return 0


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(to_jsonable(obj), indent=1, allow_nan=False))
    tmp.replace(path)


def _phase_done(d: Path) -> bool:
    return (d / PHASE_SUMMARY_FILE).exists() and (d / "model.safetensors").exists() and (d / "config.json").exists()


def _build_model(cfg: TrainConfig, cells: CellTable) -> Any:
    from geopak.model.encoders import create_encoder
    from geopak.model.geopak import GeopakModel

    def enc(name: str, w: str) -> Any:
        if not w:
            return create_encoder(name)
        if w == "pretrained":
            return create_encoder(name, "pretrained", allow_download=cfg.weights.allow_download)
        return create_encoder(name, w)

    return GeopakModel(
        cfg.model, cells,
        clip_encoder=enc(cfg.model.clip_encoder, cfg.weights.clip),
        scene_encoder=enc(cfg.model.scene_encoder, cfg.weights.scene),
    )


def _recalibrate_random_encoders(
    cfg: TrainConfig, model: Any, image_dataset: Any, train_rows: Any, n_images: int = 512
) -> None:
    """Give randomly initialised encoders batch-norm statistics of the training images (see
    :meth:`geopak.model.encoders.Encoder.recalibrate_batchnorm`); pretrained encoders keep theirs."""
    import torch

    random = [enc for enc, w in ((model.clip, cfg.weights.clip), (model.scene, cfg.weights.scene))
              if not w and any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in enc.modules())]
    if not random:
        return
    ds = image_dataset(train_rows, False, None)
    rng = np.random.default_rng(cfg.trainer.seed)
    idx = np.sort(rng.choice(len(ds), size=min(n_images, len(ds)), replace=False))
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(ds, idx.tolist()), batch_size=64)
    images = [b["image"] for b in loader]
    for enc in random:
        enc.recalibrate_batchnorm(images)


def batch_quotas(cfg: TrainConfig, counts: np.ndarray) -> np.ndarray:
    """Per-province images per batch of the balanced sampler (``data.quotas`` or the design's 16/8/...), scaled
    to ``data.batch_size`` over the provinces with training rows."""
    from geopak.data.samplers import DEFAULT_QUOTAS, scale_quotas

    base = list(DEFAULT_QUOTAS)
    if cfg.data.quotas:
        base = [0] * NUM_PROVINCES
        for name, v in cfg.data.quotas.items():
            base[normalize_province(name).id] = int(v)
    return scale_quotas(base, cfg.data.batch_size, np.asarray(counts) > 0).astype(np.float64)


def province_weights(cfg: TrainConfig, counts: np.ndarray) -> np.ndarray:
    """Province cross-entropy weights for training with the balanced sampler (``loss.province_weighting``).

    ``effective``: the effective-number weights ``w_p`` of the training counts, as in the seed.
    ``effective_sampled`` (default): ``w_p x n_p / q_p``, where ``q_p`` is the province's per-batch quota.
    The balanced sampler already shows province p ``q_p / n_p`` times more often than plain shuffling
    would; this factor undoes that in the loss, so the expected gradient of an epoch is the
    effective-number-weighted loss over the dataset, as intended, instead of applying the correction twice
    (on a small dataset, where effective numbers approach inverse frequency, the double correction makes
    the model never predict the majority province). ``none``: uniform.
    Weights are normalised to mean 1 over the provinces with training rows.
    """
    from geopak.losses import province_class_weights

    n = np.asarray(counts, dtype=np.float64)
    present = n > 0
    mode = cfg.loss.province_weighting
    if mode == "none":
        return present.astype(np.float32)
    w = province_class_weights(n, cfg.loss.beta).numpy().astype(np.float64)
    if mode == "effective_sampled":
        q = batch_quotas(cfg, n)
        ok = present & (q > 0)
        w = np.where(ok, w * n / np.where(ok, q, 1.0), 0.0)
        w = np.where(ok, w / w[ok].mean(), 0.0)
    return w.astype(np.float32)


def province_prior_shift(cfg: TrainConfig, counts: np.ndarray) -> np.ndarray:
    """``(7,)`` logit shift from the prior the province head trains under (balanced batches x class weights) to
    the training data's own province mix; see :func:`geopak.inference.province_logit_adjustment`. Recorded in
    every export (``extra.calibration.province_prior_shift``) for ``GeopakPredictor(prior="data")``."""
    from geopak.inference import province_logit_adjustment

    return province_logit_adjustment(counts, batch_quotas(cfg, counts), province_weights(cfg, counts))


def _set_trainable(model: Any, phase: PhaseConfig, weights: Any) -> dict[str, int]:
    """Unfreeze the phase's encoder fractions; freeze every other group without a learning rate > 0, and
    the heads no loss term of the phase reaches (DDP requires every trainable parameter to get a gradient).

    Returns the number of trainable parameters per group.
    """
    from geopak.train.config import PARAM_GROUPS

    model.unfreeze_top(phase.clip_fraction, phase.scene_fraction)
    unused = {
        "province_head": weights.province == 0,
        "cell_heads": weights.cell == 0,
        "offset_head": weights.offset == 0,
        "cell_embedding": weights.offset == 0,
        "province_embedding": weights.offset == 0,
        "aux_head": weights.aux == 0,
    }
    for name, off in unused.items():
        if off:
            for p in getattr(model, name).parameters():
                p.requires_grad_(False)
    counts = {}
    for g in model.param_groups({name: 1.0 for name in PARAM_GROUPS}):
        if phase.lr.get(g["name"], 0.0) <= 0:
            for p in g["params"]:
                p.requires_grad_(False)
        counts[g["name"]] = sum(p.numel() for p in g["params"] if p.requires_grad)
    logger.info("%s trainable parameters per group: %s", phase.name, counts)
    return counts


def _cache_fingerprints(cfg: TrainConfig, model: Any, train: Any, val: Any) -> tuple[str, dict[str, dict[str, Any]]]:
    """Fingerprints of the train/val caches and the folder name they share."""
    import hashlib

    from geopak.train.cache import CACHE_FORMAT, encoder_fingerprint, ids_hash

    enc = encoder_fingerprint(model)
    common = {
        "format": CACHE_FORMAT,
        "encoders": enc,
        "image_size": cfg.data.image_size,
        "augment": cfg.data.augment,
        "seed": cfg.trainer.seed,
        "dtype": cfg.data.cache_dtype,
        "bf16": cfg.trainer.precision.startswith("bf16"),  # bf16 autocast encodes slightly differently
    }
    fps = {
        "train": {**common, "views": cfg.data.cache_views, "ids": ids_hash(list(train.ids))},
        "val": {**common, "views": 1, "ids": ids_hash(list(val.ids))},
    }
    key = hashlib.sha256(json.dumps(fps, sort_keys=True).encode()).hexdigest()[:16]
    return f"{enc['clip']['name']}+{enc['scene']['name']}-{cfg.data.image_size}px-{key}", fps


def make_image_dataset(cfg: TrainConfig) -> Any:
    """``(rows, train, view) -> Dataset`` of images: eval transform, or seeded training augmentation.

    ``view`` (the feature cache's augmented view number) fixes the augmentation's random draws per
    (seed, view, row), so a rebuilt cache holds the same views; ``None`` gives fresh draws per epoch.
    """
    from geopak.data.datasets import GeoImageDataset

    def factory(rows: Any, train: bool, view: int | None) -> Any:
        return GeoImageDataset(
            paths=rows.paths,
            targets=rows.targets(),
            image_size=cfg.data.image_size,
            augment=cfg.data.augment if train else None,
            view_seed=None if view is None else (cfg.trainer.seed, int(view)),
            ids=list(rows.ids),
        )

    return factory


# ------------------------------------------------------------------------------------------ train
def train(
    config: TrainConfig | str | Path,
    manifest: pd.DataFrame | str | Path,
    cells: CellTable | str | Path,
    out_dir: str | Path,
    phases: list[str] | None = None,
    *,
    devices: int | None = None,
    num_nodes: int | None = None,
    accelerator: str | None = None,
    precision: str | None = None,
    strategy: str | None = None,
    max_steps: int | None = None,
    progress_bar: bool | None = None,
    callbacks: list[Any] | None = None,
) -> Path:
    """Train the configured phases in sequence; returns the final phase's checkpoint directory.

    Args:
        config: a :class:`TrainConfig`, a named config (``tiny``, ``full``) or a TOML path.
        manifest: manifest DataFrame or file (columns id, path, lat, lon, province; optional split).
        cells: a :class:`CellTable` or the folder written by ``geopak cells build``.
        out_dir: the run folder RUN (created; re-running continues where it stopped).
        phases: names of the phases to run (default: every enabled phase); a phase that is not the first
            starts from the previous configured phase's export in RUN, which must exist.
        devices, num_nodes, accelerator, precision, strategy: override the config's trainer options.
        max_steps: cap every phase at this many optimiser steps (quick runs).
        progress_bar: override the config's progress-bar setting.
        callbacks: extra Lightning callbacks added to every phase's trainer.

    Raises:
        TrainError / ConfigError: unusable inputs or a run folder that belongs to another config.
    """
    import lightning.pytorch as pl
    import torch

    from geopak.losses import GeopakLoss, LossWeights
    from geopak.model.geopak import GeopakModel
    from geopak.train.module import GeopakDataModule, GeopakTask, rare_provinces

    cfg = config if isinstance(config, TrainConfig) else load_config(config)
    if devices is None and num_nodes is None:
        devices, num_nodes = _external_layout()
    tovr: dict[str, Any] = {}
    for k, v in (("devices", devices), ("num_nodes", num_nodes), ("accelerator", accelerator),
                 ("precision", precision), ("strategy", strategy), ("progress_bar", progress_bar)):
        if v is not None:
            tovr[f"trainer.{k}"] = v
    if max_steps is not None:
        tovr["phases.*.max_steps"] = int(max_steps)
    if tovr:
        cfg = cfg.with_overrides(tovr)
    cfg.validate()

    _set_threads(cfg)
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    rank0 = _rank() == 0
    _check_run_config(cfg, out, rank0)

    # which phases
    enabled = [p for p in cfg.phases if p.enabled]
    if phases:
        names = [p.name for p in cfg.phases]
        unknown = [n for n in phases if n not in names]
        if unknown:
            raise ConfigError(f"unknown phase {unknown[0]!r}; config {cfg.name!r} has {names}")
        todo = [p for p in cfg.phases if p.name in phases]
    else:
        todo = enabled
    if not todo:
        raise ConfigError(f"config {cfg.name!r} has no enabled phase to run")

    df, table = load_training_data(manifest, cells, cfg.data.val_fraction, cfg.trainer.seed)
    train_rows, val_rows = _split_data(df, "train"), _split_data(df, "val")
    logger.info("training rows %d, validation rows %d, cells %d", len(train_rows), len(val_rows), table.n_cells)
    base = baselines(df)
    counts = np.bincount(train_rows.province, minlength=NUM_PROVINCES)
    prior_shift = province_prior_shift(cfg, counts)
    rare = rare_provinces(train_rows.province, cfg.monitor.rare_share)
    summary_path = out / SUMMARY_FILE
    summary: dict[str, Any] = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    summary.update(
        {
            "config": cfg.name,
            "run": str(out),
            "n_train": len(train_rows),
            "n_val": len(val_rows),
            "n_cells": table.n_cells,
            "cell_table_hash": table.content_hash,
            "train_counts": {PROVINCE_NAMES[p]: int(counts[p]) for p in range(NUM_PROVINCES)},
            "rare_provinces": [PROVINCE_NAMES[p] for p in rare],
            "baselines": base,
        }
    )
    summary.setdefault("phases", {})
    image_dataset = make_image_dataset(cfg)
    cache_base = Path(cfg.data.cache_dir).expanduser().resolve() if cfg.data.cache_dir else out / "cache"

    final_dir: Path | None = None
    for phase in todo:
        pdir = out / phase.name
        if _phase_done(pdir):
            logger.info("%s: already complete in %s; skipping (delete the folder to retrain it)", phase.name, pdir)
            final_dir = pdir
            continue
        t0 = time.perf_counter()
        prev = _previous_phase(cfg, phase)
        if prev is None:
            pl.seed_everything(cfg.trainer.seed, workers=True, verbose=False)
            model = _build_model(cfg, table)
            _recalibrate_random_encoders(cfg, model, image_dataset, train_rows)
        else:
            pprev = out / prev.name
            if not _phase_done(pprev):
                raise TrainError(
                    f"{phase.name} starts from {prev.name}'s checkpoint, but {pprev} is not complete; "
                    f"run {prev.name} first (`--phase {prev.name}`, or no --phase to run all)"
                )
            model = GeopakModel.from_checkpoint(pprev, cells=table)
            pl.seed_everything(cfg.trainer.seed, workers=True, verbose=False)
        weights = (
            LossWeights.province_only(province=cfg.loss.province, aux=cfg.loss.aux)
            if phase.objective == "province"
            else LossWeights(cfg.loss.province, cfg.loss.cell, cfg.loss.offset, cfg.loss.aux)
        )
        _set_trainable(model, phase, weights)
        loss_fn = GeopakLoss(
            table, weights=weights, province_weights=province_weights(cfg, counts),
            smoothing=cfg.loss.label_smoothing,
        )
        cache_root, fps = (None, None)
        if phase.cached:
            name, fps = _cache_fingerprints(cfg, model, train_rows, val_rows)
            cache_root = cache_base / name
        dm = GeopakDataModule(cfg, phase, train_rows, val_rows, model, cache_root, fps, image_dataset)

        trainer = _make_trainer(cfg, phase, _lightning_dir(out, phase), callbacks or [])
        world = trainer.world_size
        steps_per_epoch = dm.steps_per_epoch(world)
        total = phase.epochs * steps_per_epoch
        if phase.max_steps > 0:
            total = min(total, phase.max_steps)
        task = GeopakTask(
            model, loss_fn, phase, total_steps=total, seed=cfg.trainer.seed, validation=cfg.validation,
            monitor=cfg.monitor, rare_provinces=rare, province_prior_shift=prior_shift,
        )
        last = _lightning_dir(out, phase) / "checkpoints" / "last.ckpt"
        ckpt_path = str(last) if last.exists() else None
        if ckpt_path:
            logger.info("%s: resuming from %s", phase.name, last)
        trainer.fit(task, datamodule=dm, ckpt_path=ckpt_path)
        fit_s = time.perf_counter() - t0

        ckpt_cb = trainer.checkpoint_callback
        best = getattr(ckpt_cb, "best_model_path", "") if ckpt_cb is not None else ""
        best_score = getattr(ckpt_cb, "best_model_score", None) if ckpt_cb is not None else None
        if best and Path(best).exists():
            state = torch.load(best, map_location="cpu", weights_only=True)
            task.load_state_dict(state["state_dict"])
            best_epoch = int(state.get("epoch", -1))
        else:
            best, best_epoch = "", int(trainer.current_epoch) - 1
        # The exported weights' own validation (the figures the summary reports).
        warnings_before = list(task.state.warnings)
        history = list(task.state.history)
        trainer.validate(task, datamodule=dm, verbose=False)
        metrics = task.last_val_metrics
        task.state.warnings = warnings_before
        kept_previous = False
        if prev is not None and cfg.trainer.keep_better_phase:
            start = json.loads((out / prev.name / PHASE_SUMMARY_FILE).read_text()).get("val")
            key = phase.monitor.split("/", 1)[-1]
            now, then = _get(metrics, key), _get(start, key)
            worse = now > then if phase.monitor_mode == "min" else now < then
            if math.isfinite(now) and math.isfinite(then) and worse:
                model.load_state_dict(GeopakModel.from_checkpoint(out / prev.name, cells=table).state_dict())
                metrics, kept_previous = start, True
                msg = (f"{phase.name} did not improve validation {key} ({now:.4g} vs {then:.4g} at its start); "
                       f"its export keeps {prev.name}'s weights")
                logger.warning("%s", msg)
                warnings_before.append(msg)
        wall = time.perf_counter() - t0

        phase_summary = {
            "phase": phase.name,
            "objective": phase.objective,
            "cached": phase.cached,
            "epochs": int(trainer.current_epoch),
            "global_step": int(trainer.global_step),
            "steps_per_epoch": steps_per_epoch,
            "world_size": world,
            "best_checkpoint": best,
            "best_epoch": best_epoch,
            "monitor": phase.monitor,
            "best_score": None if best_score is None else float(best_score),
            "val": metrics,
            "kept_previous_weights": kept_previous,
            "warnings": warnings_before,
            "history": history,
            "fit_seconds": round(fit_s, 2),
            "wall_seconds": round(wall, 2),
            "cache": str(cache_root) if cache_root else None,
        }
        if trainer.is_global_zero:
            extra = {"val_metrics": to_jsonable(metrics), "train_config": config_to_dict(cfg), "run": str(out)}
            if cfg.validation.calibrate and len(val_rows.ids):  # every export carries its own temperatures
                extra["calibration"] = fit_calibration(
                    model, table, image_dataset(val_rows, False, None), cfg.data.eval_batch_size, prior_shift
                )
            model.save_checkpoint(pdir, phase=phase.name, extra=extra)
            _write_json(pdir / PHASE_SUMMARY_FILE, phase_summary)
            summary["phases"][phase.name] = {k: v for k, v in phase_summary.items() if k != "history"}
            summary["monitor_warnings"] = [w for p in summary["phases"].values() for w in p.get("warnings", [])]
            summary["final_checkpoint"] = str(pdir)
            _write_json(summary_path, summary)
        trainer.strategy.barrier("geopak-export")
        if trainer.is_global_zero:
            logger.info(
                "%s done in %.1f s: val macro median %.1f km, province accuracy %.1f%%",
                phase.name, wall, _get(metrics, "macro_median_km"), 100 * _get(metrics, "province_accuracy"),
            )
        final_dir = pdir
    assert final_dir is not None
    if rank0 and cfg.validation.calibrate and len(val_rows.ids):
        calibrate_checkpoint(final_dir, table, image_dataset(val_rows, False, None), cfg.data.eval_batch_size,
                             prior_shift)
    return final_dir


def fit_calibration(
    model: Any, table: CellTable, val_dataset: Any, batch_size: int = 128, prior_shift: Any = None
) -> dict[str, Any]:
    """Fit the mixture's province and cell temperatures of an in-memory model on validation images.

    See :func:`geopak.inference.fit_temperatures`. Returns the ``extra.calibration`` record of a checkpoint,
    which also carries ``prior_shift`` (:func:`province_prior_shift`) as ``province_prior_shift`` when given.
    """
    import torch

    from geopak.inference import fit_temperatures

    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    loader = torch.utils.data.DataLoader(val_dataset, batch_size=batch_size)
    plog, clog, prov, cell = [], [], [], []
    with torch.no_grad():
        for b in loader:
            out = model(b["image"].to(device))
            plog.append(out.province_logits.float().cpu())
            clog.append(out.cell_logits.float().cpu())
            prov.append(b["province"])
            cell.append(b["cell_id"])
    model.train(was_training)
    cell_id = torch.cat(cell).long()
    local = torch.as_tensor(table.local_index)[cell_id.clamp_min(0)].masked_fill(cell_id < 0, -1)
    tp, tc = fit_temperatures(torch.cat(plog), torch.cat(clog), torch.cat(prov), local)
    logger.info("calibrated on %d validation images: province T=%.3f, cell T=%.3f", len(val_dataset), tp, tc)
    cal: dict[str, Any] = {"province_temperature": round(tp, 4), "cell_temperature": round(tc, 4),
                           "fitted_on": "validation", "n": len(val_dataset)}
    if prior_shift is not None:
        cal["province_prior_shift"] = [round(float(v), 6) for v in prior_shift]
    return cal


def calibrate_checkpoint(
    ckpt: Path, table: CellTable, val_dataset: Any, batch_size: int = 128, prior_shift: Any = None
) -> dict[str, Any]:
    """Record the temperatures (and the prior shift) in an exported checkpoint that lacks them (e.g. one written
    before calibration existed). Idempotent: a checkpoint already calibrated on the same number of rows, with the
    shift when one is given, is left as it is."""
    from geopak.model.geopak import GeopakModel

    model = GeopakModel.from_checkpoint(ckpt, cells=table)
    extra = dict(model.checkpoint_meta.get("extra") or {})
    done = extra.get("calibration") or {}
    if done.get("n") == len(val_dataset) and (prior_shift is None or "province_prior_shift" in done):
        return done
    extra["calibration"] = cal = fit_calibration(model, table, val_dataset, batch_size, prior_shift)
    model.save_checkpoint(ckpt, phase=model.checkpoint_meta.get("phase"), extra=extra)
    return cal


def _get(m: dict[str, Any] | None, k: str) -> float:
    v = None if m is None else m.get(k)
    return float("nan") if v is None else float(v)


def _previous_phase(cfg: TrainConfig, phase: PhaseConfig) -> PhaseConfig | None:
    """The phase configured before ``phase`` (enabled or asked for), whose export it starts from."""
    i = [p.name for p in cfg.phases].index(phase.name)
    return cfg.phases[i - 1] if i > 0 else None


def _check_run_config(cfg: TrainConfig, out: Path, rank0: bool) -> None:
    """RUN/config.json pins the config a run was started with; a different one is refused."""
    path = out / "config.json"
    mine = _comparable(config_to_dict(cfg))
    if path.exists():
        theirs = json.loads(path.read_text())
        if _comparable(theirs) != mine:
            diff = _first_diff(_comparable(theirs), mine)
            raise TrainError(
                f"{out} holds a run started with a different config ({diff}); resume with the same config, "
                "or choose a new --out"
            )
    elif rank0:
        _write_json(path, config_to_dict(cfg))


_RUNTIME_KEYS = ("devices", "num_nodes", "accelerator", "strategy", "progress_bar")


def _comparable(d: dict[str, Any]) -> dict[str, Any]:
    """The parts of a config that change results (hardware and phase caps may differ on resume)."""
    d = to_jsonable(d)
    for k in _RUNTIME_KEYS:
        d.get("trainer", {}).pop(k, None)
    d.get("data", {}).pop("num_workers", None)
    d.get("data", {}).pop("cache_dir", None)
    for p in d.get("phases", []):
        p.pop("enabled", None)
    return d


def _first_diff(a: Any, b: Any, path: str = "") -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if a.get(k) != b.get(k):
                return _first_diff(a.get(k), b.get(k), f"{path}.{k}" if path else k)
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            if x != y:
                return _first_diff(x, y, f"{path}[{i}]")
    return f"{path}: {a!r} in the run vs {b!r} now"


def _lightning_dir(out: Path, phase: PhaseConfig) -> Path:
    """Lightning's files of a phase (checkpoints for resume, CSV/TensorBoard logs), apart from the export."""
    return out / "lightning" / phase.name


def _make_trainer(cfg: TrainConfig, phase: PhaseConfig, ldir: Path, extra_callbacks: list[Any]) -> Any:
    import warnings

    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    # Frozen encoders stay in eval mode on purpose (batch-norm statistics); Lightning would warn each phase.
    warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode at the start of training.*")
    t = cfg.trainer
    ckpt = ModelCheckpoint(
        dirpath=ldir / "checkpoints",
        filename="best-{epoch:03d}",
        monitor=phase.monitor,
        mode=phase.monitor_mode,
        save_top_k=-1 if t.keep_every_epoch else 1,
        save_last=True,
        every_n_epochs=1,
        auto_insert_metric_name=False,
    )
    loggers: list[Any] = [CSVLogger(ldir, name="logs", version="")]
    if t.tensorboard:
        try:
            loggers.append(TensorBoardLogger(ldir, name="tensorboard", version="", default_hp_metric=False))
        except ModuleNotFoundError:
            logger.warning("tensorboard is not installed: CSV logs only")
    callbacks: list[Any] = [ckpt, LearningRateMonitor(logging_interval="step"), *extra_callbacks]
    n_proc = t.devices * t.num_nodes
    strategy = t.strategy
    if strategy == "auto" and (n_proc > 1 or _launched_externally()):
        strategy = "ddp"
    return pl.Trainer(
        accelerator=t.accelerator,
        devices=t.devices,
        num_nodes=t.num_nodes,
        strategy=strategy,
        precision=t.precision,
        max_epochs=phase.epochs,
        max_steps=phase.max_steps,
        callbacks=callbacks,
        logger=loggers,
        default_root_dir=ldir,
        num_sanity_val_steps=0,
        deterministic=t.deterministic,
        gradient_clip_val=t.gradient_clip_val or None,
        log_every_n_steps=t.log_every_n_steps,
        use_distributed_sampler=False,
        enable_progress_bar=t.progress_bar,
        enable_model_summary=False,
        benchmark=False,
    )


def _set_threads(cfg: TrainConfig) -> None:
    """Apply ``trainer.num_threads`` (0: split the cores among the processes of a CPU DDP run)."""
    import torch

    n = cfg.trainer.num_threads
    if n == 0 and cfg.trainer.devices > 1 and (cfg.trainer.accelerator == "cpu" or not torch.cuda.is_available()):
        n = max(1, (os.cpu_count() or 1) // cfg.trainer.devices)
    if n > 0:
        torch.set_num_threads(n)


def _external_layout() -> tuple[int | None, int | None]:
    """(processes per node, nodes) of a torchrun or SLURM launch, so --devices/--num-nodes may be omitted."""
    env = os.environ
    try:
        if "LOCAL_WORLD_SIZE" in env and "WORLD_SIZE" in env:  # torchrun
            local, world = int(env["LOCAL_WORLD_SIZE"]), int(env["WORLD_SIZE"])
            return local, max(1, world // max(local, 1))
        if "SLURM_NTASKS_PER_NODE" in env and "SLURM_NNODES" in env and env.get("SLURM_JOB_NAME") not in ("bash", "interactive"):
            return int(env["SLURM_NTASKS_PER_NODE"].split("(")[0]), int(env["SLURM_NNODES"])
    except ValueError:
        pass
    return None, None


def _launched_externally() -> bool:
    """True under torchrun/SLURM multi-process launches (WORLD_SIZE > 1)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1")) > 1
    except ValueError:
        return False


_ = math
