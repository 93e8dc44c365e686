"""Report helpers: tables, the per-prediction map, the report's layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from geopak.evaluate import report


def _record() -> dict:
    return {
        "province": "Punjab", "lat": 31.5, "lon": 74.3, "confidence": 0.4, "radius_km": 35.0,
        "hypotheses": [
            {"lat": 31.52, "lon": 74.35, "p": 0.6, "cell_id": 3, "province": "Punjab"},
            {"lat": 31.2, "lon": 74.0, "p": 0.3, "cell_id": 4, "province": "Punjab"},
            {"lat": 33.7, "lon": 73.1, "p": 0.1, "cell_id": 9, "province": "Islamabad Capital Territory"},
        ],
    }


def test_markdown_table() -> None:
    md = report.markdown_table([{"method": "a", "x": 1.23456, "y": None}, {"method": "b", "x": 123.456, "y": 3}],
                               ["x", "y"], "method")
    assert md.splitlines() == ["| method | x | y |", "|---|---|---|", "| a | 1.235 | - |", "| b | 123.5 | 3 |"]


def test_plot_prediction_without_and_with_outlines(tmp_path: Path, boundaries_path: Path) -> None:
    plain = report.plot_prediction(_record(), tmp_path / "plain.png", polygons=None)
    from geopak.boundaries import load_polygons

    polygons = load_polygons(boundaries_path)
    assert polygons
    outlined = report.plot_prediction(_record(), tmp_path / "outlined.png", polygons=polygons, title="x.jpg")
    assert plain.stat().st_size > 10_000 and outlined.stat().st_size > plain.stat().st_size


def test_report_opens_with_plots_and_labels_oracle(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    d = rng.lognormal(3, 1, 50)
    report.plot_error_cdf({"geopak": d, "prior": d * 3}, tmp_path / "cdf.png")
    report.plot_oracle(d, d / 10, tmp_path / "oracle.png")
    metrics = {"n": 50, "median_km": 20.0, "split": "test", "by_province": {"Sindh": {"n": 50, "median_km": 20.0}},
               "oracle_cell": {"median_km": 2.0}}
    path = report.write_report(tmp_path, metrics, [("CDF", "cdf.png"), ("oracle", "oracle.png")],
                               compare=[{"method": "geopak", "median_km": 20.0}], notes=["a note"])
    text = path.read_text()
    assert text.index("![CDF](cdf.png)") < text.index("## Summary") < text.index("## By province")
    assert "## Oracle cell (NOT a geolocation result)" in text and "- a note" in text
    assert (tmp_path / "cdf.png").stat().st_size > 5000 and (tmp_path / "oracle.png").stat().st_size > 5000
