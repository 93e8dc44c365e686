"""Fixtures for the evaluation tests: a tiny image dataset, its cell table and a tiny checkpoint."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from geopak.geocells import CellTable
from geopak.provinces import PROVINCE_NAMES

# (province id, lat, lon) of six cells in four provinces
CENTRES = [(0, 24.9, 67.1), (0, 25.4, 68.4), (1, 31.5, 74.3), (1, 30.2, 71.5), (3, 33.7, 73.1), (4, 35.9, 74.3)]


@dataclass
class TinyData:
    root: Path
    manifest: Path
    cells_dir: Path
    cells: CellTable
    df: pd.DataFrame


def make_tiny_data(root: Path, n: int = 60, seed: int = 0) -> TinyData:
    """``n`` small JPEGs whose colour encodes their cell; splits train/val/test = 3/1/1 (first 6 train)."""
    rng = np.random.default_rng(seed)
    cells = CellTable(pd.DataFrame([
        {"cell_id": i, "province": PROVINCE_NAMES[p], "center_lat": la, "center_lon": lo, "radius_km": 10.0, "count": 10,
             "urban": (i % 2 == 0)}
        for i, (p, la, lo) in enumerate(CENTRES)
    ]))
    cells.save(root / "cells")
    (root / "img").mkdir(parents=True, exist_ok=True)
    rows = []
    for k in range(n):
        c = k % len(CENTRES)
        p, la, lo = CENTRES[c]
        la, lo = la + rng.normal(0, 0.05), lo + rng.normal(0, 0.05)
        col = np.array([40 * c, 255 - 40 * c, 128], float)
        arr = np.clip(col + rng.normal(0, 20, (24, 30, 3)), 0, 255).astype(np.uint8)
        path = root / "img" / f"{k:04d}.jpg"
        Image.fromarray(arr).save(path)
        split = ["train", "train", "train", "val", "test"][k % 5] if k >= len(CENTRES) else "train"
        rows.append({"id": f"im{k}", "path": f"img/{k:04d}.jpg", "lat": la, "lon": lo, "province": PROVINCE_NAMES[p],
                         "source": "test", "split": split})
    df = pd.DataFrame(rows)
    df.to_parquet(root / "manifest.parquet")
    return TinyData(root, root / "manifest.parquet", root / "cells", cells, df)


def tiny_train_config() -> object:
    """The ``tiny`` config shrunk to the test encoders, 32 px and one short frozen-encoder phase."""
    from geopak.train.config import load_config

    return load_config("tiny").with_overrides({
        "model.clip_encoder": "test_vit", "model.scene_encoder": "test_resnet", "model.fusion_dim": 16,
        "model.province_hidden": 16, "model.cell_hidden": 16, "model.province_emb_dim": 4,
        "model.cell_emb_dim": 8, "model.offset_hidden": 16, "model.aux_hidden": 16,
        "data.image_size": 32, "data.batch_size": 14, "data.cache_views": 1, "data.num_workers": 0,
        "phases": ["phase1"], "phases.*.epochs": 1, "trainer.progress_bar": False, "trainer.tensorboard": False,
    })


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> TinyData:
    return make_tiny_data(tmp_path_factory.mktemp("tinydata"))


@pytest.fixture(scope="session")
def tiny_checkpoint(tiny_data: TinyData, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random tiny GeopakModel on the tiny cells, saved with its training config (as `geopak train` does)."""
    import torch

    from geopak.model.geopak import GeopakModel

    cfg = tiny_train_config()
    torch.manual_seed(0)
    model = GeopakModel(cfg.model, tiny_data.cells)  # type: ignore[attr-defined]
    return model.save_checkpoint(tmp_path_factory.mktemp("ckpt") / "phase1", phase="phase1",
                                 extra={"train_config": cfg.to_dict()})  # type: ignore[attr-defined]
