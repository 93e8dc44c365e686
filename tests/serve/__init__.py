"""Shared helpers of the server tests: a fake predictor that follows the ``GeopakPredictor`` contract,
image bytes, a tiny cell table and hand-made province polygons."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from geopak.geocells import CellTable
from geopak.provinces import PROVINCE_NAMES

# Cities: (province, lat, lon). The fake predictor picks one from the image's colour.
CITIES = [
    ("Sindh", 24.8607, 67.0011),  # Karachi
    ("Punjab", 31.5204, 74.3587),  # Lahore
    ("Khyber Pakhtunkhwa", 34.0151, 71.5249),  # Peshawar
    ("Islamabad Capital Territory", 33.6844, 73.0479),  # Islamabad
    ("Gilgit-Baltistan", 35.9208, 74.3083),  # Gilgit
    ("Balochistan", 30.1798, 66.9750),  # Quetta
    ("Azad Kashmir", 34.3700, 73.4711),  # Muzaffarabad
]


class FakePredictor:
    """Follows the ``GeopakPredictor.predict`` contract; the answer depends on the image's mean colour.

    The mean red level picks the city (so different images get different answers), and the result
    carries numpy scalars like a real predictor's, to exercise JSON conversion. Records each call's batch
    size in ``calls``.
    """

    checkpoint_path = "checkpoints/fake"

    def __init__(self, fail: bool = False) -> None:
        self.calls: list[int] = []
        self.fail = fail

    def predict(self, x: Any) -> Any:
        images = x if isinstance(x, list) else [x]
        self.calls.append(len(images))
        if self.fail:
            raise RuntimeError("CUDA out of memory (simulated)")
        out = [self._one(np.asarray(img.convert("RGB"), dtype=np.float64)) for img in images]
        return out if isinstance(x, list) else out[0]

    @staticmethod
    def _one(arr: np.ndarray) -> dict[str, Any]:
        red = arr[..., 0].mean() / 255.0
        k = min(int(red * len(CITIES)), len(CITIES) - 1)
        province, lat, lon = CITIES[k]
        logits = -np.abs(np.arange(len(PROVINCE_NAMES)) - k).astype(np.float64)
        probs = np.exp(logits) / np.exp(logits).sum()
        hyps = [
            {"lat": np.float32(lat + d), "lon": np.float32(lon - d), "p": np.float32(p), "cell_id": np.int64(i),
             "province": province}
            for i, (d, p) in enumerate([(0.0, 0.5), (0.4, 0.3), (-0.7, 0.2)])
        ]
        return {
            "province": province,
            "lat": np.float64(lat),
            "lon": np.float64(lon),
            "confidence": np.float32(probs[k]),
            "province_probs": {name: np.float32(p) for name, p in zip(PROVINCE_NAMES, probs)},
            "radius_km": np.float32(45.0),
            "hypotheses": hyps,
        }


def red_level_for(province: str) -> int:
    """A red level (0-255) whose image the fake predictor places in ``province``."""
    k = [c[0] for c in CITIES].index(province)
    return int((k + 0.5) / len(CITIES) * 255)


def image_bytes(red: int = 120, size: int = 48, fmt: str = "PNG", mode: str = "RGB", noise: bool = False) -> bytes:
    """Encoded bytes of a small image of one colour (or noise, which compresses badly)."""
    if noise:
        rng = np.random.default_rng(0)
        arr = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        img = Image.fromarray(arr)
    else:
        img = Image.new("RGB", (size, size), (red, 90, 60))
    if mode != "RGB":
        img = img.convert(mode)
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


def tiny_cells() -> CellTable:
    """A valid cell table: two cells in Sindh, one in Punjab, two in Gilgit-Baltistan."""
    rows = [
        (0, "Sindh", 24.86, 67.00, 20.0, 30, True),
        (1, "Sindh", 25.40, 68.37, 35.0, 12, False),
        (2, "Punjab", 31.52, 74.36, 25.0, 20, True),
        (3, "Gilgit-Baltistan", 35.92, 74.31, 60.0, 8, False),
        (4, "Gilgit-Baltistan", 36.32, 74.65, 80.0, 5, False),
    ]
    df = pd.DataFrame(rows, columns=["cell_id", "province", "center_lat", "center_lon", "radius_km", "count", "urban"])
    return CellTable(df)


def box_polygons() -> dict[str, Any]:
    """Rough hand-made province boxes (not real borders), canonical name -> shapely polygon."""
    from shapely.geometry import box

    return {
        "Sindh": box(66.5, 23.6, 71.1, 28.5),
        "Punjab": box(69.3, 27.7, 75.4, 34.0),
        "Balochistan": box(60.9, 24.9, 70.3, 32.1),
    }
