"""Geography-safe augmentation: pipeline contents, output range, weather effects."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as v1
from torchvision.transforms import v2

from geopak.data.augment import (
    FORBIDDEN_TRANSFORMS,
    MAX_ROTATION_DEG,
    AugmentConfig,
    GaussianNoise,
    RandomWeather,
    add_fog,
    add_overcast,
    add_rain,
    assert_geography_safe,
    build_eval_transform,
    build_train_transform,
    find_forbidden,
    iter_transforms,
)


def scene(h: int = 96, w: int = 128) -> torch.Tensor:
    """Blue sky gradient over green ground with a grey road: (3, h, w) in [0, 1]."""
    x = torch.empty(3, h, w)
    top = h * 2 // 5
    sky = torch.linspace(0, 1, top)[:, None]
    x[0, :top] = 0.45 + 0.35 * sky
    x[1, :top] = 0.65 + 0.2 * sky
    x[2, :top] = 0.9
    x[:, top:] = torch.tensor([0.27, 0.47, 0.2])[:, None, None]
    x[:, h * 2 // 3 :, w // 3 : w // 2] = 0.35
    return x


def pil(x: torch.Tensor) -> Image.Image:
    return Image.fromarray((x.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))


def saturation(x: torch.Tensor) -> float:
    return float((x.max(0).values - x.min(0).values).mean())


# ------------------------------------------------------------------ the pipeline never flips, warps or rotates
FULL = AugmentConfig(
    jitter_p=1.0, weather_p=1.0, blur_p=1.0, noise_p=1.0, rotation_deg=MAX_ROTATION_DEG, crop_scale=(0.3, 1.0)
)


@pytest.mark.parametrize("config", [None, FULL, {"weather_p": 0.0, "blur_p": 0.0}])
def test_train_pipeline_has_no_forbidden_transform(config):
    t = build_train_transform(64, config)
    found = list(iter_transforms(t))
    names = {type(x).__name__ for x in found}
    # the walker really descends into the pipeline
    assert "RandomResizedCrop" in names and len(found) > 3
    for x in found:
        mro = {c.__name__ for c in type(x).__mro__}
        assert not mro & FORBIDDEN_TRANSFORMS, type(x).__name__
        assert not mro & {
            "RandomHorizontalFlip",
            "RandomVerticalFlip",
            "RandomPerspective",
            "ElasticTransform",
        }
        if mro & {"RandomRotation", "RandomAffine"}:
            assert max(abs(d) for d in x.degrees) <= 5.0
            assert getattr(x, "shear", None) in (None, [0.0, 0.0], (0.0, 0.0))
    assert find_forbidden(t) == []


@pytest.mark.parametrize(
    "bad",
    [
        v2.RandomHorizontalFlip(),
        v1.RandomHorizontalFlip(),
        v2.RandomVerticalFlip(),
        v2.RandomPerspective(),
        v1.RandomPerspective(),
        v2.ElasticTransform(),
        v2.RandomRotation(10),
        v1.RandomRotation(30),
        v2.RandomAffine(degrees=15),
        v1.RandomAffine(degrees=0, shear=10),
        v2.RandAugment(),
        v2.TrivialAugmentWide(),
    ],
    ids=lambda t: type(t).__module__.split(".")[-1] + "." + type(t).__name__,
)
def test_checker_finds_forbidden_transforms_nested(bad):
    safe = build_train_transform(32)
    nested = v2.Compose([safe, v2.RandomApply([v2.RandomChoice([v2.Identity(), bad])], p=0.5)])
    assert find_forbidden(nested), type(bad).__name__
    with pytest.raises(ValueError, match="not geography-safe"):
        assert_geography_safe(nested)
    # v1 containers too
    with pytest.raises(ValueError, match="not geography-safe"):
        assert_geography_safe(v1.Compose([v1.RandomApply([bad], p=0.1)]))


def test_small_rotation_allowed_large_rejected():
    assert find_forbidden(v2.RandomRotation(MAX_ROTATION_DEG)) == []
    with pytest.raises(ValueError, match="rotation_deg"):
        AugmentConfig(rotation_deg=10)
    with pytest.raises(ValueError, match="unknown augment settings"):
        build_train_transform(32, {"hflip_p": 0.5})


def test_train_output_never_mirrored():
    """Behavioural check on an asymmetric image: the dark left side stays on the left in every sample."""
    x = torch.full((3, 80, 120), 0.8)
    x[:, :, :60] = 0.15
    img = pil(x)
    t = build_train_transform(48, FULL)
    torch.manual_seed(0)
    for _ in range(12):
        y = t(img)
        assert y[:, :, :24].mean() < y[:, :, 24:].mean()


def test_train_transform_shape_range_and_seeding():
    img = pil(scene(90, 150))
    t = build_train_transform(40, FULL)
    torch.manual_seed(3)
    a = [t(img) for _ in range(4)]
    torch.manual_seed(3)
    b = [t(img) for _ in range(4)]
    for y in a:
        assert y.shape == (3, 40, 40) and y.dtype == torch.float32
        assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0
    assert all(torch.equal(p, q) for p, q in zip(a, b))
    assert not torch.equal(a[0], a[1])
    # accepts a uint8 tensor too
    assert t((scene() * 255).to(torch.uint8)).shape == (3, 40, 40)


def test_eval_transform_matches_image_loader():
    from geopak.data.images import to_tensor

    img = pil(scene(90, 150))
    e = build_eval_transform(56)
    y = e(img)
    assert y.shape == (3, 56, 56) and torch.equal(y, e(img))
    assert torch.equal(y, to_tensor(img, 56))


# ------------------------------------------------------------------ weather effects
def test_fog_lowers_contrast_and_hazes_the_far_field():
    x = scene()
    g = torch.Generator().manual_seed(0)
    y = add_fog(x, 0.7, generator=g)
    assert y.shape == x.shape and 0 <= float(y.min()) and float(y.max()) <= 1
    assert float(y.std()) < 0.7 * float(x.std())
    # haze moves pixels toward a light grey (depth dependence: test_fog_depth_increases_toward_top)
    ground = slice(60, 96)
    assert float(y[:, ground].mean()) > float(x[:, ground].mean())
    assert saturation(y) < saturation(x)
    assert torch.equal(add_fog(x, 0.0), x)
    # denser fog, stronger effect
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    assert float(add_fog(x, 0.9, generator=g1).std()) < float(add_fog(x, 0.3, generator=g2).std())


def test_fog_depth_increases_toward_top():
    x = torch.full((3, 64, 64), 0.1)
    y = add_fog(x, 0.6, generator=torch.Generator().manual_seed(2))
    assert float(y[:, :8].mean()) > float(y[:, -8:].mean()) + 0.05


def test_rain_streaks_are_near_vertical_and_bright():
    x = torch.full((3, 128, 128), 0.2)
    y = add_rain(x, 1.0, generator=torch.Generator().manual_seed(4))
    assert y.shape == x.shape and 0 <= float(y.min()) and float(y.max()) <= 1
    s = y.mean(0) - y.mean(0).min()  # streak map: the flat dimmed background removed
    bright = s > 0.1
    assert 0.005 < float(bright.float().mean()) < 0.4
    # streaks extend along y: neighbouring rows agree far more than neighbouring columns
    vert = float((s[1:] * s[:-1]).mean())
    horiz = float((s[:, 1:] * s[:, :-1]).mean())
    assert vert > 1.5 * horiz
    assert float(y.mean()) > float(x.mean() * 0.8) - 1e-6  # dims the scene but adds light streaks
    assert torch.equal(add_rain(x, 0.0), x)


def test_rain_seeded_and_batched():
    x = torch.stack([scene(), scene()])
    a = add_rain(x, 0.6, generator=torch.Generator().manual_seed(5))
    b = add_rain(x, 0.6, generator=torch.Generator().manual_seed(5))
    assert a.shape == x.shape and torch.equal(a, b)
    assert not torch.equal(a[0], a[1])  # independent drops per image


def test_overcast_desaturates_flattens_and_dims():
    x = scene()
    y = add_overcast(x, 0.8, generator=torch.Generator().manual_seed(6))
    assert y.shape == x.shape and 0 <= float(y.min()) and float(y.max()) <= 1
    assert saturation(y) < 0.6 * saturation(x)
    assert float(y[:, 60:].std()) < float(x[:, 60:].std())
    assert float(y[:, 60:].mean()) < float(x[:, 60:].mean())
    assert torch.equal(add_overcast(x, 0.0), x)


def test_weather_rejects_bad_input():
    with pytest.raises(TypeError, match="float"):
        add_fog(torch.zeros(3, 8, 8, dtype=torch.uint8))
    with pytest.raises(ValueError, match="3 channels"):
        add_overcast(torch.zeros(1, 8, 8))
    with pytest.raises(ValueError, match="unknown weather"):
        RandomWeather(weights={"snow": 1.0})


def test_random_weather_and_noise_modules():
    x = scene()
    assert torch.equal(RandomWeather(p=0.0)(x), x)
    g = torch.Generator().manual_seed(7)
    only_overcast = RandomWeather(p=1.0, weights={"overcast": 1.0}, generator=g)
    y = only_overcast(x)
    assert saturation(y) < saturation(x)
    n = GaussianNoise(p=1.0, std=(0.02, 0.02), generator=torch.Generator().manual_seed(8))
    z = n(x)
    assert 0 <= float(z.min()) and float(z.max()) <= 1
    assert 0.005 < float((z - x).std()) < 0.05
