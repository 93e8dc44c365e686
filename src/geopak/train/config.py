"""Typed training configuration: phases as data, loaded from TOML and validated on load.

A :class:`TrainConfig` holds the model's :class:`~geopak.model.geopak.GeopakConfig`, the data options, the
loss weights, the trainer options, the validation mixture, the monitors and an ordered list of
:class:`PhaseConfig` (phase0 ... phase3). Each phase starts from the previous phase's exported checkpoint.

Named configs ship with the package (``geopak/configs/<name>.toml``): ``tiny`` (small encoders, 96 px, a few
epochs: the demo and smoke runs) and ``full`` (CLIP ViT-B/16 + ResNet-50-Places365 at 224 px, the seed's
epochs). :func:`load_config` takes a name or a path; :func:`apply_overrides` (or
:meth:`TrainConfig.with_overrides`) changes values by dotted key, e.g.
``{"loss.label_smoothing": False, "model.fusion": "mean", "phases.phase1.epochs": 3}``.

Every value is checked against the dataclass annotations when loaded; an unknown key, a wrong type or an
inconsistent phase raises :class:`ConfigError` naming the file, the key and the value.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import json
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Union

import tomllib

from geopak.model.geopak import GeopakConfig
from geopak.provinces import NUM_PROVINCES, PROVINCES, normalize_province

__all__ = [
    "PARAM_GROUPS",
    "PHASE_NAMES",
    "ConfigError",
    "DataConfig",
    "LossConfig",
    "MonitorConfig",
    "PhaseConfig",
    "TrainConfig",
    "TrainerConfig",
    "ValidationConfig",
    "WeightsConfig",
    "apply_overrides",
    "config_from_dict",
    "config_to_dict",
    "load_config",
    "named_configs",
]

PARAM_GROUPS: tuple[str, ...] = ("clip", "scene", "fusion", "heads", "embeddings")
"""Parameter-group names of :meth:`GeopakModel.param_groups`."""
PHASE_NAMES: tuple[str, ...] = ("phase0", "phase1", "phase2", "phase3")


class ConfigError(ValueError):
    """A training configuration that cannot be used (unknown key, wrong type, inconsistent phase)."""


@dataclass
class DataConfig:
    """Images, batches, sampling, augmentation and the feature cache."""

    image_size: int = 224
    """Side of the square image tensor fed to both encoders."""
    batch_size: int = 64
    """Training batch size per process (the sum of ``quotas`` when those are given)."""
    eval_batch_size: int = 128
    """Validation / cache-building batch size."""
    quotas: dict[str, int] = field(default_factory=dict)
    """Images per province per balanced batch (province name or alias -> count); empty = the defaults
    (Sindh 16, every other province 8), scaled to ``batch_size``."""
    num_workers: int = 2
    """DataLoader worker processes."""
    val_fraction: float = 0.1
    """Share of the training rows carved (seeded, stratified by province) into validation when the
    manifest has no ``val`` rows."""
    augment: dict[str, Any] = field(default_factory=dict)
    """Options of the geography-safe augmentation (keyword arguments of ``geopak.data.augment``)."""
    cache_views: int = 2
    """K views per training image in the feature cache: view 0 = eval transform, 1..K-1 = augmented."""
    cache_dir: str = ""
    """Where features are cached; empty = ``RUN/cache``. Share it between runs to reuse features."""
    cache_dtype: Literal["float32", "float16"] = "float32"
    """Storage dtype of cached features."""
    steps_per_epoch: int = 0
    """Batches per training epoch; 0 = one pass's worth (training rows / batch size)."""


@dataclass
class LossConfig:
    """Weights and options of :class:`geopak.losses.GeopakLoss`."""

    province: float = 0.5
    cell: float = 1.0
    offset: float = 1.0
    aux: float = 0.1
    label_smoothing: bool = True
    """Distance-aware smoothed geocell targets (False = one-hot targets, an ablation)."""
    beta: float = 0.9995
    """Effective-number beta of the province class weights."""
    province_weighting: Literal["effective_sampled", "effective", "none"] = "effective_sampled"
    """``effective_sampled``: effective-number weights divided by the balanced sampler's oversampling
    (see :func:`geopak.train.run.province_weights`); ``effective``: the seed's weights on top of the balanced
    sampler (corrects twice); ``none``: uniform."""


@dataclass
class TrainerConfig:
    """Lightning trainer options (hardware, precision, logging)."""

    seed: int = 0
    accelerator: Literal["auto", "cpu", "gpu", "cuda", "mps"] = "auto"
    devices: int = 1
    num_nodes: int = 1
    strategy: str = "auto"
    """``auto`` picks ``ddp`` when more than one process is used."""
    keep_better_phase: bool = True
    """A phase whose best weights are worse on its validation monitor than the weights it started from
    exports the previous phase's weights instead (and says so in the summary)."""
    precision: Literal["32-true", "bf16-mixed", "16-mixed", "bf16-true"] = "32-true"
    deterministic: bool = False
    """``torch.use_deterministic_algorithms`` (on GPU this needs ``CUBLAS_WORKSPACE_CONFIG``)."""
    gradient_clip_val: float = 1.0
    """Gradient-norm clip; 0 = off."""
    log_every_n_steps: int = 10
    num_threads: int = 0
    """CPU threads per process for torch; 0 = torch's default, divided among the processes of a CPU DDP run.
    Use 1 on a busy machine: oversubscribed OpenMP threads make small CPU steps many times slower."""
    progress_bar: bool = True
    tensorboard: bool = True
    keep_every_epoch: bool = False
    """Keep one Lightning checkpoint per epoch (otherwise ``last.ckpt`` every epoch + the best one)."""


@dataclass
class ValidationConfig:
    """End-to-end validation with the inference mixture (never the ground-truth cell)."""

    top_provinces: int = 2
    top_cells: int = 5
    mode: Literal["mixture", "median", "argmax"] = "mixture"
    use_offsets: bool = True
    calibrate: bool = True
    """After each phase, fit the province/cell temperatures on the validation rows and record them in the
    exported checkpoint (``extra.calibration``); the predictor uses them."""


@dataclass
class MonitorConfig:
    """Training health warnings (logged and recorded in the run summary)."""

    rare_share: float = 0.05
    """A province is rare when it holds less than this share of the training rows."""
    rare_accuracy: float = 0.3
    """Warn when a rare province's validation accuracy falls under this."""
    offset_collapse_km: float = 0.05
    """Warn when the epoch-mean training offset loss falls under this many km ..."""
    offset_collapse_ratio: float = 0.01
    """... or under this fraction of its first epoch's value (memorised offsets)."""


@dataclass
class WeightsConfig:
    """Initial encoder weights: "" = random (offline, tests/demo), "pretrained" = the registry's weights
    (local weight cache, downloaded only with ``allow_download``), or the path of a weight file."""

    clip: str = ""
    scene: str = ""
    allow_download: bool = False


@dataclass
class PhaseConfig:
    """One training phase; phases run in list order, each from the previous phase's checkpoint."""

    name: str
    """phase0, phase1, phase2 or phase3."""
    objective: Literal["province", "full"] = "full"
    """``province``: only the province loss (phase 0); ``full``: the weighted total."""
    epochs: int = 1
    max_steps: int = -1
    """Cap on optimiser steps (-1 = none)."""
    lr: dict[str, float] = field(default_factory=dict)
    """Learning rate per parameter group (clip, scene, fusion, heads, embeddings); a group not listed is
    frozen in this phase."""
    clip_fraction: float = 0.0
    """Top fraction of the CLIP encoder unfrozen (0 = frozen)."""
    scene_fraction: float = 0.0
    """Top fraction of the scene encoder unfrozen (0 = frozen)."""
    weight_decay: float = 1e-5
    schedule: Literal["cosine", "constant"] = "cosine"
    warmup_fraction: float = 0.05
    """Share of the phase's steps with a linear warm-up."""
    min_lr_ratio: float = 0.0
    """Cosine floor as a fraction of each group's lr."""
    use_cache: bool | None = None
    """Train from cached encoder features; None = whenever both encoders are frozen."""
    monitor: str = "val/macro_median_km"
    """Metric that picks the phase's best checkpoint (and the exported weights)."""
    monitor_mode: Literal["min", "max"] = "min"
    enabled: bool = True
    """False skips the phase (e.g. the optional phase3) unless it is asked for by name."""

    @property
    def frozen_encoders(self) -> bool:
        """True when both encoders stay frozen during this phase."""
        return self.clip_fraction == 0.0 and self.scene_fraction == 0.0

    @property
    def cached(self) -> bool:
        """Whether this phase trains from the feature cache."""
        return self.frozen_encoders if self.use_cache is None else bool(self.use_cache)


@dataclass
class TrainConfig:
    """The whole training configuration."""

    name: str = "custom"
    model: GeopakConfig = field(default_factory=GeopakConfig)
    weights: WeightsConfig = field(default_factory=WeightsConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    monitor: MonitorConfig = field(default_factory=MonitorConfig)
    phases: list[PhaseConfig] = field(default_factory=list)

    def phase(self, name: str) -> PhaseConfig:
        """The phase called ``name``."""
        for p in self.phases:
            if p.name == name:
                return p
        raise ConfigError(f"no phase {name!r} in config {self.name!r}; phases: {[p.name for p in self.phases]}")

    def with_overrides(self, overrides: dict[str, Any]) -> TrainConfig:
        """A validated copy with dotted-key overrides applied (see :func:`apply_overrides`)."""
        return apply_overrides(self, overrides)

    def to_dict(self) -> dict[str, Any]:
        """JSON/TOML-ready nested dict."""
        return config_to_dict(self)

    def validate(self) -> TrainConfig:
        """Check cross-field consistency; returns self. Raises :class:`ConfigError`."""
        _validate(self, "config")
        return self


# ------------------------------------------------------------------------------------------ conversion
def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, where: str) -> Any:
    """Check/convert one value against a type annotation."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _convert(value, a, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{where}: {value!r} matches none of {tp}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {list(args)}")
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table, got {type(value).__name__} {value!r}")
        return _from_dict(tp, value, where)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__} {value!r}")
        conv = [_convert(v, args[0] if args else Any, f"{where}[{i}]") for i, v in enumerate(value)]
        return conv if origin is list else tuple(conv)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table, got {type(value).__name__} {value!r}")
        kt, vt = args if args else (Any, Any)
        return {_convert(k, kt, f"{where} key"): _convert(v, vt, f"{where}.{k}") for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    if isinstance(tp, type):
        if not isinstance(value, tp):
            raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")
        return value
    return value


def _from_dict(cls: Any, data: dict[str, Any], where: str) -> Any:
    """Build dataclass ``cls`` from a dict, rejecting unknown keys and checking every value's type."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    unknown = [k for k in data if k not in names]
    if unknown:
        k = unknown[0]
        near = difflib.get_close_matches(k, names, n=1)
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        raise ConfigError(f"{where}: unknown key {k!r}{hint}; allowed: {', '.join(names)}")
    kwargs = {k: _convert(v, hints[k], f"{where}.{k}") for k, v in data.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where}: {e}") from e


def config_from_dict(data: dict[str, Any], source: str = "config") -> TrainConfig:
    """Build and validate a :class:`TrainConfig` from a nested dict (``source`` names it in errors)."""
    cfg = _from_dict(TrainConfig, copy.deepcopy(data), source)
    _validate(cfg, source)
    return cfg


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """Nested plain dict of a (config) dataclass, None values dropped (TOML has no null)."""

    def clean(x: Any) -> Any:
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items() if v is not None}
        if isinstance(x, (list, tuple)):
            return [clean(v) for v in x]
        return x

    return clean(dataclasses.asdict(cfg))


# ------------------------------------------------------------------------------------------ validation
def _validate(cfg: TrainConfig, where: str) -> None:
    d, t = cfg.data, cfg.trainer
    positive = {
        "data.image_size": d.image_size,
        "data.batch_size": d.batch_size,
        "data.eval_batch_size": d.eval_batch_size,
        "data.cache_views": d.cache_views,
        "trainer.devices": t.devices,
        "trainer.num_nodes": t.num_nodes,
        "trainer.log_every_n_steps": t.log_every_n_steps,
        "validation.top_provinces": cfg.validation.top_provinces,
        "validation.top_cells": cfg.validation.top_cells,
    }
    for k, v in positive.items():
        if v < 1:
            raise ConfigError(f"{where}: {k} must be >= 1, got {v}")
    if t.num_threads < 0:
        raise ConfigError(f"{where}: trainer.num_threads must be >= 0 (0 = automatic), got {t.num_threads}")
    if d.num_workers < 0 or d.steps_per_epoch < 0:
        raise ConfigError(f"{where}: data.num_workers and data.steps_per_epoch must be >= 0")
    if not 0.0 < d.val_fraction < 1.0:
        raise ConfigError(f"{where}: data.val_fraction must lie in (0, 1), got {d.val_fraction}")
    if d.quotas:
        seen: dict[int, str] = {}
        for name, n in d.quotas.items():
            try:
                pid = normalize_province(name).id
            except ValueError as e:
                raise ConfigError(f"{where}: data.quotas: {e}") from e
            if pid in seen:
                raise ConfigError(f"{where}: data.quotas names {PROVINCES[pid].name} twice ({seen[pid]!r}, {name!r})")
            seen[pid] = name
            if n < 0:
                raise ConfigError(f"{where}: data.quotas.{name} must be >= 0, got {n}")
        if sum(d.quotas.values()) != d.batch_size:
            raise ConfigError(
                f"{where}: data.quotas sum to {sum(d.quotas.values())} but data.batch_size is {d.batch_size}; "
                "make them agree"
            )
    elif d.batch_size < NUM_PROVINCES:
        raise ConfigError(f"{where}: data.batch_size must be >= {NUM_PROVINCES} (one image per province)")
    lw = cfg.loss
    for k in ("province", "cell", "offset", "aux"):
        if getattr(lw, k) < 0:
            raise ConfigError(f"{where}: loss.{k} weight must be >= 0, got {getattr(lw, k)}")
    if not 0.0 < lw.beta < 1.0:
        raise ConfigError(f"{where}: loss.beta must lie in (0, 1), got {lw.beta}")
    if t.gradient_clip_val < 0:
        raise ConfigError(f"{where}: trainer.gradient_clip_val must be >= 0")
    m = cfg.monitor
    if not (0 <= m.rare_share <= 1 and 0 <= m.rare_accuracy <= 1 and 0 <= m.offset_collapse_ratio <= 1):
        raise ConfigError(f"{where}: monitor shares/accuracies must lie in [0, 1]")

    if not cfg.phases:
        raise ConfigError(f"{where}: no [[phases]] given; at least one phase is needed")
    names = [p.name for p in cfg.phases]
    for i, p in enumerate(cfg.phases):
        pw = f"{where}: phases[{i}] ({p.name})"
        if p.name not in PHASE_NAMES:
            raise ConfigError(f"{pw}: name must be one of {list(PHASE_NAMES)}")
        if names.count(p.name) > 1:
            raise ConfigError(f"{pw}: phase name used twice")
        if i and PHASE_NAMES.index(p.name) <= PHASE_NAMES.index(names[i - 1]):
            raise ConfigError(f"{pw}: phases must be listed in order {list(PHASE_NAMES)}")
        if p.epochs < 1:
            raise ConfigError(f"{pw}: epochs must be >= 1, got {p.epochs}")
        if p.max_steps == 0 or p.max_steps < -1:
            raise ConfigError(f"{pw}: max_steps must be -1 (none) or >= 1, got {p.max_steps}")
        for frac_name in ("clip_fraction", "scene_fraction"):
            v = getattr(p, frac_name)
            if not 0.0 <= v <= 1.0:
                raise ConfigError(f"{pw}: {frac_name} must lie in [0, 1], got {v}")
        bad = [g for g in p.lr if g not in PARAM_GROUPS]
        if bad:
            raise ConfigError(f"{pw}: unknown lr group {bad[0]!r}; groups: {', '.join(PARAM_GROUPS)}")
        if any(v < 0 for v in p.lr.values()):
            raise ConfigError(f"{pw}: learning rates must be >= 0, got {p.lr}")
        if not any(v > 0 for v in p.lr.values()):
            raise ConfigError(f"{pw}: no parameter group has a learning rate > 0; nothing would train")
        for enc in ("clip", "scene"):
            frac = getattr(p, f"{enc}_fraction")
            lr = p.lr.get(enc, 0.0)
            if frac > 0 and lr <= 0:
                raise ConfigError(f"{pw}: {enc}_fraction={frac} unfreezes the {enc} encoder but lr.{enc} is not set")
            if frac == 0 and lr > 0:
                raise ConfigError(f"{pw}: lr.{enc}={lr} is given but {enc}_fraction is 0 (the encoder is frozen)")
        if p.use_cache and not p.frozen_encoders:
            raise ConfigError(f"{pw}: use_cache=true needs both encoders frozen (clip/scene_fraction = 0)")
        if p.weight_decay < 0 or not 0 <= p.warmup_fraction < 1 or not 0 <= p.min_lr_ratio <= 1:
            raise ConfigError(f"{pw}: weight_decay >= 0, warmup_fraction in [0, 1), min_lr_ratio in [0, 1]")
        if p.objective == "province" and p.monitor == "val/macro_median_km":
            raise ConfigError(
                f"{pw}: a province-only phase cannot pick its best checkpoint by val/macro_median_km (its cell "
                "heads do not train); use monitor = \"val/province_accuracy\" with monitor_mode = \"max\""
            )


# ------------------------------------------------------------------------------------------ loading
def named_configs() -> list[str]:
    """Names of the configs shipped in ``geopak/configs``."""
    root = resources.files("geopak") / "configs"
    return sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".toml"))


def load_config(name_or_path: str | Path, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Load a named config (``tiny``, ``full``) or a TOML/JSON file, validate it, apply overrides.

    Raises:
        ConfigError: unknown name, unreadable file, unknown key, wrong type or inconsistent phases.
    """
    text_name = str(name_or_path)
    path = Path(name_or_path)
    if path.suffix in (".toml", ".json") or path.exists():
        if not path.exists():
            raise ConfigError(f"config file {path} does not exist")
        source = str(path)
        raw = path.read_text()
    else:
        res = resources.files("geopak") / "configs" / f"{text_name}.toml"
        if not res.is_file():
            raise ConfigError(
                f"no config named {text_name!r}; shipped configs: {', '.join(named_configs())} "
                "(or give the path of a .toml file)"
            )
        source = f"geopak/configs/{text_name}.toml"
        raw = res.read_text()
    try:
        data = json.loads(raw) if path.suffix == ".json" else tomllib.loads(raw)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"{source}: cannot parse: {e}") from e
    data.setdefault("name", path.stem if source == str(path) else text_name)
    cfg = config_from_dict(data, source)
    return apply_overrides(cfg, overrides) if overrides else cfg


def _parse_scalar(text: str) -> Any:
    """Parse a command-line override value as TOML (numbers, booleans, lists, inline tables), else a string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def parse_override(item: str) -> tuple[str, Any]:
    """``"phases.phase1.epochs=3"`` -> ``("phases.phase1.epochs", 3)``."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like key.path=value")
    k, v = item.split("=", 1)
    return k.strip(), _parse_scalar(v.strip())


def apply_overrides(cfg: TrainConfig, overrides: dict[str, Any]) -> TrainConfig:
    """A validated copy of ``cfg`` with dotted-key overrides applied.

    Keys: ``section.field`` (``data.batch_size``), ``model.<GeopakConfig field>``, ``phases.<name>.<field>``
    (``phases.phase1.lr.heads``), ``phases.*.<field>`` (every phase) and ``phases`` (a list of phase
    names: keep only those, in that order). Values are Python values or, from the CLI, TOML literals.
    """
    data = config_to_dict(cfg)
    for key, value in overrides.items():
        parts = key.split(".")
        if parts == ["phases"] and isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
            by = {p["name"]: p for p in data["phases"]}
            missing = [v for v in value if v not in by]
            if missing:
                raise ConfigError(f"override phases: unknown phase {missing[0]!r}; phases: {list(by)}")
            data["phases"] = [by[v] for v in value]
            continue
        if parts[0] == "phases" and len(parts) >= 3:
            targets = data["phases"] if parts[1] == "*" else [p for p in data["phases"] if p["name"] == parts[1]]
            if not targets:
                raise ConfigError(f"override {key}: no phase {parts[1]!r}; phases: {[p['name'] for p in data['phases']]}")
            for t in targets:
                _set_path(t, parts[2:], value, key)
            continue
        _set_path(data, parts, value, key)
    return config_from_dict(data, f"{cfg.name} + overrides")


def _set_path(d: dict[str, Any], parts: list[str], value: Any, key: str) -> None:
    for p in parts[:-1]:
        if p not in d or not isinstance(d[p], dict):
            if p in d:
                raise ConfigError(f"override {key}: {p!r} is not a table")
            d[p] = {}
        d = d[p]
    d[parts[-1]] = copy.deepcopy(value)
