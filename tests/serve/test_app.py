"""The HTTP API (``geopak.serve.app``) through FastAPI's test client, with a fake and a real predictor."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient

from geopak.provinces import PROVINCE_NAMES
from geopak.serve.app import CONTENT_SECURITY_POLICY, create_app, provinces_geojson

from . import CITIES, FakePredictor, box_polygons, image_bytes, red_level_for, tiny_cells


@pytest.fixture()
def fake() -> FakePredictor:
    return FakePredictor()


@pytest.fixture()
def client(fake: FakePredictor) -> TestClient:
    return TestClient(create_app(fake, boundaries=box_polygons(), cells=tiny_cells()))


def _files(*items: tuple[str, bytes, str]) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("files", item) for item in items]


def _real_polygons(path: Path) -> dict[str, Any]:
    """Province polygons from the shared file: through ``geopak.boundaries`` when it exists."""
    try:
        from geopak.boundaries import load_polygons
    except ImportError:
        from shapely.geometry import shape

        from geopak.provinces import normalize_province

        fc = json.loads(path.read_text())
        return {normalize_province(f["properties"]["shapeName"]).name: shape(f["geometry"]) for f in fc["features"]}
    polygons = load_polygons(path)
    assert polygons is not None
    return polygons


# ----------------------------------------------------------------------------------------------- read-only
def test_health_and_page(client: TestClient) -> None:
    assert client.get("/health").json()["status"] == "ok"
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert page.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    html = page.text
    assert 'id="file-input"' in html and 'id="map"' in html and "/static/app.js" in html
    assert "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "") and "https://" not in html
    for name in ("app.js", "style.css"):
        r = client.get(f"/static/{name}")
        assert r.status_code == 200 and len(r.text) > 1000
        assert "https://" not in r.text and "//cdn" not in r.text


def test_info(client: TestClient) -> None:
    info = client.get("/api/info").json()
    assert [p["name"] for p in info["provinces"]] == list(PROVINCE_NAMES)
    assert info["n_cells"] == 5
    assert info["cells_per_province"]["Sindh"] == 2 and info["cells_per_province"]["Gilgit-Baltistan"] == 2
    assert info["cells_per_province"]["Balochistan"] == 0
    assert info["has_boundaries"] is True
    assert info["model"]["checkpoint_path"] == "checkpoints/fake"
    assert info["max_files"] > 0 and info["max_file_bytes"] > 0


def test_cells(client: TestClient) -> None:
    cells = client.get("/api/cells").json()
    assert cells["n_cells"] == 5 and cells["cell_id"] == [0, 1, 2, 3, 4]
    assert cells["province"][2] == "Punjab"
    assert cells["lat"][0] == pytest.approx(24.86) and cells["lon"][4] == pytest.approx(74.65)
    assert cells["radius_km"][3] == pytest.approx(60.0)


def test_cells_and_outlines_absent_are_404_with_a_reason(fake: FakePredictor) -> None:
    c = TestClient(create_app(fake))
    r = c.get("/api/provinces.geojson")
    assert r.status_code == 404 and "--boundaries" in r.json()["detail"]
    r = c.get("/api/cells")
    assert r.status_code == 404 and "cell table" in r.json()["detail"]
    info = c.get("/api/info").json()
    assert info["has_boundaries"] is False and info["n_cells"] is None


def test_cells_taken_from_the_predictors_model(fake: FakePredictor) -> None:
    class Model:
        cells = tiny_cells()

    fake.model = Model()  # type: ignore[attr-defined]
    assert TestClient(create_app(fake)).get("/api/cells").json()["n_cells"] == 5


def test_outlines_from_hand_made_polygons(client: TestClient) -> None:
    r = client.get("/api/provinces.geojson")
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/geo+json")
    fc = r.json()
    names = [f["properties"]["name"] for f in fc["features"]]
    assert names == ["Sindh", "Punjab", "Balochistan"]  # canonical order
    sindh = fc["features"][0]
    assert sindh["properties"]["iso"] == "PK-SD" and sindh["geometry"]["type"] == "Polygon"
    lon, lat = sindh["properties"]["label"]
    assert 66.5 < lon < 71.1 and 23.6 < lat < 28.5


def test_outlines_from_the_real_boundaries_are_small_and_correct(boundaries_path: Path) -> None:
    from shapely.geometry import Point, shape

    polygons = _real_polygons(boundaries_path)
    fc = provinces_geojson(polygons, tolerance_deg=0.01)
    assert [f["properties"]["name"] for f in fc["features"]] == list(PROVINCE_NAMES)
    size = len(json.dumps(fc))
    assert size < 0.6 * boundaries_path.stat().st_size, size
    simple = {f["properties"]["name"]: shape(f["geometry"]) for f in fc["features"]}
    for province, lat, lon in CITIES:
        assert simple[province].buffer(0.02).contains(Point(lon, lat)), province
        lab = Point(*next(f for f in fc["features"] if f["properties"]["name"] == province)["properties"]["label"])
        assert simple[province].buffer(0.01).contains(lab)
    for name, geom in polygons.items():  # simplification keeps the area within 2%
        assert simple[name].area == pytest.approx(geom.area, rel=0.02)
    # The app serves it (and the same file path is accepted directly when geopak.boundaries exists).
    app = create_app(FakePredictor(), boundaries=polygons)
    assert len(TestClient(app).get("/api/provinces.geojson").json()["features"]) == 7


def test_bad_outlines_are_refused() -> None:
    from shapely.geometry import LineString, box

    with pytest.raises(ValueError, match="Atlantis"):
        provinces_geojson({"Atlantis": box(0, 0, 1, 1)})
    with pytest.raises(ValueError, match="LineString"):
        provinces_geojson({"Sindh": LineString([(66, 24), (67, 25)])})
    with pytest.raises(FileNotFoundError, match="nowhere.geojson"):
        create_app(FakePredictor(), boundaries="nowhere.geojson")


# ------------------------------------------------------------------------------------------------ predict
def test_predict_one_image(client: TestClient, fake: FakePredictor) -> None:
    r = client.post("/api/predict", files=_files(("karachi.png", image_bytes(red_level_for("Sindh")), "image/png")))
    assert r.status_code == 200, r.text
    body = r.json()
    assert fake.calls == [1]
    (p,) = body["predictions"]
    assert p["filename"] == "karachi.png" and (p["width"], p["height"]) == (48, 48)
    assert p["province"] == "Sindh"
    assert p["lat"] == pytest.approx(24.8607) and p["lon"] == pytest.approx(67.0011)
    assert set(p["province_probs"]) == set(PROVINCE_NAMES)
    assert sum(p["province_probs"].values()) == pytest.approx(1.0, abs=1e-5)
    assert p["confidence"] == pytest.approx(max(p["province_probs"].values()), abs=1e-6)
    assert p["radius_km"] == pytest.approx(45.0)
    assert [h["cell_id"] for h in p["hypotheses"]] == [0, 1, 2]
    assert isinstance(p["hypotheses"][0]["p"], float)
    assert body["elapsed_ms"] >= 0


def test_predict_several_images_in_one_batch_keeps_order(client: TestClient, fake: FakePredictor) -> None:
    provinces = ["Gilgit-Baltistan", "Sindh", "Balochistan", "Punjab"]
    files = _files(
        *[(f"{i}_{p}.jpg", image_bytes(red_level_for(p), fmt="JPEG"), "image/jpeg") for i, p in enumerate(provinces)]
    )
    r = client.post("/api/predict", files=files)
    assert r.status_code == 200, r.text
    preds = r.json()["predictions"]
    assert fake.calls == [4]  # one batched call
    assert [p["province"] for p in preds] == provinces
    assert [p["filename"] for p in preds] == [f"{i}_{p}.jpg" for i, p in enumerate(provinces)]


def test_predict_accepts_any_image_mode(client: TestClient) -> None:
    files = _files(
        ("rgba.png", image_bytes(mode="RGBA"), "image/png"),
        ("grey.png", image_bytes(mode="L"), "image/png"),
        ("palette.gif", image_bytes(mode="P", fmt="GIF"), "image/gif"),
        ("photo.webp", image_bytes(fmt="WEBP"), "image/webp"),
    )
    r = client.post("/api/predict", files=files)
    assert r.status_code == 200, r.text
    assert len(r.json()["predictions"]) == 4


def test_non_image_is_a_400_naming_the_file(client: TestClient, fake: FakePredictor) -> None:
    files = _files(("ok.png", image_bytes(), "image/png"), ("notes.txt", b"not an image at all", "text/plain"))
    r = client.post("/api/predict", files=files)
    assert r.status_code == 400
    detail = r.json()["detail"]
    assert "notes.txt" in detail and "not a recognised image" in detail and "ok.png" not in detail
    assert fake.calls == []  # nothing reaches the model


def test_truncated_and_empty_images_are_400(client: TestClient) -> None:
    png = image_bytes(noise=True, size=64)
    r = client.post("/api/predict", files=_files(("cut.png", png[: len(png) // 2], "image/png")))
    assert r.status_code == 400 and "cut.png" in r.json()["detail"]
    r = client.post("/api/predict", files=_files(("empty.jpg", b"", "image/jpeg")))
    assert r.status_code == 400 and "empty.jpg" in r.json()["detail"]


def test_missing_files_and_wrong_encoding_are_400(client: TestClient) -> None:
    r = client.post("/api/predict", data={"other": "x"}, files=[("unrelated", ("a.png", image_bytes(), "image/png"))])
    assert r.status_code == 400 and "'files'" in r.json()["detail"]
    r = client.post("/api/predict", json={"image": "x"})
    assert r.status_code == 400 and "multipart/form-data" in r.json()["detail"]
    r = client.post("/api/predict", data={"files": "just text"}, files=[("dummy", ("d.png", b"", "image/png"))])
    assert r.status_code == 400 and "text, not a file" in r.json()["detail"]


def test_file_over_the_limit_is_413(fake: FakePredictor) -> None:
    big = image_bytes(noise=True, size=64)  # ~12 KB of incompressible pixels
    c = TestClient(create_app(fake, max_file_bytes=len(big) - 1, max_files=4))
    r = c.post("/api/predict", files=_files(("small.png", image_bytes(), "image/png"), ("big.png", big, "image/png")))
    assert r.status_code == 413
    assert "big.png" in r.json()["detail"] and "MiB" in r.json()["detail"]
    assert fake.calls == []


def test_request_over_the_limit_is_413_before_parsing(fake: FakePredictor) -> None:
    big = image_bytes(noise=True, size=200)  # ~120 KB
    c = TestClient(create_app(fake, max_file_bytes=10_000, max_files=1))
    r = c.post("/api/predict", files=_files(("huge.png", big, "image/png")))
    assert r.status_code == 413 and "request exceeds" in r.json()["detail"]


def test_chunked_upload_over_the_limit_is_413(fake: FakePredictor) -> None:
    """No Content-Length (chunked): the body is counted as it arrives."""
    boundary = "geopakboundary"
    big = image_bytes(noise=True, size=200)
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="stream.png"\r\n'
        "Content-Type: image/png\r\n\r\n"
    ).encode() + big + f"\r\n--{boundary}--\r\n".encode()

    def chunks() -> Any:
        for i in range(0, len(body), 8192):
            yield body[i : i + 8192]

    c = TestClient(create_app(fake, max_file_bytes=10_000, max_files=1))
    r = c.post("/api/predict", content=chunks(), headers={"content-type": f"multipart/form-data; boundary={boundary}"})
    assert r.status_code == 413 and "request exceeds" in r.json()["detail"]
    # The same body under the limit goes through.
    c = TestClient(create_app(fake, max_file_bytes=len(big) + 1, max_files=1))
    r = c.post("/api/predict", content=chunks(), headers={"content-type": f"multipart/form-data; boundary={boundary}"})
    assert r.status_code == 200, r.text
    assert r.json()["predictions"][0]["filename"] == "stream.png"


def test_too_many_files_is_413(fake: FakePredictor) -> None:
    c = TestClient(create_app(fake, max_files=2))
    files = _files(*[(f"{i}.png", image_bytes(), "image/png") for i in range(3)])
    r = c.post("/api/predict", files=files)
    assert r.status_code == 413 and "at most 2" in r.json()["detail"]


def test_model_failure_is_a_clear_500() -> None:
    c = TestClient(create_app(FakePredictor(fail=True)), raise_server_exceptions=False)
    r = c.post("/api/predict", files=_files(("a.png", image_bytes(), "image/png")))
    assert r.status_code == 500 and "out of memory" in r.json()["detail"]


def test_torch_and_nan_values_become_json() -> None:
    import torch

    class TorchPredictor:
        def predict(self, x: Any) -> list[dict[str, Any]]:
            return [
                {"province": "Punjab", "lat": torch.tensor(31.5), "lon": torch.tensor([74.3])[0],
                 "confidence": float("nan"), "radius_km": np.float16(12), "province_probs": {"Punjab": 1.0},
                 "hypotheses": [{"lat": 31.5, "lon": 74.3, "p": torch.tensor(1.0), "cell_id": torch.tensor(7),
                                 "province": "Punjab"}], "extra": np.arange(3)}
                for _ in x
            ]

    r = TestClient(create_app(TorchPredictor())).post("/api/predict", files=_files(("a.png", image_bytes(), "image/png")))
    assert r.status_code == 200, r.text
    p = r.json()["predictions"][0]
    assert p["lat"] == 31.5 and p["confidence"] is None and p["hypotheses"][0]["cell_id"] == 7
    assert p["extra"] == [0, 1, 2] and p["radius_km"] == 12.0


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        create_app(FakePredictor(), max_files=0)


# ------------------------------------------------------------------------------------------------- the CLI
def test_cli_serve_wires_the_predictor_the_outlines_and_uvicorn(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, boundaries_path: Path
) -> None:
    """`geopak serve` builds the app from the checkpoint and the boundaries and hands it to uvicorn."""
    import uvicorn
    from typer.testing import CliRunner

    import geopak.inference
    from geopak.cli import app as cli_app

    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    seen: dict[str, Any] = {}

    class Recording(FakePredictor):
        def __init__(self, checkpoint_path: Path, device: str | None = None) -> None:
            super().__init__()
            seen["checkpoint"] = checkpoint_path
            seen["device"] = device

    def fake_run(app: Any, host: str, port: int, **kw: Any) -> None:
        seen.update(app=app, host=host, port=port)

    monkeypatch.setattr(geopak.inference, "GeopakPredictor", Recording, raising=False)
    monkeypatch.setattr(uvicorn, "run", fake_run)
    outlines = _has_boundaries_module()  # without geopak.boundaries the server runs without outlines
    args = ["serve", str(ckpt), "--port", "8765", "--max-upload-mb", "1", "--device", "cpu"]
    result = CliRunner().invoke(cli_app, args + (["--boundaries", str(boundaries_path)] if outlines else []))
    assert result.exit_code == 0, result.output
    assert seen["checkpoint"] == ckpt and seen["host"] == "127.0.0.1" and seen["port"] == 8765
    assert seen["device"] == "cpu"
    c = TestClient(seen["app"])
    r = c.get("/api/provinces.geojson")
    assert (len(r.json()["features"]) == 7) if outlines else (r.status_code == 404)
    assert c.get("/api/info").json()["max_file_bytes"] == 1024 * 1024


def test_cli_serve_refuses_a_missing_checkpoint(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from geopak.cli import app as cli_app

    result = CliRunner().invoke(cli_app, ["serve", str(tmp_path / "nope")], env={"COLUMNS": "300"})
    text = " ".join(re.sub(r"[│╭╮╰╯─]", " ", result.output).split())
    assert result.exit_code != 0 and "nope does not exist" in text, text


def _has_boundaries_module() -> bool:
    try:
        from geopak.boundaries import load_polygons  # noqa: F401
    except ImportError:
        return False
    return True


# ------------------------------------------------------------------------------------- the real predictor
def test_real_predictor_on_a_tiny_checkpoint(tmp_path: Path) -> None:
    """GeopakModel with the tiny test encoders, saved and reloaded by GeopakPredictor, behind the API."""
    try:
        from geopak.inference import GeopakPredictor
        from geopak.model.geopak import GeopakConfig, GeopakModel
    except ImportError as e:
        pytest.skip(f"model or predictor not available yet: {e}")
    cells = tiny_cells()
    config = GeopakConfig(
        clip_encoder="test_vit", scene_encoder="test_resnet", fusion_dim=32, province_hidden=16, cell_hidden=16,
        province_emb_dim=4, cell_emb_dim=8, offset_hidden=16, aux_hidden=16,
    )
    ckpt = GeopakModel(config, cells).save_checkpoint(tmp_path / "ckpt")
    predictor = GeopakPredictor(checkpoint_path=ckpt, device="cpu", bf16=False)
    c = TestClient(create_app(predictor))
    assert c.get("/api/cells").json()["n_cells"] == cells.n_cells
    info = c.get("/api/info").json()
    assert info["n_cells"] == cells.n_cells and info["model"]["predictor"] == "GeopakPredictor"
    assert info["model"]["config"]["clip_encoder"] == "test_vit" and info["model"]["device"] == "cpu"
    assert Path(info["model"]["checkpoint_path"]) == ckpt
    files = _files(("a.png", image_bytes(30), "image/png"), ("b.jpg", image_bytes(220, fmt="JPEG"), "image/jpeg"))
    r = c.post("/api/predict", files=files)
    assert r.status_code == 200, r.text
    preds = r.json()["predictions"]
    assert [p["filename"] for p in preds] == ["a.png", "b.jpg"]
    with_cells = {"Sindh", "Punjab", "Gilgit-Baltistan"}
    for p in preds:
        assert p["province"] in with_cells  # provinces without cells are never chosen
        assert 23 < p["lat"] < 37.5 and 60.5 < p["lon"] < 77.5
        assert sum(p["province_probs"].values()) == pytest.approx(1.0, abs=1e-4)
        assert 0 <= p["confidence"] <= 1 and p["radius_km"] >= 0
        assert p["hypotheses"] and all(h["province"] in with_cells for h in p["hypotheses"])
        assert sum(h["p"] for h in p["hypotheses"]) == pytest.approx(1.0, abs=1e-3)
