"""The one weight resolver: explicit file > local cache > download, hash-checked, never at import.

``resolve_weights(spec)`` returns a local file holding an encoder's pretrained weights:

1. an explicit ``file=`` (must exist);
2. the local cache: ``$GEOPAK_CACHE/weights/<filename>``, or ``~/.cache/geopak/weights/<filename>`` when
   ``GEOPAK_CACHE`` is unset;
3. a download from the spec's URL (or ``url=``, or ``$GEOPAK_WEIGHTS_MIRROR/<filename>``) into the cache.

Every downloaded file is checked against the spec's sha256 when one is known; when none is known the hash of
the first download is written beside it (``<filename>.sha256``) and every later use of the cached file is
checked against that record, so a truncated or swapped file is caught. Offline with nothing cached, the error
names the file to fetch, from where, and where to put it.

Converters turn a file's state dict into the timm model's keys: ``"timm"`` (timm layout, or OpenAI/open_clip
CLIP layouts through timm's own ViT filter) and ``"places365"`` (the official ``resnet50_places365.pth.tar``: a
dict whose ``state_dict`` has torchvision names prefixed with ``module.``; strip it and drop ``fc.*``, the 365-way
classifier; timm's and torchvision's ResNet-50 keys are otherwise identical). Files are read without pickle
(safetensors) or with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:
    from geopak.model.encoders import Encoder, EncoderSpec

__all__ = [
    "CONVERTERS",
    "WeightsError",
    "convert_places365",
    "convert_timm",
    "download_file",
    "load_state_dict_into",
    "read_state_dict",
    "resolve_weights",
    "save_converted",
    "sha256_file",
    "weights_cache_dir",
]

logger = logging.getLogger(__name__)

_CHUNK = 1 << 20


class WeightsError(RuntimeError):
    """Weights that cannot be found, fetched, verified or loaded; the message says what to do."""


def weights_cache_dir() -> Path:
    """``$GEOPAK_CACHE/weights`` or ``~/.cache/geopak/weights`` (not created here)."""
    root = os.environ.get("GEOPAK_CACHE")
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "geopak"
    return base / "weights"


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _verify(path: Path, expected: str | None, what: str) -> str:
    digest = sha256_file(path)
    if expected is not None and digest != expected.lower():
        raise WeightsError(
            f"{what}: sha256 of {path} is {digest}, expected {expected}; the file is corrupt or not the one "
            f"expected. Delete it and fetch it again."
        )
    return digest


def download_file(url: str, dest: str | Path, sha256: str | None = None, timeout: float = 60.0) -> str:
    """Download ``url`` to ``dest`` (atomically, via ``dest.part``) and return the file's sha256.

    Args:
        url: HTTP(S) address.
        dest: final path; its folder is created.
        sha256: expected hash; a mismatch removes the download and raises.
        timeout: socket timeout in seconds.

    Raises:
        WeightsError: network failure (with the URL) or hash mismatch.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    h = hashlib.sha256()
    logger.info("downloading %s -> %s", url, dest)
    t0 = time.monotonic()
    n = 0
    try:
        req = urllib.request.Request(url, headers={"User-Agent": "geopak"})
        with urllib.request.urlopen(req, timeout=timeout) as resp, open(part, "wb") as f:
            total = int(resp.headers.get("Content-Length") or 0)
            last = t0
            for block in iter(lambda: resp.read(_CHUNK), b""):
                f.write(block)
                h.update(block)
                n += len(block)
                if time.monotonic() - last > 5.0:
                    last = time.monotonic()
                    pct = f" ({100 * n / total:.0f}%)" if total else ""
                    logger.info("  %.1f MB%s", n / 1e6, pct)
        if total and n != total:
            raise WeightsError(f"download of {url} stopped after {n} of {total} bytes; try again")
    except (urllib.error.URLError, OSError, TimeoutError) as e:
        part.unlink(missing_ok=True)
        raise WeightsError(f"could not download {url}: {e}") from e
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    digest = h.hexdigest()
    if sha256 is not None and digest != sha256.lower():
        part.unlink(missing_ok=True)
        raise WeightsError(f"download of {url} has sha256 {digest}, expected {sha256}; nothing was saved")
    part.replace(dest)
    logger.info("downloaded %.1f MB in %.1f s (sha256 %s)", n / 1e6, time.monotonic() - t0, digest[:12])
    return digest


def resolve_weights(
    spec: EncoderSpec | str,
    file: str | Path | None = None,
    *,
    cache_dir: str | Path | None = None,
    url: str | None = None,
    sha256: str | None = None,
    allow_download: bool = True,
) -> Path:
    """Find (or fetch) an encoder's weight file: explicit file > local cache > download.

    Args:
        spec: an :class:`~geopak.model.encoders.EncoderSpec` or a registered encoder name.
        file: an explicit weight file; used as is (checked only against an explicit ``sha256``: the spec's
            hash is that of the original download, and an explicit file may be a converted copy).
        cache_dir: the cache folder (default :func:`weights_cache_dir`).
        url: download address overriding the spec's (default: ``$GEOPAK_WEIGHTS_MIRROR/<filename>`` when
            that variable is set, else the spec's URL).
        sha256: expected hash overriding the spec's.
        allow_download: when False, a file missing from the cache is an error instead of a download.

    Returns:
        Path to a local, verified weight file.

    Raises:
        WeightsError: no weights for this encoder, a missing explicit file, a hash mismatch, or nothing cached
            while downloading is disabled or impossible (the message names the file, URL and cache path).
    """
    from geopak.model.encoders import encoder_spec

    if isinstance(spec, str):
        spec = encoder_spec(spec)
    src = spec.weights
    expected = sha256 or (src.sha256 if src else None)
    if file is not None:
        p = Path(file).expanduser()
        if not p.is_file():
            raise WeightsError(f"weight file for encoder {spec.name!r} not found: {p}")
        if expected is not None and sha256 is not None:
            _verify(p, expected, f"weights for {spec.name!r}")
        return p
    if src is None:
        raise WeightsError(
            f"encoder {spec.name!r} has no pretrained weights (it is trained from scratch); build it with "
            "weights=None, or pass an explicit weight file"
        )
    cdir = Path(cache_dir).expanduser() if cache_dir is not None else weights_cache_dir()
    cached = cdir / src.filename
    if cached.is_file():
        record = _sidecar(cached)
        known = expected or (record.read_text().split()[0] if record.is_file() else None)
        digest = _verify(cached, known, f"cached weights for {spec.name!r}")
        if known is None:
            record.write_text(f"{digest}  {src.filename}\n")
        logger.debug("encoder %s: using cached weights %s", spec.name, cached)
        return cached
    mirror = os.environ.get("GEOPAK_WEIGHTS_MIRROR")
    source_url = url or (f"{mirror.rstrip('/')}/{src.filename}" if mirror else src.url)
    how = (
        f"download {source_url} ({src.note or 'pretrained weights'}) and put it at {cached} "
        f"(or set GEOPAK_CACHE to a folder holding weights/{src.filename}), or pass the file explicitly"
    )
    if not allow_download:
        raise WeightsError(
            f"weights for encoder {spec.name!r} are not cached and downloading is disabled: {how}"
        )
    try:
        digest = download_file(source_url, cached, sha256=expected)
    except WeightsError as e:
        raise WeightsError(f"{e}. Offline? {how}") from e
    if expected is None:
        _sidecar(cached).write_text(f"{digest}  {src.filename}\n")
    return cached


# -------------------------------------------------------------------------------------------- reading
def read_state_dict(path: str | Path) -> dict[str, Any]:
    """Read a weight file without unpickling arbitrary objects.

    ``.safetensors`` through safetensors; anything else through ``torch.load(weights_only=True)`` (zip or
    legacy format), returning the loaded mapping as is (it may wrap the weights in ``state_dict``).

    Raises:
        WeightsError: unreadable file.
    """
    p = Path(path)
    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            return dict(load_file(str(p), device="cpu"))
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # any reader failure is reported with the file name
        raise WeightsError(f"cannot read weight file {p}: {e}") from e
    if not isinstance(obj, Mapping):
        raise WeightsError(f"weight file {p} holds a {type(obj).__name__}, not a state dict")
    return dict(obj)


def _unwrap(sd: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    for key in ("state_dict", "model", "state_dict_ema"):
        inner = sd.get(key)
        if isinstance(inner, Mapping) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
            return dict(inner)
    return {k: v for k, v in sd.items() if isinstance(v, torch.Tensor)}


def convert_places365(sd: Mapping[str, Any], model: nn.Module | None = None) -> dict[str, torch.Tensor]:
    """Official Places365 ResNet-50 checkpoint -> timm ``resnet50`` keys.

    Unwraps ``state_dict``, strips the ``module.`` prefix (DataParallel), drops ``fc.*`` (the 365-way
    classifier). Idempotent on an already converted state dict.
    """
    out: dict[str, torch.Tensor] = {}
    for k, v in _unwrap(sd).items():
        k = k.removeprefix("module.")
        if k.startswith("fc."):
            continue
        out[k] = v
    return out


def convert_timm(sd: Mapping[str, Any], model: nn.Module | None = None) -> dict[str, torch.Tensor]:
    """timm-layout weights (or OpenAI/open_clip CLIP layouts for a ViT) -> the timm model's keys.

    For a timm ``VisionTransformer`` the state dict goes through timm's own checkpoint filter (CLIP layout
    conversion, position-embedding resampling). Classifier/projection weights (``head.*``, ``fc.*``) are
    dropped: the encoders return pooled pre-logits features.
    """
    state = _unwrap(sd)
    if model is not None:
        from timm.models.vision_transformer import VisionTransformer, checkpoint_filter_fn

        if isinstance(model, VisionTransformer):
            state = checkpoint_filter_fn(state, model)
    return {k: v for k, v in state.items() if not k.startswith(("head.", "fc."))}


CONVERTERS: dict[str, Callable[[Mapping[str, Any], nn.Module | None], dict[str, torch.Tensor]]] = {
    "timm": convert_timm,
    "places365": convert_places365,
}


def load_state_dict_into(encoder: Encoder, path: str | Path) -> None:
    """Read ``path``, convert it with the encoder's converter and load it strictly into the backbone.

    Raises:
        WeightsError: unreadable file, unknown converter, or keys/shapes that do not fit (first few listed).
    """
    spec = encoder.spec
    name = spec.weights.converter if spec.weights is not None else "timm"
    if name not in CONVERTERS:
        raise WeightsError(
            f"encoder {spec.name!r}: unknown weight converter {name!r}; known: {sorted(CONVERTERS)}"
        )
    state = CONVERTERS[name](read_state_dict(path), encoder.backbone)
    own = encoder.backbone.state_dict()
    for k in own:  # checkpoints written before PyTorch 0.4 (Places365's) lack the batch-norm step counters
        if k.endswith("num_batches_tracked") and k not in state:
            state[k] = own[k]
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    bad_shape = [
        f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    if missing or unexpected or bad_shape:
        raise WeightsError(
            f"weights in {path} do not fit encoder {spec.name!r} ({spec.arch}): "
            f"{len(missing)} missing {missing[:5]}, {len(unexpected)} unexpected {unexpected[:5]}, "
            f"{len(bad_shape)} shape mismatches {bad_shape[:5]}"
        )
    encoder.backbone.load_state_dict(state, strict=True)


def save_converted(encoder_name: str, src: str | Path, dst: str | Path) -> Path:
    """Convert a weight file to the timm layout and write it as safetensors (e.g. to ship it offline).

    Args:
        encoder_name: registered encoder the file belongs to (picks the converter and checks the keys).
        src: the original file.
        dst: the ``.safetensors`` output.
    """
    from safetensors.torch import save_file

    from geopak.model.encoders import Encoder, encoder_spec

    spec = encoder_spec(encoder_name)
    enc = Encoder(spec)
    load_state_dict_into(enc, src)
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in enc.backbone.state_dict().items()}, str(dst))
    return dst
