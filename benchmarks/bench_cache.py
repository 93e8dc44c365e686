"""A phase-1 epoch from the feature cache vs the same epoch re-encoding the images.

Both epochs run the engine's own pieces: the province-balanced batch sampler, the GEOPAK loss, the model's
``forward_features`` (fusion + every head), backward and an AdamW step. They differ only in where the
encoder features come from:

- *cache*: :class:`geopak.train.cache.CachedFeatureDataset` (memory-mapped ``.npy``, one gather per view);
- *re-encode*: :class:`geopak.data.datasets.GeoImageDataset` (decode the JPEG/PNG, geography-safe training
  augmentation) and ``model.encode`` on the frozen encoders, as the reference implementation did every epoch.

Measured with the model of a named training config (``--config tiny`` by default: the demo's small encoders,
heads and image size, 96 px) on generated images. The full-size figure is extrapolated: the re-encode epoch of ViT-B/16 + ResNet-50 at
224 px costs ``1 / encoder throughput`` per image on top of the heads step; the encoder throughput is
measured here (``--full-batches`` batches, bf16 autocast where the CPU supports it) and also taken from the
design brief (9 img/s for both encoders, bf16, on this kind of 2-core machine); the cached step is measured
with full-size heads (768/2048-d features, 512-d fusion, 699 cells).

Usage::

    python benchmarks/bench_cache.py                  # n=512 images, batch 64, 1 thread
    python benchmarks/bench_cache.py --full-batches 0 # skip measuring the full-size encoders

The last line is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader

from geopak.data.datasets import GeoImageDataset
from geopak.data.samplers import ProvinceBalancedBatchSampler
from geopak.geocells import CellTable
from geopak.losses import GeopakLoss, province_class_weights, true_cell_offset_positions
from geopak.model.geopak import GeopakConfig, GeopakModel, synthetic_cell_table
from geopak.provinces import NUM_PROVINCES, PROVINCES
from geopak.train.cache import CachedFeatureDataset, FeatureCache, collate_batch
from geopak.train.config import load_config

DESIGN_FULL_IMG_PER_S = 9.0
"""ARCHITECTURE.md: both encoders together, batch 16 at 224 px, bf16 autocast, on a 2-core CPU."""


def make_images(root: Path, n: int, size: int, cells: CellTable, seed: int = 0) -> dict[str, Any]:
    """n seeded JPEGs spread over the provinces in the seed's proportions, with targets."""
    rng = np.random.default_rng(seed)
    share = np.array([p.seed_count for p in PROVINCES], float)
    prov = rng.choice(NUM_PROVINCES, size=n, p=share / share.sum())
    prov[:NUM_PROVINCES] = np.arange(NUM_PROVINCES)  # every province present
    cell = np.array([rng.integers(cells.offsets[p], cells.offsets[p + 1]) for p in prov])
    lat = cells.centers[cell, 0] + rng.normal(0, 0.05, n)
    lon = cells.centers[cell, 1] + rng.normal(0, 0.05, n)
    paths = []
    for i in range(n):
        img = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
        p = root / f"{i:05d}.jpg"
        Image.fromarray(img).save(p, quality=90)
        paths.append(str(p))
    return {"paths": paths, "province": prov, "cell_id": cell, "lat": lat, "lon": lon}


def run_epoch(model: GeopakModel, loss_fn: GeopakLoss, loader: DataLoader, opt: torch.optim.Optimizer,
              cached: bool) -> tuple[float, int]:
    """One epoch; returns (seconds, images)."""
    t0 = time.perf_counter()
    n = 0
    for batch in loader:
        if cached:
            out = model.forward_features(batch["clip_feat"], batch["scene_feat"])
        else:
            out = model.forward_features(*model.encode(batch["image"]))
        pos = true_cell_offset_positions(model, out.fused, batch["cell_id"])
        loss = loss_fn(out, batch, pos)["total"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        n += int(batch["province"].shape[0])
    return time.perf_counter() - t0, n


def heads_step_seconds(model: GeopakModel, loss_fn: GeopakLoss, batch: int, cells: CellTable, reps: int) -> float:
    """Seconds of one cached (heads-only) step with random features of the model's widths."""
    g = torch.Generator().manual_seed(0)
    clip = torch.randn(batch, model.clip.feature_dim, generator=g)
    scene = torch.randn(batch, model.scene.feature_dim, generator=g)
    cell = torch.randint(0, cells.n_cells, (batch,), generator=g)
    tgt = {
        "province": torch.from_numpy(np.array(cells.province_ids))[cell],
        "cell_id": cell,
        "lat": torch.tensor(cells.centers[:, 0], dtype=torch.float32)[cell],
        "lon": torch.tensor(cells.centers[:, 1], dtype=torch.float32)[cell],
    }
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3, fused=True)
    times = []
    for i in range(reps + 2):
        t0 = time.perf_counter()
        out = model.forward_features(clip, scene)
        pos = true_cell_offset_positions(model, out.fused, cell)
        loss = loss_fn(out, tgt, pos)["total"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i >= 2:
            times.append(time.perf_counter() - t0)
    return float(np.median(times))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=512, help="training images")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--config", default="tiny", help="named training config or TOML: model widths, image size")
    ap.add_argument("--views", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 avoids oversubscription)")
    ap.add_argument("--full-batches", type=int, default=2, help="batches of 8 to time the full-size encoders")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    cfg = load_config(args.config)
    args.size, args.clip, args.scene = cfg.data.image_size, cfg.model.clip_encoder, cfg.model.scene_encoder
    cells = synthetic_cell_table(64)
    model = GeopakModel(cfg.model, cells)
    model.freeze_encoders()
    model.train()
    loss_fn = GeopakLoss(cells)
    fig: dict[str, Any] = {"config": cfg.name, "n": args.n, "batch": args.batch, "size": args.size, "clip": args.clip,
                           "scene": args.scene, "views": args.views, "threads": args.threads,
                           "load_avg_1min": round(os.getloadavg()[0], 2)}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t = make_images(root, args.n, args.size, cells)
        targets = {k: t[k] for k in ("province", "cell_id", "lat", "lon")}
        loss_fn.province_weights.copy_(province_class_weights(np.bincount(t["province"], minlength=7)))
        ids = [f"img{i}" for i in range(args.n)]
        eval_ds = GeoImageDataset(t["paths"], targets, image_size=args.size, ids=ids)
        t0 = time.perf_counter()
        cache = FeatureCache(root / "cache").build(
            model, eval_ds, ids, views=args.views, batch_size=args.batch, progress=False,
            view_dataset=lambda v: GeoImageDataset(t["paths"], targets, image_size=args.size, augment={},
                                                   view_seed=(0, v), ids=ids),
        )
        fig["cache_build_s"] = round(time.perf_counter() - t0, 3)

        sampler = ProvinceBalancedBatchSampler(t["province"], batch_size=args.batch, seed=0)
        cached_ds = CachedFeatureDataset(cache, targets, seed=0)
        image_ds = GeoImageDataset(t["paths"], targets, image_size=args.size, augment={}, ids=ids)
        cached_loader = DataLoader(cached_ds, batch_sampler=sampler, collate_fn=collate_batch)
        image_loader = DataLoader(image_ds, batch_sampler=sampler)
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3, fused=True)
        run_epoch(model, loss_fn, cached_loader, opt, cached=True)  # warm-up
        run_epoch(model, loss_fn, image_loader, opt, cached=False)
        cache_s, reenc_s = [], []
        for e in range(2):  # interleaved, so load drifts hit both alike
            sampler.set_epoch(e + 1)
            cached_ds.set_epoch(e + 1)
            cache_s.append(run_epoch(model, loss_fn, cached_loader, opt, cached=True)[0])
            reenc_s.append(run_epoch(model, loss_fn, image_loader, opt, cached=False)[0])
        c, r = min(cache_s), min(reenc_s)
        fig.update(cache_epoch_s=round(c, 4), reencode_epoch_s=round(r, 4), ratio_small=round(r / c, 1),
                   epoch_images=len(sampler) * args.batch)
    print(f"small encoders ({args.clip} + {args.scene}, {args.size} px), {fig['epoch_images']} images/epoch: "
          f"cache {c:.3f} s vs re-encode {r:.3f} s -> {r / c:.1f}x")

    # ---- full size: ViT-B/16 + ResNet-50 at 224 px
    full_cells = synthetic_cell_table(699)
    full = GeopakModel(GeopakConfig(), full_cells)
    full.freeze_encoders()
    full.train()
    full_loss = GeopakLoss(full_cells)
    step = heads_step_seconds(full, full_loss, args.batch, full_cells, reps=5)
    per_img_cached = step / args.batch
    fig["full_heads_step_s"] = round(step, 4)
    rates = {"design_brief": DESIGN_FULL_IMG_PER_S}
    if args.full_batches > 0:
        bf16 = torch.backends.mkldnn.is_available()
        x = torch.rand(8, 3, 224, 224)
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            full.encode(x)  # warm-up
            t0 = time.perf_counter()
            for _ in range(args.full_batches):
                full.encode(x)
        rates["measured"] = round(8 * args.full_batches / (time.perf_counter() - t0), 2)
        fig["full_encode_bf16"] = bf16
    for k, rate in rates.items():
        ratio = (1.0 / rate + per_img_cached) / per_img_cached
        fig[f"full_img_per_s_{k}"] = rate
        fig[f"ratio_full_{k}"] = round(ratio, 1)
        print(f"full size ({k}: both encoders {rate:.1f} img/s; heads step {step * 1000:.1f} ms per {args.batch}): "
              f"re-encode/cache = {ratio:.0f}x")
    fig["pass_50x"] = bool(min(v for k, v in fig.items() if k.startswith("ratio_")) >= 50)
    print(json.dumps(fig))


if __name__ == "__main__":
    main()
