import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from data_gen import seed_like_points
from geopak import geo
from geopak.geocells import (
    CellBuildError,
    CellConfig,
    CellTable,
    CellTableError,
    build_cells,
    check_cells,
    report_markdown,
    validate_points,
)
from geopak.provinces import PROVINCE_NAMES


def small_table() -> CellTable:
    rows = [
        (0, "Sindh", 24.86, 67.00, 5.0, 100, True),
        (1, "Sindh", 25.40, 68.37, 30.0, 50, False),
        (2, "Sindh", 27.70, 68.85, 40.0, 45, False),
        (3, "Punjab", 31.52, 74.36, 6.0, 80, True),
        (4, "Gilgit-Baltistan", 35.92, 74.31, 50.0, 40, False),
        (5, "Gilgit-Baltistan", 35.30, 75.63, 50.0, 40, False),
    ]
    df = pd.DataFrame(rows, columns=["cell_id", "province", "center_lat", "center_lon", "radius_km", "count", "urban"])
    return CellTable(df)


def test_layout():
    t = small_table()
    assert t.n_cells == 6 and t.max_cells == 3
    assert t.counts_per_province.tolist() == [3, 1, 0, 0, 2, 0, 0]
    assert t.local_index.tolist() == [0, 1, 2, 0, 0, 1]
    pi = t.padded_index()
    assert pi.shape == (7, 3)
    assert pi[0].tolist() == [0, 1, 2] and pi[1].tolist() == [3, -1, -1] and pi[4].tolist() == [4, 5, -1]
    assert (pi[2] == -1).all()


def test_padded_distances_match_haversine():
    t = small_table()
    d = t.padded_distances()
    assert d.shape == (7, 3, 3)
    assert d[0, 0, 1] == pytest.approx(geo.haversine_km(24.86, 67.0, 25.40, 68.37), rel=1e-5)
    assert np.isinf(d[1, 0, 1]) and d[1, 0, 0] == 0
    assert np.isinf(d[2]).all()


def test_assign_nearest_of_own_province():
    t = small_table()
    got = t.assign([24.9, 31.0, 35.4, 30.0], [67.1, 74.0, 75.5, 70.0], ["Sindh", "Punjab", "GB", "KPK"])
    assert got.tolist() == [0, 3, 5, -1]


def test_clamp_uses_province_scale():
    t = small_table()
    assert t.clamp_km[3] == pytest.approx(6.0 * 0.6)
    assert t.clamp_km[4] == pytest.approx(50.0 * 1.4)


def test_round_trip_and_hash(tmp_path):
    t = small_table()
    t.save(tmp_path)
    t2 = CellTable.load(tmp_path)
    t3 = CellTable.load(tmp_path / "cells.json")
    assert t.content_hash == t2.content_hash == t3.content_hash
    d = t.to_dict()
    d["cells"][0]["center_lat"] += 0.5
    with pytest.raises(CellTableError, match="hash mismatch"):
        CellTable.from_dict(d)


def test_contract_violations():
    df = small_table().cells.copy()
    bad = df.copy()
    bad.loc[0, "cell_id"] = 9
    with pytest.raises(CellTableError, match="contiguous"):
        CellTable(bad)
    bad = df.copy()
    bad["province"] = ["Punjab"] + list(df["province"][1:])
    with pytest.raises(CellTableError, match="grouped"):
        CellTable(bad)


# ------------------------------------------------------------------------------------------- build_cells

SMALL_MIX = {
    "Sindh": 2400,
    "Punjab": 700,
    "Islamabad Capital Territory": 300,
    "Gilgit-Baltistan": 150,
    "Azad Kashmir": 25,  # tiny: fewer than the minimum
}


def largest_spot(points: pd.DataFrame, cell_id: np.ndarray, n_cells: int) -> np.ndarray:
    """(n_cells,) size of each cell's largest stack of points at one exact coordinate."""
    df = pd.DataFrame({"cell": cell_id, "lat": points["lat"].to_numpy(), "lon": points["lon"].to_numpy()})
    stack = df.groupby(["cell", "lat", "lon"]).size().groupby(level="cell").max()
    return stack.reindex(np.arange(n_cells), fill_value=0).to_numpy()


@pytest.fixture(scope="module")
def small_points() -> pd.DataFrame:
    return seed_like_points(SMALL_MIX, seed=3)


@pytest.fixture(scope="module")
def small_build(small_points):
    return build_cells(small_points, CellConfig())


def test_build_constraints(small_points, small_build):
    table, asg = small_build
    cfg = CellConfig()
    check = check_cells(table, asg, small_points, cfg)
    assert check.ok, check.summary()
    # the same facts, asserted directly
    assert asg["id"].tolist() == small_points["id"].tolist()
    cid = asg["cell_id"].to_numpy()
    assert (cid >= 0).all() and (cid < table.n_cells).all()
    cells = table.cells
    assert (cells["province"].to_numpy()[cid] == small_points["province"].to_numpy()).all()
    counts = np.bincount(cid, minlength=table.n_cells)
    assert counts.tolist() == cells["count"].tolist()
    big = cells["province"] != "Azad Kashmir"
    assert (cells.loc[big, "count"] >= cfg.min_cluster_size).all()
    # provinces without points get no cells; ids are grouped in canonical order (CellTable checks it)
    assert table.counts_per_province[PROVINCE_NAMES.index("Khyber Pakhtunkhwa")] == 0
    assert table.counts_per_province[PROVINCE_NAMES.index("Balochistan")] == 0
    # steering stops short of the target (capped by n / min size) only when no cell can be split any more
    splittable = (counts >= 80) & (counts - largest_spot(small_points, cid, table.n_cells) >= 40)
    for p, n in SMALL_MIX.items():
        pid = PROVINCE_NAMES.index(p)
        target = cfg.target_for(p, n)
        assert table.cells.attrs["build"][p]["target"] == target
        if table.counts_per_province[pid] < target:
            assert not splittable[table.province_ids == pid].any(), p
    assert table.cells.attrs["build"]["Sindh"]["target_splits"] > 0


def test_radius_limits_where_splittable(small_points, small_build):
    table, asg = small_build
    cells = table.cells
    limit = np.where(cells["urban"], 5.0, 50.0)
    over = cells["radius_km"].to_numpy() > limit
    assert (cells["limit_km"].to_numpy() == limit).all()
    # every over-limit cell is too small to split, or held together by one photographed spot
    counts = cells["count"].to_numpy()
    spot = largest_spot(small_points, asg["cell_id"].to_numpy(), table.n_cells)
    assert not ((counts >= 80) & (counts - spot >= 40) & over).any()
    assert (~over).sum() > 0.5 * len(over)  # sparse tiny sample: most cells still meet their limit
    # the radius is the p90 of the great-circle distances from the centre to the cell's points
    j = int(cells["count"].idxmax())
    members = small_points[asg["cell_id"].to_numpy() == j]
    d = geo.haversine_km(members["lat"], members["lon"], cells.loc[j, "center_lat"], cells.loc[j, "center_lon"])
    assert cells.loc[j, "radius_km"] == pytest.approx(np.quantile(d, 0.9))
    assert cells.loc[j, "max_km"] == pytest.approx(d.max())


def test_radius_split_is_what_enforces_the_limit():
    # one wide rural scatter (sigma 60 km, no dense spot): without splitting it would be one huge cell
    rng = np.random.default_rng(0)
    n = 800
    lat, lon = geo.apply_offset_km(np.full(n, 28.0), np.full(n, 65.0), rng.normal(0, 60, n), rng.normal(0, 60, n))
    df = pd.DataFrame({"id": [f"b{i}" for i in range(n)], "lat": lat, "lon": lon, "province": "Balochistan"})
    cfg = CellConfig(targets={"Balochistan": 1})  # target 1: only the radius limit can split it
    table, asg = build_cells(df, cfg)
    assert table.cells.attrs["build"]["Balochistan"]["radius_splits"] > 0
    assert table.n_cells > 1
    check = check_cells(table, asg, df, cfg)
    assert check.ok and not check.radius_violations
    big = table.cells["count"].to_numpy() >= 80
    assert (table.cells["radius_km"].to_numpy()[big] <= 50.0).all()
    assert (table.cells["count"] >= 40).all()


def test_centres_are_member_points_and_distinct(small_points, small_build):
    table, asg = small_build
    cells = table.cells
    by_id = small_points.set_index("id")
    centre_pts = by_id.loc[cells["center_id"]]
    assert np.allclose(centre_pts["lat"].to_numpy(), cells["center_lat"].to_numpy())
    assert np.allclose(centre_pts["lon"].to_numpy(), cells["center_lon"].to_numpy())
    own = asg.set_index("id").loc[cells["center_id"], "cell_id"].to_numpy()
    assert (own == cells["cell_id"].to_numpy()).all()  # each centre is one of its cell's own points
    assert not cells.duplicated(["center_lat", "center_lon"]).any()
    # a centre is the nearest cell to itself, so assign() maps centres back to their cells
    got = table.assign(cells["center_lat"], cells["center_lon"], cells["province"].to_numpy())
    assert (got == cells["cell_id"].to_numpy()).all()


def test_neighbors_within_province(small_build):
    table, _ = small_build
    cells = table.cells
    for cid in range(table.n_cells):
        nb = table.neighbors(cid)
        p = table.province_ids[cid]
        n_p = table.counts_per_province[p]
        assert len(nb) == min(8, n_p - 1) and cid not in nb
        assert (table.province_ids[nb] == p).all()
        d = table.distance_matrix(int(p))[cid - table.offsets[p], nb - table.offsets[p]]
        assert (np.diff(d) >= -1e-9).all()  # nearest first
    assert list(cells.loc[0, "neighbors"]) == table.neighbors(0).tolist()


def test_save_load_keeps_neighbors(tmp_path, small_build):
    table, _ = small_build
    table.save(tmp_path)
    for src in (tmp_path, tmp_path / "cells.json"):
        t2 = CellTable.load(src)
        assert t2.content_hash == table.content_hash
        assert t2.neighbors(5).tolist() == table.neighbors(5).tolist()
    assert json.loads((tmp_path / "cells.json").read_text())["n_cells"] == table.n_cells


def test_deterministic_and_provinces_independent(small_points, small_build):
    table, asg = small_build
    table2, asg2 = build_cells(small_points.copy(), CellConfig())
    assert table2.content_hash == table.content_hash
    assert (asg2["cell_id"].to_numpy() == asg["cell_id"].to_numpy()).all()
    pd.testing.assert_frame_equal(table2.cells, table.cells)
    # a province built alone gets the same cells as inside the full set
    gb = small_points[small_points["province"] == "Gilgit-Baltistan"]
    alone, _ = build_cells(gb, CellConfig())
    full = table.cells[table.cells["province"] == "Gilgit-Baltistan"]
    assert np.allclose(alone.centers, full[["center_lat", "center_lon"]].to_numpy())
    assert alone.cells["count"].tolist() == full["count"].tolist()


def test_tiny_province_gets_one_cell(small_points, small_build):
    table, asg = small_build
    ajk = table.cells[table.cells["province"] == "Azad Kashmir"]
    assert len(ajk) == 1 and int(ajk["count"].iloc[0]) == SMALL_MIX["Azad Kashmir"]
    check = check_cells(table, asg, small_points)
    assert check.tiny_provinces == ["Azad Kashmir"] and check.ok
    assert table.cells.attrs["build"]["Azad Kashmir"]["tiny"] is True
    text = report_markdown(table, check, CellConfig())
    assert "Azad Kashmir (tiny: one cell)" in text and "got one cell each: Azad Kashmir" in text


def test_target_steering_merges_and_splits():
    # three tight blobs of 200 points 2-3 km apart in Lahore: even all merged they stay within the urban
    # 5 km limit, so the target alone decides the count
    rng = np.random.default_rng(1)
    centres = [(31.52, 74.36), (31.54, 74.36), (31.52, 74.38)]
    lat, lon = [], []
    for la, lo in centres:
        a, b = geo.apply_offset_km(np.full(200, la), np.full(200, lo), rng.normal(0, 0.6, 200), rng.normal(0, 0.6, 200))
        lat.append(a)
        lon.append(b)
    df = pd.DataFrame(
        {"id": np.arange(600).astype(str), "lat": np.concatenate(lat), "lon": np.concatenate(lon), "province": "PB"}
    )
    for target in (1, 2, 3, 9):
        table, asg = build_cells(df, CellConfig(targets={"Punjab": target}))
        assert table.n_cells == target
        assert check_cells(table, asg, df, CellConfig(targets={"Punjab": target})).ok
    # 400 is capped at 600 // 40 = 15; splitting stops when every cell is under twice the minimum
    table, asg = build_cells(df, CellConfig(targets={"Punjab": 400}))
    assert 9 < table.n_cells <= 15 and (table.cells["count"] < 80).all() and (table.cells["count"] >= 40).all()
    assert CellConfig().target_for("Punjab", 600) == 15
    assert CellConfig().target_for("Sindh", 100_000) == 450
    assert CellConfig().target_for("AJK", 10) == 1


def test_spots_are_never_split():
    # 70 photos at one spot + 60 scattered far away: any split into two parts of >= 40 would cut the spot
    rng = np.random.default_rng(2)
    lat = np.r_[np.full(70, 35.92), 35.92 + rng.normal(0, 0.8, 60)]
    lon = np.r_[np.full(70, 74.31), 74.31 + rng.normal(0, 0.8, 60)]
    df = pd.DataFrame({"id": np.arange(130).astype(str), "lat": lat, "lon": lon, "province": "GB"})
    table, asg = build_cells(df, CellConfig(targets={"GB": 3}))
    spot_cells = asg["cell_id"].to_numpy()[:70]
    assert len(set(spot_cells)) == 1
    assert check_cells(table, asg, df).ok
    # HDBSCAN alone may cut a stack of identical points in two; the builder keeps each spot whole
    n = 500
    lat = np.r_[np.full(n, 24.9), 24.9 + rng.normal(0, 0.05, 300)]
    lon = np.r_[np.full(n, 67.0), 67.0 + rng.normal(0, 0.05, 300)]
    df = pd.DataFrame({"id": np.arange(n + 300).astype(str), "lat": lat, "lon": lon, "province": "Sindh"})
    table, asg = build_cells(df, CellConfig())
    assert len(set(asg["cell_id"].to_numpy()[:n])) == 1
    assert not table.cells.duplicated(["center_lat", "center_lon"]).any()
    assert check_cells(table, asg, df).ok
    table, asg = build_cells(df.iloc[:n], CellConfig())
    assert table.n_cells == 1 and table.cells["radius_km"].iloc[0] == 0.0


def test_bad_input_names_the_row():
    good = pd.DataFrame({"id": ["a", "b"], "lat": [24.8, 25.0], "lon": [67.0, 67.1], "province": ["Sindh", "KPK"]})
    assert validate_points(good)["province"].tolist() == ["Sindh", "Khyber Pakhtunkhwa"]
    with pytest.raises(CellBuildError, match=r"missing column\(s\) \['province'\]"):
        build_cells(good.drop(columns="province"))
    bad = good.copy()
    bad.loc[1, "lat"] = 123.0
    with pytest.raises(CellBuildError, match=r"row 1 \(id 'b'\) has lat=123.0"):
        build_cells(bad)
    bad = good.copy()
    bad.loc[1, "province"] = "Kabul"
    with pytest.raises(CellBuildError, match=r"row 1 \(id 'b'\).*unknown province 'Kabul'"):
        build_cells(bad)
    bad = good.copy()
    bad.loc[1, "id"] = "a"
    with pytest.raises(CellBuildError, match="duplicate id 'a'"):
        build_cells(bad)
    with pytest.raises(CellBuildError, match="no rows"):
        build_cells(good.iloc[:0])
    with pytest.raises(ValueError, match="min_cluster_size"):
        CellConfig(min_cluster_size=1)
    with pytest.raises(ValueError, match="unknown province"):
        CellConfig(targets={"Kabul": 3})


def test_check_reports_violations(small_points, small_build):
    table, asg = small_build
    broken = asg.copy()
    broken.loc[0, "cell_id"] = int(table.offsets[1])  # a Sindh point put in a Punjab cell
    check = check_cells(table, broken, small_points)
    assert not check.ok and check.wrong_province == 1 and len(check.count_mismatch) == 2
    broken = asg.copy()
    broken.loc[0, "cell_id"] = -1
    assert check_cells(table, broken, small_points).unassigned == 1


def test_cli_build_and_assign(tmp_path, small_points, boundaries_path):
    from geopak.cli import app

    src = tmp_path / "points.csv"
    pts = small_points[small_points["province"].isin(["Punjab", "Gilgit-Baltistan", "Azad Kashmir"])]
    pts.to_csv(src, index=False)
    out = tmp_path / "cells"
    runner = CliRunner()
    res = runner.invoke(
        app, ["cells", "build", str(src), "--out", str(out), "--seed", "0", "--boundaries", str(boundaries_path)]
    )
    assert res.exit_code == 0, res.output
    for name in ("cells.parquet", "cells.json", "assignments.parquet", "report.md", "cells.png"):
        assert (out / name).stat().st_size > 0, name
    table = CellTable.load(out)
    asg = pd.read_parquet(out / "assignments.parquet")
    assert list(asg.columns) == ["id", "cell_id"] and len(asg) == len(pts)
    assert check_cells(table, asg, pts).ok
    report = (out / "report.md").read_text()
    assert "## Cells per province" in report and "outlines are not drawn" not in report
    assert f"{table.n_cells} cells" in res.output
    # new points: assign to the nearest cell of their province
    res = runner.invoke(app, ["cells", "assign", str(out), str(src), "--out", str(tmp_path / "a.parquet")])
    assert res.exit_code == 0, res.output
    again = pd.read_parquet(tmp_path / "a.parquet")
    assert (again["cell_id"] >= 0).all()
    exp = table.assign(pts["lat"], pts["lon"], pts["province"].to_numpy())
    assert (again["cell_id"].to_numpy() == exp).all()


def test_cli_errors_name_the_problem(tmp_path):
    from geopak.cli import app

    src = tmp_path / "bad.csv"
    pd.DataFrame({"id": ["a"], "lat": [24.8], "lon": [67.0]}).to_csv(src, index=False)
    res = CliRunner().invoke(app, ["cells", "build", str(src), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "missing column(s) ['province']" in res.output
    res = CliRunner().invoke(app, ["cells", "build", str(tmp_path / "nope.csv"), "--out", str(tmp_path / "o")])
    assert res.exit_code != 0 and "does not exist" in res.output
