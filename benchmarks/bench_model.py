"""Model throughput: encoders alone vs the full model, the heads' share, parameter counts per module.

Builds the model offline with random weights and a synthetic cell table (the reference run's 699 cells by
default), then times, on random [0, 1] images,

- ``encode``: both encoders (what a feature cache replaces);
- ``full``: ``model(images)`` (encoders + fusion + all heads);
- ``heads``: ``forward_features`` on precomputed features plus one batched offset call for 10 hypotheses
  per image (what inference adds on top of the encoders);
- optionally (``--train``) one training step of the whole model (forward, backward, AdamW).

Encode and full runs are interleaved and the median is reported, which damps the noise of a shared machine.
Besides wall-clock throughput it reports images per CPU-second (process CPU time): on a busy machine this is
the steadier figure of the compute itself (with 1 thread it is the per-core throughput; with more threads,
OpenMP spin-waiting under contention inflates the CPU time, so use ``--threads 1`` for that figure).
The heads' overhead is ``heads / encode`` (the design requires < 5%); ``full / encode - 1`` is printed too
but sits within timing noise when the heads are that cheap.

Examples::

    python benchmarks/bench_model.py --bf16                      # full-size encoders, bf16 autocast
    python benchmarks/bench_model.py --clip clip_vit_tiny --scene resnet_small --size 96 --train

The last line printed is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import time
from collections.abc import Callable

import torch

from geopak.model import GeopakConfig, GeopakModel, synthetic_cell_table


def _timed(fn: Callable[[], object], iters: int) -> tuple[list[float], list[float]]:
    """Wall-clock and process CPU seconds of each of ``iters`` calls."""
    wall, cpu = [], []
    for _ in range(iters):
        t, c = time.perf_counter(), time.process_time()
        fn()
        cpu.append(time.process_time() - c)
        wall.append(time.perf_counter() - t)
    return wall, cpu


def main(argv: list[str] | None = None) -> dict[str, object]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clip", default="clip_vit_b16", help="registered semantic encoder")
    ap.add_argument("--scene", default="resnet50_places365", help="registered scene encoder")
    ap.add_argument(
        "--size", type=int, default=None, help="image side in pixels (default: the clip encoder's)"
    )
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--cells", type=int, default=699, help="cells of the synthetic table")
    ap.add_argument(
        "--head-width",
        type=int,
        default=None,
        help="set fusion_dim and every head's hidden width to this (the design's default is 512/256)",
    )
    ap.add_argument("--iters", type=int, default=5, help="timed repetitions of each measurement")
    ap.add_argument(
        "--bf16", action="store_true", help="bfloat16 autocast (CPU: AMX/AVX512-BF16 when present)"
    )
    ap.add_argument("--no-channels-last", action="store_true", help="keep the scene encoder in NCHW")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--train", action="store_true", help="also time one training step of the whole model")
    args = ap.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cells = synthetic_cell_table(args.cells)
    widths = {}
    if args.head_width:
        w = args.head_width
        widths = dict(fusion_dim=w, province_hidden=w, cell_hidden=w, offset_hidden=w, aux_hidden=w)
    config = GeopakConfig(clip_encoder=args.clip, scene_encoder=args.scene, **widths)
    model = GeopakModel(config, cells).eval()
    if not args.no_channels_last:
        model.scene.set_channels_last(True)
    size = args.size or model.clip.spec.input_size
    x = torch.rand(args.batch, 3, size, size)
    hyp = torch.randint(0, cells.n_cells, (args.batch, 10))

    def autocast() -> contextlib.AbstractContextManager[object]:
        return torch.autocast("cpu", dtype=torch.bfloat16) if args.bf16 else contextlib.nullcontext()

    with torch.inference_mode(), autocast():
        feats = model.encode(x)

        def run_encode() -> object:
            return model.encode(x)

        def run_full() -> object:
            return model(x)

        def run_heads() -> object:
            out = model.forward_features(*feats)
            return model.offsets(out.fused, hyp)

        for fn in (run_encode, run_full, run_heads):  # warm-up (oneDNN primitive creation)
            fn()
        enc_t, full_t, enc_c, full_c = [], [], [], []
        for _ in range(args.iters):  # interleave so load changes hit both alike
            w, c = _timed(run_encode, 1)
            enc_t += w
            enc_c += c
            w, c = _timed(run_full, 1)
            full_t += w
            full_c += c
        heads_t, _ = _timed(run_heads, max(args.iters, 10))

    result: dict[str, object] = {}
    enc, full, heads = statistics.median(enc_t), statistics.median(full_t), statistics.median(heads_t)
    if args.train:
        model.train()
        opt = torch.optim.AdamW(model.param_groups({"default": 1e-4}))

        def step() -> None:
            with autocast():
                out = model(x)
                loss = out.province_logits.float().logsumexp(-1).mean() + out.cell_logits.float().mean()
                loss = loss + model.offsets(out.fused, hyp[:, :1]).float().pow(2).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        step()
        w, c = _timed(step, max(2, args.iters // 2))
        train_t = statistics.median(w)
        result["train_step_s"] = round(train_t, 4)
        result["train_img_per_s"] = round(args.batch / train_t, 1)
        result["train_img_per_cpu_s"] = round(args.batch / statistics.median(c), 1)

    counts = model.param_counts()
    result = {
        "clip": args.clip,
        "scene": args.scene,
        "size": size,
        "batch": args.batch,
        "head_width": args.head_width,
        "bf16": args.bf16,
        "threads": torch.get_num_threads(),
        "load_avg_1min": round(os.getloadavg()[0], 2),
        "encode_s": round(enc, 4),
        "full_s": round(full, 4),
        "heads_s": round(heads, 5),
        "encode_img_per_s": round(args.batch / enc, 1),
        "full_img_per_s": round(args.batch / full, 1),
        "encode_img_per_cpu_s": round(args.batch / statistics.median(enc_c), 1),
        "full_img_per_cpu_s": round(args.batch / statistics.median(full_c), 1),
        "heads_overhead_pct": round(100 * heads / enc, 2),
        "full_vs_encode_pct": round(100 * (full / enc - 1), 2),
        "heads_under_5pct": heads / enc < 0.05,
        **result,
        "params": counts,
        "n_cells": cells.n_cells,
        "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__,
    }
    print(
        f"model {args.clip} + {args.scene}, {size} px, batch {args.batch}, bf16={args.bf16}, "
        f"{torch.get_num_threads()} threads (load {result['load_avg_1min']})"
    )
    for k in ("clip", "scene", "fusion", "heads", "embeddings", "total"):
        print(f"  params {k:<11} {counts[k]:>12,}")
    print(
        f"  encoders only : {result['encode_img_per_s']:>8} img/s  ({enc * 1e3:.1f} ms/batch), "
        f"{result['encode_img_per_cpu_s']} img per CPU-second"
    )
    print(
        f"  full model    : {result['full_img_per_s']:>8} img/s  ({full * 1e3:.1f} ms/batch), "
        f"{result['full_img_per_cpu_s']} img per CPU-second"
    )
    print(
        f"  heads + 10 offsets/image: {heads * 1e3:.2f} ms/batch = {result['heads_overhead_pct']}% of the encoders"
    )
    if args.train:
        print(
            f"  training step : {result['train_img_per_s']:>8} img/s  ({result['train_step_s']} s/batch), "
            f"{result['train_img_per_cpu_s']} img per CPU-second"
        )
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
