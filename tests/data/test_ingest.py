"""Tests for EXIF GPS ingestion: D/M/S rationals, hemisphere references, missing and zero positions."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image, TiffImagePlugin
from typer.testing import CliRunner

from geopak.cli import app
from geopak.data.ingest import GpsError, ingest_folder, parse_dms, read_exif
from geopak.data.manifest import read_manifest


def _dms(value: float) -> tuple[TiffImagePlugin.IFDRational, ...]:
    value = abs(value)
    d = int(value)
    m = int((value - d) * 60)
    s = Fraction((value - d - m / 60) * 3600).limit_denominator(10_000)
    return (TiffImagePlugin.IFDRational(d, 1), TiffImagePlugin.IFDRational(m, 1),
            TiffImagePlugin.IFDRational(s.numerator, s.denominator))


def _photo(path: Path, lat: float | None = None, lon: float | None = None, *, gps: dict | None = None,
           artist: str | None = None, taken: str | None = None) -> Path:
    exif = Image.Exif()
    if gps is None and lat is not None and lon is not None:
        gps = {1: "N" if lat >= 0 else "S", 2: _dms(lat), 3: "E" if lon >= 0 else "W", 4: _dms(lon)}
    if gps is not None:
        exif[0x8825] = gps
    if artist:
        exif[0x013B] = artist
    if taken:
        exif[0x8769] = {0x9003: taken, 0x9011: "+05:00"}
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (32, 24), (90, 120, 30)).save(path, exif=exif.tobytes())
    return path


def test_parse_dms() -> None:
    assert parse_dms((33, 41, 24), "N", "lat") == pytest.approx(33.69)
    assert parse_dms(((33, 1), (41, 1), (2400, 100)), b"S\x00", "lat") == pytest.approx(-33.69)
    assert parse_dms((73, 3, 0), "w", "lon") == pytest.approx(-73.05)
    assert parse_dms((67.01,), None, "lon") == pytest.approx(67.01)  # decimal degrees, no reference
    for bad, ref, axis in [(((33, 0), (0, 1), (0, 1)), "N", "lat"), ((33, 75, 0), "N", "lat"),
                           ((95, 0, 0), "N", "lat"), ((33, 0, 0), "E", "lat"), ((181, 0, 0), "E", "lon")]:
        with pytest.raises(GpsError):
            parse_dms(bad, ref, axis)


def test_read_exif_positions_and_metadata(tmp_path: Path) -> None:
    info = read_exif(_photo(tmp_path / "isb.jpg", 33.6938, 73.0652, artist="Ayesha", taken="2021:03:14 16:20:05"))
    assert info.reason is None
    assert info.lat == pytest.approx(33.6938, abs=1e-5) and info.lon == pytest.approx(73.0652, abs=1e-5)
    assert info.owner == "Ayesha" and info.taken_at == "2021-03-14T16:20:05+05:00"
    south_west = read_exif(_photo(tmp_path / "sw.jpg", -33.9, -18.4))
    assert south_west.lat == pytest.approx(-33.9, abs=1e-5) and south_west.lon == pytest.approx(-18.4, abs=1e-5)
    assert read_exif(_photo(tmp_path / "none.jpg")).reason == "no_gps"
    assert read_exif(_photo(tmp_path / "zero.jpg", 0.0, 0.0)).reason == "zero_gps"
    bad = read_exif(_photo(tmp_path / "bad.jpg", gps={1: "N", 2: (33.0, 99.0, 0.0), 3: "E", 4: (73.0, 0.0, 0.0)}))
    assert bad.reason == "bad_gps" and "D/M/S" in bad.detail
    hpe = read_exif(_photo(tmp_path / "hpe.jpg", gps={1: "N", 2: _dms(24.86), 3: "E", 4: _dms(67.01),
                                                      31: TiffImagePlugin.IFDRational(15, 2)}))
    assert hpe.accuracy_m == pytest.approx(7.5)
    (tmp_path / "junk.jpg").write_bytes(b"junk" * 10)
    assert read_exif(tmp_path / "junk.jpg").reason == "not_an_image"


def test_ingest_folder_and_cli(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    _photo(photos / "karachi.jpg", 24.8607, 67.0011, artist="Bilal")
    _photo(photos / "trip" / "hunza.JPG", 36.3167, 74.65)
    _photo(photos / "nogps.jpg")
    _photo(photos / "zero.jpg", 0.0, 0.0)
    _photo(photos / ".hidden" / "skip.jpg", 30.0, 70.0)
    (photos / "notes.txt").write_text("not an image")
    (photos / "broken.jpg").write_bytes(b"")

    manifest, rejects = ingest_folder(photos, workers=2)
    assert list(manifest["id"]) == ["karachi.jpg", "trip/hunza.JPG"]
    assert manifest["lat"].dtype == np.float64 and set(manifest["source"]) == {"folder"}
    assert manifest.loc[0, "owner"] == "Bilal"
    assert sorted(zip((Path(p).name for p in rejects["path"]), rejects["reason"])) == [
        ("broken.jpg", "not_an_image"), ("nogps.jpg", "no_gps"), ("zero.jpg", "zero_gps"),
    ]

    out = tmp_path / "out" / "m.parquet"
    res = CliRunner().invoke(app, ["data", "ingest-folder", str(photos), "--out", str(out), "--workers", "2"])
    assert res.exit_code == 0, res.output
    m = read_manifest(out)
    assert len(m) == 2 and m["path"].map(lambda p: Path(p).exists()).all()
    assert m.loc[m["id"] == "trip/hunza.JPG", "lat"].iloc[0] == pytest.approx(36.3167, abs=1e-5)
    rej = pd.read_csv(out.with_name("m.rejects.csv"))
    assert len(rej) == 3 and {"path", "reason", "detail"} <= set(rej.columns)
    res = CliRunner().invoke(app, ["data", "ingest-folder", str(tmp_path / "missing"), "--out", str(out)])
    assert res.exit_code == 1 and "not a folder" in res.output
