"""End-to-end evaluation: metrics.json, predictions, plots, report, and the --compare table."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from geopak import geo
from geopak.evaluate import METRIC_KEYS
from geopak.evaluate.runner import METHODS, RETRAINED, EvalOptions, EvaluationError, evaluate_checkpoint
from geopak.inference import GeopakPredictor

from .conftest import TinyData

FAST = {"device": "cpu", "bf16": False, "progress": False, "baseline_epochs": 3}


def test_evaluate_writes_metrics_report_and_plots(tiny_checkpoint: Path, tiny_data: TinyData, tmp_path: Path) -> None:
    out = tmp_path / "eval"
    m = evaluate_checkpoint(tiny_checkpoint, tiny_data.manifest, out, EvalOptions(**FAST))
    on_disk = json.loads((out / "metrics.json").read_text())
    assert set(METRIC_KEYS) | {"by_province", "by_urban", "calibration", "confusion_matrix"} <= set(on_disk)
    test = tiny_data.df[tiny_data.df["split"] == "test"]
    assert on_disk["n"] == m["n"] == len(test)
    assert set(on_disk["by_province"]) == set(test["province"])
    assert set(on_disk["by_urban"]) <= {"urban", "rural"} and sum(v["n"] for v in on_disk["by_urban"].values()) == len(test)
    assert np.asarray(on_disk["confusion_matrix"]).sum() == len(test)
    assert "ORACLE" in on_disk["oracle_cell"]["note"]

    # the errors are those of the predictor run on the image files themselves (end to end)
    preds = pd.read_csv(out / "predictions.csv")
    predictor = GeopakPredictor(tiny_checkpoint, device="cpu", bf16=False)
    direct = predictor.predict([tiny_data.root / p for p in test["path"]])
    assert [r["province"] for r in direct] == preds["pred_province"].tolist()
    np.testing.assert_allclose([r["lat"] for r in direct], preds["pred_lat"], atol=1e-4)
    d = geo.haversine_km(preds["pred_lat"], preds["pred_lon"], preds["true_lat"], preds["true_lon"])
    assert on_disk["median_km"] == pytest.approx(float(np.median(d)), rel=1e-6)

    report = (out / "report.md").read_text()
    first_image = report.index("![")
    assert first_image < report.index("## Summary")  # the report opens with its plots
    for name in ("error_cdf.png", "error_map.png", "confusion.png", "calibration.png", "oracle_cell.png"):
        assert (out / name).stat().st_size > 5000
        assert f"({name})" in report
    assert "NOT a geolocation result" in report


def test_compare_has_every_method_and_retrains_ablations(
    tiny_checkpoint: Path, tiny_data: TinyData, tmp_path: Path
) -> None:
    out = tmp_path / "cmp"
    evaluate_checkpoint(tiny_checkpoint, tiny_data.manifest, out,
                        EvalOptions(compare=True, retrain=True, retrain_max_steps=1, cells=tiny_data.cells_dir,
                                    plots=False, **FAST))
    rows = json.loads((out / "compare.json").read_text())
    assert [r["method"] for r in rows] == list(METHODS) + list(RETRAINED)
    n_test = int((tiny_data.df["split"] == "test").sum())
    for r in rows:
        assert set(METRIC_KEYS) <= set(r) and r["n"] == n_test
    by = {r["method"]: r for r in rows}
    # the colour of each synthetic image encodes its cell: retrieval and the trained baselines find it
    assert by["knn"]["median_km"] < 15.0
    assert by["flat_cells"]["median_km"] < by["prior"]["median_km"]
    assert by["prior"]["province_accuracy"] is not None
    md = (out / "compare.md").read_text()
    assert all(f"| {name} |" in md for name in [*METHODS, *RETRAINED])

    cfg = json.loads((out / "ablations" / "geopak_no_gate" / "phase1" / "config.json").read_text())
    assert cfg["config"]["fusion"] == "mean"
    assert cfg["extra"]["train_config"]["loss"]["label_smoothing"] is True
    cfg2 = json.loads((out / "ablations" / "geopak_no_smoothing" / "phase1" / "config.json").read_text())
    assert cfg2["extra"]["train_config"]["loss"]["label_smoothing"] is False
    assert cfg2["config"]["fusion"] == "gate"
    assert len(list((out / "ablations" / "cache").iterdir())) == 1  # the three retrains share one cache
    assert "retrained here" in (out / "report.md").read_text()


def test_bad_inputs_are_explained(tiny_checkpoint: Path, tiny_data: TinyData, tmp_path: Path) -> None:
    with pytest.raises(EvaluationError, match="no 'holdout' rows"):
        evaluate_checkpoint(tiny_checkpoint, tiny_data.manifest, tmp_path / "a", EvalOptions(split="holdout", **FAST))
    no_split = tiny_data.df.drop(columns=["split"])
    with pytest.raises(EvaluationError, match="--split all"):
        evaluate_checkpoint(tiny_checkpoint, no_split, tmp_path / "b", EvalOptions(**FAST))
    only_test = tiny_data.df.assign(split="test", path=[str(tiny_data.root / p) for p in tiny_data.df["path"]])
    with pytest.raises(EvaluationError, match="training rows"):
        evaluate_checkpoint(tiny_checkpoint, only_test, tmp_path / "c", EvalOptions(compare=True, plots=False, **FAST))
    other = tmp_path / "othercells"
    shutil.copytree(tiny_data.cells_dir, other)
    cells = pd.read_parquet(other / "cells.parquet")
    cells.loc[0, "center_lat"] += 0.5
    cells.to_parquet(other / "cells.parquet")
    with pytest.raises(EvaluationError, match="not the one"):
        evaluate_checkpoint(tiny_checkpoint, tiny_data.manifest, tmp_path / "d", EvalOptions(cells=other, **FAST))


def test_own_export_is_reused_only_with_the_same_cells(tmp_path):
    import json as _json

    import pandas as _pd

    from geopak.evaluate.runner import _own_export
    from geopak.geocells import CellTable

    table = CellTable(_pd.DataFrame({"cell_id": [0, 1], "province": ["Sindh", "Punjab"], "center_lat": [25.0, 31.5],
                                     "center_lon": [67.0, 74.3], "radius_km": [5.0, 6.0], "count": [50, 50],
                                     "urban": [True, True]}))
    d = tmp_path / "run" / "phase1"
    d.mkdir(parents=True)
    (d / "model.safetensors").write_bytes(b"x")
    meta = {"extra": {"run": str(tmp_path / "run")}}
    (d / "config.json").write_text(_json.dumps({"cells": {"hash": table.content_hash}}))
    assert _own_export(meta, "phase1", table) == d
    assert _own_export(meta, "phase0", table) is None
    assert _own_export({"extra": {}}, "phase1", table) is None
    (d / "config.json").write_text(_json.dumps({"cells": {"hash": "other"}}))
    assert _own_export(meta, "phase1", table) is None
