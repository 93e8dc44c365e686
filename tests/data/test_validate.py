"""Tests for manifest validation: one reason per rejected row, every row accounted for, awkward images survive."""

from __future__ import annotations

import io
import json
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from geopak.cli import app
from geopak.data.manifest import read_manifest
from geopak.data.validate import REASONS, check_image_file, validate_manifest

KARACHI, LAHORE, PESHAWAR, QUETTA, GILGIT = (24.86, 67.01), (31.55, 74.34), (34.01, 71.58), (30.18, 66.99), (35.92, 74.31)


def _jpeg(path: Path, size: tuple[int, int] = (96, 80), seed: int = 0, mode: str = "RGB") -> Path:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 255, (size[1], size[0], 3), np.uint8)
    img = Image.fromarray(arr)
    if mode == "CMYK":
        img = img.convert("CMYK")
    img.save(path, format="JPEG", quality=90)
    return path


def _png_header_only(path: Path, width: int, height: int) -> Path:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


def _build(tmp: Path) -> tuple[pd.DataFrame, dict[str, str | None]]:
    """A manifest with one row per case; returns it and the expected reason per id (None = accepted)."""
    img = tmp / "img"
    img.mkdir()
    good = _jpeg(img / "good.jpg")
    _jpeg(img / "lahore.jpg", seed=1)
    _jpeg(img / "kp.jpg", seed=2)
    shutil.copy(good, img / "copy.jpg")
    _jpeg(img / "cmyk.jpg", seed=3, mode="CMYK")
    rgba = np.zeros((70, 70, 4), np.uint8)
    rgba[..., 1] = 200
    rgba[:, :35, 3] = 255
    Image.fromarray(rgba, "RGBA").save(img / "alpha.png")
    Image.fromarray(np.full((70, 90), 40000, np.uint16)).save(img / "grey16.png")
    (img / "empty.jpg").write_bytes(b"")
    (img / "notes.jpg").write_text("not an image\n" * 10)
    data = _jpeg(img / "full.jpg", size=(200, 200), seed=4).read_bytes()
    (img / "trunc.jpg").write_bytes(data[: len(data) // 2])
    _png_header_only(img / "bomb.png", 50_000, 50_000)
    _jpeg(img / "tiny.jpg", size=(40, 30), seed=5)
    for i, name in enumerate(("nan", "zero", "range", "swap", "delhi", "mismatch", "badprov", "dupid", "noid")):
        _jpeg(img / f"{name}.jpg", seed=10 + i)

    rows = [
        # id, path, lat, lon, province, expected reason
        ("good", "good.jpg", *KARACHI, None, None),
        ("lahore", "lahore.jpg", *LAHORE, "", None),
        ("kp", "kp.jpg", *PESHAWAR, "KPK", None),
        ("cmyk", "cmyk.jpg", *QUETTA, "Baluchistan", None),
        ("alpha", "alpha.png", *GILGIT, None, None),
        ("grey16", "grey16.png", *LAHORE, "Punjab", None),
        ("nanlat", "nan.jpg", np.nan, 70.0, None, "bad_coordinates"),
        ("zero", "zero.jpg", 0.0, 0.0, None, "bad_coordinates"),
        ("range", "range.jpg", 95.0, 70.0, None, "bad_coordinates"),
        ("swap", "swap.jpg", KARACHI[1], KARACHI[0], None, "swapped_latlon"),
        ("delhi", "delhi.jpg", 28.61, 77.21, None, "outside_pakistan"),
        ("sea", "good.jpg", 21.0, 64.0, None, "outside_pakistan"),
        ("mismatch", "mismatch.jpg", *KARACHI, "Punjab", "province_mismatch"),
        ("badprov", "badprov.jpg", *KARACHI, "Narnia", "bad_province"),
        ("missing", "nope.jpg", *KARACHI, None, "missing_file"),
        ("empty", "empty.jpg", *KARACHI, None, "not_an_image"),
        ("notes", "notes.jpg", *KARACHI, None, "not_an_image"),
        ("trunc", "trunc.jpg", *KARACHI, None, "unreadable_image"),
        ("bomb", "bomb.png", *KARACHI, None, "too_large"),
        ("tiny", "tiny.jpg", *KARACHI, None, "too_small"),
        ("good", "dupid.jpg", *KARACHI, None, "duplicate_id"),
        ("copy", "copy.jpg", *KARACHI, None, "duplicate_image"),
        ("", "noid.jpg", *KARACHI, None, "missing_id"),
    ]
    rows = [r if len(r) == 6 else (*r, None) for r in rows]
    expected = {f"{i}:{r[0] or None}": r[5] for i, r in enumerate(rows)}
    df = pd.DataFrame([r[:5] for r in rows], columns=["id", "path", "lat", "lon", "province"], dtype=object)
    df["lat"] = df["lat"].astype(float)
    df["lon"] = df["lon"].astype(float)
    df["source"] = "test"
    df["path"] = [str(img / p) for p in df["path"]]
    return df, expected


def _check(df: pd.DataFrame, expected: dict, accepted: pd.DataFrame, rejects: pd.DataFrame, summary: dict) -> None:
    got = {f"{r.row}:{r.id if isinstance(r.id, str) else None}": r.reason for r in rejects.itertuples()}
    want = {k: v for k, v in expected.items() if v is not None}
    assert got == want
    assert len(accepted) + len(rejects) == len(df) == summary["input"]
    assert summary["accounted"] is True
    assert summary["accepted"] == len(accepted) and summary["rejected"] == len(rejects)
    assert sum(summary["by_reason"].values()) == len(rejects)
    assert set(summary["by_reason"]) <= set(REASONS)
    assert accepted["id"].is_unique and accepted["sha256"].is_unique
    prov = dict(zip(accepted["id"], accepted["province"]))
    assert prov == {
        "good": "Sindh", "lahore": "Punjab", "kp": "Khyber Pakhtunkhwa", "cmyk": "Balochistan",
        "alpha": "Gilgit-Baltistan", "grey16": "Punjab",
    }
    assert summary["provinces_filled"] == 3
    assert (rejects["detail"].str.len() > 0).all()
    assert rejects.loc[rejects["reason"] == "swapped_latlon", "detail"].str.contains("Sindh").all()


def test_validate_with_polygons(tmp_path: Path, boundaries_path: Path) -> None:
    df, expected = _build(tmp_path)
    accepted, rejects, summary = validate_manifest(df, boundaries=boundaries_path, workers=4)
    _check(df, expected, accepted, rejects, summary)
    assert summary["lookup"]["method"] == "polygons" and summary["notes"] == []
    assert set(accepted.loc[accepted["id"] == "alpha", ["width", "height"]].iloc[0]) == {70}


def test_validate_offline_fallback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GEOPAK_CACHE", str(tmp_path / "cache"))
    df, expected = _build(tmp_path)
    accepted, rejects, summary = validate_manifest(df, workers=2, full_decode=True)
    _check(df, expected, accepted, rejects, summary)
    assert summary["lookup"]["method"] == "geonames"
    assert any("fallback" in n for n in summary["notes"])
    assert summary["images"]["mode"] == "full"


def test_province_tolerance_near_border(boundaries_path: Path, tmp_path: Path) -> None:
    from geopak.boundaries import load_polygons, polygon_distance_km

    polys = load_polygons(boundaries_path)
    assert polys is not None
    # A point just inside Sindh, ~1 km from Balochistan, labelled Balochistan: tolerated at 2 km, not at 0.
    rng = np.random.default_rng(0)
    lat = rng.uniform(25, 28, 4000)
    lon = rng.uniform(66.5, 68.5, 4000)
    d = polygon_distance_km(polys, lat, lon, np.full(4000, "Balochistan", object))
    i = int(np.flatnonzero((d > 0.3) & (d < 1.5))[0])
    df = pd.DataFrame({"id": ["x"], "path": [str(tmp_path / "x.jpg")], "lat": [lat[i]], "lon": [lon[i]],
                       "province": ["Balochistan"], "source": ["t"]})
    acc, rej, _ = validate_manifest(df, boundaries=polys, check_images=False)
    assert len(acc) == 1 and acc["province"].iloc[0] == "Balochistan"  # the given province is kept
    acc, rej, _ = validate_manifest(df, boundaries=polys, check_images=False, province_tolerance_km=0.0)
    assert list(rej["reason"]) == ["province_mismatch"]


def test_check_image_file_never_raises(tmp_path: Path) -> None:
    assert check_image_file(str(tmp_path)).reason == "not_an_image"  # a folder
    p = tmp_path / "x.png"
    p.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 10)
    assert check_image_file(str(p)).reason in ("not_an_image", "unreadable_image")
    good = Image.new("RGB", (100, 100))
    buf = io.BytesIO()
    good.save(buf, format="PNG")
    p.write_bytes(buf.getvalue()[:-12])  # drop IEND
    assert check_image_file(str(p)).reason == "unreadable_image"


def test_cli_validate(tmp_path: Path, boundaries_path: Path) -> None:
    df, expected = _build(tmp_path)
    manifest = tmp_path / "m.csv"
    df.to_csv(manifest, index=False)
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["data", "validate", str(manifest), "--out", str(out),
                                   "--boundaries", str(boundaries_path), "--workers", "2"])
    assert res.exit_code == 0, res.output
    assert "all rows accounted for" in res.output
    summary = json.loads((out / "summary.json").read_text())
    assert {"input", "accepted", "rejected", "by_reason"} <= set(summary)
    assert summary["input"] == len(df) and summary["accepted"] == 6
    rejects = pd.read_csv(out / "rejects.csv")
    assert {"row", "id", "reason", "detail"} <= set(rejects.columns)
    assert len(rejects) == sum(v is not None for v in expected.values())
    accepted = read_manifest(out / "manifest.parquet")
    assert len(accepted) == 6 and all(Path(p).exists() for p in accepted["path"])
    res = CliRunner().invoke(app, ["data", "validate", str(tmp_path / "none.csv"), "--out", str(out)])
    assert res.exit_code == 1 and "does not exist" in res.output
