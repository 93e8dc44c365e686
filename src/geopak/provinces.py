"""Pakistan's seven first-level units in one canonical order, with the per-province constants of the design.

The order (ids 0-6) is fixed: it is the row order of the province head and of every per-province table.
Figures come from the design brief: label-smoothing ``tau_km``, offset ``clamp_scale``, target geocell
counts, the seed dataset's image counts and the balanced-batch quota (per batch of 64).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "Province",
    "PROVINCES",
    "PROVINCE_NAMES",
    "NUM_PROVINCES",
    "UnknownProvinceError",
    "normalize_province",
    "province_by_id",
    "province_id",
]


@dataclass(frozen=True)
class Province:
    """One province or territory and its constants."""

    id: int
    name: str
    """Canonical name, as stored in manifests."""
    iso: str
    """ISO 3166-2 code."""
    short: str
    """Short label for tables and plots."""
    tau_km: float
    """Distance scale of the geocell label smoothing."""
    clamp_scale: float
    """Offset clamp = cell radius x this."""
    target_cells: int
    """Target number of geocells (capped by n / min cell size)."""
    seed_count: int
    """Images in the seed dataset (used as default proportions for GeoPak-Synth)."""
    batch_quota: int
    """Images per balanced batch of 64."""


PROVINCES: tuple[Province, ...] = (
    Province(0, "Sindh", "PK-SD", "SD", 30.0, 1.0, 450, 65_221, 16),
    Province(1, "Punjab", "PK-PB", "PB", 60.0, 0.6, 400, 8_459, 8),
    Province(2, "Khyber Pakhtunkhwa", "PK-KP", "KP", 50.0, 1.0, 220, 5_344, 8),
    Province(3, "Islamabad Capital Territory", "PK-IS", "ICT", 10.0, 0.6, 100, 4_410, 8),
    Province(4, "Gilgit-Baltistan", "PK-GB", "GB", 100.0, 1.4, 180, 2_379, 8),
    Province(5, "Balochistan", "PK-BA", "BA", 100.0, 1.4, 100, 3_627, 8),
    Province(6, "Azad Kashmir", "PK-JK", "AJK", 40.0, 1.0, 80, 1_075, 8),
)
PROVINCE_NAMES: tuple[str, ...] = tuple(p.name for p in PROVINCES)
NUM_PROVINCES = len(PROVINCES)

_ALIASES: dict[str, tuple[str, ...]] = {
    "Sindh": ("sindh", "sind", "sd", "pk sd"),
    "Punjab": ("punjab", "pb", "pk pb"),
    "Khyber Pakhtunkhwa": (
        "khyber pakhtunkhwa", "khyber pakhtoonkhwa", "khyber pakhtunkhawa", "kpk", "kp", "pk kp", "nwfp",
        "north west frontier province", "northwest frontier province", "north west frontier",
        "fata", "federally administered tribal areas", "tribal areas",
    ),
    "Islamabad Capital Territory": (
        "islamabad capital territory", "islamabad", "ict", "pk is", "federal capital territory", "fct",
        "islamabad federal capital territory",
    ),
    "Gilgit-Baltistan": (
        "gilgit baltistan", "gilgit", "gb", "pk gb", "northern areas", "fana",
        "federally administered northern areas",
    ),
    "Balochistan": ("balochistan", "baluchistan", "ba", "pk ba"),
    "Azad Kashmir": (
        "azad kashmir", "azad jammu and kashmir", "azad jammu kashmir", "ajk", "ak", "pk jk",
        "azad jammu", "azad state of jammu and kashmir",
    ),
}


class UnknownProvinceError(ValueError):
    """Raised for a province name that is not one of Pakistan's seven units or a known alias."""


def _key(text: str) -> str:
    s = text.strip().lower().replace("&", " and ")
    s = re.sub(r"[\s\-_.,/'()]+", " ", s).strip()
    s = re.sub(r"\b(province|pakistan|region|territory of)\b", " ", s)
    return re.sub(r"\s+", " ", s).strip()


_BY_NAME = {p.name: p for p in PROVINCES}
_LOOKUP: dict[str, Province] = {}
for _name, _aliases in _ALIASES.items():
    for _alias in (_name, *_aliases):
        _LOOKUP[_key(_alias)] = _BY_NAME[_name]
for _p in PROVINCES:
    _LOOKUP[_key(_p.iso)] = _p
    _LOOKUP[_key(_p.short)] = _p


def normalize_province(text: str | Province) -> Province:
    """Map a province name as people write it ("KPK", "NWFP", "Azad Jammu & Kashmir", "PK-SD", ...)
    to its :class:`Province`. Case, spaces, hyphens and a trailing "province" are ignored.

    Raises:
        UnknownProvinceError: when the text names no province of Pakistan.
    """
    if isinstance(text, Province):
        return text
    if not isinstance(text, str):
        raise UnknownProvinceError(f"province must be text, got {type(text).__name__} {text!r}")
    # Dots separate codes ("PK.SD") but also abbreviate ("N.W.F.P."): try both readings.
    p = _LOOKUP.get(_key(text)) or _LOOKUP.get(_key(text.replace(".", "")))
    if p is None:
        raise UnknownProvinceError(
            f"unknown province {text!r}; expected one of {', '.join(PROVINCE_NAMES)} "
            "(or a common alias such as KPK, NWFP, ICT, AJK, GB, FATA, Northern Areas)"
        )
    return p


def province_by_id(i: int) -> Province:
    """The province with canonical id ``i`` (0-6)."""
    if not 0 <= int(i) < NUM_PROVINCES:
        raise IndexError(f"province id {i} out of range 0..{NUM_PROVINCES - 1}")
    return PROVINCES[int(i)]


def province_id(text: str | Province) -> int:
    """Canonical id of a province name or alias."""
    return normalize_province(text).id
