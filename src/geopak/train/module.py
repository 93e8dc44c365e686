"""Lightning pieces of the training engine: :class:`GeopakTask` (the LightningModule) and
:class:`GeopakDataModule`.

The task wraps a :class:`~geopak.model.geopak.GeopakModel` and a :class:`~geopak.losses.GeopakLoss`; it knows
nothing of files. A batch is either images (``image``) or cached encoder features (``clip_feat``,
``scene_feat``), plus the targets ``province``, ``cell_id``, ``lat``, ``lon`` and ``index``.

Validation is end to end: the model's outputs go through the inference mixture
(:func:`geopak.inference.mixture`: top provinces x top cells, offsets, spherical mean) and the predicted
positions are scored with :func:`geopak.evaluate.compute_metrics` against the true positions. The true cell is
never used to predict. Under DDP every rank's predictions are gathered and de-duplicated by sample index before
the metrics are computed, so every rank logs the same figures.

Determinism: the balanced sampler and the cached views are functions of ``(seed, epoch)``, the global RNGs
are reseeded from ``(seed, epoch)`` at every epoch start, and the DataLoader's worker seed comes from a
generator reseeded the same way, so a run resumed from an epoch checkpoint continues exactly as the
uninterrupted run would.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler

from geopak.evaluate import compute_metrics
from geopak.inference import mixture
from geopak.losses import GeopakLoss, true_cell_offset_positions
from geopak.provinces import NUM_PROVINCES, PROVINCE_NAMES, PROVINCES
from geopak.train.cache import CachedFeatureDataset, FeatureCache, collate_batch
from geopak.train.config import MonitorConfig, PhaseConfig, TrainConfig, ValidationConfig

__all__ = ["GeopakDataModule", "GeopakTask", "SplitData", "epoch_seed", "lr_lambda"]

logger = logging.getLogger(__name__)

TARGET_KEYS = ("province", "cell_id", "lat", "lon")


def epoch_seed(seed: int, epoch: int, salt: int = 0) -> int:
    """A 63-bit seed that depends only on (seed, epoch, salt)."""
    ss = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(epoch), int(salt)])
    return int(ss.generate_state(1, dtype=np.uint64)[0]) >> 1


def lr_lambda(total_steps: int, warmup_fraction: float, schedule: str, min_ratio: float) -> Any:
    """Multiplier of each group's lr at optimiser step ``s``: linear warm-up, then cosine (or constant)."""
    total = max(int(total_steps), 1)
    warm = round(warmup_fraction * total)

    def f(step: int) -> float:
        if warm and step < warm:
            return (step + 1) / warm
        if schedule == "constant":
            return 1.0
        t = min(max(step - warm, 0) / max(total - warm, 1), 1.0)
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * t))

    return f


@dataclass
class MonitorState:
    """Warnings raised during a phase (kept in Lightning checkpoints, so a resumed run keeps them).

    ``active`` holds the conditions that are firing now: a condition warns when it starts (and again only after
    it has cleared), not once per epoch while it lasts.
    """

    warnings: list[dict[str, Any]] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)
    first_offset_km: float | None = None
    active: list[str] = field(default_factory=list)


class GeopakTask(pl.LightningModule):
    """LightningModule: one training phase of a :class:`GeopakModel`.

    Args:
        model: the model (its trainable parameters already set for the phase).
        loss_fn: the phase's :class:`GeopakLoss`.
        phase: the phase config (learning rates, schedule, objective).
        total_steps: optimiser steps of the phase (for the schedule).
        seed: base seed (epoch reseeding).
        validation: mixture options for the end-to-end validation.
        monitor: health-warning thresholds.
        rare_provinces: province ids that count as rare for the accuracy monitor.
        province_prior_shift: ``(7,)`` logit shift to the training data's province mix
            (:func:`geopak.train.run.province_prior_shift`); when given, validation also reports
            ``province_accuracy_data_prior``.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        loss_fn: GeopakLoss,
        phase: PhaseConfig,
        total_steps: int,
        seed: int = 0,
        validation: ValidationConfig | None = None,
        monitor: MonitorConfig | None = None,
        rare_provinces: list[int] | None = None,
        province_prior_shift: Any = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn
        self.phase = phase
        self.total_steps = int(total_steps)
        self.seed = int(seed)
        self.validation = validation or ValidationConfig()
        self.monitor_cfg = monitor or MonitorConfig()
        self.rare_provinces = list(rare_provinces or [])
        self.state = MonitorState()
        self._val_buf: list[dict[str, torch.Tensor]] = []
        self._offset_sum = torch.zeros(2, dtype=torch.float64)
        self.last_val_metrics: dict[str, Any] | None = None
        # not a buffer: the shift is the run's, recomputed from its config, and stays out of Lightning checkpoints
        self.prior_shift = None if province_prior_shift is None else torch.as_tensor(
            np.asarray(province_prior_shift, dtype=np.float32))

    # ------------------------------------------------------------------ forward
    def forward(self, batch: dict[str, torch.Tensor]) -> Any:
        if "clip_feat" in batch:
            return self.model.forward_features(batch["clip_feat"], batch["scene_feat"])
        return self.model(batch["image"])

    def _loss(self, batch: dict[str, torch.Tensor], out: Any) -> dict[str, torch.Tensor]:
        offpos = None
        if self.loss_fn.weights.offset > 0:
            offpos = true_cell_offset_positions(self.model, out.fused, batch["cell_id"])
        return self.loss_fn(out, batch, offpos)

    def train(self, mode: bool = True) -> GeopakTask:
        """Train mode, except encoders (and their parts) that are entirely frozen stay in eval mode."""
        super().train(mode)
        if mode:
            for m in self.model.modules():
                if hasattr(m, "spec") and not any(p.requires_grad for p in m.parameters()):
                    m.eval()
        return self

    # ------------------------------------------------------------------ training
    def on_train_epoch_start(self) -> None:
        s = epoch_seed(self.seed, self.current_epoch, 1)
        torch.manual_seed(s)
        np.random.seed(s % 2**32)
        self._offset_sum = torch.zeros(2, dtype=torch.float64)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        out = self(batch)
        losses = self._loss(batch, out)
        bs = int(batch["province"].shape[0])
        logs = {f"train/{k}": v for k, v in losses.items() if k != "total"}
        logs["train/loss"] = losses["total"].detach()
        self.log_dict(logs, on_step=True, on_epoch=True, batch_size=bs, sync_dist=False, prog_bar=False)
        self.log("loss", losses["total"].detach(), prog_bar=True, logger=False, batch_size=bs)
        if "offset_km" in losses:
            self._offset_sum += torch.tensor([float(losses["offset_km"]) * bs, bs], dtype=torch.float64)
        return losses["total"]

    def on_train_epoch_end(self) -> None:
        if self._offset_sum[1] <= 0:
            return
        tot = self._all_sum(self._offset_sum)
        mean_km = float(tot[0] / tot[1])
        if self.state.first_offset_km is None:
            self.state.first_offset_km = mean_km
        m = self.monitor_cfg
        ratio_floor = m.offset_collapse_ratio * self.state.first_offset_km
        if not (self.current_epoch > 0 and (mean_km < m.offset_collapse_km or mean_km < ratio_floor)):
            self._clear("offset_collapse")
        else:
            self._warn(
                "offset_collapse",
                f"training offset loss collapsed to {mean_km:.4f} km (first epoch {self.state.first_offset_km:.3f} km): "
                "the offset head may be memorising positions",
                value=mean_km,
            )

    def _clear(self, key: str) -> None:
        """The condition ``key`` no longer holds: a later recurrence warns again."""
        if key in self.state.active:
            self.state.active.remove(key)

    def _all_sum(self, t: torch.Tensor) -> torch.Tensor:
        if self.trainer is not None and self.trainer.world_size > 1:
            g = self.all_gather(t.to(self.device, torch.float32))
            return g.reshape(-1, t.numel()).sum(0).double().cpu()
        return t

    # ------------------------------------------------------------------ validation
    def on_validation_epoch_start(self) -> None:
        self._val_buf = []

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        out = self(batch)
        losses = self._loss(batch, out)
        bs = int(batch["province"].shape[0])
        self.log("val/loss", losses["total"], on_epoch=True, batch_size=bs, sync_dist=True)
        v = self.validation
        pred = mixture(
            self.model, out, top_provinces=v.top_provinces, top_cells=v.top_cells, mode=v.mode,
            use_offsets=v.use_offsets,
        )
        row = {}
        if self.prior_shift is not None:
            has_cells = (torch.as_tensor(self.model.padded_index) >= 0).any(dim=1).to(out.province_logits.device)
            shifted = out.province_logits.float() + self.prior_shift.to(out.province_logits.device)
            row["province_data_prior"] = shifted.masked_fill(~has_cells, float("-inf")).argmax(dim=1).long()
        self._val_buf.append(
            {
                **row,
                "index": batch["index"].long(),
                "lat": pred.lat.double(),
                "lon": pred.lon.double(),
                "province": pred.province.long(),
                "true_lat": batch["lat"].double(),
                "true_lon": batch["lon"].double(),
                "true_province": batch["province"].long(),
            }
        )

    def _gather_val(self) -> dict[str, np.ndarray] | None:
        if not self._val_buf:
            return None
        local = {k: torch.cat([b[k] for b in self._val_buf]) for k in self._val_buf[0]}
        if self.trainer is not None and self.trainer.world_size > 1:
            # float64 positions would lose nothing, but all_gather needs one dtype per call: gather each key.
            gathered = {k: self.all_gather(v).reshape(-1).cpu() for k, v in local.items()}
            _, first = np.unique(gathered["index"].numpy(), return_index=True)  # padded duplicates
            return {k: v.numpy()[first] for k, v in gathered.items()}
        return {k: v.cpu().numpy() for k, v in local.items()}

    def on_validation_epoch_end(self) -> None:
        if self.trainer is not None and self.trainer.sanity_checking:
            return
        g = self._gather_val()
        self._val_buf = []
        if g is None:
            return
        m = compute_metrics(g["lat"], g["lon"], g["true_lat"], g["true_lon"], g["true_province"], g["province"])
        if "province_data_prior" in g:
            # the province head's choice under the training data's own province mix (GeopakPredictor(prior="data"))
            m["province_accuracy_data_prior"] = float(np.mean(g["province_data_prior"] == g["true_province"]))
        self.last_val_metrics = m
        logs = {
            f"val/{k}": float(m[k])
            for k in ("median_km", "mean_km", "macro_median_km", "acc_1km", "acc_25km", "acc_200km",
                      "geoscore", "province_accuracy", "balanced_province_accuracy", "province_accuracy_data_prior")
            if m.get(k) is not None
        }
        for name, pm in m["by_province"].items():
            short = PROVINCES[PROVINCE_NAMES.index(name)].short
            logs[f"val_province/{short}_median_km"] = float(pm["median_km"])
            if pm.get("province_accuracy") is not None:
                logs[f"val_province/{short}_accuracy"] = float(pm["province_accuracy"])
        # Every rank computed the same figures from the gathered predictions; sync_dist only averages equal values.
        self.log_dict(logs, on_epoch=True, sync_dist=True, prog_bar=False)
        self.log("val_mmk", logs.get("val/macro_median_km", float("nan")), prog_bar=True, logger=False, sync_dist=True)
        self.log("val_acc", logs.get("val/province_accuracy", float("nan")), prog_bar=True, logger=False, sync_dist=True)
        self.state.history.append({"epoch": int(self.current_epoch), "step": int(self.global_step), **logs})
        for p in self.rare_provinces:
            pm = m["by_province"].get(PROVINCE_NAMES[p])
            acc = None if pm is None else pm.get("province_accuracy")
            key = f"rare_province_accuracy:{PROVINCE_NAMES[p]}"
            if acc is not None and acc < self.monitor_cfg.rare_accuracy:
                self._warn(
                    "rare_province_accuracy",
                    f"validation accuracy of rare province {PROVINCE_NAMES[p]} is {acc:.1%} "
                    f"(< {self.monitor_cfg.rare_accuracy:.0%})",
                    key=key,
                    value=float(acc),
                    province=PROVINCE_NAMES[p],
                )
            else:
                self._clear(key)

    def _warn(self, kind: str, message: str, key: str | None = None, **extra: Any) -> None:
        """Record and log a warning when its condition ``key`` (default ``kind``) starts; silent while it lasts."""
        key = key or kind
        if key in self.state.active:
            return
        self.state.active.append(key)
        entry = {"phase": self.phase.name, "epoch": int(self.current_epoch), "kind": kind, "message": message, **extra}
        self.state.warnings.append(entry)
        if self.trainer is None or self.trainer.is_global_zero:
            logger.warning("[%s epoch %d] %s", self.phase.name, self.current_epoch, message)

    # ------------------------------------------------------------------ optimiser
    def configure_optimizers(self) -> Any:
        groups = self.model.param_groups({k: v for k, v in self.phase.lr.items() if v > 0})
        groups = [g for g in groups if any(p.requires_grad for p in g["params"])]
        for g in groups:
            g["params"] = [p for p in g["params"] if p.requires_grad]
        if not groups:
            raise RuntimeError(f"{self.phase.name}: no trainable parameters for learning rates {self.phase.lr}")
        opt = torch.optim.AdamW(groups, weight_decay=self.phase.weight_decay, **_adamw_kernel(groups))
        f = lr_lambda(self.total_steps, self.phase.warmup_fraction, self.phase.schedule, self.phase.min_lr_ratio)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, f)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step", "frequency": 1}}

    # ------------------------------------------------------------------ checkpoint state
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["geopak_monitor"] = {
            "warnings": self.state.warnings,
            "history": self.state.history,
            "first_offset_km": self.state.first_offset_km,
            "active": self.state.active,
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        st = checkpoint.get("geopak_monitor")
        if st:
            self.state = MonitorState(
                warnings=list(st.get("warnings", [])),
                history=list(st.get("history", [])),
                first_offset_km=st.get("first_offset_km"),
                active=list(st.get("active", [])),
            )


def _adamw_kernel(groups: list[dict[str, Any]]) -> dict[str, bool]:
    """``fused=True`` (one kernel for every parameter's update) where torch has it for these parameters: float
    parameters on CPU or CUDA. A heads-only step updates ~80 small tensors, and the per-tensor update loop cost
    about a tenth of it on CPU (``benchmarks/bench_cache.py``)."""
    params = [p for g in groups for p in g["params"]]
    ok = bool(params) and all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)
    return {"fused": True} if ok and len({p.device for p in params}) == 1 else {}


# ---------------------------------------------------------------------------------------------- data
@dataclass
class SplitData:
    """One split's rows: ids, image paths and targets (aligned arrays)."""

    ids: np.ndarray
    paths: np.ndarray
    province: np.ndarray
    cell_id: np.ndarray
    lat: np.ndarray
    lon: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)

    def targets(self) -> dict[str, np.ndarray]:
        return {"province": self.province, "cell_id": self.cell_id, "lat": self.lat, "lon": self.lon}


class GeopakDataModule(pl.LightningDataModule):
    """Batches for one phase: cached features when the phase trains from the cache, else images.

    Args:
        config: the run's config.
        phase: the phase.
        train: training rows; val: validation rows.
        model: the model (its encoders fill the cache in :meth:`prepare_data`).
        cache_root: folder holding this phase's ``train`` and ``val`` caches (None for image phases).
        cache_fingerprints: expected fingerprints of the train and val caches.
        image_dataset: ``(split, train: bool, view_seed: int | None) -> Dataset`` of images (dict items with
            ``image`` and the targets), from :mod:`geopak.data.datasets`.
    """

    def __init__(
        self,
        config: TrainConfig,
        phase: PhaseConfig,
        train: SplitData,
        val: SplitData,
        model: torch.nn.Module,
        cache_root: Any,
        cache_fingerprints: dict[str, dict[str, Any]] | None,
        image_dataset: Any,
    ) -> None:
        super().__init__()
        self.config = config
        self.phase = phase
        self.train_rows = train
        self.val_rows = val
        self.model = model
        self.cache_root = cache_root
        self.cache_fingerprints = cache_fingerprints or {}
        self.image_dataset = image_dataset
        self.prepare_data_per_node = True
        self.train_ds: Dataset | None = None
        self.val_ds: Dataset | None = None
        self.sampler: Any = None
        self._generator: torch.Generator | None = None

    # ------------------------------------------------------------------ cache
    def caches(self) -> dict[str, FeatureCache]:
        from pathlib import Path

        root = Path(self.cache_root)
        return {"train": FeatureCache(root / "train"), "val": FeatureCache(root / "val")}

    def prepare_data(self) -> None:
        """Build the feature caches (local rank 0 of each node; the others wait at a barrier)."""
        if not self.phase.cached:
            return
        home = _device_of(self.model)
        device = self.trainer.strategy.root_device if self.trainer is not None else home
        self.model.to(device)
        try:
            self._build_caches(device)
        finally:
            self.model.to(home)

    def _build_caches(self, device: torch.device) -> None:
        d = self.config.data
        for split, rows, views in (
            ("train", self.train_rows, d.cache_views),
            ("val", self.val_rows, 1),
        ):
            cache = self.caches()[split]
            fp = self.cache_fingerprints[split]
            if cache.matches(fp):
                logger.info("feature cache %s: reusing %s", split, cache.root)
                continue
            logger.info("feature cache %s: building %d images x %d views at %s", split, len(rows), views, cache.root)
            cache.build(
                self.model,
                self.image_dataset(rows, False, None),
                ids=[str(i) for i in rows.ids],
                views=views,
                view_dataset=lambda v, rows=rows: self.image_dataset(rows, True, v),
                batch_size=d.eval_batch_size,
                num_workers=d.num_workers,
                device=device,
                precision=self.config.trainer.precision,
                dtype=d.cache_dtype,
                fingerprint=fp,
                progress=self.config.trainer.progress_bar,
            )

    def setup(self, stage: str | None = None) -> None:
        seed = self.config.trainer.seed
        if self.phase.cached:
            caches = self.caches()
            for split, rows in (("train", self.train_rows), ("val", self.val_rows)):
                if not caches[split].matches(self.cache_fingerprints[split]):
                    raise RuntimeError(
                        f"feature cache {caches[split].root} is missing or stale after prepare_data; "
                        "on several nodes, give each node its own cache_dir or a shared file system"
                    )
            self.train_ds = CachedFeatureDataset(caches["train"], self.train_rows.targets(), seed=seed)
            self.val_ds = CachedFeatureDataset(caches["val"], self.val_rows.targets(), seed=seed, random_views=False)
        else:
            self.train_ds = self.image_dataset(self.train_rows, True, None)
            self.val_ds = self.image_dataset(self.val_rows, False, None)

    # ------------------------------------------------------------------ loaders
    def _world(self) -> tuple[int, int, int]:
        """(global rank, world size, the epoch Lightning is about to run: what it will pass to set_epoch)."""
        t = self.trainer
        if t is None:
            return 0, 1, 0
        return int(t.global_rank), int(t.world_size), int(t.fit_loop.epoch_progress.current.processed)

    def steps_per_epoch(self, world_size: int = 1) -> int:
        """Batches per rank per epoch."""
        d = self.config.data
        if d.steps_per_epoch:
            return int(d.steps_per_epoch)
        return max(1, math.ceil(len(self.train_rows) / (d.batch_size * world_size)))

    def train_dataloader(self) -> DataLoader:
        from geopak.data.samplers import ProvinceBalancedBatchSampler

        rank, world, epoch = self._world()
        d = self.config.data
        seed = self.config.trainer.seed
        self.sampler = _EpochBatchSampler(
            ProvinceBalancedBatchSampler(
                self.train_rows.province,
                quotas=d.quotas or None,
                batch_size=d.batch_size,
                num_batches=self.steps_per_epoch(world),
                seed=seed,
                rank=rank,
                world_size=world,
            ),
            dataset=self.train_ds,
            seed=seed,
            epoch=epoch,
        )
        if self.phase.cached:
            return DataLoader(
                self.train_ds, batch_sampler=self.sampler, collate_fn=collate_batch, num_workers=0,
                generator=self.sampler.generator,
            )
        return DataLoader(
            self.train_ds,
            batch_sampler=self.sampler,
            num_workers=d.num_workers,
            generator=self.sampler.generator,
            persistent_workers=False,
        )

    def val_dataloader(self) -> DataLoader:
        rank, world, _ = self._world()
        d = self.config.data
        assert self.val_ds is not None
        sampler = None
        if world > 1:
            sampler = DistributedSampler(self.val_ds, num_replicas=world, rank=rank, shuffle=False)  # type: ignore[arg-type]
        if self.phase.cached:
            from torch.utils.data import BatchSampler, SequentialSampler

            bs = BatchSampler(sampler or SequentialSampler(self.val_ds), d.eval_batch_size, drop_last=False)  # type: ignore[arg-type]
            return DataLoader(
                self.val_ds, batch_sampler=bs, collate_fn=collate_batch, num_workers=0, generator=self._val_gen()
            )
        return DataLoader(
            self.val_ds, batch_size=d.eval_batch_size, sampler=sampler, shuffle=False, num_workers=d.num_workers,
            generator=self._val_gen(),
        )

    def _val_gen(self) -> torch.Generator:
        # Creating a DataLoader iterator draws a worker seed from its generator; give it its own so the global
        # RNG (dropout, augmentation) never depends on when validation ran.
        return torch.Generator().manual_seed(epoch_seed(self.config.trainer.seed, 0, 3))


class _EpochBatchSampler(torch.utils.data.Sampler[list[int]]):
    """Wraps the balanced batch sampler: ``set_epoch`` also selects the cached dataset's views and reseeds
    the generator the DataLoader draws its worker seed from.

    Lightning calls ``set_epoch`` on ``dataloader.sampler`` and ``dataloader.batch_sampler.sampler`` only,
    so this batch sampler exposes a ``sampler`` whose ``set_epoch`` forwards here.
    """

    def __init__(self, base: Any, dataset: Any, seed: int, epoch: int = 0) -> None:
        self.base = base
        self.dataset = dataset
        self.seed = seed
        self.generator = torch.Generator()
        self.sampler = _EpochHook(self)
        self.set_epoch(epoch)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        self.base.set_epoch(epoch)
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)
        self.generator.manual_seed(epoch_seed(self.seed, epoch, 2))

    def __len__(self) -> int:
        return len(self.base)

    def __iter__(self) -> Any:
        return iter(self.base)


class _EpochHook:
    """What Lightning sees as ``batch_sampler.sampler``: forwards ``set_epoch``."""

    def __init__(self, owner: _EpochBatchSampler) -> None:
        self._owner = owner

    def set_epoch(self, epoch: int) -> None:
        self._owner.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self._owner.dataset)


def _device_of(model: torch.nn.Module) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def rare_provinces(train_province: np.ndarray, share: float) -> list[int]:
    """Provinces present in training with less than ``share`` of the rows."""
    counts = np.bincount(np.asarray(train_province, dtype=np.int64), minlength=NUM_PROVINCES)
    total = max(int(counts.sum()), 1)
    return [p for p in range(NUM_PROVINCES) if 0 < counts[p] < share * total]
