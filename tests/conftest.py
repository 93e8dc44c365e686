"""Shared test fixtures: offline by construction, shared boundary data, small seeded inputs."""

from __future__ import annotations

import ipaddress
import os
import socket
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("GEOPAK_SHARED_DATA", REPO.parent / "shared" / "data"))
BOUNDARIES = SHARED_DATA / "geoBoundaries-PAK-ADM1.geojson"


def _is_local(address: object) -> bool:
    if isinstance(address, tuple) and address:
        host = str(address[0])
    elif isinstance(address, (str, bytes)):
        return True  # AF_UNIX socket path
    else:
        return False
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory: pytest.TempPathFactory) -> object:
    """Point GEOPAK's cache (weights, boundaries, the synth world) at a fresh folder for the whole session, so
    no test depends on, or writes to, what the user has cached."""
    old = os.environ.get("GEOPAK_CACHE")
    os.environ["GEOPAK_CACHE"] = str(tmp_path_factory.mktemp("geopak-cache"))
    yield
    if old is None:
        os.environ.pop("GEOPAK_CACHE", None)
    else:
        os.environ["GEOPAK_CACHE"] = old


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail any test that connects a socket to a non-loopback address."""
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex

    def guard(address: object) -> None:
        if not _is_local(address):
            raise RuntimeError(f"test tried to reach the network: {address!r} (tests must be offline)")

    def connect(self: socket.socket, address: object) -> None:
        guard(address)
        return real_connect(self, address)

    def connect_ex(self: socket.socket, address: object) -> int:
        guard(address)
        return real_connect_ex(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)


@pytest.fixture(scope="session")
def boundaries_path() -> Path:
    """The shared geoBoundaries ADM1 file; tests that need it skip when it is absent."""
    if not BOUNDARIES.exists():
        pytest.skip(f"province boundaries not found at {BOUNDARIES}")
    return BOUNDARIES
