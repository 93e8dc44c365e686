"""The map page in a real headless browser: uvicorn on a loopback port, Chromium driven by Playwright.

The page runs under its own content security policy (no eval), so waits use Playwright's ``expect``
locators rather than string predicates.

Skips cleanly when Playwright or a Chromium binary is missing (CI installs Debian's ``chromium``;
``GEOPAK_CHROMIUM`` points elsewhere).
"""

from __future__ import annotations

import base64
import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.browser

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
sync_api = pytest.importorskip("playwright.sync_api")
expect = sync_api.expect

from geopak.serve.app import create_app

from . import FakePredictor, box_polygons, image_bytes, red_level_for, tiny_cells

CHROMIUM = os.environ.get("GEOPAK_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
TIMEOUT_MS = 15_000

if not Path(CHROMIUM).exists():
    pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium, or set GEOPAK_CHROMIUM)", allow_module_level=True)


class _Server:
    """uvicorn serving ``app`` on 127.0.0.1 at a free port, in a background thread."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> _Server:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()


def _polygons(request: pytest.FixtureRequest) -> Any:
    """The real province outlines when the shared file and ``geopak.boundaries`` exist, else boxes."""
    try:
        path = request.getfixturevalue("boundaries_path")
        from geopak.boundaries import load_polygons
    except (pytest.skip.Exception, ImportError):
        return box_polygons()
    return load_polygons(path)


@pytest.fixture(scope="module")
def fake() -> FakePredictor:
    return FakePredictor()


@pytest.fixture(scope="module")
def server(request: pytest.FixtureRequest, fake: FakePredictor) -> Iterator[_Server]:
    polygons = _polygons(request)
    with _Server(create_app(fake, boundaries=polygons, cells=tiny_cells())) as srv:
        srv.n_outlines = len(polygons)  # type: ignore[attr-defined]
        yield srv


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture()
def page(browser: Any, server: _Server) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1400, "height": 900}, device_scale_factor=1)
    pg = context.new_page()
    pg.set_default_timeout(TIMEOUT_MS)
    requests: list[str] = []
    errors: list[str] = []
    pg.on("request", lambda r: requests.append(r.url))
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.on("console", lambda m: errors.append(m.text) if m.type == "error" and "404" not in m.text else None)
    pg.requests, pg.js_errors = requests, errors  # type: ignore[attr-defined]
    yield pg
    context.close()


def _open(page: Any, url: str, n_outlines: int) -> None:
    page.goto(url + "/")
    page.wait_for_selector("body[data-ready=true]")
    if n_outlines:
        expect(page.locator("#layer-provinces path")).to_have_count(n_outlines)


def _write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_upload_draws_the_prediction(page: Any, server: _Server, fake: FakePredictor, tmp_path: Path) -> None:
    _open(page, server.url, server.n_outlines)  # type: ignore[attr-defined]
    photo = _write(tmp_path, "lahore.jpg", image_bytes(red_level_for("Punjab"), size=96, fmt="JPEG"))
    page.get_by_label("Choose photos").set_input_files(str(photo))  # the input is reachable by its label
    page.wait_for_selector("#prediction-marker")

    assert page.inner_text("#result-province") == "Punjab"
    assert page.inner_text("#result-file") == "lahore.jpg"
    assert "31.5204° N, 74.3587° E" in page.inner_text("#result-latlon")
    assert page.inner_text("#result-radius") == "45.0 km"
    assert page.locator("#layer-hypotheses circle").count() == 3
    assert page.locator("#uncertainty-radius").count() == 1
    bars = page.locator("#province-bars li")
    assert bars.count() == 7
    assert bars.first.get_attribute("data-province") == "Punjab" and "top" in (bars.first.get_attribute("class") or "")
    assert page.locator("#province-bars [role=meter]").first.get_attribute("aria-valuetext") == page.inner_text(
        "#result-confidence"
    )
    # Bar lengths follow the probabilities.
    widths = page.eval_on_selector_all(
        "#province-bars li",
        "rows => rows.map(r => [r.querySelector('.bar-fill').getBoundingClientRect().width,"
        " r.querySelector('.bar-track').getBoundingClientRect().width,"
        " +r.querySelector('[role=meter]').getAttribute('aria-valuenow') / 100])",
    )
    for fill, track, p in widths:
        assert fill == pytest.approx(track * p, abs=1.5)
    assert widths[0][0] > 0.4 * widths[0][1]
    # Hypothesis circles are sized by p: the p=0.5 one is the largest.
    radii = page.eval_on_selector_all(
        "#layer-hypotheses circle", "cs => cs.map(c => [+c.dataset.p, +c.getAttribute('r')])"
    )
    assert max(radii)[1] == max(r for _, r in radii)
    # The marker lies inside the highlighted Punjab outline (projection and outlines agree).
    inside = page.evaluate(
        """() => {
            const m = document.getElementById('prediction-marker').transform.baseVal.consolidate().matrix;
            const p = document.querySelector('#layer-provinces path.predicted');
            return [p.dataset.province, p.isPointInFill(new DOMPoint(m.e, m.f))];
        }"""
    )
    assert inside == ["Punjab", True]
    assert page.get_attribute("#prediction-marker", "aria-label").startswith("Predicted location 31.5204")

    shot = tmp_path / "page.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    if os.environ.get("GEOPAK_SCREENSHOT"):
        shutil.copy(shot, os.environ["GEOPAK_SCREENSHOT"])

    external = [u for u in page.requests if not u.startswith((server.url, "blob:", "data:"))]  # type: ignore[attr-defined]
    assert external == [], external
    assert page.js_errors == []  # type: ignore[attr-defined]


def test_drop_several_photos_and_switch_between_them(page: Any, server: _Server, fake: FakePredictor) -> None:
    _open(page, server.url, server.n_outlines)  # type: ignore[attr-defined]
    files = [
        ("gilgit.png", image_bytes(red_level_for("Gilgit-Baltistan"))),
        ("karachi.png", image_bytes(red_level_for("Sindh"))),
    ]
    payload = [{"name": n, "b64": base64.b64encode(d).decode()} for n, d in files]
    data_transfer = page.evaluate_handle(
        """(files) => {
            const dt = new DataTransfer();
            for (const f of files) {
                const bytes = Uint8Array.from(atob(f.b64), c => c.charCodeAt(0));
                dt.items.add(new File([bytes], f.name, {type: 'image/png'}));
            }
            return dt;
        }""",
        payload,
    )
    calls_before = len(fake.calls)
    page.dispatch_event("#dropzone", "dragover", {"dataTransfer": data_transfer})
    assert "dragover" in page.get_attribute("#dropzone", "class")
    page.dispatch_event("#dropzone", "drop", {"dataTransfer": data_transfer})
    expect(page.locator("#image-list button")).to_have_count(2)
    assert fake.calls[calls_before:] == [2]  # both photos in one request
    assert page.inner_text("#result-province") == "Gilgit-Baltistan"
    predicted = page.locator("#layer-provinces path.predicted")
    if predicted.count():  # outlines are drawn only when boundaries are available
        assert predicted.first.get_attribute("data-province") == "Gilgit-Baltistan"
    page.get_by_role("button", name="Show the prediction for karachi.png").click()
    assert page.inner_text("#result-province") == "Sindh"
    assert page.get_attribute("button[aria-label$='karachi.png']", "aria-pressed") == "true"
    assert "Located 2 photos" in page.inner_text("#status")


def test_non_image_shows_an_error_naming_it(page: Any, server: _Server, tmp_path: Path) -> None:
    _open(page, server.url, 0)
    notes = _write(tmp_path, "notes.txt", b"this is not a photo")
    page.set_input_files("#file-input", str(notes))
    alert = page.get_by_role("alert")
    alert.wait_for(state="visible")
    assert "notes.txt" in alert.inner_text() and "not a readable image" in alert.inner_text()
    assert page.locator("#prediction-marker").count() == 0
    assert page.is_visible("#result-empty")


def test_geocells_toggle_and_model_info(page: Any, server: _Server) -> None:
    _open(page, server.url, 0)
    expect(page.locator("#model-info")).to_contain_text("5 geocells")
    page.get_by_label("Show geocells").check()
    expect(page.locator("#layer-cells circle")).to_have_count(5)
    assert page.is_visible("#layer-cells circle")
    page.get_by_label("Show geocells").uncheck()
    assert not page.is_visible("#layer-cells circle")


def test_page_without_outlines_says_how_to_get_them(browser: Any, tmp_path: Path) -> None:
    with _Server(create_app(FakePredictor())) as srv:
        context = browser.new_context()
        pg = context.new_page()
        pg.set_default_timeout(TIMEOUT_MS)
        _open(pg, srv.url, 0)
        expect(pg.locator("#map-note")).to_contain_text("--boundaries")
        assert pg.is_disabled("#toggle-cells")
        photo = _write(tmp_path, "quetta.png", image_bytes(red_level_for("Balochistan")))
        pg.set_input_files("#file-input", str(photo))
        pg.wait_for_selector("#prediction-marker")  # the map still works without outlines
        assert pg.inner_text("#result-province") == "Balochistan"
        context.close()
