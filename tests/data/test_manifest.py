"""Tests for the manifest schema: every input format, column aliases, path handling, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from geopak.data.manifest import (
    ManifestError,
    canonical_columns,
    check_manifest,
    read_manifest,
    write_manifest,
)


def _rows() -> list[dict]:
    return [
        {"id": "001", "path": "img/a.jpg", "lat": 24.86, "lon": 67.01, "province": "sindh", "source": "flickr"},
        {"id": "002", "path": "img/b.jpg", "lat": 31.55, "lon": 74.34, "province": "PK-PB", "source": "flickr"},
        {"id": "003", "path": "/abs/c.jpg", "lat": 34.01, "lon": 71.58, "province": "NWFP", "source": "gldv2"},
    ]


def _check_read(df: pd.DataFrame, base: Path) -> None:
    assert list(df.columns[:6]) == ["id", "path", "lat", "lon", "province", "source"]
    assert list(df["id"]) == ["001", "002", "003"]  # leading zeros survive CSV
    assert df["lat"].dtype == np.float64 and df["lon"].dtype == np.float64
    assert list(df["province"]) == ["Sindh", "Punjab", "Khyber Pakhtunkhwa"]
    assert df["path"].iloc[0] == str((base / "img/a.jpg").resolve())
    assert df["path"].iloc[2] == "/abs/c.jpg"


@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl", "parquet", "json"])
def test_read_formats(tmp_path: Path, fmt: str) -> None:
    df = pd.DataFrame(_rows())
    p = tmp_path / f"m.{fmt}"
    if fmt == "csv":
        df.to_csv(p, index=False)
    elif fmt == "tsv":
        df.to_csv(p, sep="\t", index=False)
    elif fmt == "jsonl":
        df.to_json(p, orient="records", lines=True)
    elif fmt == "json":
        p.write_text(json.dumps(_rows()))
    else:
        df.to_parquet(p)
    _check_read(read_manifest(p), tmp_path)


def test_aliases_and_defaults(tmp_path: Path) -> None:
    p = tmp_path / "export.csv"
    p.write_text("Photo ID,File,Latitude,Lng,License,Owner Name,date_taken\n"
                 "7,x.jpg,33.7,73.05,CC-BY,alice,2019-04-01 10:00:00\n")
    df = read_manifest(p)
    assert df.loc[0, "id"] == "7" and df.loc[0, "lon"] == 73.05
    assert df.loc[0, "licence"] == "CC-BY" and df.loc[0, "owner"] == "alice"
    assert df.loc[0, "taken_at"] == "2019-04-01 10:00:00"
    assert df.loc[0, "source"] == "export" and df.loc[0, "province"] is None
    assert canonical_columns(["lat", "latitude"]) == {"lat": "lat"}  # exact name wins, alias kept as extra
    with pytest.raises(ManifestError, match="'latitude' and 'gps_lat' both mean 'lat'"):
        canonical_columns(["latitude", "gps_lat"], "x.csv")


def test_hf_imagefolder(tmp_path: Path) -> None:
    folder = tmp_path / "ds" / "train"
    folder.mkdir(parents=True)
    with open(folder / "metadata.jsonl", "w") as f:
        f.write(json.dumps({"file_name": "0001.jpg", "latitude": 30.2, "longitude": 71.5, "license": "cc0"}) + "\n")
        f.write(json.dumps({"file_name": "sub/0002.jpg", "latitude": 25.4, "longitude": 68.4}) + "\n")
    for src in (folder, folder / "metadata.jsonl"):
        df = read_manifest(src)
        assert list(df["id"]) == ["0001.jpg", "sub/0002.jpg"]
        assert df["path"].iloc[1] == str(folder / "sub" / "0002.jpg")
        assert set(df["source"]) == {"imagefolder"}
    (folder / "metadata.jsonl").unlink()
    pd.DataFrame({"file_name": ["a.png"], "lat": [30.0], "lon": [70.0]}).to_csv(folder / "metadata.csv", index=False)
    assert read_manifest(folder)["path"].iloc[0] == str(folder / "a.png")
    (folder / "metadata.csv").unlink()
    with pytest.raises(ManifestError, match="ingest-folder"):
        read_manifest(folder)


def test_errors_name_file_row_and_value(tmp_path: Path) -> None:
    p = tmp_path / "bad.csv"
    p.write_text("id,path,lat,lon\na,a.jpg,30.1,70\nb,b.jpg,north,70\n")
    with pytest.raises(ManifestError) as e:
        read_manifest(p)
    msg = str(e.value)
    assert "bad.csv" in msg and "row 1" in msg and "'north'" in msg and "lat" in msg
    loose = read_manifest(p, strict=False)  # kept for validation to report
    assert len(loose) == 2 and np.isnan(loose["lat"].iloc[1])

    p.write_text("id,path,lat,lon,province\na,a.jpg,30,70,Narnia\n")
    with pytest.raises(ManifestError, match="row 0.*Narnia"):
        read_manifest(p)
    assert read_manifest(p, strict=False)["province"].iloc[0] == "Narnia"

    p.write_text("id,path,lat,lon\na,a.jpg,30,70\na,b.jpg,31,71\n")
    with pytest.raises(ManifestError, match="row 1: id 'a' already used by row 0"):
        read_manifest(p)
    p.write_text("id,path,lat,lon\na,a.jpg,30,270\n")
    with pytest.raises(ManifestError, match="lon 270.0 is not a finite"):
        read_manifest(p)
    p.write_text("name,x,y\n1,2,3\n")
    with pytest.raises(ManifestError, match="no column for path, lat, lon"):
        read_manifest(p)
    with pytest.raises(ManifestError, match="does not exist"):
        read_manifest(tmp_path / "missing.parquet")
    (tmp_path / "m.xlsx").write_text("x")
    with pytest.raises(ManifestError, match="unknown manifest format"):
        read_manifest(tmp_path / "m.xlsx")


def test_write_round_trip_relative_paths(tmp_path: Path) -> None:
    df = read_manifest(_write_csv(tmp_path / "in.csv"))
    df["split"] = ["train", "val", "test"]
    out = write_manifest(df, tmp_path / "out" / "m.parquet")
    raw = pd.read_parquet(out)
    # Paths under the output folder would be relative; these lie beside it, so they stay absolute.
    assert raw["path"].iloc[0] == str((tmp_path / "img/a.jpg").resolve())
    out2 = write_manifest(df, tmp_path / "m2.parquet")
    assert pd.read_parquet(out2)["path"].iloc[0] == "img/a.jpg"
    back = read_manifest(out2)
    pd.testing.assert_frame_equal(back, df)
    moved = tmp_path / "moved"
    moved.mkdir()
    (tmp_path / "m2.parquet").rename(moved / "m2.parquet")
    assert read_manifest(moved / "m2.parquet")["path"].iloc[0] == str(moved / "img" / "a.jpg")
    for suffix in (".csv", ".jsonl"):
        pd.testing.assert_frame_equal(read_manifest(write_manifest(df, tmp_path / f"m3{suffix}")), df)


def test_check_manifest() -> None:
    df = pd.DataFrame(_rows())
    df["province"] = ["Sindh", "Punjab", "Khyber Pakhtunkhwa"]
    check_manifest(df)
    with pytest.raises(ManifestError, match="missing required column"):
        check_manifest(df.drop(columns="source"))
    with pytest.raises(ManifestError, match="split 'holdout'"):
        check_manifest(df.assign(split=["train", "holdout", "test"]))
    with pytest.raises(ManifestError, match="unknown province 'sindh'"):
        check_manifest(df.assign(province=["sindh", None, None]))  # only canonical names are stored


def _write_csv(p: Path) -> Path:
    pd.DataFrame(_rows()).to_csv(p, index=False)
    return p
