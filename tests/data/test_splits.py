"""Tests for splits: seeded, stratified, exact totals; grouped splits never put a group on two sides."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from geopak.cli import app
from geopak.data.manifest import read_manifest, write_manifest
from geopak.data.splits import SplitError, split_groups, split_manifest, split_report

CENTRES = {  # province -> (lat, lon, share)
    "Sindh": (24.9, 67.1, 0.55), "Punjab": (31.5, 74.3, 0.2), "Khyber Pakhtunkhwa": (34.0, 71.6, 0.1),
    "Islamabad Capital Territory": (33.7, 73.1, 0.05), "Gilgit-Baltistan": (35.9, 74.3, 0.04),
    "Balochistan": (30.2, 67.0, 0.04), "Azad Kashmir": (34.4, 73.5, 0.02),
}


def _manifest(n: int = 3000, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    names = list(CENTRES)
    prov = rng.choice(names, size=n, p=[CENTRES[p][2] for p in names])
    lat = np.array([CENTRES[p][0] for p in prov]) + rng.normal(0, 0.4, n)
    lon = np.array([CENTRES[p][1] for p in prov]) + rng.normal(0, 0.4, n)
    df = pd.DataFrame({"id": [f"r{i}" for i in range(n)], "path": [f"/x/{i}.jpg" for i in range(n)],
                       "lat": lat, "lon": lon, "province": prov.astype(object), "source": "t"})
    df["owner"] = [f"u{int(k)}" for k in rng.zipf(1.6, n) % 400]
    sha = np.array([f"h{i}" for i in range(n)], dtype=object)
    sha[1::97] = sha[0:-1:97][: len(sha[1::97])]  # a few exact duplicates: row 97k+1 copies row 97k
    df["sha256"] = sha
    return df


def test_random_split_reproduces_seed_90_10() -> None:
    df = _manifest()
    a = split_manifest(df, "random", val=0.0, test=0.1, seed=7)
    b = split_manifest(df, "random", val=0.0, test=0.1, seed=7)
    c = split_manifest(df, "random", val=0.0, test=0.1, seed=8)
    assert (a["split"] == b["split"]).all() and not (a["split"] == c["split"]).all()
    counts = a["split"].value_counts()
    assert counts["test"] == round(0.1 * len(df)) and "val" not in counts
    for prov, sub in a.groupby("province"):
        frac = (sub["split"] == "test").mean()
        assert abs(frac - 0.1) <= 1.0 / len(sub) + 1e-9, prov  # within one row of exact per province


def test_random_split_three_way_and_errors() -> None:
    df = _manifest(1000)
    s = split_manifest(df, "random", val=0.15, test=0.05, seed=0)
    counts = s["split"].value_counts()
    assert (counts["train"], counts["val"], counts["test"]) == (800, 150, 50)
    assert list(df.columns) + ["split"] == list(s.columns) and "split" not in df.columns
    with pytest.raises(SplitError, match="leaves nothing"):
        split_manifest(df, val=0.5, test=0.5)
    with pytest.raises(SplitError, match="unknown split method"):
        split_manifest(df, method="kfold")


def _assert_no_straddle(split: np.ndarray, key: np.ndarray) -> None:
    per = pd.DataFrame({"k": key, "s": split}).dropna().groupby("k")["s"].nunique()
    assert (per == 1).all(), per[per > 1].head()


@pytest.mark.parametrize("by_owner", [False, True])
def test_grouped_split_keeps_groups_together(by_owner: bool) -> None:
    df = _manifest(4000, seed=1)
    groups = split_groups(df, block_km=5.0, by_owner=by_owner)
    out = split_manifest(df, "grouped", val=0.1, test=0.1, seed=3, block_km=5.0, by_owner=by_owner)
    labels = out["split"].to_numpy()
    _assert_no_straddle(labels, groups)
    _assert_no_straddle(labels, df["sha256"].to_numpy())  # exact duplicates on one side
    from geopak.geo import MetricProjection

    x, y = MetricProjection("+proj=aeqd +lat_0=30 +lon_0=69.5 +datum=WGS84 +units=m +no_defs").forward(
        df["lat"].to_numpy(), df["lon"].to_numpy())
    _assert_no_straddle(labels, np.floor(np.asarray(x) / 5000).astype(int) * 100000 + np.floor(np.asarray(y) / 5000).astype(int))
    if by_owner:
        _assert_no_straddle(labels, df["owner"].to_numpy())
    report = split_report(out, groups)
    assert report["groups_straddling"] == 0
    if not by_owner:  # owners chain blocks into a few big groups; blocks alone stay small
        for k, want in (("train", 0.8), ("val", 0.1), ("test", 0.1)):
            assert abs(report["fractions"][k] - want) < 0.03, report["fractions"]
        sindh = report["by_province"]["Sindh"]
        assert abs(sindh["test"] / sum(sindh.values()) - 0.1) < 0.04
    again = split_manifest(df, "grouped", val=0.1, test=0.1, seed=3, block_km=5.0, by_owner=by_owner)
    assert (again["split"] == out["split"]).all()


def test_split_groups_components() -> None:
    df = pd.DataFrame({"lat": [30.0, 30.001, 31.0, 32.0, 33.0], "lon": [70.0, 70.001, 70.0, 70.0, 70.0],
                       "owner": ["a", None, "a", "b", None], "sha256": [None, None, None, "h", "h"]})
    g = split_groups(df, block_km=5.0, by_owner=True)
    # rows 0,1 share a block; 0,2 an owner; 3,4 the same bytes.
    assert g[0] == g[1] == g[2] and g[3] == g[4] and g[0] != g[3]
    assert len(set(split_groups(df, block_km=None, by_owner=False).tolist())) == 4  # only the hash joins rows
    with pytest.raises(SplitError, match="owner"):
        split_groups(df.drop(columns="owner"), by_owner=True)


def test_cli_split(tmp_path: Path) -> None:
    df = _manifest(600)
    src = write_manifest(df, tmp_path / "m.parquet")
    out = tmp_path / "split.parquet"
    runner = CliRunner()
    res = runner.invoke(app, ["data", "split", str(src), "--out", str(out), "--val", "0", "--test", "0.1", "--seed", "3"])
    assert res.exit_code == 0, res.output
    s = read_manifest(out)
    assert set(s["split"]) == {"train", "test"} and (s["split"] == "test").sum() == 60
    res = runner.invoke(app, ["data", "split", str(src), "--out", str(out), "--method", "grouped", "--by-owner"])
    assert res.exit_code == 0, res.output
    assert "0 straddling splits" in res.output
    res = runner.invoke(app, ["data", "split", str(src), "--out", str(out), "--val", "0.6", "--test", "0.6"])
    assert res.exit_code == 1 and "leaves nothing" in res.output
