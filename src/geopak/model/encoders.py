"""Image encoders: a registry of named timm backbones, each carrying its own preprocessing.

One factory, :func:`create_encoder`, builds every encoder; a registered name is a small function returning an
:class:`EncoderSpec` (the timm architecture + keyword arguments, the feature width, the input size, the
normalisation and where pretrained weights come from). The real encoders of the design are

- ``clip_vit_b16``: the OpenAI CLIP ViT-B/16 image tower with timm's ``vit_base_patch16_clip_224.openai``
  weights, the 768-d pooled pre-logits embedding (class token after the final norm; CLIP's 512-d projection is
  not used). The architecture is timm's ``vit_base_patch16_clip_quickgelu_224``: the same network and weights
  with CLIP's native QuickGELU activation (timm notes that the GELU variant does not reproduce CLIP's features);
  the parameter count is identical;
- ``resnet50_places365``: timm ``resnet50`` with the Places365 weights, the 2048-d global-average-pooled feature.

Small ones live in the same registry so tests and the demo exercise the real code path: ``clip_vit_tiny`` and
``resnet_small`` (trained from scratch by the CPU demo at 96 px), ``test_vit`` and ``test_resnet`` (a forward
pass in milliseconds at 32 px).

Every encoder takes images as float tensors in [0, 1], **not normalised**, shape (B, 3, H, W); it resizes to its
own input size when needed and normalises with its own mean/std, so one image tensor feeds both encoders.

Building is always offline: ``weights=None`` gives random initial weights; pretrained weights are resolved only
when asked for (see :mod:`geopak.model.weights`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "ENCODERS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "Encoder",
    "EncoderSpec",
    "UnknownEncoderError",
    "WeightSource",
    "create_encoder",
    "encoder_spec",
    "list_encoders",
    "register_encoder",
]

logger = logging.getLogger(__name__)

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
"""Places365's ResNet-50 was trained with the ImageNet statistics."""

EncoderKind = Literal["clip", "scene"]


class UnknownEncoderError(KeyError):
    """A name that is not in the encoder registry."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0])


@dataclass(frozen=True)
class WeightSource:
    """Where an encoder's pretrained weights come from (see :func:`geopak.model.weights.resolve_weights`).

    Attributes:
        filename: name of the file in the local weight cache (and of the downloaded file).
        url: download address (plain HTTP(S) GET).
        sha256: expected sha256 of the downloaded file; ``None`` when not known in advance (the hash of the
            first download is then recorded next to the cached file and checked on every later use).
        converter: name of the function in :data:`geopak.model.weights.CONVERTERS` that turns the file's
            state dict into the timm model's keys (``"timm"``, ``"places365"``).
        note: where the weights come from, for error messages.
    """

    filename: str
    url: str
    sha256: str | None = None
    converter: str = "timm"
    note: str = ""


@dataclass(frozen=True)
class EncoderSpec:
    """Everything needed to build an encoder and feed it: architecture, width, preprocessing, weights.

    Attributes:
        name: registry name.
        kind: ``"clip"`` (semantic) or ``"scene"`` encoder.
        arch: timm model name passed to ``timm.create_model``.
        kwargs: extra keyword arguments for ``timm.create_model`` (JSON-ready).
        feature_dim: width of the pooled embedding the encoder returns.
        input_size: square side (pixels) the backbone is fed; other sizes are resized to it.
        mean: per-channel normalisation mean (images in [0, 1]).
        std: per-channel normalisation std.
        interpolation: resize mode (``"bilinear"`` or ``"bicubic"``).
        weights: pretrained weight source, or ``None`` when the encoder is only ever trained from scratch.
    """

    name: str
    kind: EncoderKind
    arch: str
    feature_dim: int
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    kwargs: dict[str, Any] = field(default_factory=dict)
    interpolation: str = "bilinear"
    weights: WeightSource | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (stored in checkpoints)."""
        d = asdict(self)
        d["mean"] = list(self.mean)
        d["std"] = list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EncoderSpec:
        """Inverse of :meth:`to_dict`; lists become tuples again."""
        d = dict(d)
        w = d.get("weights")
        d["weights"] = WeightSource(**w) if isinstance(w, dict) else None
        d["mean"] = tuple(float(v) for v in d["mean"])
        d["std"] = tuple(float(v) for v in d["std"])
        d["kwargs"] = {k: tuple(v) if isinstance(v, list) else v for k, v in d.get("kwargs", {}).items()}
        if d["kind"] not in ("clip", "scene"):
            raise ValueError(
                f"encoder spec {d.get('name')!r}: kind must be 'clip' or 'scene', got {d['kind']!r}"
            )
        return cls(**d)


ENCODERS: dict[str, Callable[[], EncoderSpec]] = {}
"""The registry: name -> function returning the :class:`EncoderSpec`."""


def register_encoder(fn: Callable[[], EncoderSpec]) -> Callable[[], EncoderSpec]:
    """Decorator: register ``fn`` under its function name (which must equal the spec's ``name``)."""
    if fn.__name__ in ENCODERS:
        raise ValueError(f"encoder {fn.__name__!r} is already registered")
    ENCODERS[fn.__name__] = fn
    return fn


def list_encoders(kind: EncoderKind | None = None) -> list[str]:
    """Registered names, optionally only those of one kind."""
    return sorted(n for n, f in ENCODERS.items() if kind is None or f().kind == kind)


def encoder_spec(name: str) -> EncoderSpec:
    """The registered spec for ``name``.

    Raises:
        UnknownEncoderError: with the list of known names.
    """
    if name not in ENCODERS:
        raise UnknownEncoderError(f"unknown encoder {name!r}; registered: {', '.join(sorted(ENCODERS))}")
    spec = ENCODERS[name]()
    if spec.name != name:
        raise ValueError(f"encoder registered as {name!r} describes itself as {spec.name!r}")
    return spec


# --------------------------------------------------------------------------------------------- registry
@register_encoder
def clip_vit_b16() -> EncoderSpec:
    """OpenAI CLIP ViT-B/16 image tower (timm, QuickGELU), 768-d pooled pre-logits embedding, 224 px."""
    return EncoderSpec(
        name="clip_vit_b16",
        kind="clip",
        arch="vit_base_patch16_clip_quickgelu_224",
        feature_dim=768,
        input_size=224,
        mean=CLIP_MEAN,
        std=CLIP_STD,
        interpolation="bicubic",
        weights=WeightSource(
            filename="vit_base_patch16_clip_224.openai.bin",
            url="https://huggingface.co/timm/vit_base_patch16_clip_224.openai/resolve/main/pytorch_model.bin",
            converter="timm",
            note="OpenAI CLIP ViT-B/16 (Hugging Face hub timm/vit_base_patch16_clip_224.openai, OpenCLIP layout, "
            "read with torch.load(weights_only=True); a timm-layout .safetensors works too)",
        ),
    )


@register_encoder
def resnet50_places365() -> EncoderSpec:
    """ResNet-50 trained on Places365 (MIT CSAIL), 2048-d pooled feature, 224 px, ImageNet statistics."""
    return EncoderSpec(
        name="resnet50_places365",
        kind="scene",
        arch="resnet50",
        feature_dim=2048,
        input_size=224,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        interpolation="bilinear",
        weights=WeightSource(
            filename="resnet50_places365.pth.tar",
            url="http://places2.csail.mit.edu/models_places365/resnet50_places365.pth.tar",
            converter="places365",
            note="official Places365 ResNet-50 (torchvision keys with a 'module.' prefix)",
        ),
    )


@register_encoder
def clip_vit_tiny() -> EncoderSpec:
    """A ViT-Tiny-like semantic encoder for the CPU demo: 96 px, patch 16 (36 tokens), 4 blocks of width 192.

    CLIP's layout (pre-norm, no patch-embedding bias) at a small size, trained from scratch.

    With ``resnet_small`` about 190 images/s per CPU core of compute at 96 px (forward, fp32); see
    ``benchmarks/bench_model.py``.
    """
    return EncoderSpec(
        name="clip_vit_tiny",
        kind="clip",
        arch="vit_base_patch16_clip_224",
        kwargs=dict(img_size=96, patch_size=16, embed_dim=192, depth=4, num_heads=3),
        feature_dim=192,
        input_size=96,
        mean=CLIP_MEAN,
        std=CLIP_STD,
    )


@register_encoder
def resnet_small() -> EncoderSpec:
    """A narrow ResNet scene encoder for the CPU demo: one basic block per stage, widths 32-256, 96 px."""
    return EncoderSpec(
        name="resnet_small",
        kind="scene",
        arch="resnet18",
        kwargs=dict(layers=(1, 1, 1, 1), channels=(32, 64, 128, 256), stem_width=32),
        feature_dim=256,
        input_size=96,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
    )


@register_encoder
def test_vit() -> EncoderSpec:
    """Test-size ViT in CLIP's layout: 32 px, patch 8, two blocks of width 32 (milliseconds per batch)."""
    return EncoderSpec(
        name="test_vit",
        kind="clip",
        arch="vit_base_patch16_clip_224",
        kwargs=dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, mlp_ratio=2.0),
        feature_dim=32,
        input_size=32,
        mean=CLIP_MEAN,
        std=CLIP_STD,
    )


@register_encoder
def test_resnet() -> EncoderSpec:
    """Test-size ResNet: 32 px, one basic block per stage, widths 8-64."""
    return EncoderSpec(
        name="test_resnet",
        kind="scene",
        arch="resnet18",
        kwargs=dict(layers=(1, 1, 1, 1), channels=(8, 16, 32, 64), stem_width=8),
        feature_dim=64,
        input_size=32,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
    )


# ---------------------------------------------------------------------------------------------- module
class Encoder(nn.Module):
    """A timm backbone behind its own preprocessing: [0, 1] images in, (B, feature_dim) embeddings out.

    Attributes:
        spec: the :class:`EncoderSpec` it was built from.
        backbone: the timm model (classifier removed: ``num_classes=0``).
    """

    def __init__(self, spec: EncoderSpec) -> None:
        super().__init__()
        import timm

        self.spec = spec
        self.backbone = timm.create_model(spec.arch, pretrained=False, num_classes=0, **spec.kwargs)
        if int(self.backbone.num_features) != spec.feature_dim:
            raise ValueError(
                f"encoder {spec.name!r}: {spec.arch} with {spec.kwargs} gives {self.backbone.num_features}-d "
                f"features but the spec says {spec.feature_dim}"
            )
        self.register_buffer("mean", torch.tensor(spec.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(spec.std).view(1, 3, 1, 1), persistent=False)
        self.channels_last = False

    @property
    def feature_dim(self) -> int:
        return self.spec.feature_dim

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """Resize (when the side differs from ``spec.input_size``) and normalise [0, 1] images."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(
                f"encoder {self.spec.name!r} expects images (B, 3, H, W); got {tuple(images.shape)}"
            )
        if not images.is_floating_point():
            raise TypeError(
                f"encoder {self.spec.name!r} expects float images in [0, 1], got dtype {images.dtype}; "
                "divide uint8 images by 255"
            )
        s = self.spec.input_size
        if images.shape[-2:] != (s, s):
            images = F.interpolate(
                images, size=(s, s), mode=self.spec.interpolation, align_corners=False, antialias=True
            )
        x = (images - self.mean.to(images.dtype)) / self.std.to(images.dtype)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Embed images.

        Args:
            images: (B, 3, H, W) float in [0, 1], not normalised.

        Returns:
            (B, feature_dim) pooled embeddings.
        """
        return self.backbone(self.preprocess(images))

    def set_channels_last(self, enabled: bool = True) -> Encoder:
        """Use channels-last memory (faster convolutions on CPU with oneDNN); returns self."""
        self.channels_last = enabled
        self.backbone.to(memory_format=torch.channels_last if enabled else torch.contiguous_format)
        return self

    # ------------------------------------------------------------------------------------- freezing
    def stages(self) -> tuple[list[nn.Module], list[nn.Module]]:
        """Split the backbone for partial unfreezing: (trunk stages bottom to top, head parts).

        ViT: stages = the transformer blocks, head = the final norm(s). ResNet: stages = layer1..layer4,
        head = nothing (the classifier is removed). The rest (patch embedding, tokens, stem) is the bottom and
        is unfrozen only with a fraction of 1.
        """
        b = self.backbone
        if hasattr(b, "blocks"):
            stages = list(b.blocks)
            head = [m for m in (getattr(b, "norm", None), getattr(b, "fc_norm", None)) if m is not None]
        elif all(hasattr(b, f"layer{i}") for i in range(1, 5)):
            stages = [getattr(b, f"layer{i}") for i in range(1, 5)]
            head = []
        else:
            raise TypeError(f"encoder {self.spec.name!r}: cannot split {type(b).__name__} into stages")
        return stages, head

    def set_trainable(self, fraction: float) -> int:
        """Freeze everything, then unfreeze the top ``fraction`` of the trunk stages and the head parts.

        The number of stages unfrozen is ``ceil(fraction * n_stages)``: 0.3 of a 12-block ViT unfreezes
        blocks 8-11 and the final norm; 0.2 of a ResNet unfreezes layer4. ``fraction >= 1`` unfreezes all.

        Returns:
            The number of trainable parameters (elements) afterwards.
        """
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"unfreeze fraction must be in [0, 1], got {fraction}")
        for p in self.parameters():
            p.requires_grad_(fraction >= 1.0)
        if 0.0 < fraction < 1.0:
            stages, head = self.stages()
            k = math.ceil(fraction * len(stages) - 1e-9)
            for m in stages[len(stages) - k :] + (head if k else []):
                for p in m.parameters():
                    p.requires_grad_(True)
        n = sum(p.numel() for p in self.parameters() if p.requires_grad)
        logger.debug(
            "encoder %s: %.0f%% of trunk trainable, %d parameters", self.spec.name, 100 * fraction, n
        )
        return n

    def train(self, mode: bool = True) -> Encoder:
        """Like ``nn.Module.train``, but batch-norm layers whose parameters are frozen stay in eval mode.

        Frozen ResNet stages therefore keep their running statistics while the unfrozen top is fine-tuned.
        """
        super().train(mode)
        if mode:
            for m in self.modules():
                frozen = not any(p.requires_grad for p in m.parameters(recurse=False))
                if isinstance(m, nn.modules.batchnorm._BatchNorm) and frozen:
                    m.eval()
        return self

    @torch.no_grad()
    def recalibrate_batchnorm(self, batches: Iterable[torch.Tensor]) -> int:
        """Re-estimate every batch-norm layer's running statistics from data (a data-dependent initialisation).

        A randomly initialised ResNet keeps running mean 0 / variance 1, so in eval mode its batch norms do not
        normalise at all; its frozen features then come from badly scaled activations, and unfreezing a stage
        later (phase 2) switches those layers to batch statistics and shifts the features under the trained
        heads. Averaging the statistics over a few hundred real images fixes both. Weights are untouched.

        Args:
            batches: image tensors (B, 3, H, W) in [0, 1], as :meth:`forward` takes them.

        Returns:
            The number of images seen (0 when the encoder has no batch norm).
        """
        bns = [m for m in self.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        if not bns:
            return 0
        was_training = self.training
        momenta = [m.momentum for m in bns]
        for m in bns:
            m.reset_running_stats()
            m.momentum = None  # cumulative average over all batches
            m.train()
        n = 0
        try:
            for x in batches:
                self(x.float())
                n += len(x)
        finally:
            for m, mom in zip(bns, momenta):
                m.momentum = mom
            self.train(was_training)
        logger.info("encoder %s: batch-norm statistics re-estimated from %d images", self.spec.name, n)
        return n

    # -------------------------------------------------------------------------------------- weights
    def load_pretrained(self, path: str | Path) -> None:
        """Load a weight file (any supported layout) into the backbone, strictly.

        Args:
            path: a ``.safetensors``, ``.pth``/``.pth.tar``/``.bin`` file; converted with the spec's converter.

        Raises:
            geopak.model.weights.WeightsError: unreadable file or keys that do not fit the architecture.
        """
        from geopak.model.weights import load_state_dict_into

        load_state_dict_into(self, path)


def create_encoder(
    name: str | EncoderSpec,
    weights: str | Path | bool | None = None,
    *,
    allow_download: bool = True,
) -> Encoder:
    """Build a registered encoder.

    Args:
        name: registry name (see :func:`list_encoders`) or a full :class:`EncoderSpec` (as stored in checkpoints).
        weights: ``None``/``False``: random initial weights (always offline). A path: load that file.
            ``"pretrained"`` or ``True``: resolve the spec's weights (local cache, else download; see
            :func:`geopak.model.weights.resolve_weights`).
        allow_download: with ``weights="pretrained"``, whether a missing file may be downloaded.

    Returns:
        The :class:`Encoder` (train mode, all parameters trainable, like any fresh module).

    Raises:
        UnknownEncoderError: unknown name.
        geopak.model.weights.WeightsError: weights requested but unavailable or not matching.
    """
    spec = name if isinstance(name, EncoderSpec) else encoder_spec(name)
    enc = Encoder(spec)
    if weights is None or weights is False:
        return enc
    from geopak.model.weights import resolve_weights

    if weights is True or weights == "pretrained":
        path = resolve_weights(spec, allow_download=allow_download)
    else:
        path = resolve_weights(spec, file=weights)
    enc.load_pretrained(path)
    logger.info("encoder %s: loaded weights from %s", spec.name, path)
    return enc
