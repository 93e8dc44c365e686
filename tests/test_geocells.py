import numpy as np
import pandas as pd
import pytest

from geopak import geo
from geopak.geocells import CellTable, CellTableError


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
