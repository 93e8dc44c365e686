"""Predictor throughput vs encoder-only throughput on the same batch, fp32 and bf16 autocast.

The predictor's extra work over ``model.encode`` is the fusion, the heads and the batched mixture of
hypotheses (top-2 provinces x top-5 cells, one offset call). The target is under 5% overhead with the real
encoders. Image decoding is measured apart (it depends on the files, not on the model).

Usage::

    python benchmarks/bench_predictor.py                       # CLIP ViT-B/16 + ResNet-50, 699 cells
    python benchmarks/bench_predictor.py --encoders tiny       # the test encoders (heads dominate there)

The last line is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import time
from functools import partial

import numpy as np
import torch

from geopak.inference import GeopakPredictor, bf16_default
from geopak.model.geopak import GeopakConfig, GeopakModel, synthetic_cell_table


def _time(fn, repeats: int) -> float:  # type: ignore[no-untyped-def]
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--encoders", choices=["full", "tiny"], default="full")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--cells", type=int, default=699)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = GeopakConfig() if args.encoders == "full" else GeopakConfig.tiny()
    model = GeopakModel(cfg, synthetic_cell_table(args.cells)).eval()
    device = torch.device(args.device)
    result: dict[str, object] = {
        "encoders": [cfg.clip_encoder, cfg.scene_encoder], "batch": args.batch, "cells": args.cells,
        "device": str(device), "threads": torch.get_num_threads(), "bf16_default": bf16_default(device),
    }
    for bf16 in (False, True):
        tag = "bf16" if bf16 else "fp32"
        pred = GeopakPredictor(model=model, device=device, batch_size=args.batch, bf16=bf16)
        images = torch.rand(args.batch, 3, pred.image_size, pred.image_size, device=device)
        enc = _time(partial(pred.encode, images), args.repeats)
        full = _time(partial(pred.predict_tensor, images), args.repeats)
        clip, scene = pred.encode(images)
        heads = _time(partial(pred.predict_features, clip, scene), max(args.repeats, 10))
        result[f"{tag}_encoder_img_s"] = round(args.batch / enc, 2)
        result[f"{tag}_predictor_img_s"] = round(args.batch / full, 2)
        result[f"{tag}_heads_mixture_ms_per_batch"] = round(heads * 1e3, 2)
        # The heads+mixture time over the encoder time is the robust overhead figure (end-to-end timings of
        # two separate runs also carry the machine's noise).
        result[f"{tag}_overhead_pct"] = round(100 * heads / enc, 2)
        result[f"{tag}_end_to_end_overhead_pct"] = round(100 * (full - enc) / enc, 2)
        print(f"{tag}: encoders {args.batch / enc:.2f} img/s, predictor {args.batch / full:.2f} img/s, "
              f"heads+mixture {heads * 1e3:.1f} ms/batch = {100 * heads / enc:.2f}% of the encoders")
    result["bf16_speedup"] = round(float(result["bf16_encoder_img_s"]) / float(result["fp32_encoder_img_s"]), 2)

    pred = GeopakPredictor(model=model, device=device, batch_size=args.batch, bf16=False)
    rng = np.random.default_rng(0)
    photos = [rng.integers(0, 255, (768, 1024, 3), dtype=np.uint8) for _ in range(args.batch)]
    dec = _time(lambda: pred.load_images(photos), args.repeats)
    result["preprocess_img_s_1024x768"] = round(args.batch / dec, 1)
    print(f"preprocessing 1024x768 arrays: {args.batch / dec:.1f} img/s; bf16 speed-up {result['bf16_speedup']}x")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
