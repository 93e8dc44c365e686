"""Tests of the training engine; :func:`make_tiny_data` writes a tiny learnable dataset (images, manifest,
cell table and assignments) into a temporary folder, without the synth module."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from geopak.geocells import CellTable
from geopak.provinces import PROVINCES

# Two cell centres per province (lat, lon), inside each province.
_CENTRES = {
    0: [(24.86, 67.01), (25.40, 68.37)],
    1: [(31.55, 74.34), (30.20, 71.47)],
    2: [(34.01, 71.58), (34.77, 72.36)],
    3: [(33.70, 73.05), (33.60, 73.15)],
    4: [(35.92, 74.31), (35.30, 75.63)],
    5: [(30.18, 66.99), (27.00, 65.00)],
    6: [(34.37, 73.47), (33.15, 73.75)],
}
_HUES = np.array(
    [[220, 60, 40], [40, 200, 60], [40, 80, 220], [220, 220, 40], [230, 230, 230], [150, 90, 40], [40, 200, 200]],
    dtype=np.float32,
)


def make_tiny_data(
    root: Path, per_province: int = 24, size: int = 32, seed: int = 0, val_share: float = 0.25
) -> tuple[Path, Path]:
    """Write images, ``manifest.parquet`` (with a split column) and a ``cells/`` folder under ``root``.

    Each image's colour says its province and its stripe pattern says which of the province's two cells it
    is in, so the heads can learn both from tiny random encoders. Returns (manifest path, cells folder).
    """
    rng = np.random.default_rng(seed)
    img_dir = root / "images"
    img_dir.mkdir(parents=True, exist_ok=True)
    cells = CellTable(
        pd.DataFrame(
            [
                dict(cell_id=2 * p + k, province=PROVINCES[p].name, center_lat=c[0], center_lon=c[1],
                     radius_km=8.0, count=per_province // 2, urban=True)
                for p in range(7)
                for k, c in enumerate(_CENTRES[p])
            ]
        )
    )
    rows = []
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    for p in range(7):
        for j in range(per_province):
            k = j % 2
            clat, clon = _CENTRES[p][k]
            lat = clat + rng.normal(0, 0.03)
            lon = clon + rng.normal(0, 0.03)
            stripes = 0.5 + 0.5 * np.sin((xx if k == 0 else yy) * (0.6 + 0.4 * k))
            img = _HUES[p][None, None, :] * (0.55 + 0.45 * stripes[..., None])
            img += rng.normal(0, 12, img.shape)
            iid = f"{PROVINCES[p].short}-{j:03d}"
            Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(img_dir / f"{iid}.png")
            rows.append(
                dict(id=iid, path=str(img_dir / f"{iid}.png"), lat=lat, lon=lon, province=PROVINCES[p].name,
                     source="test", split="val" if j < per_province * val_share else "train")
            )
    df = pd.DataFrame(rows)
    manifest = root / "manifest.parquet"
    df.to_parquet(manifest, index=False)
    cdir = root / "cells"
    cells.save(cdir)
    pd.DataFrame(
        {"id": df["id"], "cell_id": cells.assign(df["lat"], df["lon"], df["province"])}
    ).to_parquet(cdir / "assignments.parquet", index=False)
    return manifest, cdir
