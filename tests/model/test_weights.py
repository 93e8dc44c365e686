"""Weight resolver (file > cache > download with sha256) and the Places365 converter, all offline.

Downloads go to a local HTTP server on 127.0.0.1; the Places365 checkpoint is fabricated in the official
layout (torchvision ResNet-50 keys with a ``module.`` prefix inside ``state_dict``, no batch-norm counters,
legacy torch serialisation).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torchvision

from geopak.model.encoders import WeightSource, create_encoder, encoder_spec
from geopak.model.weights import (
    WeightsError,
    convert_places365,
    read_state_dict,
    resolve_weights,
    save_converted,
    sha256_file,
    weights_cache_dir,
)


class _Server:
    def __init__(self, root: Path) -> None:
        handler = type("Handler", (_QuietHandler,), {"server_ref": self})
        self.httpd = http.server.ThreadingHTTPServer(
            ("127.0.0.1", 0), functools.partial(handler, directory=str(root))
        )
        self.requests = 0
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def do_GET(self) -> None:
        self.server_ref.requests += 1  # type: ignore[attr-defined]
        super().do_GET()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def server(tmp_path: Path) -> Iterator[_Server]:
    root = tmp_path / "www"
    root.mkdir()
    s = _Server(root)
    s.root = root  # type: ignore[attr-defined]
    yield s
    s.close()


@pytest.fixture()
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("GEOPAK_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("GEOPAK_WEIGHTS_MIRROR", raising=False)
    return tmp_path / "cache" / "weights"


@pytest.fixture(scope="module")
def places365_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, torch.Tensor]]:
    """A checkpoint in the official Places365 layout, from a random torchvision ResNet-50 (365 classes)."""
    torch.manual_seed(0)
    tv = torchvision.models.resnet50(num_classes=365)
    with torch.no_grad():  # non-trivial batch-norm statistics, so a wrong mapping would show
        for m in tv.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
    sd = {f"module.{k}": v for k, v in tv.state_dict().items() if not k.endswith("num_batches_tracked")}
    path = tmp_path_factory.mktemp("places") / "resnet50_places365.pth.tar"
    torch.save(
        {"epoch": 90, "arch": "resnet50", "state_dict": sd, "best_prec1": 54.74},
        path,
        _use_new_zipfile_serialization=False,
    )
    return path, tv.state_dict()


def _small_spec(url: str = "http://127.0.0.1:9/none", sha256: str | None = None):
    return dataclasses.replace(
        encoder_spec("test_resnet"),
        weights=WeightSource(filename="test_resnet.safetensors", url=url, sha256=sha256, converter="timm"),
    )


def _write_small_weights(path: Path) -> None:
    from safetensors.torch import save_file

    torch.manual_seed(3)
    enc = create_encoder("test_resnet")
    save_file({k: v.contiguous() for k, v in enc.backbone.state_dict().items()}, str(path))


# ------------------------------------------------------------------------------------------- Places365
def test_places365_converter_strips_prefix_and_classifier(places365_file) -> None:
    path, tv_sd = places365_file
    raw = read_state_dict(path)
    assert set(raw) == {"epoch", "arch", "state_dict", "best_prec1"}
    conv = convert_places365(raw)
    assert not any(k.startswith(("module.", "fc.")) for k in conv)
    assert set(conv) == {
        k for k in tv_sd if not k.startswith("fc.") and not k.endswith("num_batches_tracked")
    }
    assert convert_places365(conv).keys() == conv.keys()  # idempotent


def test_places365_checkpoint_loads_into_scene_encoder(places365_file) -> None:
    path, tv_sd = places365_file
    enc = create_encoder("resnet50_places365", weights=path).eval()
    own = enc.backbone.state_dict()
    for k, v in tv_sd.items():
        if k.startswith("fc.") or k.endswith("num_batches_tracked"):
            continue
        assert torch.equal(own[k], v), k
    # same features as the torchvision network without its classifier, on normalised input
    tv = torchvision.models.resnet50(num_classes=365)
    tv.load_state_dict(tv_sd)
    tv.fc = torch.nn.Identity()
    tv.eval()
    x = torch.randn(2, 3, 64, 64)  # the backbones alone (preprocessing is tested with the encoders)
    with torch.inference_mode():
        assert torch.allclose(enc.backbone(x), tv(x), atol=1e-4)


def test_places365_convert_to_safetensors(places365_file, tmp_path: Path) -> None:
    path, _ = places365_file
    out = save_converted("resnet50_places365", path, tmp_path / "r50.safetensors")
    a = create_encoder("resnet50_places365", weights=path).backbone.state_dict()
    b = create_encoder("resnet50_places365", weights=out).backbone.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_places365_download_path(places365_file, server, cache: Path) -> None:
    path, _ = places365_file
    (server.root / path.name).write_bytes(path.read_bytes())
    got = resolve_weights("resnet50_places365", url=f"{server.url}/{path.name}")
    assert got == cache / "resnet50_places365.pth.tar"
    assert sha256_file(got) == sha256_file(path)
    assert (cache / "resnet50_places365.pth.tar.sha256").read_text().split()[0] == sha256_file(path)
    create_encoder("resnet50_places365", weights="pretrained", allow_download=False)  # now from the cache


# ------------------------------------------------------------------------------------------- resolver
def test_cache_dir_from_environment(cache: Path) -> None:
    assert weights_cache_dir() == cache


def test_explicit_file_wins_over_cache(tmp_path: Path, cache: Path) -> None:
    spec = _small_spec()
    cache.mkdir(parents=True)
    _write_small_weights(cache / "test_resnet.safetensors")
    explicit = tmp_path / "mine.safetensors"
    _write_small_weights(explicit)
    assert resolve_weights(spec, file=explicit) == explicit
    assert resolve_weights(spec) == cache / "test_resnet.safetensors"


def test_download_then_cache_then_checksum(server, cache: Path) -> None:
    _write_small_weights(server.root / "w.safetensors")
    digest = sha256_file(server.root / "w.safetensors")
    spec = _small_spec(url=f"{server.url}/w.safetensors", sha256=digest)
    got = resolve_weights(spec)
    assert got == cache / "test_resnet.safetensors" and sha256_file(got) == digest
    assert server.requests == 1
    assert resolve_weights(spec) == got and server.requests == 1  # cached: no second request
    create_encoder(spec, weights="pretrained")
    got.write_bytes(got.read_bytes()[:-10] + b"0123456789")  # corrupt the cached copy
    with pytest.raises(WeightsError, match="corrupt"):
        resolve_weights(spec)


def test_unknown_hash_is_recorded_and_enforced(server, cache: Path) -> None:
    _write_small_weights(server.root / "w.safetensors")
    spec = _small_spec(url=f"{server.url}/w.safetensors", sha256=None)
    got = resolve_weights(spec)
    record = got.with_name(got.name + ".sha256")
    assert record.read_text().split()[0] == sha256_file(got)
    got.write_bytes(b"truncated")
    with pytest.raises(WeightsError, match="sha256"):
        resolve_weights(spec)


def test_download_hash_mismatch_saves_nothing(server, cache: Path) -> None:
    _write_small_weights(server.root / "w.safetensors")
    spec = _small_spec(url=f"{server.url}/w.safetensors", sha256=hashlib.sha256(b"other").hexdigest())
    with pytest.raises(WeightsError, match="expected"):
        resolve_weights(spec)
    assert not (cache / "test_resnet.safetensors").exists()
    assert not list(cache.glob("*.part"))


def test_mirror_environment_variable(server, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write_small_weights(server.root / "test_resnet.safetensors")
    monkeypatch.setenv("GEOPAK_WEIGHTS_MIRROR", server.url + "/")
    assert resolve_weights(_small_spec()).is_file()


def test_offline_error_names_file_url_and_destination(cache: Path) -> None:
    with pytest.raises(WeightsError) as e:
        resolve_weights("resnet50_places365", allow_download=False)
    msg = str(e.value)
    assert "resnet50_places365.pth.tar" in msg and "places2.csail.mit.edu" in msg and str(cache) in msg


def test_failed_download_is_a_clear_error(server, cache: Path) -> None:
    spec = _small_spec(url=f"{server.url}/missing.safetensors")
    with pytest.raises(WeightsError, match="Offline\\?.*put it at"):
        resolve_weights(spec)
    assert not (cache / "test_resnet.safetensors").exists()


def test_weights_never_fetched_at_import_or_build(cache: Path) -> None:
    import importlib

    import geopak.model

    importlib.reload(geopak.model)
    create_encoder("resnet50_places365")  # random weights, no file, no network (the guard would fail it)
    assert not cache.exists()


class _Evil:
    def __reduce__(self):  # pragma: no cover - must never run
        return (print, ("pickled code ran",))


def test_pickled_objects_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "x": _Evil()}, path)
    with pytest.raises(WeightsError, match="cannot read"):
        read_state_dict(path)
