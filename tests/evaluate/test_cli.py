"""The `geopak predict` and `geopak evaluate` commands, driven through the real CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from geopak.cli import app
from geopak.evaluate import METRIC_KEYS
from geopak.provinces import PROVINCE_NAMES

from .conftest import TinyData

runner = CliRunner()


@pytest.fixture(scope="module")
def photos(tiny_data: TinyData, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with 3 photos (one in a subfolder) and a file that is not an image."""
    d = tmp_path_factory.mktemp("photos")
    (d / "sub").mkdir()
    for i, name in enumerate(["a.jpg", "b.jpg", "sub/c.jpg"]):
        (d / name).write_bytes((tiny_data.root / tiny_data.df["path"][i]).read_bytes())
    (d / "notes.txt").write_text("not an image")
    return d


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "geojson"])
def test_predict_writes_each_format(tiny_checkpoint: Path, photos: Path, tmp_path: Path, fmt: str) -> None:
    out = tmp_path / f"preds.{fmt}"
    res = runner.invoke(app, ["predict", str(tiny_checkpoint), str(photos), "--out", str(out), "--device", "cpu",
                              "--no-bf16", "-b", "2"])
    assert res.exit_code == 0, res.output
    if fmt == "csv":
        df = pd.read_csv(out)
        assert len(df) == 3 and df["path"].str.endswith(("a.jpg", "b.jpg", "c.jpg")).all()
        assert df["province"].isin(PROVINCE_NAMES).all() and {"lat", "lon", "confidence", "radius_km", "p_SD"} <= set(df)
        assert all(json.loads(h) for h in df["hypotheses"])
    elif fmt == "jsonl":
        recs = [json.loads(line) for line in out.read_text().splitlines()]
        assert len(recs) == 3 and {"path", "province", "lat", "lon", "confidence", "hypotheses"} <= set(recs[0])
    else:
        gj = json.loads(out.read_text())
        assert gj["type"] == "FeatureCollection" and len(gj["features"]) == 3
        f = gj["features"][0]
        assert f["geometry"]["type"] == "Point" and len(f["geometry"]["coordinates"]) == 2
        assert f["properties"]["province"] in PROVINCE_NAMES


def test_predict_plots_and_reports_unreadable(tiny_checkpoint: Path, photos: Path, tmp_path: Path) -> None:
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 truncated")
    out = tmp_path / "p.csv"
    res = runner.invoke(app, ["predict", str(tiny_checkpoint), str(photos / "a.jpg"), str(bad), "--out", str(out),
                              "--plot", str(tmp_path / "maps"), "--device", "cpu", "--no-bf16"])
    assert res.exit_code == 1
    assert "broken.jpg" in res.output
    assert len(pd.read_csv(out)) == 1  # the readable photo is still predicted
    maps = list((tmp_path / "maps").glob("*.png"))
    assert len(maps) == 1 and maps[0].stat().st_size > 10_000


def test_predict_rejects_bad_arguments(tiny_checkpoint: Path, photos: Path, tmp_path: Path) -> None:
    res = runner.invoke(app, ["predict", str(tiny_checkpoint), str(photos), "--out", str(tmp_path / "x.xlsx")])
    assert res.exit_code != 0 and ".csv" in res.output
    res = runner.invoke(app, ["predict", str(tmp_path / "nockpt"), str(photos)])
    assert res.exit_code == 2 and "no GEOPAK checkpoint" in " ".join(res.output.split())


def test_evaluate_cli(tiny_checkpoint: Path, tiny_data: TinyData, tmp_path: Path) -> None:
    out = tmp_path / "ev"
    res = runner.invoke(app, ["evaluate", str(tiny_checkpoint), str(tiny_data.manifest), "--split", "test",
                              "--out", str(out), "--compare", "--no-retrain", "--device", "cpu", "--no-bf16"])
    assert res.exit_code == 0, res.output
    m = json.loads((out / "metrics.json").read_text())
    assert set(METRIC_KEYS) | {"by_province"} <= set(m)
    assert [r["method"] for r in json.loads((out / "compare.json").read_text())][:2] == ["geopak", "geopak_argmax"]
    assert "knn" in res.output and (out / "report.md").exists()
    res = runner.invoke(app, ["evaluate", str(tiny_checkpoint), str(tiny_data.manifest), "--split", "nope",
                              "--out", str(out)])
    assert res.exit_code == 2 and "no 'nope' rows" in " ".join(res.output.split())


def test_predict_prior_option(tiny_checkpoint: Path, photos: Path, tmp_path: Path) -> None:
    """--prior data needs the shift that training records; without it the command says so (exit 2)."""
    res = runner.invoke(app, ["predict", str(tiny_checkpoint), str(photos), "--prior", "data", "--device", "cpu"])
    assert res.exit_code == 2 and "records no province prior shift" in " ".join(res.output.split())
    res = runner.invoke(app, ["predict", str(tiny_checkpoint), str(photos), "--prior", "uniform"])
    assert res.exit_code != 0 and "balanced or data" in res.output
    from geopak.model.geopak import GeopakModel

    model = GeopakModel.from_checkpoint(tiny_checkpoint)
    shifted = model.save_checkpoint(tmp_path / "shifted", phase="phase1", extra={
        **model.checkpoint_meta["extra"], "calibration": {"province_prior_shift": [9.0, 0, 0, 0, 0, 0, 0]}})
    out = tmp_path / "p.csv"
    res = runner.invoke(app, ["predict", str(shifted), str(photos), "--prior", "data", "--out", str(out),
                              "--device", "cpu", "--no-bf16"])
    assert res.exit_code == 0, res.output
    assert (pd.read_csv(out)["province"] == PROVINCE_NAMES[0]).all()  # a +9 logit shift toward Sindh wins
