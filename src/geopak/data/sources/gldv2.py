"""Google Landmarks v2 importer.

GLDv2's ``train.csv`` (``id,url,landmark_id``) carries no coordinates; landmarks are located through their
Wikimedia/Wikidata entries. This importer joins ``train.csv`` with a landmark table the user provides
(``landmark_id,lat,lon`` and optionally ``name``; e.g. exported from Wikidata for the categories in
``train_label_to_category.csv``) and keeps the landmarks inside the box. An optional attribution file
(``train_attribution.csv``: ``id`` plus author/licence columns) fills licence and attribution.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from geopak.data.sources.base import PAKISTAN_BBOX, BBox, records_frame


def _read(path: str | Path, required: list[str], what: str) -> pd.DataFrame:
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{what} not found: {p}")
    df = pd.read_csv(p, dtype={"id": str, "landmark_id": str})
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise ValueError(f"{p}: {what} lacks columns {missing} (has {list(df.columns)})")
    return df


def load(
    train_csv: str | Path, landmarks_csv: str | Path, attribution_csv: str | Path | None = None,
    bbox: BBox = PAKISTAN_BBOX,
) -> pd.DataFrame:
    train = _read(train_csv, ["id", "url", "landmark_id"], "GLDv2 train.csv")
    marks = _read(landmarks_csv, ["landmark_id", "lat", "lon"], "landmark coordinates table")
    marks = marks[bbox.contains(marks["lat"], marks["lon"])]
    df = train.merge(marks, on="landmark_id", how="inner")
    if attribution_csv is not None:
        attr = _read(attribution_csv, ["id"], "GLDv2 attribution file")
        df = df.merge(attr, on="id", how="left", suffixes=("", "_attr"))
    rows = []
    for r in df.itertuples(index=False):
        d = r._asdict()
        author = d.get("author")
        rows.append({
            "id": f"gldv2:{d['id']}", "url": d["url"], "lat": float(d["lat"]), "lon": float(d["lon"]),
            "source": "gldv2", "licence": d.get("license") or d.get("licence"),
            "attribution": f"{author} via Wikimedia Commons" if isinstance(author, str) else None,
            "owner": author if isinstance(author, str) else None, "taken_at": None,
            # A landmark's photos are located at the landmark: their position is only as good as its extent.
            "accuracy_m": 1000.0, "landmark_id": d["landmark_id"],
        })
    return records_frame(rows)
