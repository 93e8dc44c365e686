"""Geography-safe image augmentation.

Allowed (the seed's table): random resized crop (scale invariance), colour jitter (lighting, time of day),
weather (fog/haze, rain streaks, overcast), slight blur and sensor noise. Forbidden: horizontal or vertical
flips (they mirror road and traffic orientation, script and sun position), rotations beyond a few degrees
(the horizon is a cue) and perspective or elastic warps. :func:`build_train_transform` checks its own
pipeline with :func:`assert_geography_safe`; the tests walk it too.

Both transforms take an RGB PIL image (as :func:`geopak.data.images.open_image` returns) or a ``(3, H, W)``
tensor and return a ``(3, S, S)`` float32 tensor in [0, 1]; the encoders normalise themselves.

The weather effects are torch tensor operations drawing from torch's RNG (or a given ``torch.Generator``),
so they are reproducible under ``torch.manual_seed`` and per DataLoader worker.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "FORBIDDEN_TRANSFORMS",
    "MAX_ROTATION_DEG",
    "AugmentConfig",
    "EvalTransform",
    "GaussianNoise",
    "RandomWeather",
    "add_fog",
    "add_overcast",
    "add_rain",
    "assert_geography_safe",
    "build_eval_transform",
    "build_train_transform",
    "find_forbidden",
    "iter_transforms",
]

logger = logging.getLogger(__name__)

FORBIDDEN_TRANSFORMS: frozenset[str] = frozenset(
    {
        "RandomHorizontalFlip",
        "RandomVerticalFlip",
        "RandomPerspective",
        "ElasticTransform",
        # policies that include large rotations, shears or flips
        "AutoAugment",
        "RandAugment",
        "TrivialAugmentWide",
        "AugMix",
    }
)
"""Class names (torchvision v1 or v2, or any subclass) that must never appear in a GEOPAK pipeline."""

ROTATION_LIMITED: frozenset[str] = frozenset({"RandomRotation", "RandomAffine"})
"""Allowed only with rotations up to :data:`MAX_ROTATION_DEG` (and, for RandomAffine, no shear)."""

MAX_ROTATION_DEG = 5.0
"""Largest rotation (degrees, either way) a pipeline may apply."""

_LUMA = (0.299, 0.587, 0.114)


# --------------------------------------------------------------------------- helpers
def _rand(lo: float, hi: float, generator: torch.Generator | None) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=generator))


def _as_batch(img: Tensor) -> tuple[Tensor, bool]:
    if img.ndim == 3:
        return img[None], True
    if img.ndim == 4:
        return img, False
    raise ValueError(f"expected an image tensor (3, H, W) or (B, 3, H, W), got shape {tuple(img.shape)}")


def _check_image(img: Tensor) -> None:
    if not img.is_floating_point():
        raise TypeError(f"weather effects need a float image in [0, 1], got dtype {img.dtype}")
    if img.shape[-3] != 3:
        raise ValueError(f"expected 3 channels, got shape {tuple(img.shape)}")


def _smooth_noise(
    n: int, h: int, w: int, grid: int, generator: torch.Generator | None, device: Any
) -> Tensor:
    """Low-frequency noise in [-1, 1], ``(n, 1, h, w)`` (a random ``grid x grid`` field, bicubic upsampled)."""
    coarse = torch.rand(n, 1, grid, grid, generator=generator).to(device) * 2 - 1
    return F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=False).clamp(-1, 1)


def _luma(x: Tensor) -> Tensor:
    w = torch.tensor(_LUMA, dtype=x.dtype, device=x.device).view(3, 1, 1)
    return (x * w).sum(-3, keepdim=True)


# --------------------------------------------------------------------------- weather effects
def add_fog(img: Tensor, density: float = 0.5, generator: torch.Generator | None = None) -> Tensor:
    """Fog / haze with the atmospheric scattering model ``I = J t + A (1 - t)``.

    Transmission ``t = exp(-k depth)`` uses a depth proxy that grows toward the top of the frame (the far
    field of a ground-level photo) with smooth random variation; the airlight ``A`` is a light, slightly
    cool grey.

    Args:
        img: ``(3, H, W)`` or ``(B, 3, H, W)`` float in [0, 1].
        density: 0 (none) to 1 (thick fog).
        generator: optional torch generator (default: the global RNG).

    Returns:
        Same shape and dtype, in [0, 1].
    """
    _check_image(img)
    if density <= 0:
        return img.clone()
    x, single = _as_batch(img)
    n, _, h, w = x.shape
    rows = torch.linspace(1.0, 0.0, h, device=x.device, dtype=x.dtype).view(1, 1, h, 1)  # 1 at the top
    depth = 0.35 + 0.65 * rows + 0.2 * _smooth_noise(n, h, w, 4, generator, x.device).to(x.dtype)
    t = torch.exp(-2.5 * density * depth.clamp(min=0.0))
    a = _rand(0.78, 0.95, generator)
    airlight = torch.tensor([a, a, min(a * 1.03, 1.0)], dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    out = (x * t + airlight * (1 - t)).clamp(0, 1)
    return out[0] if single else out


def _streak_kernel(length: int, angle_deg: float, dtype: torch.dtype, device: Any) -> Tensor:
    """A ``(1, 1, L, L)`` anti-aliased line through the centre at ``angle_deg`` from vertical, max 1."""
    size = length if length % 2 else length + 1
    c = (size - 1) / 2
    s = torch.linspace(-c, c, 4 * size, dtype=dtype, device=device)
    th = math.radians(angle_deg)
    px, py = c + s * math.sin(th), c + s * math.cos(th)
    yy, xx = torch.meshgrid(
        torch.arange(size, dtype=dtype, device=device),
        torch.arange(size, dtype=dtype, device=device),
        indexing="ij",
    )
    # distance from every kernel pixel to the nearest sample of the segment
    d2 = (xx[..., None] - px) ** 2 + (yy[..., None] - py) ** 2
    k = torch.exp(-d2.min(-1).values / 0.5)
    fade = 0.6 + 0.4 * torch.linspace(0, 1, size, dtype=dtype, device=device).view(size, 1)  # brighter tail
    k = k * fade
    return (k / k.max()).view(1, 1, size, size)


def _drops(
    n: int, h: int, w: int, density: float, generator: torch.Generator | None
) -> tuple[Tensor, Tensor]:
    """Random drop positions (flat indices into ``n*h*w``) and their brightness in [0.5, 1]."""
    count = int(torch.binomial(torch.tensor(float(n * h * w)), torch.tensor(density), generator=generator))
    pos = torch.randint(0, n * h * w, (count,), generator=generator)
    return pos, 0.5 + 0.5 * torch.rand(count, generator=generator)


def _splat(drops: tuple[Tensor, Tensor], kernel: Tensor, n: int, h: int, w: int) -> Tensor:
    """Sparse convolution: add ``kernel`` (centred) at each drop, ``(n, 1, h, w)``; cost ~ drops x kernel size."""
    pos, val = drops
    k = kernel[0, 0].cpu()
    ky, kx = torch.nonzero(k > 0.02, as_tuple=True)
    kv = k[ky, kx]
    c = k.shape[0] // 2
    img, rem = pos // (h * w), pos % (h * w)
    y = (rem // w)[:, None] + (ky - c)[None]
    x = (rem % w)[:, None] + (kx - c)[None]
    keep = (y >= 0) & (y < h) & (x >= 0) & (x < w)
    flat = (img[:, None] * (h * w) + y * w + x)[keep]
    out = torch.zeros(n * h * w, dtype=k.dtype)
    out.index_add_(0, flat, (val[:, None] * kv[None])[keep])
    return out.view(n, 1, h, w)


def add_rain(img: Tensor, amount: float = 0.5, generator: torch.Generator | None = None) -> Tensor:
    """Rain: thin bright streaks at a near-vertical angle, with the scene slightly dimmed and flattened.

    Drops are scattered at random and smeared into streaks by a convolution with a line kernel (length
    about 1/12 of the image height, angle within 20 degrees of vertical).

    Args:
        img: ``(3, H, W)`` or ``(B, 3, H, W)`` float in [0, 1].
        amount: 0 (none) to 1 (downpour): drop density, streak opacity and dimming.
        generator: optional torch generator.

    Returns:
        Same shape and dtype, in [0, 1].
    """
    _check_image(img)
    if amount <= 0:
        return img.clone()
    x, single = _as_batch(img)
    n, _, h, w = x.shape
    length = max(5, round(h / 12))
    angle = _rand(-20.0, 20.0, generator)
    kernel = _streak_kernel(length, angle, x.dtype, x.device)
    streaks = (
        _splat(_drops(n, h, w, 0.004 * amount, generator), kernel, n, h, w).to(x.device, x.dtype).clamp(0, 1)
    )
    opacity = 0.45 + 0.4 * amount
    s = streaks * opacity
    mean = x.mean(dim=(-1, -2), keepdim=True)
    dim = 1 - 0.2 * amount
    base = (mean + (x - mean) * (1 - 0.25 * amount)) * dim  # flatter, darker light under rain
    out = base * (1 - s) + 0.85 * s
    out = out.clamp(0, 1)
    return out[0] if single else out


def add_overcast(img: Tensor, strength: float = 0.5, generator: torch.Generator | None = None) -> Tensor:
    """Overcast light: desaturated, lower contrast, dimmer, slightly cool, with a flat grey brightening at the top.

    Args:
        img: ``(3, H, W)`` or ``(B, 3, H, W)`` float in [0, 1].
        strength: 0 (none) to 1 (heavy cloud).
        generator: optional torch generator (a small random variation of the grey level).

    Returns:
        Same shape and dtype, in [0, 1].
    """
    _check_image(img)
    if strength <= 0:
        return img.clone()
    x, single = _as_batch(img)
    _, _, h, _ = x.shape
    grey = _luma(x)
    y = x + 0.7 * strength * (grey - x)  # desaturate
    mean = y.mean(dim=(-1, -2, -3), keepdim=True)
    y = mean + (y - mean) * (1 - 0.4 * strength)  # flatten contrast
    y = y * (1 - 0.3 * strength)  # dimmer: no direct sun
    tint = torch.tensor([-0.02, 0.0, 0.025], dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    y = y + strength * tint
    sky = _rand(0.7, 0.85, generator)
    rows = torch.linspace(1.0, 0.0, h, device=x.device, dtype=x.dtype).view(1, 1, h, 1)
    lift = 0.35 * strength * rows**2  # a flat white-grey sky weighs most near the top
    y = y * (1 - lift) + sky * lift
    out = y.clamp(0, 1)
    return out[0] if single else out


WEATHER_EFFECTS: dict[str, Callable[..., Tensor]] = {
    "fog": add_fog,
    "rain": add_rain,
    "overcast": add_overcast,
}


class RandomWeather(nn.Module):
    """With probability ``p`` apply one weather effect, chosen by ``weights``, at a random intensity.

    Args:
        p: probability of any weather.
        weights: relative frequency of ``fog``, ``rain``, ``overcast`` (missing names: 0).
        fog, rain, overcast: intensity ranges ``(lo, hi)`` in [0, 1].
        generator: optional torch generator (default: the global RNG).
    """

    def __init__(
        self,
        p: float = 0.3,
        weights: Mapping[str, float] | None = None,
        fog: tuple[float, float] = (0.2, 0.7),
        rain: tuple[float, float] = (0.3, 1.0),
        overcast: tuple[float, float] = (0.3, 0.8),
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"weather probability must lie in [0, 1], got {p}")
        weights = dict(weights or {"fog": 1.0, "rain": 1.0, "overcast": 1.0})
        unknown = set(weights) - set(WEATHER_EFFECTS)
        if unknown:
            raise ValueError(
                f"unknown weather effects {sorted(unknown)}; choose from {sorted(WEATHER_EFFECTS)}"
            )
        self.names = list(WEATHER_EFFECTS)
        self.probs = torch.tensor([float(weights.get(k, 0.0)) for k in self.names])
        if (self.probs < 0).any() or (p > 0 and self.probs.sum() <= 0):
            raise ValueError(f"weather weights must be >= 0 with a positive sum, got {weights}")
        self.p = float(p)
        self.ranges = {"fog": fog, "rain": rain, "overcast": overcast}
        for k, (lo, hi) in self.ranges.items():
            if not 0.0 <= lo <= hi <= 1.0:
                raise ValueError(f"{k} intensity range must satisfy 0 <= lo <= hi <= 1, got {(lo, hi)}")
        self.generator = generator

    def forward(self, img: Tensor) -> Tensor:
        if self.p <= 0 or float(torch.rand((), generator=self.generator)) >= self.p:
            return img
        k = int(torch.multinomial(self.probs, 1, generator=self.generator))
        name = self.names[k]
        lo, hi = self.ranges[name]
        return WEATHER_EFFECTS[name](img, _rand(lo, hi, self.generator), generator=self.generator)

    def extra_repr(self) -> str:
        w = dict(zip(self.names, self.probs.tolist()))
        return f"p={self.p}, weights={w}, ranges={self.ranges}"


class GaussianNoise(nn.Module):
    """Sensor noise: with probability ``p`` add ``N(0, sigma^2)`` per pixel and channel, sigma drawn from
    ``std``, plus a signal-dependent (shot-noise-like) part ``shot * sqrt(x)``; the result is clamped to [0, 1].
    """

    def __init__(
        self,
        p: float = 0.3,
        std: tuple[float, float] = (0.005, 0.03),
        shot: float = 0.5,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if not 0.0 <= p <= 1.0 or not 0.0 <= std[0] <= std[1]:
            raise ValueError(f"bad noise settings p={p}, std={std}")
        self.p, self.std, self.shot, self.generator = (
            float(p),
            (float(std[0]), float(std[1])),
            float(shot),
            generator,
        )

    def forward(self, img: Tensor) -> Tensor:
        if self.p <= 0 or float(torch.rand((), generator=self.generator)) >= self.p:
            return img
        sigma = _rand(*self.std, self.generator)
        noise = torch.randn(img.shape, generator=self.generator).to(img.device, img.dtype)
        scale = sigma * (1.0 + self.shot * (img.clamp(min=0).sqrt() - 0.5))
        return (img + noise * scale).clamp(0, 1)

    def extra_repr(self) -> str:
        return f"p={self.p}, std={self.std}, shot={self.shot}"


class _ToFloatImage(nn.Module):
    """A ``(3, H, W)`` float32 plain tensor in [0, 1] from a PIL image or a uint8/float tensor."""

    def forward(self, img: Any) -> Tensor:
        from torchvision.transforms.v2 import functional as TF

        if not isinstance(img, Tensor):
            img = TF.pil_to_tensor(img)
        img = img.as_subclass(Tensor)
        if img.dtype == torch.uint8:
            return img.float().div_(255.0)
        return img.float()


class _Clamp01(nn.Module):
    def forward(self, img: Tensor) -> Tensor:
        return img.clamp(0.0, 1.0)


# --------------------------------------------------------------------------- config and builders
@dataclass(frozen=True)
class AugmentConfig:
    """Settings of the training augmentation (loadable from a mapping, e.g. a TOML table)."""

    crop_scale: tuple[float, float] = (0.6, 1.0)
    """Area fraction range of RandomResizedCrop (moderate: the scene stays recognisable)."""
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    jitter_p: float = 0.8
    brightness: float = 0.3
    contrast: float = 0.3
    saturation: float = 0.25
    hue: float = 0.02
    """Kept small: the colour of soil and vegetation is a regional cue."""
    weather_p: float = 0.3
    weather_weights: dict[str, float] = field(
        default_factory=lambda: {"fog": 1.0, "rain": 1.0, "overcast": 1.0}
    )
    fog: tuple[float, float] = (0.2, 0.7)
    rain: tuple[float, float] = (0.3, 1.0)
    overcast: tuple[float, float] = (0.3, 0.8)
    blur_p: float = 0.2
    blur_sigma: tuple[float, float] = (0.1, 1.0)
    noise_p: float = 0.3
    noise_std: tuple[float, float] = (0.005, 0.03)
    rotation_deg: float = 0.0
    """Small random rotation (at most :data:`MAX_ROTATION_DEG`); 0 = none."""

    def __post_init__(self) -> None:
        for name in ("jitter_p", "weather_p", "blur_p", "noise_p"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"augment.{name} must lie in [0, 1], got {v}")
        lo, hi = self.crop_scale
        if not 0.0 < lo <= hi <= 1.0:
            raise ValueError(f"augment.crop_scale must satisfy 0 < lo <= hi <= 1, got {self.crop_scale}")
        if not 0.0 <= self.rotation_deg <= MAX_ROTATION_DEG:
            raise ValueError(
                f"augment.rotation_deg={self.rotation_deg} is not geography-safe: at most {MAX_ROTATION_DEG} "
                "degrees (large rotations destroy horizon cues)"
            )

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any] | None) -> AugmentConfig:
        """Build from a mapping (lists become tuples); unknown keys are an error naming them."""
        if data is None:
            return cls()
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown augment settings {sorted(unknown)}; known: {sorted(known)}")
        kw = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return cls(**kw)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def build_train_transform(size: int, config: AugmentConfig | Mapping[str, Any] | None = None) -> nn.Module:
    """The geography-safe training pipeline, returning ``(3, size, size)`` float tensors in [0, 1].

    Order: RandomResizedCrop (bicubic, antialiased) -> float [0, 1] -> [small rotation] -> ColorJitter ->
    RandomWeather -> slight GaussianBlur -> sensor noise -> clamp.
    """
    from torchvision.transforms import InterpolationMode, v2

    if size <= 0:
        raise ValueError(f"size must be positive, got {size}")
    cfg = config if isinstance(config, AugmentConfig) else AugmentConfig.from_mapping(config)
    steps: list[nn.Module] = [
        v2.RandomResizedCrop(
            size,
            scale=cfg.crop_scale,
            ratio=cfg.crop_ratio,
            interpolation=InterpolationMode.BICUBIC,
            antialias=True,
        ),
        _ToFloatImage(),
    ]
    if cfg.rotation_deg > 0:
        steps.append(v2.RandomRotation(cfg.rotation_deg, interpolation=InterpolationMode.BILINEAR))
    if cfg.jitter_p > 0:
        steps.append(
            v2.RandomApply(
                [v2.ColorJitter(cfg.brightness, cfg.contrast, cfg.saturation, cfg.hue)], p=cfg.jitter_p
            )
        )
    if cfg.weather_p > 0:
        steps.append(RandomWeather(cfg.weather_p, cfg.weather_weights, cfg.fog, cfg.rain, cfg.overcast))
    if cfg.blur_p > 0:
        k = 2 * math.ceil(2 * cfg.blur_sigma[1]) + 1
        steps.append(v2.RandomApply([v2.GaussianBlur(k, sigma=cfg.blur_sigma)], p=cfg.blur_p))
    if cfg.noise_p > 0:
        steps.append(GaussianNoise(cfg.noise_p, cfg.noise_std))
    steps.append(_Clamp01())
    pipeline = v2.Compose(steps)
    assert_geography_safe(pipeline)
    return pipeline


class EvalTransform:
    """Deterministic evaluation preprocessing, identical to the predictor's
    (:func:`geopak.data.images.to_tensor`: shorter side to ``size``, bicubic, centre crop)."""

    def __init__(self, size: int) -> None:
        if size <= 0:
            raise ValueError(f"size must be positive, got {size}")
        self.size = int(size)

    def __call__(self, img: Any) -> Tensor:
        from geopak.data.images import to_tensor

        return to_tensor(img, self.size)

    def __repr__(self) -> str:
        return f"EvalTransform(size={self.size})"


def build_eval_transform(size: int) -> EvalTransform:
    """Validation/test preprocessing: ``(3, size, size)`` float in [0, 1], no randomness."""
    return EvalTransform(size)


# --------------------------------------------------------------------------- safety checks
def iter_transforms(transform: Any) -> Iterator[Any]:
    """Every transform inside a pipeline, depth first: Compose/RandomApply/RandomChoice/RandomOrder
    (``.transforms``), nn.Module children, and lists or tuples of transforms."""
    seen: set[int] = set()
    stack = [transform]
    while stack:
        t = stack.pop()
        if id(t) in seen:
            continue
        seen.add(id(t))
        if isinstance(t, (list, tuple)):
            stack.extend(reversed(t))
            continue
        yield t
        inner = getattr(t, "transforms", None)
        if isinstance(inner, (list, tuple, nn.ModuleList)):
            stack.extend(reversed(list(inner)))
        if isinstance(t, nn.Module):
            stack.extend(reversed(list(t.children())))


def _max_abs_degrees(degrees: Any) -> float:
    if degrees is None:
        return 0.0
    if isinstance(degrees, (int, float)):
        return abs(float(degrees))
    return max((abs(float(d)) for d in degrees), default=0.0)


def _has_shear(shear: Any) -> bool:
    if shear is None:
        return False
    if isinstance(shear, (int, float)):
        return float(shear) != 0.0
    return any(float(s) != 0.0 for s in shear)


def find_forbidden(transform: Any) -> list[str]:
    """Descriptions of the geography-unsafe transforms in a pipeline (empty when it is safe)."""
    bad = []
    for t in iter_transforms(transform):
        names = {c.__name__ for c in type(t).__mro__}
        hit = names & FORBIDDEN_TRANSFORMS
        if hit:
            bad.append(f"{type(t).__name__} (forbidden: {min(hit)})")
            continue
        if names & ROTATION_LIMITED:
            deg = _max_abs_degrees(getattr(t, "degrees", None))
            if deg > MAX_ROTATION_DEG:
                bad.append(f"{type(t).__name__}(degrees={deg:g} > {MAX_ROTATION_DEG:g})")
            if _has_shear(getattr(t, "shear", None)):
                bad.append(f"{type(t).__name__}(shear={t.shear}: a perspective-like warp)")
    return bad


def assert_geography_safe(transform: Any) -> None:
    """Raise ValueError naming every flip, large rotation, shear or perspective/elastic warp in ``transform``."""
    bad = find_forbidden(transform)
    if bad:
        raise ValueError(
            "augmentation pipeline is not geography-safe: "
            + "; ".join(bad)
            + ". Flips mirror road orientation, "
            f"rotations over {MAX_ROTATION_DEG:g} degrees break horizon cues and warps distort the scene."
        )
